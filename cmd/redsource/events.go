package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/redsource/redsource/eventstore"
)

const eventsJSONHelp = `With --json, each event is one JSON object on its own line: position,
partition, category, id, version, type, event_id, data (the payload itself
when it is valid JSON, else a string), metadata, recorded_at. The table
shows the payload on one line, cut at 60 characters.`

var readCommand = &command{
	name:    "read",
	args:    []string{"<category>", "<id>"},
	summary: "one aggregate's events",
	help: `Prints the events of one aggregate in version order, from --from-version
(inclusive; 0 and 1 both mean the first event).

` + eventsJSONHelp,
	example: `  redsource read account a1
  redsource read account a1 --from-version 3 --json | jq .data`,
	setup: func(fs *flag.FlagSet) runFunc {
		from := fs.Uint64("from-version", 0, "first version `N` to print (inclusive)")
		return func(ctx context.Context, c *cli, args []string) error {
			return runRead(ctx, c, args[0], args[1], *from)
		}
	},
}

func runRead(ctx context.Context, c *cli, category, id string, from uint64) error {
	store, err := c.existingStore(ctx, category)
	if err != nil {
		return err
	}
	out := c.eventPrinter()
	n := 0
	for ev, err := range store.Read(ctx, eventstore.StreamID{Category: category, ID: id}, from) {
		if err == nil {
			err = out.print(ev)
		}
		if err != nil {
			out.flush() // what was read before the error is shown
			return err
		}
		n++
	}
	if err := out.flush(); err != nil {
		return err
	}
	if n == 0 && !c.g.json {
		what := "no events"
		if from > 1 {
			what = fmt.Sprintf("no events from version %d on", from)
		}
		fmt.Fprintf(c.stderr, "%s/%s: %s\n", category, id, what)
	}
	return nil
}

var replayCommand = &command{
	name:    "replay",
	args:    []string{"<category>"},
	summary: "a category's events between two positions or times",
	help: `Prints the events of a category in (position, partition) order: positions
are unique within a partition, not across a category, so two events of
different partitions can share one.

--from and --to are inclusive. Each is a position ("ms-seq", a Redis stream
ID such as 1714564800000-0) or an RFC 3339 time (2024-05-01T12:00:00Z,
fractions allowed). A time bound covers its whole millisecond: --from T
starts at the first position of T's millisecond, --to T ends at the last.

When the output goes to a file or a pipe and stderr is a terminal, a
progress bar is drawn on stderr.

` + eventsJSONHelp,
	example: `  redsource replay account
  redsource replay account --from 2024-05-01T00:00:00Z --to 2024-05-31T23:59:59.999Z
  redsource replay account --from 1714564800000-0 --json > events.jsonl`,
	setup: func(fs *flag.FlagSet) runFunc {
		from := fs.String("from", "", "start at `X`, a position or an RFC 3339 time (inclusive; default the start)")
		to := fs.String("to", "", "end at `X`, a position or an RFC 3339 time (inclusive; default the end)")
		return func(ctx context.Context, c *cli, args []string) error {
			lo, hi := eventstore.MinPosition, eventstore.MaxPosition
			var err error
			if *from != "" {
				if lo, err = parseBound("from", *from, false); err != nil {
					return err
				}
			}
			if *to != "" {
				if hi, err = parseBound("to", *to, true); err != nil {
					return err
				}
			}
			if lo.Compare(hi) > 0 {
				return usagef("--from %s is after --to %s", *from, *to)
			}
			return runReplay(ctx, c, args[0], lo, hi)
		}
	},
}

// parseBound reads a position or an RFC 3339 time. A time is the first
// position of its millisecond for a lower bound, the last for an upper one.
func parseBound(name, s string, upper bool) (eventstore.Position, error) {
	p, perr := eventstore.ParsePosition(s)
	if perr == nil {
		return p, nil
	}
	t, terr := time.Parse(time.RFC3339Nano, s)
	if terr == nil {
		if upper {
			return eventstore.LastPositionAt(t), nil
		}
		return eventstore.PositionAt(t), nil
	}
	looksLikeTime := strings.ContainsAny(s, "T:") || strings.Count(s, "-") >= 2
	if !looksLikeTime && strings.Contains(s, "-") {
		return p, usagef("--%s: %v", name, strings.TrimPrefix(perr.Error(), "eventstore: "))
	}
	if looksLikeTime {
		return p, usagef("--%s %q is not an RFC 3339 time (e.g. 2024-05-01T12:00:00Z): %v", name, s, terr)
	}
	return p, usagef("--%s %q is neither a position (ms-seq, e.g. 1714564800000-0) nor an RFC 3339 time (e.g. 2024-05-01T12:00:00Z)", name, s)
}

func runReplay(ctx context.Context, c *cli, category string, from, to eventstore.Position) error {
	store, err := c.existingStore(ctx, category)
	if err != nil {
		return err
	}
	var bar *progress
	var lo, hi uint64
	if !isTerminal(c.stdout) {
		if bar = newProgress(c.stderr, "replay "+category); bar != nil {
			lo, hi = replaySpan(ctx, store, category, from, to)
		}
	}
	out := c.eventPrinter()
	var n int64
	for ev, err := range store.ReadCategory(ctx, category, from, to) {
		if err == nil {
			err = out.print(ev)
		}
		if err != nil {
			bar.done()
			out.flush() // what was read before the error is shown
			return err
		}
		n++
		if bar != nil {
			frac := -1.0
			if hi > lo {
				frac = float64(ev.Position.Ms-min(ev.Position.Ms, lo)) / float64(hi-lo)
			}
			bar.update(frac, n, "events")
		}
	}
	bar.done()
	if err := out.flush(); err != nil {
		return err
	}
	if n == 0 && !c.g.json {
		fmt.Fprintf(c.stderr, "%s: no events between %s and %s\n", category, from, to)
	}
	return nil
}

// replaySpan estimates the milliseconds a replay covers, for its progress
// bar: the bounds, narrowed to the first and last entries of the logs.
func replaySpan(ctx context.Context, store *eventstore.Store, category string, from, to eventstore.Position) (lo, hi uint64) {
	rc := store.Client()
	n := store.Config().Partitions
	cmds := make(rueidis.Commands, 0, 2*n)
	for p := range n {
		key := store.LogKey(category, p)
		cmds = append(cmds, rc.B().Xrange().Key(key).Start(from.String()).End(to.String()).Count(1).Build(),
			rc.B().Xrevrange().Key(key).End(to.String()).Start(from.String()).Count(1).Build())
	}
	lo, hi = to.Ms, from.Ms
	for i, res := range rc.DoMulti(ctx, cmds...) {
		es, err := res.AsXRange()
		if err != nil || len(es) == 0 {
			continue
		}
		pos, err := eventstore.ParsePosition(es[0].ID)
		if err != nil {
			continue
		}
		if i%2 == 0 {
			lo = min(lo, pos.Ms)
		} else {
			hi = max(hi, pos.Ms)
		}
	}
	return lo, hi
}
