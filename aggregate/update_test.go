package aggregate_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/aggregate"
	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/faultenv"
	"github.com/redsource/redsource/internal/testenv"
	"github.com/redsource/redsource/snapshot"
)

func TestUpdateConcurrentCounter(t *testing.T) {
	t.Parallel()
	const workers, updates = 20, 50
	ctx, store := ctxT(t), newStore(t)
	cfg := counterConfig()
	cfg.MaxAttempts = 10_000 // 20 writers on one aggregate: most attempts conflict
	cfg.MaxBackoff = 20 * time.Millisecond
	// A hot aggregate wants snapshots: every retry reloads it. Writers race
	// to write them too (last writer wins; each is valid for its version).
	cfg.Snapshots = aggregate.Snapshots[*counter]{Store: snapshot.NewRedis(store), Every: 20, Marshal: counterSnapshots, Unmarshal: counterRestore}
	repo := newRepo(t, store, cfg)

	var wg sync.WaitGroup
	var attempts atomic.Int64
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for range updates {
				_, err := repo.Update(ctx, "c1", func(c *counter) error {
					attempts.Add(1)
					return c.Increment()
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	c, err := repo.Load(ctx, "c1")
	require.NoError(t, err)
	require.Equal(t, workers*updates, c.n)
	plain, err := newRepo(t, store, counterConfig()).Load(ctx, "c1")
	require.NoError(t, err)
	require.Equal(t, workers*updates, plain.n, "from events alone too")
	require.Equal(t, uint64(workers*updates), c.Version())
	v, err := store.Version(ctx, repo.Stream("c1"))
	require.NoError(t, err)
	require.Equal(t, uint64(workers*updates), v, "exactly one event per successful Update")
	t.Logf("%d decisions for %d updates (%.1f per update)", attempts.Load(), workers*updates, float64(attempts.Load())/(workers*updates))
}

func TestUpdateWithdrawalsNeverOverdraw(t *testing.T) {
	t.Parallel()
	const workers, tries, initial = 16, 30, int64(500)
	ctx, store := ctxT(t), newStore(t)
	cfg := accountConfig()
	cfg.MaxAttempts = 10_000
	cfg.MaxBackoff = 20 * time.Millisecond
	repo := newRepo(t, store, cfg)
	_, err := repo.Update(ctx, "a1", func(a *account) error {
		if err := a.Open("ada"); err != nil {
			return err
		}
		return a.Deposit(initial)
	})
	require.NoError(t, err)

	var wg sync.WaitGroup
	var taken, refused atomic.Int64
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for range tries {
				amount := 1 + rng.Int64N(40)
				_, err := repo.Update(ctx, "a1", func(a *account) error { return a.Withdraw(amount) })
				switch {
				case errors.Is(err, errInsufficientFunds):
					refused.Add(1)
				case err != nil:
					errs <- err
					return
				default:
					taken.Add(amount)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	a, err := repo.Load(ctx, "a1")
	require.NoError(t, err)
	require.GreaterOrEqual(t, a.balance, int64(0))
	require.Equal(t, initial-taken.Load(), a.balance, "every successful Update is in the stream once")
	require.Positive(t, refused.Load(), "the test asks for more than there is")

	// Whatever the interleaving, no prefix of the stream is below zero.
	balance := int64(0)
	for _, ev := range streamEvents(t, ctx, store, repo.Stream("a1")) {
		e, err := repo.Registry().Decode(ev)
		require.NoError(t, err)
		switch e := e.(type) {
		case deposited:
			balance += e.Amount
		case withdrawn:
			balance -= e.Amount
		}
		require.GreaterOrEqual(t, balance, int64(0), "at version %d", ev.Version)
	}
}

func TestUpdateDecisionErrorAppendsNothing(t *testing.T) {
	t.Parallel()
	ctx, store := ctxT(t), newStore(t)
	repo := newRepo(t, store, accountConfig())
	_, err := repo.Update(ctx, "a1", func(a *account) error { return a.Open("ada") })
	require.NoError(t, err)

	errRule := errors.New("domain says no")
	calls := 0
	a, err := repo.Update(ctx, "a1", func(a *account) error {
		calls++
		if err := a.Deposit(10); err != nil {
			return err
		}
		return errRule // recorded, then refused: nothing may be saved
	})
	require.Same(t, errRule, err, "returned unchanged")
	require.Nil(t, a)
	require.Equal(t, 1, calls, "a refusal is not retried")
	require.Len(t, streamEvents(t, ctx, store, repo.Stream("a1")), 1)

	// A decision that records nothing saves nothing.
	a, err = repo.Update(ctx, "a1", func(*account) error { return nil })
	require.NoError(t, err)
	require.Equal(t, uint64(1), a.Version())

	// Update creates: a stream without events is a new aggregate.
	a, err = repo.Update(ctx, "a2", func(a *account) error {
		require.Zero(t, a.Version())
		return a.Open("bob")
	})
	require.NoError(t, err)
	require.Equal(t, uint64(1), a.Version())
}

func TestUpdateGivesUp(t *testing.T) {
	t.Parallel()
	ctx, store := ctxT(t), newStore(t)
	cfg := counterConfig()
	cfg.MaxAttempts = 3
	cfg.MinBackoff, cfg.MaxBackoff = time.Microsecond, time.Microsecond
	repo := newRepo(t, store, cfg)
	_, err := repo.Update(ctx, "c1", func(c *counter) error { return c.Increment() })
	require.NoError(t, err)

	calls := 0
	_, err = repo.Update(ctx, "c1", func(c *counter) error {
		calls++
		// Another writer gets in between every load and save.
		_, err := store.Append(ctx, repo.Stream("c1"), eventstore.Any, eventstore.EventData{Type: "incremented", Data: []byte(`{"by":1}`)})
		require.NoError(t, err)
		return c.Increment()
	})
	require.ErrorIs(t, err, eventstore.ErrConflict)
	require.ErrorContains(t, err, "gave up after 3 attempts")
	require.Equal(t, 3, calls)

	// A done context stops the retries.
	cctx, cancel := context.WithCancel(ctx)
	_, err = repo.Update(cctx, "c1", func(c *counter) error {
		cancel()
		return c.Increment()
	})
	require.ErrorIs(t, err, context.Canceled)
}

// storeBehind is a store whose connections (to every node of a cluster)
// go through d, which drops the reply of the next append script once
// armed (arm). Its own retries of an unknown outcome are off unless retry
// is set, so that the repository's are what a test sees.
func storeBehind(t *testing.T, d *faultenv.Dropper, ns string, retry ...bool) *eventstore.Store {
	opt := testenv.RedisOption(t, testenv.RedisURL())
	opt.DialCtxFn = d.Dial
	c, err := rueidis.NewClient(opt)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	cfg := eventstore.Config{Namespace: ns, RetryUnavailable: -1}
	if len(retry) > 0 && retry[0] {
		cfg.RetryUnavailable = 0 // the default
	}
	s, err := eventstore.New(c, cfg)
	require.NoError(t, err)
	return s
}

// newDropper drops nothing until arm; then only the append script counts.
func newDropper() *faultenv.Dropper {
	d := faultenv.NewDropper(1)
	d.Only("EVALSHA", "EVAL")
	return d
}

// arm: the next append script runs, and its reply is lost.
func arm(d *faultenv.Dropper) { d.DropNext(1) }

func dropped(d *faultenv.Dropper) int32 { return int32(d.Stats().Dropped) }

func TestSaveRetryAfterLostReplyAppendsOnce(t *testing.T) {
	t.Parallel()
	ctx, direct := ctxT(t), newStore(t)
	proxy := newDropper()
	store := storeBehind(t, proxy, direct.Namespace())
	repo := newRepo(t, store, accountConfig())

	a := repo.New("a1")
	require.NoError(t, a.Open("ada"))
	require.NoError(t, repo.Save(ctx, a)) // warm up: partition count and script cached

	require.NoError(t, a.Deposit(10))
	require.NoError(t, a.Deposit(20))
	arm(proxy)
	err := repo.Save(ctx, a)
	require.ErrorIs(t, err, eventstore.ErrUnknownOutcome, "the reply was lost")
	require.False(t, errors.Is(err, eventstore.ErrConflict))
	require.Equal(t, int32(1), dropped(proxy))
	require.Len(t, streamEvents(t, ctx, direct, repo.Stream("a1")), 3, "but the append happened")
	require.Equal(t, uint64(1), a.Version(), "the aggregate cannot know")
	require.Len(t, a.Changes(), 2)

	// The same Save again: same IDs, same expected version: recognised.
	require.NoError(t, repo.Save(ctx, a))
	require.Equal(t, uint64(3), a.Version())
	require.Empty(t, a.Changes())
	evs := streamEvents(t, ctx, direct, repo.Stream("a1"))
	require.Len(t, evs, 3, "not twice")

	b, err := repo.Load(ctx, "a1")
	require.NoError(t, err)
	require.Equal(t, int64(30), b.balance)
}

// With its defaults the event store re-sends an exact append whose reply
// was lost by itself: Save succeeds and the events are stored once.
func TestStoreResendsAfterLostReply(t *testing.T) {
	t.Parallel()
	ctx, direct := ctxT(t), newStore(t)
	proxy := newDropper()
	store := storeBehind(t, proxy, direct.Namespace(), true)
	repo := newRepo(t, store, accountConfig())
	a := repo.New("a1")
	require.NoError(t, a.Open("ada"))
	require.NoError(t, repo.Save(ctx, a))
	require.NoError(t, a.Deposit(10))
	arm(proxy)
	require.NoError(t, repo.Save(ctx, a))
	require.Equal(t, int32(1), dropped(proxy))
	require.Equal(t, uint64(2), a.Version())
	require.Len(t, streamEvents(t, ctx, direct, repo.Stream("a1")), 2, "appended once")
}

func TestUpdateRetriesLostReplyWithSameIDs(t *testing.T) {
	t.Parallel()
	ctx, direct := ctxT(t), newStore(t)
	proxy := newDropper()
	store := storeBehind(t, proxy, direct.Namespace())
	cfg := counterConfig()
	cfg.MinBackoff, cfg.MaxBackoff = time.Millisecond, time.Millisecond
	repo := newRepo(t, store, cfg)
	_, err := repo.Update(ctx, "c1", func(c *counter) error { return c.Increment() })
	require.NoError(t, err)

	calls := 0
	c, err := repo.Update(ctx, "c1", func(c *counter) error {
		calls++
		arm(proxy) // the next append's reply is lost
		return c.Increment()
	})
	require.NoError(t, err)
	require.Equal(t, int32(1), dropped(proxy))
	require.Equal(t, 1, calls, "re-sent, not decided again")
	require.Equal(t, uint64(2), c.Version())
	require.Len(t, streamEvents(t, ctx, direct, repo.Stream("c1")), 2, "appended once")
}
