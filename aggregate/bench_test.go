package aggregate_test

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/aggregate"
	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/testenv"
	"github.com/redsource/redsource/snapshot"
)

// BenchmarkLoad loads a 1,000-event counter: from its events alone, and
// from a snapshot taken at version 1,000 (tail 0) or 900 (tail 100).
func BenchmarkLoad(b *testing.B) {
	const events = 1000
	stores := map[string]func(b *testing.B, store *eventstore.Store) snapshot.Store{
		"none":  nil,
		"redis": func(_ *testing.B, store *eventstore.Store) snapshot.Store { return snapshot.NewRedis(store) },
		"postgres": func(b *testing.B, store *eventstore.Store) snapshot.Store {
			pool, schema := testenv.Postgres(b)
			s, err := snapshot.NewPostgres(ctxT(b), pool, snapshot.PostgresConfig{Schema: schema, Namespace: store.Namespace()})
			require.NoError(b, err)
			return s
		},
	}
	for _, name := range []string{"none", "redis", "postgres"} {
		for _, tail := range []int{0, 100} {
			if name == "none" && tail > 0 {
				continue
			}
			b.Run(fmt.Sprintf("events=%d/snapshot=%s/tail=%d", events, name, tail), func(b *testing.B) {
				ctx, store := ctxT(b), newStore(b)
				cfg := counterConfig()
				if open := stores[name]; open != nil {
					cfg.Snapshots = aggregate.Snapshots[*counter]{Store: open(b, store), Every: uint64(events - tail), Marshal: counterSnapshots, Unmarshal: counterRestore}
				}
				repo := newRepo(b, store, cfg)
				// Appended raw, then one Update crosses the policy and
				// writes the snapshot at version events-tail.
				raw := make([]eventstore.EventData, events-tail-1)
				for i := range raw {
					raw[i] = eventstore.EventData{Type: "incremented", Data: []byte(`{"by":1}`)}
				}
				_, err := store.Append(ctx, repo.Stream("c"), eventstore.NoStream, raw...)
				require.NoError(b, err)
				for range tail + 1 {
					_, err = repo.Update(ctx, "c", (*counter).Increment)
					require.NoError(b, err)
				}

				b.ReportAllocs()
				for b.Loop() {
					c, err := repo.Load(ctx, "c")
					if err != nil || c.n != events {
						b.Fatalf("load: %v, n=%d", err, c.n)
					}
				}
				s := b.Elapsed().Seconds()
				b.ReportMetric(float64(b.N)/s, "loads/s")
				b.ReportMetric(float64(b.N*events)/s, "events/s")
			})
		}
	}
}

// BenchmarkUpdateParallel runs Updates from 64 goroutines on 1,024
// counters, with Redis snapshots every 100 events.
func BenchmarkUpdateParallel(b *testing.B) {
	const goroutines, aggregates = 64, 1024
	ctx, store := ctxT(b), newStore(b)
	cfg := counterConfig()
	cfg.MaxAttempts = 1000
	cfg.Snapshots = aggregate.Snapshots[*counter]{Store: snapshot.NewRedis(store), Every: 100, Marshal: counterSnapshots, Unmarshal: counterRestore}
	repo := newRepo(b, store, cfg)
	var decisions atomic.Int64
	var seed atomic.Uint64

	b.SetParallelism((goroutines + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(seed.Add(1), 1))
		for pb.Next() {
			id := strconv.Itoa(rng.IntN(aggregates))
			_, err := repo.Update(ctx, id, func(c *counter) error {
				decisions.Add(1)
				return c.Increment()
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	s := b.Elapsed().Seconds()
	b.ReportMetric(float64(b.N)/s, "updates/s")
	b.ReportMetric(float64(decisions.Load())/float64(b.N), "decisions/update")
}
