package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/faultenv"
	"github.com/redsource/redsource/internal/testenv"
	"github.com/redsource/redsource/projection"
)

func TestMain(m *testing.M) {
	testenv.VerifyTestMain(m)
}

// world is one test's servers: its own Redis namespace and PostgreSQL
// schema, both removed when the test ends.
type world struct {
	ctx    context.Context
	redis  rueidis.Client
	ns     string
	pool   *pgxpool.Pool
	schema string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	c := testenv.Redis(t)
	ns := testenv.Namespace(t, c)
	pool, schema := testenv.Postgres(t)
	return &world{ctx: ctx, redis: c, ns: ns, pool: pool, schema: schema}
}

// run runs the program in-process against the test's namespace and schema.
func (w *world) run(t *testing.T, args ...string) (code int, stdout string) {
	t.Helper()
	return w.runCtx(t, w.ctx, args...)
}

func (w *world) runCtx(t *testing.T, ctx context.Context, args ...string) (int, string) {
	t.Helper()
	code, out, _ := w.runAll(t, ctx, args...)
	return code, out
}

// runAll is run with the standard error too.
func (w *world) runAll(t *testing.T, ctx context.Context, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut testenv.Buffer
	full := append([]string{"-redis", testenv.RedisURL(), "-database", testenv.DatabaseURL(), "-namespace", w.ns, "-schema", w.schema}, args...)
	code = run(ctx, full, &out, &errOut)
	t.Logf("bank %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
	return code, out.String(), errOut.String()
}

// store and bank give a test direct access to the namespace's events.
func (w *world) bank(t *testing.T) (*eventstore.Store, *Bank) {
	t.Helper()
	s, err := eventstore.New(w.redis, eventstore.Config{Namespace: w.ns})
	require.NoError(t, err)
	b, err := newBank(s, slog.Default())
	require.NoError(t, err)
	return s, b
}

func TestDemo(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	// The demo works in <namespace>_demo and <schema>_demo: remove those too.
	t.Cleanup(func() {
		testenv.DeleteNamespace(w.redis, w.ns+"_demo")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, testenv.DatabaseURL())
		if err == nil {
			_, _ = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+ident(w.schema+"_demo")+" CASCADE")
			conn.Close(ctx)
		}
	})
	code, out := w.run(t, "demo")
	require.Equal(t, exitOK, code)
	require.Contains(t, out, "demo OK")
	require.Contains(t, out, "OK: the read model matches the log")

	// A second run starts from scratch in the same namespace.
	code, out = w.run(t, "demo")
	require.Equal(t, exitOK, code)
	require.Contains(t, out, "demo OK")
}

func TestVerifyFailsOnTamperedReadModel(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	code, _ := w.run(t, "load", "-accounts", "5", "-ops", "200", "-writers", "4")
	require.Equal(t, exitOK, code)
	code, _ = w.run(t, "project", "-until-caught-up")
	require.Equal(t, exitOK, code)
	code, out := w.run(t, "verify")
	require.Equal(t, exitOK, code, out)

	_, err := w.pool.Exec(w.ctx, "UPDATE balances SET balance = balance + 1 WHERE account_id = 'acc-0003'")
	require.NoError(t, err)
	code, out = w.run(t, "verify")
	require.Equal(t, exitMismatch, code)
	require.Contains(t, out, "DIFF: acc-0003: read model has")
	require.Equal(t, 1, strings.Count(out, "DIFF:"), "only the tampered account differs")

	_, err = w.pool.Exec(w.ctx, "DELETE FROM balances WHERE account_id = 'acc-0004'")
	require.NoError(t, err)
	code, out = w.run(t, "verify")
	require.Equal(t, exitMismatch, code)
	require.Contains(t, out, "DIFF: acc-0004: no row in the read model")
}

// TestBalanceNeverNegativeUnderConcurrency races withdrawals and
// transfers on two accounts and checks every version of both streams.
func TestBalanceNeverNegativeUnderConcurrency(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	store, b := w.bank(t)
	for _, id := range []string{"a", "b"} {
		_, err := b.Open(w.ctx, id, strings.ToUpper(id))
		require.NoError(t, err)
		require.NoError(t, b.Deposit(w.ctx, id, 1000))
	}
	var taken atomic.Int64 // withdrawn, the only money that leaves
	var okN, refused atomic.Int64
	err := parallel(w.ctx, 400, 24, func(ctx context.Context, i int) error {
		from, to := "a", "b"
		if i%2 == 1 {
			from, to = to, from
		}
		amount := 1 + rand.Int64N(120)
		var err error
		if i%3 == 0 {
			err = b.Transfer(ctx, NewTransferID(), from, to, amount)
		} else if err = b.Withdraw(ctx, from, amount); err == nil {
			taken.Add(amount)
		}
		switch {
		case err == nil:
			okN.Add(1)
		case errors.Is(err, ErrInsufficientFunds):
			refused.Add(1)
		default:
			return err
		}
		return nil
	})
	require.NoError(t, err)
	require.Positive(t, okN.Load())
	require.Positive(t, refused.Load(), "the workload must hit the rule")

	var total int64
	for _, id := range []string{"a", "b"} {
		var balance int64
		for ev, err := range store.Read(w.ctx, b.accounts.Stream(id), 0) {
			require.NoError(t, err)
			e, err := b.types.Decode(ev)
			require.NoError(t, err)
			f := accountFold{balance: balance}
			f.apply(e, ev.Version)
			balance = f.balance
			require.GreaterOrEqual(t, balance, int64(0), "%s at version %d", id, ev.Version)
		}
		a, err := b.accounts.Load(w.ctx, id)
		require.NoError(t, err)
		require.Equal(t, balance, a.Balance())
		total += balance
	}
	require.Equal(t, 2000-taken.Load(), total, "transfers move money, withdrawals take it out")
	flying, err := b.InFlight(w.ctx)
	require.NoError(t, err)
	require.Empty(t, flying)
}

// TestMalformedDepositIsQuarantined appends a Deposited whose amount is
// not an integer: the projection quarantines it and parks the account's
// later events while the others project; load counts the account's
// failures without failing; verify reports it, not as a difference.
func TestMalformedDepositIsQuarantined(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	code, _ := w.run(t, "load", "-accounts", "5", "-ops", "100", "-writers", "4")
	require.Equal(t, exitOK, code)

	store, b := w.bank(t)
	bad := b.accounts.Stream("acc-0002")
	res, err := store.Append(w.ctx, bad, eventstore.Any,
		eventstore.EventData{Type: "Deposited", Data: []byte(`{"amount":"a lot"}`)},
		eventstore.EventData{Type: "Deposited", Data: []byte(`{"amount":700}`)})
	require.NoError(t, err)

	code, out := w.run(t, "load", "-accounts", "5", "-ops", "200", "-writers", "4")
	require.Equal(t, exitOK, code, "a broken account is counted, not fatal")
	require.NotContains(t, out, "failed on one account: 0,")
	require.Contains(t, out, "undecodable event data")

	code, out = w.run(t, "project", "-until-caught-up", "-workers", "2")
	require.Equal(t, exitOK, code)
	require.Contains(t, out, "quarantined 1")

	admin := projection.NewAdmin(w.pool, w.schema)
	held, err := admin.Held(w.ctx, ProjectionName)
	require.NoError(t, err)
	require.NotEmpty(t, held)
	require.Equal(t, "quarantined", held[0].Reason)
	require.Equal(t, "acc-0002", held[0].AggregateID)
	require.Equal(t, res.FirstVersion, held[0].Version)
	require.Contains(t, held[0].Error, "undecodable event data")
	for _, h := range held[1:] {
		require.Equal(t, "parked", h.Reason)
		require.Equal(t, "acc-0002", h.AggregateID)
	}

	var version int64
	require.NoError(t, w.pool.QueryRow(w.ctx, "SELECT version FROM balances WHERE account_id = 'acc-0002'").Scan(&version))
	require.Equal(t, int64(res.FirstVersion-1), version, "the account stops before its poison event")

	code, out = w.run(t, "verify")
	require.Equal(t, exitOK, code, "the others match; the held account is reported, not a difference")
	require.Contains(t, out, "acc-0002: event at version")
	require.Contains(t, out, "is quarantined")
	require.Contains(t, out, "parked behind it")
}

func TestLoadTwiceWorksOnTheSameAccounts(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	code, out := w.run(t, "load", "-accounts", "6", "-ops", "60", "-writers", "3")
	require.Equal(t, exitOK, code)
	require.Contains(t, out, "accounts: 6 opened now, 0 open already")
	code, out = w.run(t, "load", "-accounts", "8", "-ops", "60", "-writers", "3")
	require.Equal(t, exitOK, code)
	require.Contains(t, out, "accounts: 2 opened now, 6 open already")

	store, _ := w.bank(t)
	opened := map[string]int{}
	for ev, err := range store.ReadCategory(w.ctx, Category, eventstore.MinPosition, eventstore.MaxPosition) {
		require.NoError(t, err)
		if ev.Type == "AccountOpened" {
			opened[ev.Stream.ID]++
		}
	}
	require.Len(t, opened, 8)
	for id, n := range opened {
		require.Equal(t, 1, n, id)
	}
	code, _ = w.run(t, "project", "-until-caught-up")
	require.Equal(t, exitOK, code)
	code, _ = w.run(t, "verify")
	require.Equal(t, exitOK, code)
}

// TestProjectRunsUntilInterrupted stops a running projector through its
// context, as SIGINT does.
func TestProjectRunsUntilInterrupted(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	code, _ := w.run(t, "load", "-accounts", "3", "-ops", "30", "-writers", "2")
	require.Equal(t, exitOK, code)
	ctx, cancel := context.WithCancel(w.ctx)
	done := make(chan int, 1)
	go func() {
		code, _ := w.runCtx(t, ctx, "project")
		done <- code
	}()
	require.Eventually(t, func() bool {
		var n int
		err := w.pool.QueryRow(w.ctx, "SELECT count(*) FROM balances").Scan(&n)
		return err == nil && n == 3
	}, 30*time.Second, 20*time.Millisecond)
	cancel()
	select {
	case code := <-done:
		require.Equal(t, exitOK, code)
	case <-time.After(30 * time.Second):
		t.Fatal("project did not stop")
	}
}

func TestUsage(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	require.Equal(t, exitError, run(context.Background(), nil, &out, &errOut))
	require.Contains(t, errOut.String(), "usage: bank")
	errOut.Reset()
	require.Equal(t, exitError, run(context.Background(), []string{"fly"}, &out, &errOut))
	require.Contains(t, errOut.String(), `unknown command "fly"`)
}

// TestRebuildRepairsTamperedReadModel: a read model that verify finds
// wrong is rebuilt from the log, in place.
func TestRebuildRepairsTamperedReadModel(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	code, _ := w.run(t, "load", "-accounts", "6", "-ops", "150", "-writers", "4")
	require.Equal(t, exitOK, code)
	code, _ = w.run(t, "project", "-until-caught-up")
	require.Equal(t, exitOK, code)
	_, err := w.pool.Exec(w.ctx, "UPDATE balances SET balance = balance + 1 WHERE account_id = 'acc-0002'")
	require.NoError(t, err)
	code, _ = w.run(t, "verify")
	require.Equal(t, exitMismatch, code)

	code, out := w.run(t, "rebuild")
	require.Equal(t, exitOK, code)
	require.Contains(t, out, "(100%)")
	code, _ = w.run(t, "verify")
	require.Equal(t, exitOK, code)
}

// TestBlueGreenRebuildWhileProjecting switches readers to a new version
// built beside the old one while a project process runs; the process
// follows the switch and keeps the new version up to date.
func TestBlueGreenRebuildWhileProjecting(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	code, _ := w.run(t, "load", "-accounts", "6", "-ops", "150", "-writers", "4")
	require.Equal(t, exitOK, code)

	ctx, cancel := context.WithCancel(w.ctx)
	done := make(chan int, 1)
	go func() {
		code, _ := w.runCtx(t, ctx, "project")
		done <- code
	}()
	defer func() {
		cancel()
		<-done
	}()
	require.Eventually(t, func() bool {
		var n int
		err := w.pool.QueryRow(w.ctx, "SELECT count(*) FROM balances").Scan(&n)
		return err == nil && n == 6
	}, 30*time.Second, 20*time.Millisecond)

	for want := 2; want <= 3; want++ {
		code, out := w.run(t, "rebuild", "-blue-green")
		require.Equal(t, exitOK, code)
		require.Contains(t, out, fmt.Sprintf("from version %d to %d", want-1, want))
		admin := projection.NewAdmin(w.pool, w.schema)
		v, err := admin.ActiveVersion(w.ctx, ProjectionName)
		require.NoError(t, err)
		require.Equal(t, want, v)
		var old *string
		require.NoError(t, w.pool.QueryRow(w.ctx, "SELECT to_regclass($1)::text", fmt.Sprintf("balances_v%d", want-1)).Scan(&old))
		require.Nil(t, old, "the old version's table is dropped")
	}

	// New events reach version 3 through the running project process.
	code, _ = w.run(t, "load", "-accounts", "6", "-ops", "50", "-writers", "2")
	require.Equal(t, exitOK, code)
	admin := projection.NewAdmin(w.pool, w.schema)
	require.Eventually(t, func() bool {
		st, err := admin.Status(w.ctx, mustStore(t, w), projection.VersionID(ProjectionName, 3))
		if err != nil || len(st) == 0 {
			return false
		}
		for _, s := range st {
			if s.Lag != 0 || s.Pending != 0 || s.Owner == "" {
				return false
			}
		}
		return true
	}, 60*time.Second, 50*time.Millisecond, "the project process follows the switch")
	code, out := w.run(t, "verify")
	require.Equal(t, exitOK, code)
	require.Contains(t, out, "(version 3)")
	require.Contains(t, out, "0 not yet")
}

func mustStore(t *testing.T, w *world) *eventstore.Store {
	s, _ := w.bank(t)
	return s
}

// Redis restarts empty (emulated by deleting the namespace's keys) under a
// bank that has run: no command takes the empty Redis for a new bank.
// `load` exits non-zero naming the likely cause and writes no key;
// `project -until-caught-up` exits non-zero within seconds.
func TestCommandsRefuseARedisThatLostTheBank(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	code, _ := w.run(t, "load", "-accounts", "4", "-ops", "40", "-writers", "2")
	require.Equal(t, exitOK, code)
	code, _ = w.run(t, "project", "-until-caught-up")
	require.Equal(t, exitOK, code)

	testenv.DeleteNamespace(w.redis, w.ns)

	code, _, errOut := w.runAll(t, w.ctx, "load", "-accounts", "4", "-ops", "40", "-writers", "2")
	require.Equal(t, exitError, code)
	require.Contains(t, errOut, "Redis has no identity for the namespace")
	require.Contains(t, errOut, "restart without persistence")
	keys, err := w.redis.Do(w.ctx, w.redis.B().Scan().Cursor(0).Match(w.ns+":*").Count(10000).Build()).AsScanEntry()
	require.NoError(t, err)
	require.Empty(t, keys.Elements, "load wrote nothing")

	start := time.Now()
	code, _, errOut = w.runAll(t, w.ctx, "project", "-until-caught-up")
	require.Equal(t, exitError, code)
	require.Contains(t, errOut, "namespace")
	require.Less(t, time.Since(start), 30*time.Second)

	code, _, _ = w.runAll(t, w.ctx, "verify")
	require.NotEqual(t, exitOK, code)
}

// Redis loses a partition's tail while the namespace survives (a lost AOF
// tail): `project -until-caught-up` exits non-zero instead of waiting for
// a partition that stopped.
func TestProjectUntilCaughtUpFailsOnARegressedLog(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	code, _ := w.run(t, "load", "-accounts", "6", "-ops", "60", "-writers", "2")
	require.Equal(t, exitOK, code)
	code, _ = w.run(t, "project", "-until-caught-up")
	require.Equal(t, exitOK, code)

	s, _ := w.bank(t)
	p := s.Partition(eventstore.StreamID{Category: Category, ID: accountID(1)})
	require.NoError(t, w.redis.Do(w.ctx, w.redis.B().Del().Key(s.LogKey(Category, p)).Build()).Error())

	start := time.Now()
	code, out, _ := w.runAll(t, w.ctx, "project", "-until-caught-up")
	require.Equal(t, exitError, code)
	require.Contains(t, out, "STOPPED (log_regressed)")
	require.Less(t, time.Since(start), 30*time.Second)
}

// Against a Redis that evicts keys when full, `bank load` refuses to start:
// it exits non-zero naming maxmemory-policy and writes no key.
func TestLoadRefusesAnEvictingRedis(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	srv := faultenv.Start(t, faultenv.Options{MaxMemory: "64mb", Policy: "allkeys-lfu"})
	var out, errOut testenv.Buffer
	code := run(w.ctx, []string{"-redis", srv.URL(), "-database", testenv.DatabaseURL(), "-namespace", w.ns, "-schema", w.schema,
		"load", "-accounts", "3", "-ops", "10"}, &out, &errOut)
	require.Equal(t, exitError, code, out.String())
	require.Contains(t, errOut.String(), "maxmemory-policy allkeys-lfu")
	require.Contains(t, errOut.String(), "maxmemory-policy noeviction")
	n, err := srv.Do(w.ctx, "DBSIZE")
	require.NoError(t, err)
	require.Zero(t, n, "no key written")
}
