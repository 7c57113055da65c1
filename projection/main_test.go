package projection_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/testenv"
	"github.com/redsource/redsource/projection"
)

func TestMain(m *testing.M) {
	if os.Getenv("REDSOURCE_TEST_WORKER") == "1" {
		os.Exit(workerProcess())
	}
	testenv.VerifyTestMain(m)
}

// env is one test's world: its own Redis namespace and PostgreSQL schema
// (which holds both the toolkit's tables and the read model).
type env struct {
	ctx        context.Context
	store      *eventstore.Store
	pool       *pgxpool.Pool
	schema     string
	violations atomic.Int64
	skipped    sync.Map // "agg/version" of events an operator skipped
	applied    atomic.Int64
}

func newEnv(t *testing.T, partitions int) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	c := testenv.Redis(t)
	s, err := eventstore.New(c, eventstore.Config{Namespace: testenv.Namespace(t, c), Partitions: partitions})
	require.NoError(t, err)
	pool, schema := testenv.Postgres(t)
	return &env{ctx: ctx, store: s, pool: pool, schema: schema}
}

func (e *env) config(mutate ...func(*projection.Config)) projection.Config {
	cfg := projection.Config{
		Store: e.store, DB: e.pool, Schema: e.schema,
		LeaseTTL: time.Second, Block: 100 * time.Millisecond, Backoff: 5 * time.Millisecond,
		CheckInterval: 200 * time.Millisecond, MaxAttempts: 3,
	}
	for _, m := range mutate {
		m(&cfg)
	}
	return cfg
}

// ledgerSQL creates a read model that counts each aggregate's events and
// refuses (and records) any event that is not the next version: an
// ordering violation or a double apply would show.
func ledgerSQL(table string) string {
	return fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (agg text PRIMARY KEY, n bigint NOT NULL, last_version bigint NOT NULL, total bigint NOT NULL)`, table)
}

// ledger is a per-event projection writing to table.
func (e *env) ledger(t *testing.T, name, table string, fail func(ev eventstore.Event) error) projection.Projection {
	t.Helper()
	_, err := e.pool.Exec(e.ctx, ledgerSQL(table))
	require.NoError(t, err)
	return projection.Projection{
		Name: name, Categories: []string{"acc"},
		Handler: projection.HandlerFunc(func(ctx context.Context, tx pgx.Tx, ev eventstore.Event) error {
			if fail != nil {
				if err := fail(ev); err != nil {
					return err
				}
			}
			return e.applyLedger(ctx, tx, table, ev)
		}),
	}
}

func (e *env) applyLedger(ctx context.Context, tx pgx.Tx, table string, ev eventstore.Event) error {
	amount, _ := strconv.ParseInt(strings.TrimPrefix(string(ev.Data), "+"), 10, 64)
	var last int64
	err := tx.QueryRow(ctx, "SELECT last_version FROM "+table+" WHERE agg = $1", ev.Stream.ID).Scan(&last)
	if err == pgx.ErrNoRows {
		last = 0
	} else if err != nil {
		return err
	}
	_, jump := e.skipped.Load(fmt.Sprintf("%s/%d", ev.Stream.ID, ev.Version-1))
	if uint64(last) != ev.Version-1 && !(jump && uint64(last) == ev.Version-2) {
		e.violations.Add(1)
		return projection.Permanent(fmt.Errorf("order violation: %s at version %d, read model has %d", ev.Stream.ID, ev.Version, last))
	}
	_, err = tx.Exec(ctx, "INSERT INTO "+table+" (agg, n, last_version, total) VALUES ($1, 1, $2, $3)"+
		" ON CONFLICT (agg) DO UPDATE SET n = "+table+".n + 1, last_version = $2, total = "+table+".total + $3",
		ev.Stream.ID, int64(ev.Version), amount)
	if err == nil {
		e.applied.Add(1)
	}
	return err
}

// appendEvents appends perAgg events (data "+1") to each of aggs aggregates.
func (e *env) appendEvents(t *testing.T, aggs, perAgg int, prefix string) {
	t.Helper()
	for a := 0; a < aggs; a++ {
		st := eventstore.StreamID{Category: "acc", ID: fmt.Sprintf("%s%d", prefix, a)}
		evs := make([]eventstore.EventData, perAgg)
		for i := range evs {
			evs[i] = eventstore.EventData{Type: "Add", Data: []byte("+1")}
		}
		_, err := e.store.Append(e.ctx, st, eventstore.Any, evs...)
		require.NoError(t, err)
	}
}

// start runs a runner until the test ends or stop is called.
func (e *env) start(t *testing.T, r *projection.Runner) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var stopped atomic.Bool
	stop = func() {
		if stopped.Swap(true) {
			return
		}
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Fatal("runner did not stop within 30s")
		}
	}
	t.Cleanup(stop)
	return stop
}

// count returns sum(n) of a ledger table.
func (e *env) count(t *testing.T, table string) int64 {
	var n int64
	require.NoError(t, e.pool.QueryRow(e.ctx, "SELECT coalesce(sum(n), 0) FROM "+table).Scan(&n))
	return n
}

func (e *env) waitCount(t *testing.T, table string, want int64) {
	t.Helper()
	e.waitAtLeast(t, table, want)
	require.Equal(t, want, e.count(t, table))
}

func (e *env) waitAtLeast(t *testing.T, table string, want int64) {
	t.Helper()
	require.Eventually(t, func() bool { return e.count(t, table) >= want }, time.Minute, 20*time.Millisecond,
		"read model %s never reached %d events", table, want)
}

// checkFold asserts the read model equals a fold of the log: every
// aggregate's count and last version match its stream.
func (e *env) checkFold(t *testing.T, table string) {
	t.Helper()
	want := map[string]int64{}
	for ev, err := range e.store.ReadCategory(e.ctx, "acc", eventstore.MinPosition, eventstore.MaxPosition) {
		require.NoError(t, err)
		want[ev.Stream.ID]++
	}
	rows, err := e.pool.Query(e.ctx, "SELECT agg, n, last_version FROM "+table)
	require.NoError(t, err)
	got := map[string]int64{}
	for rows.Next() {
		var agg string
		var n, last int64
		require.NoError(t, rows.Scan(&agg, &n, &last))
		require.Equal(t, n, last, "aggregate %s: count and last version differ", agg)
		got[agg] = n
	}
	require.NoError(t, rows.Err())
	require.Equal(t, want, got)
	require.Zero(t, e.violations.Load(), "order violations")
}

type (
	pgxTx           = pgx.Tx
	eventstoreEvent = eventstore.Event
)

// workerProcess runs a projection runner in a child process, for tests
// that kill (SIGKILL) or pause (SIGSTOP) a worker. Its settings come from
// the environment; it runs until SIGTERM.
func workerProcess() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "worker:", err); return 2 }
	opt, err := rueidis.ParseURL(testenv.RedisURL())
	if err != nil {
		return fail(err)
	}
	opt.DisableCache = true
	c, err := rueidis.NewClient(opt)
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	parts, _ := strconv.Atoi(os.Getenv("RS_PARTITIONS"))
	store, err := eventstore.New(c, eventstore.Config{Namespace: os.Getenv("RS_NS"), Partitions: parts})
	if err != nil {
		return fail(err)
	}
	pcfg, err := pgxpool.ParseConfig(testenv.DatabaseURL())
	if err != nil {
		return fail(err)
	}
	pcfg.ConnConfig.RuntimeParams["search_path"] = os.Getenv("RS_SCHEMA")
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return fail(err)
	}
	defer pool.Close()
	e := &env{ctx: ctx, store: store, pool: pool, schema: os.Getenv("RS_SCHEMA")}
	table := os.Getenv("RS_TABLE")
	delay, _ := time.ParseDuration(os.Getenv("RS_DELAY"))
	crashOn := os.Getenv("RS_CRASH_ON")
	p := projection.Projection{Name: table, Categories: []string{"acc"},
		Handler: projection.HandlerFunc(func(ctx context.Context, tx pgx.Tx, ev eventstore.Event) error {
			if crashOn != "" && string(ev.Data) == crashOn {
				fmt.Fprintln(os.Stderr, "worker: crashing on", ev.Stream.ID, ev.Version)
				os.Exit(3)
			}
			time.Sleep(delay) // a slow handler, so that a kill lands mid-batch
			return e.applyLedger(ctx, tx, table, ev)
		})}
	maxDeliveries, _ := strconv.Atoi(os.Getenv("RS_MAX_DELIVERIES"))
	r, err := projection.NewRunner(e.config(func(c *projection.Config) {
		c.WorkerID = os.Getenv("RS_WORKER")
		c.BatchSize = 50
		c.MaxDeliveries = maxDeliveries
		c.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}), p)
	if err != nil {
		return fail(err)
	}
	if err := r.Run(ctx); err != nil {
		return fail(err)
	}
	return 0
}

// child starts workerProcess in a new process.
type child struct {
	cmd    *exec.Cmd
	stderr *testenv.Buffer
	done   chan struct{} // closed when the process has exited
	err    error         // its exit status, once done
}

func (e *env) spawn(t *testing.T, table, worker string, extra ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "REDSOURCE_TEST_WORKER=1", "RS_NS="+e.store.Namespace(),
		fmt.Sprintf("RS_PARTITIONS=%d", e.store.Config().Partitions), "RS_SCHEMA="+e.schema,
		"RS_TABLE="+table, "RS_WORKER="+worker)
	cmd.Env = append(cmd.Env, extra...)
	ch := &child{cmd: cmd, stderr: &testenv.Buffer{}, done: make(chan struct{})}
	cmd.Stderr = ch.stderr
	require.NoError(t, cmd.Start())
	go func() { ch.err = cmd.Wait(); close(ch.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-ch.done
		if t.Failed() {
			t.Logf("worker %s stderr:\n%s", worker, ch.stderr.String())
		}
	})
	return ch
}

type ctxT = context.Context
