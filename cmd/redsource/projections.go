package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/keys"
	"github.com/redsource/redsource/projection"
)

var projectionsCommand = &command{
	name:    "projections",
	args:    []string{"[<projection>]"},
	summary: "projection status per partition",
	help: `Shows every projection (or one) per category and partition: its checkpoint
(the last log position applied), events applied, lag (entries not yet
delivered to the projection, from XINFO GROUPS; "?" when unknown), pending
(delivered, not yet acknowledged), quarantined, parked and missing events,
the worker that owns the partition, and the partition's last error.

Projections are found in the toolkit's tables (--schema in --database);
their health comes from Redis (--redis, --namespace).

Rebuilding a projection needs its handler, so it is not a CLI command: run
it from the service that owns the projection (for example 'bank rebuild').`,
	example: `  redsource projections
  redsource projections balances --json`,
	setup: func(*flag.FlagSet) runFunc {
		return func(ctx context.Context, c *cli, args []string) error {
			name := ""
			if len(args) > 0 {
				name = args[0]
			}
			return runProjections(ctx, c, name)
		}
	},
}

// statusJSON is one item of `projections --json`.
type statusJSON struct {
	Projection  string    `json:"projection"`
	Category    string    `json:"category"`
	Partition   int       `json:"partition"`
	Checkpoint  string    `json:"checkpoint"`
	Applied     int64     `json:"applied"`
	Lag         int64     `json:"lag"` // -1: unknown
	Pending     int64     `json:"pending"`
	Quarantined int       `json:"quarantined"`
	Parked      int       `json:"parked"`
	Missing     int       `json:"missing"`
	Owner       string    `json:"owner"`
	Stopped     string    `json:"stopped"` // "", "log_regressed", "namespace_lost"
	LastError   string    `json:"last_error"`
	UpdatedAt   time.Time `json:"updated_at"`
}

func runProjections(ctx context.Context, c *cli, only string) error {
	admin, err := c.admin(ctx)
	if err != nil {
		return err
	}
	names, err := knownProjections(ctx, c, admin, only)
	if err != nil {
		return err
	}
	ns, err := c.projectionNamespace(ctx)
	if err != nil {
		return err
	}
	rc, err := c.redis(ctx)
	if err != nil {
		return err
	}
	store, err := eventstore.New(rc, eventstore.Config{Namespace: ns})
	if err != nil {
		return err
	}
	out := []statusJSON{}
	for _, name := range names {
		st, err := admin.Status(ctx, store, name)
		if err != nil {
			return err
		}
		for _, s := range st {
			out = append(out, statusJSON{
				Projection: s.Projection, Category: s.Category, Partition: s.Partition, Checkpoint: s.Checkpoint.String(),
				Applied: s.Applied, Lag: s.Lag, Pending: s.Pending, Quarantined: s.Quarantined, Parked: s.Parked,
				Missing: s.Missing, Owner: s.Owner, Stopped: s.Stopped, LastError: s.LastError, UpdatedAt: s.UpdatedAt.UTC(),
			})
		}
	}
	stopped := 0
	for _, s := range out {
		if s.Stopped != "" {
			stopped++
		}
	}
	// A stopped partition is a failure of the projection, whatever the
	// output format: scripts and cron jobs see it in the exit code.
	var result error
	if stopped > 0 {
		result = &exitError{code: exitUnsafe, msg: fmt.Sprintf("%d partitions stopped because Redis lost events their checkpoints remember: restore Redis or rebuild the projection (docs/operations.md, \"When Redis forgets\")", stopped)}
	}
	if c.g.json {
		if err := writeJSON(c.stdout, out); err != nil {
			return err
		}
		return result
	}
	if len(out) == 0 {
		fmt.Fprintf(c.stderr, "no projections in schema %q\n", c.g.schema)
		return nil
	}
	missing := slices.ContainsFunc(out, func(s statusJSON) bool { return s.Missing > 0 })
	tw := newTable(c.stdout)
	header := "PROJECTION\tCATEGORY\tP\tCHECKPOINT\tAPPLIED\tLAG\tPENDING\tQUARANTINED\tPARKED"
	if missing {
		header += "\tMISSING"
	}
	fmt.Fprintln(tw, header+"\tOWNER\tLAST ERROR")
	for _, s := range out {
		cp := s.Checkpoint
		if cp == "0-0" {
			cp = "-"
		}
		lag := "?"
		if s.Lag >= 0 {
			lag = formatCount(s.Lag)
		}
		row := []string{s.Projection, s.Category, strconv.Itoa(s.Partition), cp, formatCount(s.Applied), lag,
			formatCount(s.Pending), strconv.Itoa(s.Quarantined), strconv.Itoa(s.Parked)}
		if missing {
			row = append(row, strconv.Itoa(s.Missing))
		}
		lastErr := s.LastError
		if s.Stopped != "" {
			lastErr = "STOPPED (" + s.Stopped + "): " + lastErr
		}
		row = append(row, orDash(s.Owner), orDash(truncate(oneLine(lastErr), 80)))
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return result
}

// knownProjections lists the projections, or checks that one exists.
func knownProjections(ctx context.Context, c *cli, admin *projection.Admin, only string) ([]string, error) {
	if only != "" {
		if err := keys.ValidateProjection(only); err != nil {
			return nil, usagef("%v", err)
		}
	}
	names, err := admin.Projections(ctx)
	if err != nil {
		return nil, err
	}
	if only == "" {
		return names, nil
	}
	if !slices.Contains(names, only) {
		known := "none"
		if len(names) > 0 {
			known = strings.Join(names, ", ")
		}
		return nil, fmt.Errorf("no projection %q in schema %q (known: %s)", only, c.g.schema, known)
	}
	return []string{only}, nil
}

// projectionNamespace is the event-store namespace to read projection
// health (lag, pending, owner) from: the one the toolkit schema records
// for its projections, unless --namespace is given; a --namespace that
// differs from it gets a warning, since lag and owners would be looked up
// in the wrong place.
func (c *cli) projectionNamespace(ctx context.Context) (string, error) {
	pg, err := c.postgres(ctx)
	if err != nil {
		return "", err
	}
	recorded, err := projection.NewAdmin(pg, c.g.schema).Namespace(ctx)
	switch {
	case errors.Is(err, projection.ErrNoSchema), err == nil && recorded == "":
		return c.g.namespace, nil // not recorded yet
	case err != nil:
		return "", fmt.Errorf("read the namespace of schema %q: %w", c.g.schema, err)
	case !c.g.namespaceSet:
		return recorded, nil
	case recorded != c.g.namespace:
		fmt.Fprintf(c.stderr, "warning: schema %q holds the projections of namespace %q, not %q: lag, pending and owners come from --namespace %q\n",
			c.g.schema, recorded, c.g.namespace, c.g.namespace)
	}
	return c.g.namespace, nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
