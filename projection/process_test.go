package projection_test

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/projection"
)

// A worker process killed with SIGKILL in the middle of a batch: another
// worker takes over and the read model equals a fold of the log, with no
// event applied twice or missed.
func TestWorkerKilledMidBatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	e.appendEvents(t, 20, 25, "s")
	_, err := e.pool.Exec(e.ctx, ledgerSQL("sigkill"))
	require.NoError(t, err)
	ch := e.spawn(t, "sigkill", "doomed", "RS_DELAY=2ms")
	e.waitAtLeast(t, "sigkill", 120)
	require.NoError(t, ch.cmd.Process.Signal(syscall.SIGKILL))
	<-ch.done
	done := e.count(t, "sigkill")
	require.Less(t, done, int64(500), "killed before it finished")

	r, err := projection.NewRunner(e.config(), e.ledger(t, "sigkill", "sigkill", nil))
	require.NoError(t, err)
	e.start(t, r)
	e.waitCount(t, "sigkill", 500)
	e.checkFold(t, "sigkill")
	held, err := projection.NewAdmin(e.pool, e.schema).Held(e.ctx, "sigkill")
	require.NoError(t, err)
	require.Empty(t, held)
}

// A worker paused (SIGSTOP) past its lease: another takes over; when the
// first resumes it cannot commit, and nothing is applied twice.
func TestPausedWorkerCannotCommit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	e.appendEvents(t, 10, 40, "p")
	_, err := e.pool.Exec(e.ctx, ledgerSQL("paused"))
	require.NoError(t, err)
	ch := e.spawn(t, "paused", "sleeper", "RS_DELAY=10ms")
	e.waitAtLeast(t, "paused", 30)
	require.NoError(t, ch.cmd.Process.Signal(syscall.SIGSTOP))
	stopped := e.count(t, "paused")

	r, err := projection.NewRunner(e.config(func(c *projection.Config) { c.WorkerID = "taker" }), e.ledger(t, "paused", "paused", nil))
	require.NoError(t, err)
	e.start(t, r)
	e.waitAtLeast(t, "paused", stopped+60) // the new owner is well past the paused batch
	require.NoError(t, ch.cmd.Process.Signal(syscall.SIGCONT))
	e.waitCount(t, "paused", 400)
	// The resumed worker finds out it lost the partition.
	require.Eventually(t, func() bool {
		out := ch.stderr.String()
		return strings.Contains(out, "fenced by a newer owner") || strings.Contains(out, "lease lost")
	}, 30*time.Second, 20*time.Millisecond)
	e.checkFold(t, "paused")
	require.Eventually(t, func() bool { // a lease can lapse for a moment on a starved machine
		st, err := projection.NewAdmin(e.pool, e.schema).Status(e.ctx, e.store, "paused")
		require.NoError(t, err)
		return st[0].Owner == "taker"
	}, 30*time.Second, 20*time.Millisecond)
	require.Equal(t, int64(400), e.count(t, "paused"))
}

// A handler that crashes its process on one event: each restart counts a
// delivery; at MaxDeliveries the event is quarantined without reaching the
// handler, the crash loop ends and everything else is applied.
func TestCrashLoopEndsInQuarantine(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	_, err := e.pool.Exec(e.ctx, ledgerSQL("crashloop"))
	require.NoError(t, err)
	e.appendEvents(t, 5, 4, "c")
	_, err = e.store.Append(e.ctx, eventstore.StreamID{Category: "acc", ID: "bomb"}, eventstore.NoStream,
		eventstore.EventData{Type: "Add", Data: []byte("+1")},
		eventstore.EventData{Type: "Add", Data: []byte("+666")},
		eventstore.EventData{Type: "Add", Data: []byte("+1")})
	require.NoError(t, err)
	e.appendEvents(t, 5, 4, "d")

	admin := projection.NewAdmin(e.pool, e.schema)
	quarantined := func() []projection.HeldEvent {
		h, err := admin.Held(e.ctx, "crashloop", "quarantined")
		if err != nil {
			return nil
		}
		return h
	}
	crashes := 0
	for run := 0; run < 6 && len(quarantined()) == 0; run++ {
		ch := e.spawn(t, "crashloop", "crasher", "RS_CRASH_ON=+666", "RS_MAX_DELIVERIES=3")
		tick := time.NewTicker(20 * time.Millisecond)
	wait:
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
			select {
			case <-ch.done:
				require.Error(t, ch.err)
				crashes++
				break wait
			case <-tick.C:
				if len(quarantined()) > 0 {
					break wait
				}
			}
		}
		tick.Stop()
		if len(quarantined()) == 0 {
			continue
		}
		require.Eventually(t, func() bool { return e.count(t, "crashloop") == 41 }, 30*time.Second, 20*time.Millisecond)
	}
	q := quarantined()
	require.Len(t, q, 1)
	require.Equal(t, "bomb", q[0].AggregateID)
	require.Equal(t, uint64(2), q[0].Version)
	require.Equal(t, 3, q[0].Deliveries)
	require.Contains(t, q[0].Error, "delivered 3 times")
	require.Equal(t, 2, crashes, "the handler was reached twice, then never again")
	parked, err := admin.Held(e.ctx, "crashloop", "parked")
	require.NoError(t, err)
	require.Len(t, parked, 1)
	require.Equal(t, int64(41), e.count(t, "crashloop"))
}
