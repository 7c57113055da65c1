package projection_test

// Projection throughput end to end, with the raw Redis and PostgreSQL
// ceilings measured in the same run (docs/performance.md, "Projections"):
//
//	go test -run '^$' -bench . -benchtime 1x ./projection/
//
// Every benchmark processes a fixed log once per iteration: 50,000 events
// with 300-byte JSON payloads over 10,000 aggregates (five rounds of one
// event each) in 8 partitions (BenchmarkRunnerOnePartition: in one),
// appended before the timer starts. Hence -benchtime 1x; a larger b.N
// processes the same log again with a fresh projection, consumer group or
// table per iteration, so events/s stays comparable. One run of the file
// takes about 30 seconds. On a shared machine, repeat whole runs rather
// than use -count, which repeats one benchmark back to back: ratios
// between benchmarks are only meaningful within one run.
//
// "workers" is the number of Runners (each with its own WorkerID and pool,
// as separate processes would be); a Runner runs one goroutine per owned
// partition, so both 1 and 4 Runners apply the 8 partitions 8 at a time.
// "goroutines" in the ceilings is the number of raw loops; each takes the
// partitions p with p mod goroutines == its index, one after another.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/keys"
	"github.com/redsource/redsource/internal/pgschema"
	"github.com/redsource/redsource/internal/testenv"
	"github.com/redsource/redsource/projection"
)

const (
	benchAggregates = 10000
	benchRounds     = 5
	benchEvents     = benchAggregates * benchRounds
	benchPartitions = 8
	benchBatch      = 500
	benchCategory   = "account"
)

// benchAmount is the amount of aggregate a's event in round r.
func benchAmount(a, r int) int64 { return int64((a*7+r*13)%1000 + 1) }

func benchAggregate(a int) string { return fmt.Sprintf("acc-%05d", a) }

// benchPayload returns a 300-byte JSON body carrying amount.
func benchPayload(amount int64) []byte {
	head := `{"amount":` + strconv.FormatInt(amount, 10) + `,"note":"`
	return []byte(head + strings.Repeat("n", 300-len(head)-2) + `"}`)
}

type benchBody struct {
	Amount int64  `json:"amount"`
	Note   string `json:"note"`
}

// benchWorld is one benchmark's isolated Redis namespace and PostgreSQL
// schema (toolkit tables and read models both live in it).
type benchWorld struct {
	store  *eventstore.Store
	pool   *pgxpool.Pool
	schema string
	total  int64 // sum of every event's amount
}

func newBenchWorld(b *testing.B, partitions int) *benchWorld {
	b.Helper()
	ctx := context.Background()
	c := testenv.Redis(b)
	s, err := eventstore.New(c, eventstore.Config{Namespace: testenv.Namespace(b, c), Partitions: partitions})
	require.NoError(b, err)
	pool, schema := testenv.Postgres(b)
	// Create the toolkit's tables now, so that no run times migrations.
	require.NoError(b, pgschema.Migrate(ctx, pool, schema))
	w := &benchWorld{store: s, pool: pool, schema: schema}
	for a := range benchAggregates {
		for r := range benchRounds {
			w.total += benchAmount(a, r)
		}
	}
	return w
}

// appendLog appends the benchmark log: round by round, one event per
// append, 32 writers each owning every 32nd aggregate, so that a batch
// holds mostly distinct aggregates (as in a live system) rather than runs
// of one aggregate's events that a fold would collapse.
func (w *benchWorld) appendLog(b *testing.B) {
	b.Helper()
	ctx := context.Background()
	const writers = 32
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for g := range writers {
		wg.Go(func() {
			for r := range benchRounds {
				for a := g; a < benchAggregates; a += writers {
					st := eventstore.StreamID{Category: benchCategory, ID: benchAggregate(a)}
					ev := eventstore.EventData{Type: "Deposited", Data: benchPayload(benchAmount(a, r))}
					if _, err := w.store.Append(ctx, st, eventstore.Exact(uint64(r)), ev); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	require.NoError(b, <-errs)
}

// newPool returns a pool on the world's schema, closed when b ends.
func (w *benchWorld) newPool(b *testing.B, maxConns int32) *pgxpool.Pool {
	b.Helper()
	cfg, err := pgxpool.ParseConfig(testenv.DatabaseURL())
	require.NoError(b, err)
	cfg.ConnConfig.RuntimeParams["search_path"] = w.schema
	cfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(b, err)
	b.Cleanup(pool.Close)
	return pool
}

// createReadModel creates a fresh read-model table: per aggregate, the
// number of events and the sum of their amounts.
func (w *benchWorld) createReadModel(b *testing.B, table string) {
	b.Helper()
	_, err := w.pool.Exec(context.Background(),
		"CREATE TABLE "+table+" (agg text PRIMARY KEY, n bigint NOT NULL, total bigint NOT NULL)")
	require.NoError(b, err)
}

// checkReadModel asserts that table holds every event exactly once.
func (w *benchWorld) checkReadModel(b *testing.B, table string) {
	b.Helper()
	var aggs, n, total int64
	require.NoError(b, w.pool.QueryRow(context.Background(),
		"SELECT count(*), coalesce(sum(n), 0), coalesce(sum(total), 0) FROM "+table).Scan(&aggs, &n, &total))
	require.Equal(b, [3]int64{benchAggregates, benchEvents, w.total}, [3]int64{aggs, n, total},
		"read model %s: aggregates, events, total", table)
}

func upsertSQL(table string) string {
	return "INSERT INTO " + table + " (agg, n, total) VALUES ($1, 1, $2)" +
		" ON CONFLICT (agg) DO UPDATE SET n = " + table + ".n + 1, total = " + table + ".total + EXCLUDED.total"
}

func unnestSQL(table string) string {
	return "INSERT INTO " + table + " (agg, n, total) SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])" +
		" ON CONFLICT (agg) DO UPDATE SET n = " + table + ".n + EXCLUDED.n, total = " + table + ".total + EXCLUDED.total"
}

// fold sums a batch per aggregate: ON CONFLICT DO UPDATE may touch a row
// only once per statement, and fewer rows are cheaper.
type fold struct {
	index        map[string]int
	aggs         []string
	counts, sums []int64
}

func newFold(n int) *fold {
	return &fold{index: make(map[string]int, n), aggs: make([]string, 0, n), counts: make([]int64, 0, n), sums: make([]int64, 0, n)}
}

func (f *fold) add(agg string, amount int64) {
	i, ok := f.index[agg]
	if !ok {
		i = len(f.aggs)
		f.index[agg] = i
		f.aggs, f.counts, f.sums = append(f.aggs, agg), append(f.counts, 0), append(f.sums, 0)
	}
	f.counts[i]++
	f.sums[i] += amount
}

func decodeBody(ev eventstore.Event) (int64, error) {
	var body benchBody
	if err := json.Unmarshal(ev.Data, &body); err != nil {
		return 0, projection.Permanent(err)
	}
	return body.Amount, nil
}

// benchHandlers are the handler shapes measured end to end: one upsert
// per event (a round trip each), the same upserts sent as one pgx.Batch,
// and a fold per aggregate written with one unnest statement.
var benchHandlers = []struct {
	name string
	make func(table string) projection.Projection
}{
	{"event", func(table string) projection.Projection {
		q := upsertSQL(table)
		return projection.Projection{Handler: projection.HandlerFunc(func(ctx context.Context, tx pgx.Tx, ev eventstore.Event) error {
			amount, err := decodeBody(ev)
			if err != nil {
				return err
			}
			_, err = tx.Exec(ctx, q, ev.Stream.ID, amount)
			return err
		})}
	}},
	{"pgx-batch", func(table string) projection.Projection {
		q := upsertSQL(table)
		return projection.Projection{Batch: projection.BatchHandlerFunc(func(ctx context.Context, tx pgx.Tx, evs []eventstore.Event) error {
			var batch pgx.Batch
			for _, ev := range evs {
				amount, err := decodeBody(ev)
				if err != nil {
					return err
				}
				batch.Queue(q, ev.Stream.ID, amount)
			}
			return tx.SendBatch(ctx, &batch).Close()
		})}
	}},
	{"unnest", func(table string) projection.Projection {
		q := unnestSQL(table)
		return projection.Projection{Batch: projection.BatchHandlerFunc(func(ctx context.Context, tx pgx.Tx, evs []eventstore.Event) error {
			f := newFold(len(evs))
			for _, ev := range evs {
				amount, err := decodeBody(ev)
				if err != nil {
					return err
				}
				f.add(ev.Stream.ID, amount)
			}
			_, err := tx.Exec(ctx, q, f.aggs, f.counts, f.sums)
			return err
		})}
	}},
}

// BenchmarkRunner: Runners started on the pre-appended log, timed from
// Run until the Applied hook has counted every event (the hook fires after
// each batch's COMMIT; the read model and the checkpoints are checked
// after the timer stops). BatchSize 500, Block 50ms, other settings
// default.
func BenchmarkRunner(b *testing.B) {
	w := newBenchWorld(b, benchPartitions)
	w.appendLog(b)
	for _, workers := range []int{1, 4} {
		for _, h := range benchHandlers {
			b.Run(fmt.Sprintf("workers=%d/handler=%s", workers, h.name), func(b *testing.B) {
				benchRunner(b, w, workers, h.make)
			})
		}
	}
}

// BenchmarkRunnerOnePartition: the same log in a single partition, so one
// Runner applies it through one pipeline, batch after batch, with nothing
// overlapping: what one hot partition gets. The per-event handler is left
// out (about ten seconds per run).
func BenchmarkRunnerOnePartition(b *testing.B) {
	w := newBenchWorld(b, 1)
	w.appendLog(b)
	for _, h := range benchHandlers {
		if h.name == "event" {
			continue
		}
		b.Run("handler="+h.name, func(b *testing.B) {
			benchRunner(b, w, 1, h.make)
		})
	}
}

func benchRunner(b *testing.B, w *benchWorld, workers int, newProjection func(string) projection.Projection) {
	b.StopTimer()
	b.ResetTimer()
	pools := make([]*pgxpool.Pool, workers)
	for i := range pools {
		pools[i] = w.newPool(b, benchPartitions)
	}
	var batches, inTx int64
	for range b.N {
		name := testenv.Unique("p")
		w.createReadModel(b, name)
		n, d := w.runOnce(b, name, pools, newProjection)
		batches, inTx = batches+n, inTx+int64(d)
	}
	b.ReportMetric(float64(b.N*benchEvents)/b.Elapsed().Seconds(), "events/s")
	// How long one batch's transaction takes, BEGIN to COMMIT (the
	// Applied hook's duration): with one partition, the rest of the time
	// per batch is reading, decoding and acknowledging.
	b.ReportMetric(float64(inTx)/float64(batches)/1e6, "tx-ms/batch")
}

// runOnce runs one Runner per pool on a new projection until every event
// is applied. Only that is timed: it is called, and returns, with the
// timer stopped and every Runner stopped. It returns the number of batches
// and their total time in transactions.
func (w *benchWorld) runOnce(b *testing.B, name string, pools []*pgxpool.Pool, newProjection func(string) projection.Projection) (batches int64, inTx time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	var (
		wg      sync.WaitGroup
		applied atomic.Int64
		done    = make(chan struct{})
		once    sync.Once
		errs    = make(chan error, len(pools))
		shares  = make([]atomic.Int64, len(pools))
		nBatch  atomic.Int64
		txTime  atomic.Int64
	)
	defer func() {
		b.StopTimer()
		cancel()
		wg.Wait()
	}()

	runners := make([]*projection.Runner, len(pools))
	for i, pool := range pools {
		p := newProjection(name)
		p.Name, p.Categories = name, []string{benchCategory}
		r, err := projection.NewRunner(projection.Config{
			Store: w.store, DB: pool, Schema: w.schema,
			WorkerID:  fmt.Sprintf("%s-w%d", name, i),
			BatchSize: benchBatch,
			Block:     50 * time.Millisecond,
			Logger:    slog.New(slog.DiscardHandler),
			Hooks: &projection.Hooks{Applied: func(_, _ string, _, events int, took time.Duration) {
				nBatch.Add(1)
				txTime.Add(int64(took))
				shares[i].Add(int64(events))
				if applied.Add(int64(events)) >= benchEvents {
					once.Do(func() { close(done) })
				}
			}},
		}, p)
		require.NoError(b, err)
		runners[i] = r
	}
	if len(pools) > 1 {
		w.announceWorkers(b, name, runners)
	}
	b.StartTimer()

	for _, r := range runners {
		wg.Go(func() {
			if err := r.Run(ctx); err != nil {
				errs <- err
			}
		})
	}
	select {
	case <-done:
	case err := <-errs:
		b.Fatalf("runner: %v", err)
	case <-time.After(5 * time.Minute):
		b.Fatalf("runners applied %d of %d events in 5 minutes", applied.Load(), benchEvents)
	}
	b.StopTimer()
	cancel()
	wg.Wait()
	close(errs)
	require.NoError(b, <-errs)

	w.checkReadModel(b, name)
	var cp int64
	require.NoError(b, w.pool.QueryRow(context.Background(),
		"SELECT sum(applied) FROM "+pgschema.Quote(w.schema)+".checkpoints WHERE projection = $1", name).Scan(&cp))
	require.Equal(b, int64(benchEvents), cp, "checkpoints' applied")
	for i := range shares {
		require.NotZero(b, shares[i].Load(), "worker %d applied nothing: the partitions were not shared", i)
	}
	return nBatch.Load(), time.Duration(txTime.Load())
}

// announceWorkers records every runner as live before any starts, as in
// a deployment whose workers are up when the events arrive. Without it the
// first runner to beat counts one live worker, takes all 8 partitions and
// gives some back only at its next balance, a third of a LeaseTTL later
// (about when a run ends).
func (w *benchWorld) announceWorkers(b *testing.B, name string, runners []*projection.Runner) {
	b.Helper()
	ctx := context.Background()
	c := w.store.Client()
	now, err := c.Do(ctx, c.B().Time().Build()).AsStrSlice()
	require.NoError(b, err)
	sec, err := strconv.ParseInt(now[0], 10, 64)
	require.NoError(b, err)
	// The members and scores heartbeat.lua writes: worker ID, server ms +
	// the default 10s LeaseTTL. The shares check in runOnce fails if this
	// stops matching the runner's own bookkeeping.
	expiry := float64(sec*1000 + 10_000)
	cmd := c.B().Zadd().Key(keys.Layout{NS: w.store.Namespace()}.Projection(name, "workers")).ScoreMember()
	for _, r := range runners {
		cmd = cmd.ScoreMember(expiry, r.WorkerID())
	}
	require.NoError(b, c.Do(ctx, cmd.Build()).Error())
}

// partitionsOf returns the partitions the g-th of n loops takes.
func partitionsOf(g, n int) []int {
	var ps []int
	for p := g; p < benchPartitions; p += n {
		ps = append(ps, p)
	}
	return ps
}

// runLoops runs n loops over the partitions and fails b on any error.
func runLoops(b *testing.B, n int, loop func(ctx context.Context, partitions []int) error) {
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for g := range n {
		wg.Go(func() {
			if err := loop(ctx, partitionsOf(g, n)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	require.NoError(b, <-errs)
}

var ceilingGoroutines = []int{1, 4, 8}

// BenchmarkCeilingXReadGroup: raw XREADGROUP COUNT 500 (no BLOCK) and one
// XACK per batch over the same log, read once per iteration with a new
// consumer group, entries parsed by rueidis (AsXRead) but not decoded.
func BenchmarkCeilingXReadGroup(b *testing.B) {
	w := newBenchWorld(b, benchPartitions)
	w.appendLog(b)
	for _, n := range ceilingGoroutines {
		b.Run("goroutines="+strconv.Itoa(n), func(b *testing.B) {
			b.StopTimer()
			b.ResetTimer()
			var read int64
			for range b.N {
				b.StopTimer()
				group := newCeilingGroup(b, w.store)
				b.StartTimer()
				read += readWithGroup(b, w.store, group, n)
			}
			b.StopTimer()
			require.Equal(b, int64(b.N*benchEvents), read)
			b.ReportMetric(float64(read)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// newCeilingGroup creates a consumer group at 0 on every partition log.
func newCeilingGroup(b *testing.B, s *eventstore.Store) string {
	c := s.Client()
	group := testenv.Unique("g")
	for p := range benchPartitions {
		require.NoError(b, c.Do(context.Background(), c.B().XgroupCreate().Key(s.LogKey(benchCategory, p)).Group(group).Id("0").Build()).Error())
	}
	return group
}

// readWithGroup reads every partition log once through group with raw
// XREADGROUP COUNT 500 (no BLOCK) and one XACK per batch, n loops at a
// time, entries parsed by rueidis (AsXRead) but not decoded; it returns
// how many entries it read.
func readWithGroup(b *testing.B, s *eventstore.Store, group string, n int) int64 {
	c := s.Client()
	var read atomic.Int64
	runLoops(b, n, func(ctx context.Context, partitions []int) error {
		for _, p := range partitions {
			key := s.LogKey(benchCategory, p)
			for {
				res, err := c.Do(ctx, c.B().Xreadgroup().Group(group, "c").Count(benchBatch).Streams().Key(key).Id(">").Build()).AsXRead()
				if rueidis.IsRedisNil(err) || (err == nil && len(res[key]) == 0) {
					break
				}
				if err != nil {
					return err
				}
				ids := make([]string, len(res[key]))
				for i, e := range res[key] {
					ids[i] = e.ID
				}
				if err := c.Do(ctx, c.B().Xack().Key(key).Group(group).Id(ids...).Build()).Error(); err != nil {
					return err
				}
				read.Add(int64(len(ids)))
			}
		}
		return nil
	})
	return read.Load()
}

type benchRow struct {
	agg    string
	amount int64
}

// benchRows returns the log's (aggregate, amount) pairs per partition, in
// the order of the log.
func benchRows() [][]benchRow {
	rows := make([][]benchRow, benchPartitions)
	for r := range benchRounds {
		for a := range benchAggregates {
			id := benchAggregate(a)
			p := keys.Partition(id, benchPartitions)
			rows[p] = append(rows[p], benchRow{id, benchAmount(a, r)})
		}
	}
	return rows
}

// benchTables runs the PostgreSQL ceilings: one fresh table per iteration,
// written by n loops, each handing chunks of its partitions' rows to
// write.
func benchTables(b *testing.B, n, chunk int, write func(ctx context.Context, pool *pgxpool.Pool, table string, rows []benchRow) error) {
	b.StopTimer()
	b.ResetTimer()
	w := newBenchWorld(b, benchPartitions)
	pool := w.newPool(b, benchPartitions)
	rows := benchRows()
	for range b.N {
		table := testenv.Unique("c")
		w.createReadModel(b, table)
		b.StartTimer()
		runLoops(b, n, func(ctx context.Context, partitions []int) error {
			for _, p := range partitions {
				for rs := rows[p]; len(rs) > 0; {
					k := min(chunk, len(rs))
					if err := write(ctx, pool, table, rs[:k]); err != nil {
						return err
					}
					rs = rs[k:]
				}
			}
			return nil
		})
		b.StopTimer()
		w.checkReadModel(b, table)
	}
	b.ReportMetric(float64(b.N*benchEvents)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkCeilingPgxBatch: BEGIN, a pgx.Batch of 500 upserts (the
// per-event statement), COMMIT; no Redis, no decoding.
func BenchmarkCeilingPgxBatch(b *testing.B) {
	for _, n := range ceilingGoroutines {
		b.Run("goroutines="+strconv.Itoa(n), func(b *testing.B) {
			benchTables(b, n, benchBatch, func(ctx context.Context, pool *pgxpool.Pool, table string, rows []benchRow) error {
				q := upsertSQL(table)
				return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					var batch pgx.Batch
					for _, r := range rows {
						batch.Queue(q, r.agg, r.amount)
					}
					return tx.SendBatch(ctx, &batch).Close()
				})
			})
		})
	}
}

// BenchmarkCeilingUnnest: fold 500 or 1,000 events per aggregate and write
// them with one unnest upsert, committed on its own; no Redis, no
// decoding.
func BenchmarkCeilingUnnest(b *testing.B) {
	for _, rows := range []int{500, 1000} {
		for _, n := range ceilingGoroutines {
			b.Run(fmt.Sprintf("rows=%d/goroutines=%d", rows, n), func(b *testing.B) {
				benchTables(b, n, rows, func(ctx context.Context, pool *pgxpool.Pool, table string, rows []benchRow) error {
					f := newFold(len(rows))
					for _, r := range rows {
						f.add(r.agg, r.amount)
					}
					_, err := pool.Exec(ctx, unnestSQL(table), f.aggs, f.counts, f.sums)
					return err
				})
			})
		}
	}
}
