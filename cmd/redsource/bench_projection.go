package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/rueidis"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/projection"
)

// benchLog is a pre-appended log of one category that projection
// workloads read, with what a correct read model of it holds.
type benchLog struct {
	store      *eventstore.Store
	category   string
	events     int64
	aggregates int64
	total      int64        // sum of the amounts
	rows       [][]benchRow // per partition: (aggregate, amount), in the order appended
}

type benchRow struct {
	agg    string
	amount int64
}

// prStore is the store of the projection and rebuild logs: one namespace,
// as a toolkit schema serves one namespace.
func (b *bench) prStore() (*eventstore.Store, error) {
	return eventstore.New(b.wc, eventstore.Config{Namespace: b.ns + ":pr", Partitions: benchPartitions, Logger: discardLogger()})
}

// prepareProjection appends --events events over 10,000 aggregates, one
// event per append, round after round (aggregate a's r-th event is event
// r·10,000 + a), by 32 writers, so that a batch holds mostly distinct
// aggregates as in a live system.
func (b *bench) prepareProjection(ctx context.Context) ([]benchMeasurement, error) {
	store, err := b.prStore()
	if err != nil {
		return nil, err
	}
	n := b.o.events
	aggs := min(n, benchAggregates)
	l := &benchLog{store: store, category: "proj", events: int64(n), aggregates: int64(aggs), rows: make([][]benchRow, benchPartitions)}
	for i := range n {
		a, r := i%aggs, i/aggs
		id := "acc-" + strconv.Itoa(a)
		p := store.Partition(eventstore.StreamID{Category: l.category, ID: id})
		l.rows[p] = append(l.rows[p], benchRow{id, benchAmount(a, r)})
		l.total += benchAmount(a, r)
	}
	b.progressf("bench: setup: appending %s events for the projection", formatCount(int64(n)))
	const writers = 32
	err = b.writers(ctx, writers, func(ctx context.Context, w int) error {
		for i := w; i < n; i += writers {
			a, r := i%aggs, i/aggs
			st := eventstore.StreamID{Category: l.category, ID: "acc-" + strconv.Itoa(a)}
			if _, err := store.Append(ctx, st, eventstore.Any, eventstore.EventData{Type: "Deposited", Data: benchBody(benchAmount(a, r))}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	read := b.result("projection", "xreadgroup-xack", kindCeiling, "raw XREADGROUP COUNT 500 + XACK", benchReadBatch, benchPartitions, 0)
	write := b.result("projection", "pgx-unnest", kindCeiling, "raw pgx unnest upsert, 500-event folds", benchReadBatch, benchPartitions, 0)
	plan := []benchMeasurement{
		{read, func(ctx context.Context) (benchSample, error) { return b.readCeiling(ctx, l) }},
		{write, func(ctx context.Context) (benchSample, error) { return b.writeCeiling(ctx, l, benchReadBatch) }},
		{b.result("projection", "runner-batch", kindRedsource, "Runner, batch handler (unnest)", benchReadBatch, benchPartitions, 0, read.ID, write.ID),
			func(ctx context.Context) (benchSample, error) { return b.runner(ctx, l, true) }},
		{b.result("projection", "runner-event", kindRedsource, "Runner, per-event handler (upsert)", benchReadBatch, benchPartitions, 0, read.ID, write.ID),
			func(ctx context.Context) (benchSample, error) { return b.runner(ctx, l, false) }},
	}
	if b.o.peer != "" {
		plan = append(plan, benchMeasurement{b.result("peer", "watermill-subscribe", kindPeer, "Watermill subscribe + ack", 1, benchPartitions, 0, read.ID),
			func(ctx context.Context) (benchSample, error) { return b.peerSubscribe(ctx) }})
	}
	return plan, nil
}

// prepareRebuild appends --rebuild-events events, 10 per aggregate in one
// append each, by 64 writers.
func (b *bench) prepareRebuild(ctx context.Context) ([]benchMeasurement, error) {
	store, err := b.prStore()
	if err != nil {
		return nil, err
	}
	const perAgg = 10
	aggs := b.o.rebuildEvents / perAgg
	l := &benchLog{store: store, category: "rebuild", events: int64(aggs * perAgg), aggregates: int64(aggs), rows: make([][]benchRow, benchPartitions)}
	for a := range aggs {
		id := "acc-" + strconv.Itoa(a)
		p := store.Partition(eventstore.StreamID{Category: l.category, ID: id})
		for r := range perAgg {
			l.rows[p] = append(l.rows[p], benchRow{id, benchAmount(a, r)})
			l.total += benchAmount(a, r)
		}
	}
	b.progressf("bench: setup: appending %s events for the rebuild", formatCount(l.events))
	start := time.Now()
	var next atomic.Int64
	err = b.writers(ctx, 64, func(ctx context.Context, _ int) error {
		batch := make([]eventstore.EventData, perAgg)
		for a := int(next.Add(1) - 1); a < aggs; a = int(next.Add(1) - 1) {
			for r := range batch {
				batch[r] = eventstore.EventData{Type: "Deposited", Data: benchBody(benchAmount(a, r))}
			}
			st := eventstore.StreamID{Category: l.category, ID: "acc-" + strconv.Itoa(a)}
			if _, err := store.Append(ctx, st, eventstore.NoStream, batch...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	b.progressf("bench: setup: appended in %s", formatDuration(time.Since(start)))
	read := b.result("rebuild", "rebuild-read", kindCeiling, "raw XREADGROUP COUNT 500 + XACK", benchReadBatch, benchPartitions, 0)
	write := b.result("rebuild", "rebuild-write", kindCeiling, "raw pgx unnest upsert, 1,000-event folds", benchRebuildRows, benchPartitions, 0)
	return []benchMeasurement{
		{read, func(ctx context.Context) (benchSample, error) { return b.readCeiling(ctx, l) }},
		{write, func(ctx context.Context) (benchSample, error) { return b.writeCeiling(ctx, l, benchRebuildRows) }},
		{b.result("rebuild", "rebuild", kindRedsource, "projection.Rebuild, batch handler (unnest)", benchRebuildRows, benchPartitions, 0, read.ID, write.ID),
			func(ctx context.Context) (benchSample, error) { return b.rebuild(ctx, l) }},
	}, nil
}

// writers runs n goroutines and returns the first error.
func (b *bench) writers(ctx context.Context, n int, fn func(ctx context.Context, w int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for w := range n {
		wg.Go(func() {
			if err := fn(ctx, w); err != nil {
				once.Do(func() { first = err; cancel() })
			}
		})
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

func (b *bench) unique(prefix string) string {
	b.seq++
	return prefix + strconv.Itoa(b.seq)
}

// readCeiling reads the whole log once through a new consumer group with
// raw XREADGROUP COUNT 500 (no BLOCK) and one XACK per batch, one
// goroutine per partition, entries parsed by rueidis but not decoded.
func (b *bench) readCeiling(ctx context.Context, l *benchLog) (benchSample, error) {
	c := b.wc
	group := b.unique("g")
	keys := make([]string, benchPartitions)
	for p := range keys {
		keys[p] = l.store.LogKey(l.category, p)
		if err := c.Do(ctx, c.B().XgroupCreate().Key(keys[p]).Group(group).Id("0").Build()).Error(); err != nil {
			return benchSample{}, err
		}
	}
	return b.once(ctx, func(ctx context.Context) (int64, error) {
		var read atomic.Int64
		err := b.writers(ctx, benchPartitions, func(ctx context.Context, p int) error {
			key := keys[p]
			for {
				res, err := c.Do(ctx, c.B().Xreadgroup().Group(group, "c").Count(benchReadBatch).Streams().Key(key).Id(">").Build()).AsXRead()
				if rueidis.IsRedisNil(err) || (err == nil && len(res[key]) == 0) {
					return nil
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
		})
		if err == nil && read.Load() != l.events {
			err = errShort("XREADGROUP", read.Load(), l.events)
		}
		return read.Load(), err
	})
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
// only once per statement.
type fold struct {
	index        map[string]int
	aggs         []string
	counts, sums []int64
}

func newFold(n int) *fold { return &fold{index: make(map[string]int, n)} }

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

// readModel creates a fresh read-model table in the bench's schema.
func (b *bench) readModel(ctx context.Context) (string, error) {
	table := b.unique("rm")
	_, err := b.pool.Exec(ctx, "CREATE TABLE "+table+" (agg text PRIMARY KEY, n bigint NOT NULL, total bigint NOT NULL)")
	return table, err
}

// checkReadModel says whether table holds every event of l exactly once,
// and drops it.
func (b *bench) checkReadModel(ctx context.Context, table string, l *benchLog) error {
	var aggs, n, total int64
	if err := b.pool.QueryRow(ctx, "SELECT count(*), coalesce(sum(n), 0), coalesce(sum(total), 0) FROM "+table).Scan(&aggs, &n, &total); err != nil {
		return err
	}
	if got, want := [3]int64{aggs, n, total}, [3]int64{l.aggregates, l.events, l.total}; got != want {
		return fmt.Errorf("read model %s holds (aggregates, events, sum) %v, want %v", table, got, want)
	}
	_, err := b.pool.Exec(ctx, "DROP TABLE "+table)
	return err
}

// writeCeiling writes the log's rows with no Redis and no decoding: each
// of 8 goroutines folds its partition's rows chunk by chunk and writes
// each fold with one unnest upsert in its own transaction.
func (b *bench) writeCeiling(ctx context.Context, l *benchLog, chunk int) (benchSample, error) {
	table, err := b.readModel(ctx)
	if err != nil {
		return benchSample{}, err
	}
	q := unnestSQL(table)
	s, err := b.once(ctx, func(ctx context.Context) (int64, error) {
		err := b.writers(ctx, benchPartitions, func(ctx context.Context, p int) error {
			for rs := l.rows[p]; len(rs) > 0; {
				k := min(chunk, len(rs))
				f := newFold(k)
				for _, r := range rs[:k] {
					f.add(r.agg, r.amount)
				}
				if err := inTx(ctx, b.pool, func(tx pgx.Tx) error {
					_, err := tx.Exec(ctx, q, f.aggs, f.counts, f.sums)
					return err
				}); err != nil {
					return err
				}
				rs = rs[k:]
			}
			return nil
		})
		return l.events, err
	})
	if err != nil {
		return s, err
	}
	// PostgreSQL only: Redis did nothing for these events.
	s.RedisCPUMicrosPerEvent = nil
	return s, b.checkReadModel(ctx, table, l)
}

func decodeAmount(ev eventstore.Event) (int64, error) {
	var body benchDeposited
	if err := json.Unmarshal(ev.Data, &body); err != nil {
		return 0, projection.Permanent(err)
	}
	return body.Amount, nil
}

// handlers returns the projection's handler: one upsert per event, or a
// fold per aggregate written with one unnest statement per batch.
func benchProjection(name, table, category string, batch bool) projection.Projection {
	p := projection.Projection{Name: name, Categories: []string{category},
		Reset: func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "TRUNCATE "+table)
			return err
		}}
	if !batch {
		q := upsertSQL(table)
		p.Handler = projection.HandlerFunc(func(ctx context.Context, tx pgx.Tx, ev eventstore.Event) error {
			amount, err := decodeAmount(ev)
			if err != nil {
				return err
			}
			_, err = tx.Exec(ctx, q, ev.Stream.ID, amount)
			return err
		})
		return p
	}
	q := unnestSQL(table)
	p.Batch = projection.BatchHandlerFunc(func(ctx context.Context, tx pgx.Tx, evs []eventstore.Event) error {
		f := newFold(len(evs))
		for _, ev := range evs {
			amount, err := decodeAmount(ev)
			if err != nil {
				return err
			}
			f.add(ev.Stream.ID, amount)
		}
		_, err := tx.Exec(ctx, q, f.aggs, f.counts, f.sums)
		return err
	})
	return p
}

// runner runs a new projection with one Runner over the log, timed from
// Run until the Applied hook (after each COMMIT) has counted every event;
// the read model is checked after.
func (b *bench) runner(ctx context.Context, l *benchLog, batch bool) (benchSample, error) {
	table, err := b.readModel(ctx)
	if err != nil {
		return benchSample{}, err
	}
	name := table
	var applied atomic.Int64
	done := make(chan struct{})
	var doneOnce sync.Once
	r, err := projection.NewRunner(projection.Config{
		Store: l.store, DB: b.pool, Schema: b.schema, WorkerID: name + "-w",
		BatchSize: benchReadBatch, Block: 50 * time.Millisecond, Logger: discardLogger(),
		Hooks: &projection.Hooks{Applied: func(_, _ string, _, events int, _ time.Duration) {
			if applied.Add(int64(events)) >= l.events {
				doneOnce.Do(func() { close(done) })
			}
		}},
	}, benchProjection(name, table, l.category, batch))
	if err != nil {
		return benchSample{}, err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	returned := false
	s, err := b.once(ctx, func(ctx context.Context) (int64, error) {
		go func() { errc <- r.Run(rctx) }()
		select {
		case <-done:
			// Timed to the last commit; Run handing its partitions back
			// is not.
			return applied.Load(), nil
		case err := <-errc:
			returned = true
			if err == nil {
				err = fmt.Errorf("the runner stopped after %d of %d events", applied.Load(), l.events)
			}
			return applied.Load(), err
		case <-ctx.Done():
			return applied.Load(), ctx.Err()
		}
	})
	cancel()
	if !returned {
		if rerr := <-errc; rerr != nil && err == nil {
			err = rerr
		}
	}
	if err != nil {
		return s, err
	}
	return s, b.checkReadModel(ctx, table, l)
}

// rebuild: projection.Rebuild of a new projection over the log, from the
// reset to the last checkpoint, BatchSize 1,000, every partition at once.
func (b *bench) rebuild(ctx context.Context, l *benchLog) (benchSample, error) {
	table, err := b.readModel(ctx)
	if err != nil {
		return benchSample{}, err
	}
	cfg := projection.Config{Store: l.store, DB: b.pool, Schema: b.schema, BatchSize: benchRebuildRows, Block: 50 * time.Millisecond, Logger: discardLogger()}
	var last projection.Progress
	s, err := b.once(ctx, func(ctx context.Context) (int64, error) {
		err := projection.Rebuild(ctx, cfg, benchProjection(table, table, l.category, true), projection.RebuildOptions{Progress: func(p projection.Progress) { last = p }})
		return last.Done, err
	})
	if err != nil {
		return s, err
	}
	if last.Done != l.events {
		return s, errShort("rebuild", last.Done, l.events)
	}
	return s, b.checkReadModel(ctx, table, l)
}
