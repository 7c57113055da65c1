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
	"github.com/redsource/redsource/projection"
)

// Reasons an event is held (projection.HeldEvent.Reason).
const (
	reasonQuarantined = "quarantined"
	reasonParked      = "parked"
	reasonMissing     = "missing"
)

var quarantineListCommand = &command{
	name:    "quarantine list",
	args:    []string{"<projection>"},
	summary: "events a projection holds back",
	help: `Lists the events a projection holds back, in (category, partition,
position) order:

  quarantined  its handler failed past the limits (attempts, deliveries)
  parked       a later event of an aggregate with a quarantined event
               (sequenced quarantine keeps each aggregate in order)
  missing      deleted from the log while it was pending

Quarantined and missing events are retried or skipped with 'quarantine
retry' and 'quarantine skip'; parked events follow their quarantined one.`,
	example: `  redsource quarantine list balances
  redsource quarantine list balances --reason quarantined --json`,
	setup: func(fs *flag.FlagSet) runFunc {
		reason := fs.String("reason", "", "only events held for this `reason`: quarantined, parked or missing")
		return func(ctx context.Context, c *cli, args []string) error {
			var reasons []string
			switch *reason {
			case "":
			case reasonQuarantined, reasonParked, reasonMissing:
				reasons = []string{*reason}
			default:
				return usagef("--reason %q: want quarantined, parked or missing", *reason)
			}
			return runQuarantineList(ctx, c, args[0], reasons)
		}
	},
}

// heldJSON is one item of `quarantine list --json`. The field names are a
// contract (docs/cli.md); they are mapped here so that the library's
// struct tags can change without changing the CLI's output.
type heldJSON struct {
	Projection string    `json:"projection"`
	Position   string    `json:"position"`
	Partition  int       `json:"partition"`
	Category   string    `json:"category"`
	ID         string    `json:"id"`
	Version    uint64    `json:"version"`
	Type       string    `json:"type"`
	EventID    string    `json:"event_id"`
	Reason     string    `json:"reason"`
	Error      string    `json:"error"`
	Attempts   int       `json:"attempts"`
	Deliveries int       `json:"deliveries"`
	HeldAt     time.Time `json:"held_at"`
	Requested  string    `json:"requested,omitempty"` // "retry" or "skip" while a request waits
}

func toHeldJSON(h projection.HeldEvent) heldJSON {
	return heldJSON{
		Projection: h.Projection, Position: h.Position.String(), Partition: h.Partition, Category: h.Category,
		ID: h.AggregateID, Version: h.Version, Type: h.Type, EventID: h.EventID, Reason: h.Reason, Error: h.Error,
		Attempts: h.Attempts, Deliveries: h.Deliveries, HeldAt: h.HeldAt.UTC(), Requested: h.Requested,
	}
}

func runQuarantineList(ctx context.Context, c *cli, proj string, reasons []string) error {
	admin, err := c.admin(ctx)
	if err != nil {
		return err
	}
	if _, err := knownProjections(ctx, c, admin, proj); err != nil {
		return err
	}
	held, err := admin.Held(ctx, proj, reasons...)
	if err != nil {
		return err
	}
	out := make([]heldJSON, len(held))
	for i, h := range held {
		out[i] = toHeldJSON(h)
	}
	if c.g.json {
		return writeJSON(c.stdout, out)
	}
	if len(out) == 0 {
		fmt.Fprintf(c.stderr, "projection %q holds no events\n", proj)
		return nil
	}
	tw := newTable(c.stdout)
	fmt.Fprintln(tw, "POSITION\tP\tCATEGORY\tID\tVERSION\tTYPE\tREASON\tATTEMPTS\tHELD AT\tERROR")
	for _, h := range out {
		reason := h.Reason
		if h.Requested != "" {
			reason += " (" + h.Requested + " requested)"
		}
		fmt.Fprintln(tw, strings.Join([]string{h.Position, strconv.Itoa(h.Partition), h.Category, h.ID,
			strconv.FormatUint(h.Version, 10), h.Type, reason, strconv.Itoa(h.Attempts), formatTime(h.HeldAt),
			orDash(truncate(oneLine(h.Error), 80))}, "\t"))
	}
	return tw.Flush()
}

var quarantineRetryCommand = &command{
	name:    "quarantine retry",
	args:    []string{"<projection>", "[<position>]"},
	summary: "retry quarantined events (all, or one)",
	help: `Asks the running projector to apply a quarantined event again (then the
events parked behind it, in order), and waits for the outcome. Without a
position every quarantined event of the projection is retried. A position
held in several partitions (positions are unique per partition only) needs
--partition; a projection over several categories may need --category.

The CLI files the request in PostgreSQL; the worker that owns the
partition carries it out with the projection's handler. The command then
waits up to --wait (0: do not wait) and reports "retried", "still
quarantined: <error>", or that no worker picked the request up (is the
projector running?). The request stays filed either way.`,
	example: `  redsource quarantine retry balances
  redsource quarantine retry balances 1714564800000-0 --partition 3 --wait 1m`,
	setup: requestSetup("retry"),
}

var quarantineSkipCommand = &command{
	name:    "quarantine skip",
	args:    []string{"<projection>", "<position>"},
	summary: "skip a quarantined event",
	help: `Asks the running projector to leave a quarantined (or missing) event out
for good and apply the events parked behind it, in order, and waits for
the outcome (see 'quarantine retry' for --wait, --partition, --category).
The read model will never see the skipped event.`,
	example: `  redsource quarantine skip balances 1714564800000-0
  redsource quarantine skip balances 1714564800000-0 --partition 3`,
	setup: requestSetup("skip"),
}

func requestSetup(action string) func(fs *flag.FlagSet) runFunc {
	return func(fs *flag.FlagSet) runFunc {
		partition := fs.Int("partition", -1, "the event's partition `P`, when the position is held in several")
		category := fs.String("category", "", "the event's category `C`, when the projection reads several")
		wait := fs.Duration("wait", 30*time.Second, "how long to wait for the projector to carry the request out (0: do not wait)")
		return func(ctx context.Context, c *cli, args []string) error {
			if *wait < 0 {
				return usagef("--wait must not be negative")
			}
			r := request{action: action, projection: args[0], category: *category, partition: *partition, wait: *wait}
			if len(args) > 1 {
				pos, err := eventstore.ParsePosition(args[1])
				if err != nil {
					return usagef("<position>: %v", strings.TrimPrefix(err.Error(), "eventstore: "))
				}
				r.pos = &pos
			}
			return r.run(ctx, c)
		}
	}
}

type request struct {
	action     string // "retry" or "skip"
	projection string
	pos        *eventstore.Position // nil: every quarantined event
	category   string
	partition  int // -1: any
	wait       time.Duration
}

// Outcomes of a request, in --json output.
const (
	outcomeRetried     = "retried"
	outcomeSkipped     = "skipped"
	outcomeStill       = "still_quarantined"
	outcomeNotPickedUp = "not_picked_up" // --wait ran out
	outcomeRequested   = "requested"     // --wait 0
	outcomeGone        = "not_held"      // resolved by someone else meanwhile
)

// resultJSON is one requested event in the output of retry and skip.
type resultJSON struct {
	Position  string `json:"position"`
	Partition int    `json:"partition"`
	Category  string `json:"category"`
	ID        string `json:"id"`
	Version   uint64 `json:"version"`
	Type      string `json:"type"`
	Outcome   string `json:"outcome"`
	Error     string `json:"error,omitempty"`
}

type requestJSON struct {
	Projection string       `json:"projection"`
	Action     string       `json:"action"`
	Results    []resultJSON `json:"results"`
	// NowQuarantined are events that became quarantined while the
	// request was carried out (a parked event that failed when released).
	NowQuarantined []heldJSON `json:"now_quarantined"`
}

func (r request) run(ctx context.Context, c *cli) error {
	admin, err := c.admin(ctx)
	if err != nil {
		return err
	}
	if _, err := knownProjections(ctx, c, admin, r.projection); err != nil {
		return err
	}
	held, err := admin.Held(ctx, r.projection)
	if err != nil {
		return err
	}
	targets, err := r.targets(held)
	if err != nil {
		return err
	}
	results := make([]resultJSON, len(targets))
	for i, t := range targets {
		results[i] = resultJSON{Position: t.Position.String(), Partition: t.Partition, Category: t.Category,
			ID: t.AggregateID, Version: t.Version, Type: t.Type, Outcome: outcomeRequested}
		if _, err := admin.Request(ctx, r.projection, r.action, t.Category, t.Partition, t.Position); err != nil {
			if !errors.Is(err, projection.ErrNotHeld) {
				return err
			}
			results[i].Outcome = outcomeGone
		}
	}
	if r.wait > 0 {
		if err := r.await(ctx, c, admin, targets, results); err != nil {
			return err
		}
	}
	var fresh []heldJSON
	if r.wait > 0 {
		now, err := admin.Held(ctx, r.projection, reasonQuarantined)
		if err != nil {
			return err
		}
		for _, h := range now {
			if !slices.ContainsFunc(held, func(o projection.HeldEvent) bool { return sameEvent(o, h) && o.Reason == reasonQuarantined }) {
				fresh = append(fresh, toHeldJSON(h))
			}
		}
	}
	if err := r.report(c, results, fresh); err != nil {
		return err
	}
	return r.exit(results)
}

// targets picks the held events the request is about.
func (r request) targets(held []projection.HeldEvent) ([]projection.HeldEvent, error) {
	var open, matched []projection.HeldEvent
	for _, h := range held {
		if h.Reason != reasonQuarantined && h.Reason != reasonMissing {
			continue
		}
		open = append(open, h)
		if (r.pos == nil || h.Position == *r.pos) && (r.category == "" || h.Category == r.category) &&
			(r.partition < 0 || h.Partition == r.partition) {
			matched = append(matched, h)
		}
	}
	where := ""
	if r.category != "" {
		where += fmt.Sprintf(" in category %q", r.category)
	}
	if r.partition >= 0 {
		where += fmt.Sprintf(" in partition %d", r.partition)
	}
	if r.pos == nil {
		if len(matched) == 0 {
			return nil, fmt.Errorf("projection %q has no quarantined events%s", r.projection, where)
		}
		return matched, nil
	}
	switch len(matched) {
	case 0:
		for _, h := range held {
			if h.Reason == reasonParked && h.Position == *r.pos {
				for _, q := range open {
					if q.Category == h.Category && q.Partition == h.Partition && q.AggregateID == h.AggregateID {
						return nil, fmt.Errorf("%s is parked behind the quarantined event %s of %s/%s (partition %d): %s that one, and the parked events follow",
							r.pos, q.Position, q.Category, q.AggregateID, q.Partition, r.action)
					}
				}
			}
		}
		return nil, fmt.Errorf("no quarantined event at position %s%s in projection %q (see 'redsource quarantine list %s')",
			r.pos, where, r.projection, r.projection)
	case 1:
		return matched, nil
	}
	var places []string
	sameCategory := true
	for _, h := range matched {
		places = append(places, fmt.Sprintf("%s partition %d", h.Category, h.Partition))
		sameCategory = sameCategory && h.Category == matched[0].Category
	}
	pick := "--partition P"
	if !sameCategory {
		pick = "--category C and --partition P"
	}
	return nil, usagef("position %s is quarantined in %d places (%s); pick one with %s",
		r.pos, len(matched), strings.Join(places, ", "), pick)
}

// await polls the outcome of each request until all are known or --wait
// runs out.
func (r request) await(ctx context.Context, c *cli, admin *projection.Admin, targets []projection.HeldEvent, results []resultJSON) error {
	bar := newProgress(c.stderr, "waiting for the projector to "+r.action)
	defer bar.done()
	deadline := time.Now().Add(r.wait)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		open := 0
		for i, t := range targets {
			if results[i].Outcome != outcomeRequested {
				continue
			}
			o, err := admin.Outcome(ctx, r.projection, t.Category, t.Partition, t.Position)
			switch {
			case err != nil && ctx.Err() != nil:
				return &exitError{code: exitFailure, msg: "interrupted while waiting; the request is filed and the projector will still carry it out"}
			case err != nil:
				return err
			case o.Resolved:
				results[i].Outcome = o.Resolution // "retried" or "skipped"
			case !o.Pending:
				results[i].Outcome, results[i].Error = outcomeStill, o.Error
			default:
				open++
			}
		}
		if open == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			for i := range results {
				if results[i].Outcome == outcomeRequested {
					results[i].Outcome = outcomeNotPickedUp
				}
			}
			return nil
		}
		bar.status(fmt.Sprintf("%d of %d done, %s left", len(targets)-open, len(targets), formatDuration(time.Until(deadline).Round(time.Second))))
		select {
		case <-ctx.Done():
			return &exitError{code: exitFailure, msg: "interrupted while waiting; the request is filed and the projector will still carry it out"}
		case <-tick.C:
		}
	}
}

func (r request) report(c *cli, results []resultJSON, fresh []heldJSON) error {
	if c.g.json {
		if fresh == nil {
			fresh = []heldJSON{}
		}
		return writeJSON(c.stdout, requestJSON{Projection: r.projection, Action: r.action, Results: results, NowQuarantined: fresh})
	}
	for _, res := range results {
		var what string
		switch res.Outcome {
		case outcomeRetried, outcomeSkipped:
			what = res.Outcome
		case outcomeStill:
			what = "still quarantined: " + oneLine(res.Error)
		case outcomeNotPickedUp:
			what = fmt.Sprintf("requested; no worker picked it up within %s (is the projector running?)", r.wait)
		case outcomeRequested:
			what = "requested " + r.action + "; the projector carries it out"
		case outcomeGone:
			what = "no longer quarantined (resolved meanwhile)"
		}
		if _, err := fmt.Fprintf(c.stdout, "%s %s/%s v%d (partition %d): %s\n",
			res.Position, res.Category, res.ID, res.Version, res.Partition, what); err != nil {
			return err
		}
	}
	for _, h := range fresh {
		if _, err := fmt.Fprintf(c.stdout, "now quarantined: %s %s/%s v%d (partition %d): %s\n",
			h.Position, h.Category, h.ID, h.Version, h.Partition, oneLine(h.Error)); err != nil {
			return err
		}
	}
	return nil
}

// exit maps outcomes to the exit code: 1 if any event is still
// quarantined, else 3 if any request was not carried out in time.
func (r request) exit(results []resultJSON) error {
	still, late := 0, 0
	for _, res := range results {
		switch res.Outcome {
		case outcomeStill:
			still++
		case outcomeNotPickedUp:
			late++
		}
	}
	switch {
	case still > 0:
		return &exitError{code: exitFailure, msg: fmt.Sprintf("%d of %d events still quarantined", still, len(results))}
	case late > 0:
		return &exitError{code: exitPending, msg: fmt.Sprintf("%d of %d requests not carried out within %s; they stay filed", late, len(results), r.wait)}
	}
	return nil
}

func sameEvent(a, b projection.HeldEvent) bool {
	return a.Category == b.Category && a.Partition == b.Partition && a.Position == b.Position
}
