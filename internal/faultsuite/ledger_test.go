package faultsuite

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/projection"
)

// ledger is the suite's read model: per aggregate, how many events were
// applied and the last version; per event, that it was applied, where and
// when. It refuses an event that is not its aggregate's next version (an
// event out of order, applied twice, or applied over a version it holds
// from an event the log lost) with a permanent error, and records the
// refusal: every scenario asserts there is none.
type ledger struct {
	pool *pgxpool.Pool

	mu         sync.Mutex
	violations map[string]string // event ID -> why it was refused
}

func newLedger(t *testing.T, ctx context.Context, pool *pgxpool.Pool) *ledger {
	t.Helper()
	_, err := pool.Exec(ctx, `
		CREATE TABLE ledger (agg text PRIMARY KEY, n bigint NOT NULL, last_version bigint NOT NULL);
		CREATE TABLE applied (event_id uuid PRIMARY KEY, agg text NOT NULL, version bigint NOT NULL,
			part int NOT NULL, pos text NOT NULL, op text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`)
	require.NoError(t, err)
	return &ledger{pool: pool, violations: map[string]string{}}
}

func (l *ledger) projection() projection.Projection {
	return projection.Projection{
		Name: projName, Categories: []string{category},
		Batch: projection.BatchHandlerFunc(l.apply),
		Reset: func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "TRUNCATE ledger, applied")
			return err
		},
	}
}

func (l *ledger) apply(ctx context.Context, tx pgx.Tx, evs []eventstore.Event) error {
	var ids []string
	seen := map[string]bool{}
	for _, ev := range evs {
		if !seen[ev.Stream.ID] {
			seen[ev.Stream.ID] = true
			ids = append(ids, ev.Stream.ID)
		}
	}
	last := map[string]int64{}
	rows, err := tx.Query(ctx, "SELECT agg, last_version FROM ledger WHERE agg = ANY($1) FOR UPDATE", ids)
	if err != nil {
		return err
	}
	for rows.Next() {
		var agg string
		var v int64
		if err := rows.Scan(&agg, &v); err != nil {
			rows.Close()
			return err
		}
		last[agg] = v
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	count := map[string]int64{}
	var eids, aggs, poss, ops []string
	var vers []int64
	var parts []int32
	for _, ev := range evs {
		if have := last[ev.Stream.ID]; have != int64(ev.Version)-1 {
			why := fmt.Sprintf("%s v%d at %s/%d %s: the ledger holds version %d", ev.Stream.ID, ev.Version, ev.Stream.Category, ev.Partition, ev.Position, have)
			l.mu.Lock()
			l.violations[ev.ID.String()] = why
			l.mu.Unlock()
			return projection.Permanent(fmt.Errorf("ledger: out of order: %s", why))
		}
		last[ev.Stream.ID] = int64(ev.Version)
		count[ev.Stream.ID]++
		eids = append(eids, ev.ID.String())
		aggs = append(aggs, ev.Stream.ID)
		vers = append(vers, int64(ev.Version))
		parts = append(parts, int32(ev.Partition))
		poss = append(poss, ev.Position.String())
		ops = append(ops, ev.Metadata["op"])
	}
	var la []string
	var ln, lv []int64
	for _, agg := range ids {
		la, ln, lv = append(la, agg), append(ln, count[agg]), append(lv, last[agg])
	}
	if _, err := tx.Exec(ctx, `INSERT INTO ledger (agg, n, last_version)
		SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])
		ON CONFLICT (agg) DO UPDATE SET n = ledger.n + excluded.n, last_version = excluded.last_version`, la, ln, lv); err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO applied (event_id, agg, version, part, pos, op)
		SELECT e::uuid, a, v, p, pos, op FROM unnest($1::text[], $2::text[], $3::bigint[], $4::int[], $5::text[], $6::text[]) AS u(e, a, v, p, pos, op)`,
		eids, aggs, vers, parts, poss, ops); err != nil {
		return fmt.Errorf("ledger: applied: %w", err)
	}
	return nil
}

// appliedEvent is one row of the applied table.
type appliedEvent struct {
	agg     string
	version int64
	part    int
	pos     string
	op      string
	at      time.Time
}

// appliedEvents returns every applied event by ID.
func (l *ledger) appliedEvents(t testing.TB, ctx context.Context) map[string]appliedEvent {
	t.Helper()
	out := map[string]appliedEvent{}
	rows, err := l.pool.Query(ctx, "SELECT event_id::text, agg, version, part, pos, op, at FROM applied")
	require.NoError(t, err)
	defer rows.Close()
	for rows.Next() {
		var id string
		var a appliedEvent
		require.NoError(t, rows.Scan(&id, &a.agg, &a.version, &a.part, &a.pos, &a.op, &a.at))
		out[id] = a
	}
	require.NoError(t, rows.Err())
	return out
}

// count returns how many events the ledger has applied.
func (l *ledger) count(t testing.TB, ctx context.Context) int64 {
	t.Helper()
	var n int64
	require.NoError(t, l.pool.QueryRow(ctx, "SELECT count(*) FROM applied").Scan(&n))
	return n
}

func (l *ledger) violationCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.violations)
}

func (l *ledger) violationList() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.violations))
	for _, v := range l.violations {
		out = append(out, v)
		if len(out) == 10 {
			break
		}
	}
	return out
}
