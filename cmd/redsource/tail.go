package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/redsource/redsource/eventstore"
)

var tailCommand = &command{
	name:    "tail",
	args:    []string{"<category>"},
	summary: "follow new events of a category",
	help: `Prints the events appended to a category from now on, until interrupted
(Ctrl-C, SIGTERM). It blocks on XREAD over every partition log of the
category and keeps one last-seen position per partition, so no event is
missed or repeated between reads. Events that arrive together are printed
in (position, partition) order. On Redis Cluster each partition is
followed by its own reader.

A category that has no events yet is followed on --partitions partitions.

` + eventsJSONHelp,
	example: `  redsource tail account
  redsource tail account --json | jq -c '{id, type, data}'`,
	setup: func(*flag.FlagSet) runFunc {
		return func(ctx context.Context, c *cli, args []string) error { return runTail(ctx, c, args[0]) }
	},
}

// tailBlock is how long one XREAD waits; it bounds how long an interrupt
// can take to be noticed if the client does not abort a blocked read.
const tailBlock = time.Second

type tailBatch struct {
	events []eventstore.Event
	err    error
}

func runTail(ctx context.Context, c *cli, category string) error {
	store, err := c.store(ctx, category)
	if err != nil {
		return err
	}
	rc := store.Client()
	n := store.Config().Partitions
	// Start after each log's last entry: the same as "$", but resolved
	// once, so that nothing appended between two reads is lost.
	starts := make([]string, n)
	cmds := make(rueidis.Commands, n)
	for p := range n {
		cmds[p] = rc.B().Xrevrange().Key(store.LogKey(category, p)).End("+").Start("-").Count(1).Build()
	}
	for p, res := range rc.DoMulti(ctx, cmds...) {
		es, err := res.AsXRange()
		if err != nil {
			return fmt.Errorf("read the end of %s partition %d: %w", category, p, err)
		}
		starts[p] = "0-0"
		if len(es) > 0 {
			starts[p] = es[0].ID
		}
	}
	groups := [][]int{make([]int, n)}
	for p := range n {
		groups[0][p] = p
	}
	if rc.Mode() == rueidis.ClientModeCluster { // partitions live in different slots
		groups = groups[:0]
		for p := range n {
			groups = append(groups, []int{p})
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	batches := make(chan tailBatch)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	for _, g := range groups {
		wg.Go(func() { follow(ctx, store, category, g, starts, batches) })
	}
	fmt.Fprintf(c.stderr, "following %s (%d partitions) from now; interrupt to stop\n", category, n)
	out := c.eventPrinter()
	for {
		select {
		case <-ctx.Done():
			return nil
		case b := <-batches:
			if b.err != nil {
				return b.err
			}
			slices.SortFunc(b.events, func(x, y eventstore.Event) int {
				return cmp.Or(x.Position.Compare(y.Position), cmp.Compare(x.Partition, y.Partition))
			})
			for _, ev := range b.events {
				if err := out.print(ev); err != nil {
					return err
				}
			}
			if err := out.flush(); err != nil {
				return err
			}
		}
	}
}

// follow reads the partitions' logs with XREAD BLOCK, after starts[p] for
// partition p (starts is only read), and sends what it reads.
func follow(ctx context.Context, store *eventstore.Store, category string, parts []int, starts []string, out chan<- tailBatch) {
	rc := store.Client()
	keys := make([]string, len(parts))
	partOf := make(map[string]int, len(parts))
	for i, p := range parts {
		keys[i] = store.LogKey(category, p)
		partOf[keys[i]] = p
	}
	ids := make([]string, len(parts))
	for i, p := range parts {
		ids[i] = starts[p]
	}
	send := func(b tailBatch) bool {
		select {
		case out <- b:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for ctx.Err() == nil {
		res, err := rc.Do(ctx, rc.B().Xread().Count(512).Block(tailBlock.Milliseconds()).Streams().
			Key(keys...).Id(ids...).Build()).AsXReadSlices()
		if rueidis.IsRedisNil(err) { // nothing new within the block time
			continue
		}
		if err != nil {
			if ctx.Err() == nil {
				send(tailBatch{err: fmt.Errorf("XREAD %s: %w", category, err)})
			}
			return
		}
		var b tailBatch
		for i, key := range keys {
			entries := res[key]
			if len(entries) == 0 {
				continue
			}
			p := partOf[key]
			for _, e := range entries {
				fields := make([]string, 0, 2*len(e.FieldValues))
				for _, fv := range e.FieldValues {
					fields = append(fields, fv.Field, fv.Value)
				}
				ev, err := eventstore.DecodeEntry(category, p, e.ID, fields)
				if err != nil {
					send(tailBatch{err: err})
					return
				}
				b.events = append(b.events, ev)
			}
			ids[i] = entries[len(entries)-1].ID
		}
		if len(b.events) > 0 && !send(b) {
			return
		}
	}
}
