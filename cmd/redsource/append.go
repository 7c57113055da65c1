package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/redsource/redsource/eventstore"
)

var appendCommand = &command{
	name:    "append",
	args:    []string{"<category>", "<id>", "<type>", "<json-data>"},
	summary: "append one event (for scripts and repairs)",
	help: `Appends one event to an aggregate, as given: no domain rules run, so use it
for scripts and repairs. The data must be valid JSON; it is stored byte for
byte. <json-data> is the JSON itself, @FILE to read it from a file, or - to
read it from standard input (command-line arguments are limited to about
128 KiB; an event may have up to 1 MiB of type, data and metadata).
Without --expected the append succeeds whatever the aggregate's version
(Any); with --expected N it succeeds only if the aggregate has exactly N
events (0: it must not exist yet), else nothing is written and the command
fails.

Prints the new version and the event's position (and partition). Give
--event-id to make a retry of the same command safe: an append whose event
is already there returns the original version and position instead of
appending twice. Data that starts with '-' goes after '--'.`,
	example: `  redsource append account a1 Deposited '{"amount":10}'
  redsource append account a1 Deposited '{"amount":10}' --expected 3 --meta reason=repair
  redsource append account a1 Imported @event.json
  jq -c .data dump.json | redsource append account a1 Imported -
  redsource append account a1 Adjusted -- -5`,
	setup: func(fs *flag.FlagSet) runFunc {
		var expected *uint64
		fs.Func("expected", "append only if the aggregate has exactly `N` events (0: no stream)", func(s string) error {
			n, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return fmt.Errorf("want a version number (0 for no stream), got %q", s)
			}
			expected = &n
			return nil
		})
		meta := map[string]string{}
		fs.Func("meta", "metadata `key=value` (repeatable)", func(s string) error {
			k, v, ok := strings.Cut(s, "=")
			if !ok || k == "" {
				return fmt.Errorf("want key=value, got %q", s)
			}
			meta[k] = v
			return nil
		})
		eventID := fs.String("event-id", "", "event `UUID`, for idempotent retries (default a new UUIDv7)")
		return func(ctx context.Context, c *cli, args []string) error {
			data, err := c.readData(args[3])
			if err != nil {
				return err
			}
			ev := eventstore.EventData{Type: args[2], Data: data}
			if len(meta) > 0 {
				ev.Metadata = meta
			}
			if *eventID != "" {
				id, err := uuid.Parse(*eventID)
				if err != nil {
					return usagef("--event-id %q is not a UUID", *eventID)
				}
				ev.ID = id
			}
			exp := eventstore.Any
			if expected != nil {
				exp = eventstore.Exact(*expected)
			}
			return runAppend(ctx, c, eventstore.StreamID{Category: args[0], ID: args[1]}, exp, ev)
		}
	},
}

// appendJSON is the output of `append --json`.
type appendJSON struct {
	Category   string    `json:"category"`
	ID         string    `json:"id"`
	Partition  int       `json:"partition"`
	Version    uint64    `json:"version"`
	Position   string    `json:"position"`
	EventID    string    `json:"event_id"`
	RecordedAt time.Time `json:"recorded_at,omitzero"`
	Duplicate  bool      `json:"duplicate"`
}

// maxEventBytes is the store's limit on one event (type + data +
// metadata); the CLI's store uses the default.
const maxEventBytes = eventstore.DefaultMaxEventBytes

// readData returns the data of <json-data>: the argument itself, the file
// after an '@', or standard input for '-'. Neither '@' nor a lone '-' can
// begin valid JSON. Data over the event size limit is refused before
// anything is connected to, without reading more than the limit.
func (c *cli) readData(arg string) ([]byte, error) {
	var (
		r    io.Reader
		what string
	)
	switch {
	case arg == "-":
		if c.stdin == nil {
			return nil, usagef("<json-data> is -, but there is no standard input")
		}
		r, what = c.stdin, "standard input"
	case strings.HasPrefix(arg, "@"):
		path := arg[1:]
		if path == "" {
			return nil, usagef("<json-data> is @ without a file name (@FILE reads the data from FILE)")
		}
		f, err := os.Open(path)
		if err != nil {
			return nil, usagef("cannot read <json-data> from %s: %v", path, unwrapPath(err))
		}
		defer f.Close()
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() && st.Size() > maxEventBytes {
			return nil, usagef("%s is %s bytes; an event (type + data + metadata) may be at most %s bytes (%s)",
				path, formatCount(st.Size()), formatCount(maxEventBytes), formatBytes(maxEventBytes))
		}
		r, what = f, path
	default:
		return []byte(arg), nil
	}
	data, err := io.ReadAll(io.LimitReader(r, maxEventBytes+1))
	if err != nil {
		return nil, usagef("cannot read <json-data> from %s: %v", what, unwrapPath(err))
	}
	if len(data) > maxEventBytes {
		return nil, usagef("%s holds more than %s bytes; an event (type + data + metadata) may be at most %s bytes (%s)",
			what, formatCount(maxEventBytes), formatCount(maxEventBytes), formatBytes(maxEventBytes))
	}
	return data, nil
}

// unwrapPath drops the path that *fs.PathError repeats: the messages
// name the file already.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func runAppend(ctx context.Context, c *cli, stream eventstore.StreamID, exp eventstore.Expected, ev eventstore.EventData) error {
	var v any
	if err := json.Unmarshal(ev.Data, &v); err != nil {
		return usagef("<json-data> is not valid JSON: %v", err)
	}
	if strings.TrimSpace(ev.Type) == "" {
		return usagef("<type> must not be empty")
	}
	store, err := c.store(ctx, stream.Category)
	if err != nil {
		return err
	}
	res, err := store.Append(ctx, stream, exp, ev)
	var ce *eventstore.ConflictError
	var se *eventstore.SizeError
	switch {
	case errors.As(err, &ce):
		return fmt.Errorf("%s is at version %d, --expected %d: nothing was written", stream, ce.Actual, mustVersion(exp))
	case errors.As(err, &se):
		return usagef("the event is %s bytes (type %d, data %s, metadata %d), over the limit of %s bytes (%s): nothing was written",
			formatCount(int64(se.Size)), len(ev.Type), formatCount(int64(len(ev.Data))), se.Size-len(ev.Type)-len(ev.Data),
			formatCount(int64(se.Limit)), formatBytes(int64(se.Limit)))
	}
	if err != nil {
		return err
	}
	out := appendJSON{
		Category: stream.Category, ID: stream.ID, Partition: res.Partition, Version: res.LastVersion,
		Position: res.Positions[0].String(), EventID: res.EventIDs[0].String(), Duplicate: res.Duplicate,
	}
	if !res.RecordedAt.IsZero() {
		out.RecordedAt = res.RecordedAt.UTC()
	}
	if c.g.json {
		return writeJSON(c.stdout, out)
	}
	what := "appended"
	if res.Duplicate {
		what = "already appended (same event ID), nothing written:"
	}
	_, err = fmt.Fprintf(c.stdout, "%s %s version %d at position %s (partition %d), event %s\n",
		what, stream, out.Version, out.Position, out.Partition, out.EventID)
	return err
}

func mustVersion(e eventstore.Expected) uint64 {
	v, _ := e.Version()
	return v
}
