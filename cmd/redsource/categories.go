package main

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strconv"

	"github.com/redis/rueidis"

	"github.com/redsource/redsource/eventstore"
)

var categoriesCommand = &command{
	name:    "categories",
	summary: "list categories: partitions, events, memory",
	help: `Lists every category of the namespace with its partition count, its number
of events (the lengths of its partition logs) and the memory its partition
logs use in Redis (MEMORY USAGE, which samples large streams, so it is an
estimate). Aggregate streams, snapshots and quarantine streams are not
counted.`,
	example: `  redsource categories
  redsource categories --namespace bank --json`,
	setup: func(*flag.FlagSet) runFunc { return runCategories },
}

// categoryJSON is one item of `categories --json`.
type categoryJSON struct {
	Category    string `json:"category"`
	Partitions  int    `json:"partitions"`
	Events      int64  `json:"events"`
	MemoryBytes int64  `json:"memory_bytes"`
}

func runCategories(ctx context.Context, c *cli, _ []string) error {
	rc, err := c.redis(ctx)
	if err != nil {
		return err
	}
	store, err := eventstore.New(rc, eventstore.Config{Namespace: c.g.namespace})
	if err != nil {
		return err
	}
	names, err := store.Categories(ctx)
	if err != nil {
		return err
	}
	slices.Sort(names)
	out := make([]categoryJSON, 0, len(names))
	for _, name := range names {
		n, err := c.recordedPartitions(ctx, name)
		if err != nil {
			return err
		}
		cat := categoryJSON{Category: name, Partitions: n}
		cmds := make(rueidis.Commands, 0, 2*n)
		for p := range n {
			key := store.LogKey(name, p)
			cmds = append(cmds, rc.B().Xlen().Key(key).Build(), rc.B().MemoryUsage().Key(key).Build())
		}
		for i, res := range rc.DoMulti(ctx, cmds...) {
			v, err := res.AsInt64()
			if rueidis.IsRedisNil(err) { // MEMORY USAGE of a missing key
				continue
			}
			if err != nil {
				return fmt.Errorf("category %q: %w", name, err)
			}
			if i%2 == 0 {
				cat.Events += v
			} else {
				cat.MemoryBytes += v
			}
		}
		out = append(out, cat)
	}
	if c.g.json {
		return writeJSON(c.stdout, out)
	}
	if len(out) == 0 {
		fmt.Fprintf(c.stderr, "no categories in namespace %q\n", c.g.namespace)
		return nil
	}
	tw := newTable(c.stdout)
	fmt.Fprintln(tw, "CATEGORY\tPARTITIONS\tEVENTS\tMEMORY")
	for _, cat := range out {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", cat.Category, strconv.Itoa(cat.Partitions), formatCount(cat.Events), formatBytes(cat.MemoryBytes))
	}
	return tw.Flush()
}
