package projection_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/pgschema"
	"github.com/redsource/redsource/internal/testenv"
	"github.com/redsource/redsource/projection"
)

// logs captures a runner's log records, for assertions on what it said.
type logs struct{ buf testenv.Buffer }

func (l *logs) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(&l.buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// count returns how many records have the level and, when sqlstate is not
// "", that SQLSTATE.
func (l *logs) count(level slog.Level, sqlstate string) int {
	n := 0
	for _, line := range strings.Split(l.buf.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		if rec["level"] == level.String() && (sqlstate == "" || rec["sqlstate"] == sqlstate) {
			n++
		}
	}
	return n
}

// deliveries returns the delivery count of ev's entry in the group's
// pending list (0 when it is not pending).
func (e *env) deliveries(ctx context.Context, group string, ev eventstore.Event) (int64, error) {
	c := e.store.Client()
	id := ev.Position.String()
	rows, err := c.Do(ctx, c.B().Xpending().Key(e.store.LogKey(ev.Stream.Category, ev.Partition)).
		Group(group).Start(id).End(id).Count(1).Build()).ToArray()
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	f, err := rows[0].ToArray()
	if err != nil || len(f) != 4 {
		return 0, fmt.Errorf("XPENDING row %v: %w", f, err)
	}
	return f[3].AsInt64()
}

// settled waits until every partition of the projection has nothing
// pending and no last error, then checks how many events are held.
func (e *env) settled(t *testing.T, name string, wantHeld int) {
	t.Helper()
	admin := projection.NewAdmin(e.pool, e.schema)
	require.Eventually(t, func() bool {
		st, err := admin.Status(e.ctx, e.store, name)
		require.NoError(t, err)
		for _, s := range st {
			if s.Pending != 0 || s.LastError != "" {
				return false
			}
		}
		return true
	}, 30*time.Second, 20*time.Millisecond, "nothing pending, no last error")
	held, err := admin.Held(e.ctx, name)
	require.NoError(t, err)
	require.Len(t, held, wantHeld, "held events")
}

// raise makes PostgreSQL raise code inside tx.
func raise(ctx context.Context, tx pgx.Tx, code string) error {
	_, err := tx.Exec(ctx, fmt.Sprintf("DO $$ BEGIN RAISE EXCEPTION 'injected %s' USING ERRCODE = '%s'; END $$", code, code))
	return err
}

// PostgreSQL failing under a handler is not the event's fault: the batch
// is retried in place (same ownership, no re-claim: the delivery count
// stays 1; no handler attempt counted: MaxAttempts is 3 and each case fails
// more often than that), and the event is applied once, never held.
// Transient codes are logged at WARN; infrastructure codes at ERROR, each
// time, and recorded as the partition's last error.
func TestDatabaseFailuresAreRetriedInPlace(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		code      string
		transient bool
	}{
		{"40001", true}, // serialization_failure
		{"40P01", true}, // deadlock_detected
		{"55P03", true}, // lock_not_available
		{"42P01", false}, {"42703", false}, {"3F000", false}, {"42883", false}, {"42501", false},
		{"08006", false}, {"53300", false}, {"57P01", false}, {"58030", false}, {"XX000", false},
	} {
		t.Run(tc.code, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, 1)
			failures := 3 // transient: as many as MaxAttempts
			if !tc.transient {
				failures = 6 // more than MaxAttempts and MaxDeliveries
			}
			var calls atomic.Int64
			var mu sync.Mutex
			var seen []int64 // the hot event's delivery count at each call
			var lastErrors []string
			p := e.ledger(t, "inplace", "inplace", nil)
			inner := p.Handler
			p.Handler = projection.HandlerFunc(func(ctx context.Context, tx pgx.Tx, ev eventstore.Event) error {
				if ev.Stream.ID != "hot" || ev.Version != 2 {
					return inner.Apply(ctx, tx, ev)
				}
				n := calls.Add(1)
				// Not require: this runs on the worker's goroutine.
				var lastErr string
				if err := e.pool.QueryRow(ctx, "SELECT last_error FROM checkpoints WHERE projection = 'inplace'").Scan(&lastErr); err != nil {
					t.Error(err)
				}
				d, err := e.deliveries(ctx, "inplace", ev)
				if err != nil {
					t.Error(err)
				}
				mu.Lock()
				seen = append(seen, d)
				lastErrors = append(lastErrors, lastErr)
				mu.Unlock()
				if n <= int64(failures) {
					return raise(ctx, tx, tc.code)
				}
				return inner.Apply(ctx, tx, ev)
			})
			var l logs
			// A 3s lease: a lease lapsing on a starved machine would move the
			// partition and count a delivery for a reason other than ours.
			r, err := projection.NewRunner(e.config(func(c *projection.Config) { c.Logger = l.logger(); c.LeaseTTL = 3 * time.Second }), p)
			require.NoError(t, err)
			e.appendEvents(t, 4, 3, "x")
			_, err = e.store.Append(e.ctx, eventstore.StreamID{Category: "acc", ID: "hot"}, eventstore.NoStream,
				eventstore.EventData{Type: "Add", Data: []byte("+1")}, eventstore.EventData{Type: "Add", Data: []byte("+1")},
				eventstore.EventData{Type: "Add", Data: []byte("+1")})
			require.NoError(t, err)
			e.appendEvents(t, 4, 2, "y")
			e.start(t, r)

			e.waitCount(t, "inplace", 4*3+3+4*2)
			e.checkFold(t, "inplace")
			e.settled(t, "inplace", 0)
			require.Equal(t, int64(failures+1), calls.Load())
			mu.Lock()
			defer mu.Unlock()
			for i, d := range seen {
				require.Equal(t, int64(1), d, "delivery count at call %d", i+1)
			}
			st, err := projection.NewAdmin(e.pool, e.schema).Status(e.ctx, e.store, "inplace")
			require.NoError(t, err)
			require.Equal(t, int64(4*3+3+4*2), st[0].Applied, "each event applied once")
			if tc.transient {
				require.Equal(t, failures, l.count(slog.LevelWarn, tc.code))
				require.Zero(t, l.count(slog.LevelError, ""))
				for _, le := range lastErrors {
					require.Empty(t, le, "a transient failure is not recorded as the partition's error")
				}
			} else {
				require.Equal(t, failures, l.count(slog.LevelError, tc.code))
				for _, le := range lastErrors[1 : failures+1] {
					require.Contains(t, le, "(SQLSTATE "+tc.code+")", "the partition's last error while it is stalled")
				}
			}
		})
	}
}

// A read model whose table does not exist yet: the partition stops and
// says why (ERROR each retry, last_error naming the table and SQLSTATE)
// without quarantining anything or counting deliveries, and resumes by
// itself once the table is created.
func TestMissingTableStallsUntilCreated(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	p := projection.Projection{Name: "late", Categories: []string{"acc"},
		Handler: projection.HandlerFunc(func(ctx context.Context, tx pgx.Tx, ev eventstore.Event) error {
			return e.applyLedger(ctx, tx, "late_table", ev)
		})}
	var l logs
	r, err := projection.NewRunner(e.config(func(c *projection.Config) { c.Logger = l.logger(); c.LeaseTTL = 3 * time.Second }), p)
	require.NoError(t, err)
	e.appendEvents(t, 5, 4, "m")
	e.start(t, r)

	// Retried well past MaxAttempts (3) and MaxDeliveries (5), with
	// backoff capped at CheckInterval (200ms here): a couple of seconds.
	require.Eventually(t, func() bool { return l.count(slog.LevelError, "42P01") >= 12 }, 30*time.Second, 20*time.Millisecond)
	admin := projection.NewAdmin(e.pool, e.schema)
	st, err := admin.Status(e.ctx, e.store, "late")
	require.NoError(t, err)
	require.Contains(t, st[0].LastError, `relation "late_table" does not exist (SQLSTATE 42P01)`)
	require.Zero(t, st[0].Applied)
	held, err := admin.Held(e.ctx, "late")
	require.NoError(t, err)
	require.Empty(t, held, "nothing quarantined")
	for ev, err := range e.store.ReadCategory(e.ctx, "acc", eventstore.MinPosition, eventstore.MaxPosition) {
		require.NoError(t, err)
		d, err := e.deliveries(e.ctx, "late", ev)
		require.NoError(t, err)
		require.Equal(t, int64(1), d, "delivered once, never re-claimed")
	}

	_, err = e.pool.Exec(e.ctx, ledgerSQL("late_table"))
	require.NoError(t, err)
	e.waitCount(t, "late_table", 20)
	e.checkFold(t, "late_table")
	e.settled(t, "late", 0)
	st, err = admin.Status(e.ctx, e.store, "late")
	require.NoError(t, err)
	require.Equal(t, int64(20), st[0].Applied)
}

// statement_timeout in the handler is the handler being too slow for
// this event: a handler attempt (MaxAttempts, backoff), then quarantine
// with PostgreSQL's own error; never a delivery or a "crash".
func TestStatementTimeoutInHandlerIsAHandlerAttempt(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	var slowCalls atomic.Int64
	p := e.ledger(t, "slow", "slow", nil)
	inner := p.Handler
	p.Handler = projection.HandlerFunc(func(ctx context.Context, tx pgx.Tx, ev eventstore.Event) error {
		if string(ev.Data) == "+13" {
			slowCalls.Add(1)
			if _, err := tx.Exec(ctx, "SET LOCAL statement_timeout = '50ms'"); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "SELECT pg_sleep(5)"); err != nil {
				return err
			}
		}
		return inner.Apply(ctx, tx, ev)
	})
	r, err := projection.NewRunner(e.config(func(c *projection.Config) { c.LeaseTTL = 3 * time.Second }), p)
	require.NoError(t, err)
	e.appendEvents(t, 3, 2, "a")
	_, err = e.store.Append(e.ctx, eventstore.StreamID{Category: "acc", ID: "slowpoke"}, eventstore.NoStream,
		eventstore.EventData{Type: "Add", Data: []byte("+1")}, eventstore.EventData{Type: "Add", Data: []byte("+13")},
		eventstore.EventData{Type: "Add", Data: []byte("+1")})
	require.NoError(t, err)
	e.appendEvents(t, 3, 2, "b")
	e.start(t, r)

	e.waitCount(t, "slow", 6+1+6)
	admin := projection.NewAdmin(e.pool, e.schema)
	var held []projection.HeldEvent
	require.Eventually(t, func() bool {
		held, err = admin.Held(e.ctx, "slow")
		require.NoError(t, err)
		return len(held) == 2
	}, 30*time.Second, 20*time.Millisecond)
	require.Equal(t, "quarantined", held[0].Reason)
	require.Equal(t, uint64(2), held[0].Version)
	require.Equal(t, 3, held[0].Attempts, "MaxAttempts handler attempts")
	require.Equal(t, 1, held[0].Deliveries, "no delivery counted")
	require.Equal(t, "ERROR: canceling statement due to statement timeout (SQLSTATE 57014)", held[0].Error)
	require.NotContains(t, held[0].Error, "delivered")
	require.Equal(t, "parked", held[1].Reason)
	require.Equal(t, int64(3), slowCalls.Load())
}

// statement_timeout on one of the runner's own statements (here the
// checkpoint update, slowed by a trigger) is transient: retried in place,
// WARN, nothing held, each event applied once.
func TestStatementTimeoutOnRunnerStatementIsTransient(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	require.NoError(t, pgschema.Migrate(e.ctx, e.pool, e.schema))
	// The first three checkpoint moves sleep past the handler's
	// statement_timeout (a sequence: it does not roll back with them).
	_, err := e.pool.Exec(e.ctx, `CREATE SEQUENCE trips;
		CREATE FUNCTION slow_checkpoint() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN IF nextval('trips') <= 3 THEN PERFORM pg_sleep(1); END IF; RETURN NEW; END $$;
		CREATE TRIGGER slow BEFORE UPDATE ON checkpoints FOR EACH ROW
		WHEN (NEW.position IS DISTINCT FROM OLD.position) EXECUTE FUNCTION slow_checkpoint()`)
	require.NoError(t, err)
	p := e.ledger(t, "ownslow", "ownslow", nil)
	inner := p.Handler
	p.Handler = projection.HandlerFunc(func(ctx context.Context, tx pgx.Tx, ev eventstore.Event) error {
		// Bounds every later statement of the batch's transaction,
		// the runner's checkpoint update included.
		if _, err := tx.Exec(ctx, "SET LOCAL statement_timeout = '50ms'"); err != nil {
			return err
		}
		return inner.Apply(ctx, tx, ev)
	})
	var l logs
	r, err := projection.NewRunner(e.config(func(c *projection.Config) { c.Logger = l.logger(); c.LeaseTTL = 3 * time.Second }), p)
	require.NoError(t, err)
	e.appendEvents(t, 4, 3, "o")
	e.start(t, r)

	e.waitCount(t, "ownslow", 12)
	e.checkFold(t, "ownslow")
	e.settled(t, "ownslow", 0)
	require.Equal(t, 3, l.count(slog.LevelWarn, "57014"))
	require.Zero(t, l.count(slog.LevelError, ""))
}

// pgProxy forwards connections to PostgreSQL and, on request, cuts one
// right after the server answered its COMMIT, before the client hears
// it: the transaction committed, the client sees a dead connection.
type pgProxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	cut    map[uint32]bool // backend PIDs whose next COMMIT reply is dropped
	conns  map[net.Conn]bool
	cuts   atomic.Int64
	wg     sync.WaitGroup
}

func startPgProxy(t *testing.T, target string) *pgProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &pgProxy{l: l, target: target, cut: map[uint32]bool{}, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() { defer p.wg.Done(); p.serve(c) }()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		p.mu.Lock()
		for c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

// cutNextCommit drops the reply to the next COMMIT of backend pid.
func (p *pgProxy) cutNextCommit(pid uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut[pid] = true
}

func (p *pgProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		p.conns[c] = true
	}
	return true
}

func (p *pgProxy) serve(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = client.Close()
		return
	}
	p.track(client, server)
	defer func() {
		_ = client.Close()
		_ = server.Close()
		p.mu.Lock()
		delete(p.conns, client)
		delete(p.conns, server)
		p.mu.Unlock()
	}()
	var pid atomic.Uint32
	var armed atomic.Bool
	commit := []byte("Q\x00\x00\x00\x0bcommit\x00") // pgx's Tx.Commit: a simple query
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, err := client.Read(buf)
			if n > 0 && bytes.Contains(buf[:n], commit) {
				p.mu.Lock()
				if p.cut[pid.Load()] {
					delete(p.cut, pid.Load())
					armed.Store(true)
				}
				p.mu.Unlock()
			}
			if n > 0 {
				if _, werr := server.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				_ = server.Close()
				return
			}
		}
	}()
	// Server to client, message by message: type, int32 length, body.
	r := bufio.NewReader(server)
	for {
		head := make([]byte, 5)
		if _, err := io.ReadFull(r, head); err != nil {
			break
		}
		body := make([]byte, binary.BigEndian.Uint32(head[1:])-4)
		if _, err := io.ReadFull(r, body); err != nil {
			break
		}
		if head[0] == 'K' && len(body) >= 4 { // BackendKeyData: the backend's PID
			pid.Store(binary.BigEndian.Uint32(body))
		}
		if head[0] == 'C' && armed.Load() { // COMMIT's CommandComplete: drop it
			p.cuts.Add(1)
			break
		}
		if _, err := client.Write(append(head, body...)); err != nil {
			break
		}
	}
	_ = client.Close()
	_ = server.Close()
	<-done
}

// A COMMIT that landed but whose reply was lost (the connection died in
// between): the batch's retry in place finds the checkpoint ahead and
// only acknowledges; nothing is applied twice.
func TestLostCommitReplyAppliesOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	cfg, err := pgxpool.ParseConfig(testenv.DatabaseURL())
	require.NoError(t, err)
	proxy := startPgProxy(t, net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port))))
	cfg.ConnConfig.Host = "127.0.0.1"
	cfg.ConnConfig.Port = uint16(proxy.l.Addr().(*net.TCPAddr).Port)
	cfg.ConnConfig.RuntimeParams["search_path"] = e.schema
	viaProxy, err := pgxpool.NewWithConfig(e.ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(viaProxy.Close)

	var seen, armed atomic.Int64
	p := e.ledger(t, "lostcommit", "lostcommit", nil)
	inner := p.Handler
	p.Handler = projection.HandlerFunc(func(ctx context.Context, tx pgx.Tx, ev eventstore.Event) error {
		if seen.Add(1)%17 == 0 && armed.Load() < 3 {
			var pid uint32
			if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
				return err
			}
			armed.Add(1)
			proxy.cutNextCommit(pid)
		}
		return inner.Apply(ctx, tx, ev)
	})
	r, err := projection.NewRunner(e.config(func(c *projection.Config) {
		c.DB = viaProxy
		c.BatchSize = 10
		c.LeaseTTL = 3 * time.Second
	}), p)
	require.NoError(t, err)
	e.appendEvents(t, 10, 10, "l")
	e.start(t, r)

	e.waitCount(t, "lostcommit", 100)
	e.checkFold(t, "lostcommit")
	e.settled(t, "lostcommit", 0)
	require.Equal(t, int64(3), proxy.cuts.Load(), "three COMMIT replies were lost")
	st, err := projection.NewAdmin(e.pool, e.schema).Status(e.ctx, e.store, "lostcommit")
	require.NoError(t, err)
	require.Equal(t, int64(100), st[0].Applied, "each event applied once")
}
