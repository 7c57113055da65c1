package projection_test

// A rebuild of a large log, with the raw read and write ceilings measured
// in the same run (docs/performance.md, "Rebuilds"):
//
//	go test -run '^$' -bench BenchmarkRebuild -benchtime 1x -timeout 30m ./projection/
//
// The log has REDSOURCE_BENCH_REBUILD_EVENTS events (default 1,000,000;
// 300-byte JSON, 10 per aggregate, 8 partitions), appended before any
// timer starts. Sub-benchmarks, one run each:
//   - rebuild: projection.Rebuild with the unnest batch handler of
//     bench_test.go, from the reset to the last checkpoint;
//   - ceiling-read: XREADGROUP COUNT 500 + XACK over every partition, one
//     goroutine per partition, entries parsed but not decoded;
//   - ceiling-write: the same rows, folded per aggregate 1,000 events at a
//     time, written with one unnest upsert per transaction, one goroutine
//     per partition; no Redis, no decoding.

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/testenv"
	"github.com/redsource/redsource/projection"
)

func BenchmarkRebuild(b *testing.B) {
	events := 1_000_000
	if v := os.Getenv("REDSOURCE_BENCH_REBUILD_EVENTS"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(b, err)
		events = n
	}
	const perAgg = 10
	aggs := events / perAgg
	events = aggs * perAgg
	w := newBenchWorld(b, benchPartitions)
	ctx := context.Background()

	// The log: 64 writers, 10-event appends.
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	var total atomic.Int64
	for range 64 {
		wg.Go(func() {
			batch := make([]eventstore.EventData, perAgg)
			for {
				a := int(next.Add(1)) - 1
				if a >= aggs {
					return
				}
				for r := range perAgg {
					amount := benchAmount(a, r)
					total.Add(amount)
					batch[r] = eventstore.EventData{Type: "Deposited", Data: benchPayload(amount)}
				}
				st := eventstore.StreamID{Category: benchCategory, ID: "acc-" + strconv.Itoa(a)}
				if _, err := w.store.Append(ctx, st, eventstore.NoStream, batch...); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	require.NoError(b, <-errs)
	b.Logf("appended %d events in %s", events, time.Since(start).Round(time.Millisecond))

	check := func(b *testing.B, pool *pgxpool.Pool, table string) {
		var rows, n, sum int64
		require.NoError(b, pool.QueryRow(ctx, "SELECT count(*), coalesce(sum(n), 0), coalesce(sum(total), 0) FROM "+table).Scan(&rows, &n, &sum))
		require.Equal(b, [3]int64{int64(aggs), int64(events), total.Load()}, [3]int64{rows, n, sum})
	}

	b.Run("rebuild", func(b *testing.B) {
		b.StopTimer()
		for range b.N {
			table := testenv.Unique("rb")
			w.createReadModel(b, table)
			p := benchHandlers[2].make(table) // unnest
			p.Name, p.Categories = table, []string{benchCategory}
			p.Reset = func(ctx context.Context, tx pgx.Tx) error {
				_, err := tx.Exec(ctx, "TRUNCATE "+table)
				return err
			}
			pool := w.newPool(b, benchPartitions+2)
			cfg := projection.Config{Store: w.store, DB: pool, Schema: w.schema, BatchSize: 1000, Block: 50 * time.Millisecond,
				Logger: slog.New(slog.DiscardHandler)}
			var last projection.Progress
			b.StartTimer()
			err := projection.Rebuild(ctx, cfg, p, projection.RebuildOptions{Progress: func(pr projection.Progress) { last = pr }})
			b.StopTimer()
			require.NoError(b, err)
			require.Equal(b, int64(events), last.Done)
			check(b, pool, table)
		}
		b.ReportMetric(float64(b.N*events)/b.Elapsed().Seconds(), "events/s")
	})

	b.Run("ceiling-read", func(b *testing.B) {
		b.StopTimer()
		var read int64
		for range b.N {
			group := newCeilingGroup(b, w.store)
			b.StartTimer()
			read += readWithGroup(b, w.store, group, benchPartitions)
			b.StopTimer()
		}
		require.Equal(b, int64(b.N*events), read)
		b.ReportMetric(float64(read)/b.Elapsed().Seconds(), "events/s")
	})

	b.Run("ceiling-write", func(b *testing.B) {
		b.StopTimer()
		// The rows in log order per partition, as the rebuild sees them.
		rows := make([][]benchRow, benchPartitions)
		for p := range benchPartitions {
			for ev, err := range w.store.ReadPartition(ctx, benchCategory, p, eventstore.MinPosition, eventstore.MaxPosition) {
				require.NoError(b, err)
				amount, err := decodeBody(ev)
				require.NoError(b, err)
				rows[p] = append(rows[p], benchRow{ev.Stream.ID, amount})
			}
		}
		pool := w.newPool(b, benchPartitions)
		for range b.N {
			table := testenv.Unique("cw")
			w.createReadModel(b, table)
			q := unnestSQL(table)
			b.StartTimer()
			runLoops(b, benchPartitions, func(ctx context.Context, partitions []int) error {
				for _, p := range partitions {
					for rs := rows[p]; len(rs) > 0; {
						k := min(1000, len(rs))
						f := newFold(k)
						for _, r := range rs[:k] {
							f.add(r.agg, r.amount)
						}
						if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
							_, err := tx.Exec(ctx, q, f.aggs, f.counts, f.sums)
							return err
						}); err != nil {
							return err
						}
						rs = rs[k:]
					}
				}
				return nil
			})
			b.StopTimer()
			check(b, pool, table)
		}
		b.ReportMetric(float64(b.N*events)/b.Elapsed().Seconds(), "events/s")
	})
}
