package projection_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/projection"
)

func TestProjectsEveryEventOnceInOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 4)
	e.appendEvents(t, 20, 10, "a")
	r, err := projection.NewRunner(e.config(), e.ledger(t, "ledger", "ledger", nil))
	require.NoError(t, err)
	e.start(t, r)
	e.waitCount(t, "ledger", 200)
	// Events appended while it runs are picked up too.
	e.appendEvents(t, 20, 5, "a")
	e.waitCount(t, "ledger", 300)
	e.checkFold(t, "ledger")

	st, err := projection.NewAdmin(e.pool, e.schema).Status(e.ctx, e.store, "ledger")
	require.NoError(t, err)
	require.Len(t, st, 4)
	var applied int64
	for _, s := range st {
		applied += s.Applied
		require.Empty(t, s.LastError)
		require.Zero(t, s.Quarantined)
	}
	require.Equal(t, int64(300), applied)
	require.Eventually(t, func() bool { // a lease can lapse for a moment on a starved machine
		st, err := projection.NewAdmin(e.pool, e.schema).Status(e.ctx, e.store, "ledger")
		require.NoError(t, err)
		for _, s := range st {
			if s.Owner != r.WorkerID() {
				return false
			}
		}
		return true
	}, 30*time.Second, 20*time.Millisecond, "this runner owns every partition")
	require.Eventually(t, func() bool {
		st, err := projection.NewAdmin(e.pool, e.schema).Status(e.ctx, e.store, "ledger")
		require.NoError(t, err)
		for _, s := range st {
			if s.Pending != 0 || s.Lag != 0 {
				return false
			}
		}
		return true
	}, 10*time.Second, 20*time.Millisecond, "every entry acknowledged, no lag")
}

func TestBatchHandler(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	e.appendEvents(t, 50, 20, "b")
	p := e.ledger(t, "batch", "batch_ledger", nil)
	per := p.Handler
	var batches, largest atomic.Int64
	p.Handler = nil
	p.Batch = projection.BatchHandlerFunc(func(ctx context.Context, tx pgxTx, evs []eventstoreEvent) error {
		batches.Add(1)
		if n := int64(len(evs)); n > largest.Load() {
			largest.Store(n)
		}
		for _, ev := range evs {
			if err := per.Apply(ctx, tx, ev); err != nil {
				return err
			}
		}
		return nil
	})
	r, err := projection.NewRunner(e.config(func(c *projection.Config) { c.BatchSize = 300 }), p)
	require.NoError(t, err)
	e.start(t, r)
	e.waitCount(t, "batch_ledger", 1000)
	e.checkFold(t, "batch_ledger")
	require.Greater(t, largest.Load(), int64(1), "events arrive in batches")
	require.LessOrEqual(t, largest.Load(), int64(300))
}

func TestCrashBetweenCommitAndAck(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	e.appendEvents(t, 10, 10, "c")
	var crashes atomic.Int64
	cfg := e.config(func(c *projection.Config) {
		c.BatchSize = 7
		c.Faults = &projection.Faults{AfterCommit: func(string, string, int) error {
			if crashes.Add(1) <= 5 {
				return errors.New("injected crash between COMMIT and XACK")
			}
			return nil
		}}
	})
	r, err := projection.NewRunner(cfg, e.ledger(t, "crashy", "crashy", nil))
	require.NoError(t, err)
	e.start(t, r)
	e.waitCount(t, "crashy", 100)
	require.GreaterOrEqual(t, crashes.Load(), int64(5))
	e.checkFold(t, "crashy")
	require.Equal(t, int64(100), e.applied.Load(), "redelivered events were not applied again")
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	h := projection.HandlerFunc(func(context.Context, pgxTx, eventstoreEvent) error { return nil })
	for _, tc := range []struct {
		cfg  projection.Config
		p    projection.Projection
		text string
	}{
		{projection.Config{DB: e.pool}, projection.Projection{Name: "x", Categories: []string{"acc"}, Handler: h}, "Config.Store is required"},
		{e.config(), projection.Projection{Name: "", Categories: []string{"acc"}, Handler: h}, "projection name"},
		{e.config(), projection.Projection{Name: "x", Handler: h}, "no categories"},
		{e.config(), projection.Projection{Name: "x", Categories: []string{"acc"}}, "exactly one of Handler and Batch"},
		{e.config(func(c *projection.Config) { c.MaxDeliveries = 1 }), projection.Projection{Name: "x", Categories: []string{"acc"}, Handler: h}, "MaxDeliveries"},
	} {
		_, err := projection.NewRunner(tc.cfg, tc.p)
		require.ErrorContains(t, err, tc.text)
	}
}

func TestSchemaServesOneNamespace(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	e.appendEvents(t, 1, 1, "n")
	r, err := projection.NewRunner(e.config(), e.ledger(t, "ns", "ns", nil))
	require.NoError(t, err)
	stop := e.start(t, r)
	e.waitCount(t, "ns", 1)
	stop()
	other, err := eventstore.New(e.store.Client(), eventstore.Config{Namespace: e.store.Namespace() + "x", Partitions: 1})
	require.NoError(t, err)
	r2, err := projection.NewRunner(e.config(func(c *projection.Config) { c.Store = other }), e.ledger(t, "ns", "ns", nil))
	require.NoError(t, err)
	err = r2.Run(e.ctx)
	require.ErrorContains(t, err, "holds the projections of namespace")
}

// Runners that start at the same moment on a fresh schema all prepare it.
func TestRunnersStartTogether(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 8)
	e.appendEvents(t, 4, 5, "s")
	p := e.ledger(t, "together", "together", nil)
	errs := make(chan error, 8)
	ctx, cancel := context.WithCancel(e.ctx)
	start := make(chan struct{})
	for i := 0; i < 8; i++ {
		r, err := projection.NewRunner(e.config(), p)
		require.NoError(t, err)
		go func() { <-start; errs <- r.Run(ctx) }()
	}
	close(start)
	e.waitCount(t, "together", 20)
	cancel()
	for i := 0; i < 8; i++ {
		require.NoError(t, <-errs)
	}
	e.checkFold(t, "together")
}
