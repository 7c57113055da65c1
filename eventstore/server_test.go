package eventstore_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/faultenv"
	"github.com/redsource/redsource/internal/testenv"
)

// syncBuffer collects log output written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func dbsize(t *testing.T, srv *faultenv.Server) int64 {
	t.Helper()
	n, err := srv.Do(context.Background(), "DBSIZE")
	require.NoError(t, err)
	return n.(int64)
}

// A Redis whose maxmemory-policy evicts keys deletes events without an
// error: the store refuses it before anything is written, naming the
// setting and the fix, unless AllowEviction says the data is throwaway.
func TestEvictingRedisIsRefused(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	srv := faultenv.Start(t, faultenv.Options{MaxMemory: "64mb", Policy: "allkeys-lru"})
	c := testenv.RedisAt(t, srv.URL())
	s, err := eventstore.New(c, eventstore.Config{Namespace: "evict"})
	require.NoError(t, err)
	st := eventstore.StreamID{Category: "acc", ID: "a1"}

	_, err = s.Append(ctx, st, eventstore.NoStream, ev("A", "1"))
	require.ErrorIs(t, err, eventstore.ErrUnsafeRedis)
	require.ErrorIs(t, eventstore.Classify(err), eventstore.ErrRefused)
	var se *eventstore.SettingError
	require.ErrorAs(t, err, &se)
	require.Equal(t, "maxmemory-policy", se.Setting)
	require.Equal(t, "allkeys-lru", se.Value)
	require.Contains(t, err.Error(), "maxmemory-policy noeviction")
	require.Contains(t, err.Error(), "Nothing was written")
	require.Zero(t, dbsize(t, srv), "nothing written")
	for _, err := range s.Read(ctx, st, 0) {
		require.ErrorIs(t, err, eventstore.ErrUnsafeRedis)
	}
	for _, err := range s.ReadCategory(ctx, "acc", eventstore.MinPosition, eventstore.MaxPosition) {
		require.ErrorIs(t, err, eventstore.ErrUnsafeRedis)
	}

	var logs syncBuffer
	throwaway, err := eventstore.New(c, eventstore.Config{Namespace: "evict", AllowEviction: true,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	_, err = throwaway.Append(ctx, st, eventstore.NoStream, ev("A", "1"))
	require.NoError(t, err)
	require.Contains(t, logs.String(), "events can vanish without an error")
}

// The volatile-* policies evict only keys that have a TTL: events have
// none, so the store works, with a warning.
func TestVolatilePolicyIsAWarning(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	srv := faultenv.Start(t, faultenv.Options{MaxMemory: "64mb", Policy: "volatile-lru"})
	var logs syncBuffer
	s, err := eventstore.New(testenv.RedisAt(t, srv.URL()), eventstore.Config{Namespace: "vol", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	_, err = s.Append(ctx, eventstore.StreamID{Category: "acc", ID: "a1"}, eventstore.NoStream, ev("A", "1"))
	require.NoError(t, err)
	require.Contains(t, logs.String(), "evicts keys with a TTL")
}

// With the ACL the docs recommend (docs/operations.md), CONFIG and INFO
// are not allowed: the store says once that it cannot check the policy
// and goes on. A user without +@scripting has every append refused for
// certain (NOPERM), at once: not retried as if the outcome were unknown.
func TestRestrictedUser(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	srv := faultenv.Start(t, faultenv.Options{})
	const ns = "acl"
	// The exact line of docs/operations.md.
	line := "~" + ns + ":* -@all +@read +@write +@stream +@connection +@scripting -@dangerous +time"
	args := append([]string{"ACL", "SETUSER", "app", "on", ">app-secret", "resetkeys"}, strings.Fields(line)...)
	_, err := srv.Do(ctx, args...)
	require.NoError(t, err)
	_, err = srv.Do(ctx, "ACL", "SETUSER", "noscript", "on", ">noscript-secret", "~"+ns+":*", "-@all", "+@read", "+@write", "+@stream", "+@connection", "-@dangerous")
	require.NoError(t, err)

	var logs syncBuffer
	appURL := strings.Replace(srv.URL(), "redis://", "redis://app:app-secret@", 1)
	s, err := eventstore.New(testenv.RedisAt(t, appURL), eventstore.Config{Namespace: ns, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	st := eventstore.StreamID{Category: "acc", ID: "a1"}
	for i := range 3 {
		_, err = s.Append(ctx, st, eventstore.Exact(uint64(i)), ev("A", "1"))
		require.NoError(t, err)
	}
	require.Len(t, collect(t, s.Read(ctx, st, 0)), 3)
	require.Len(t, collect(t, s.ReadCategory(ctx, "acc", eventstore.MinPosition, eventstore.MaxPosition)), 3)
	require.Equal(t, 1, strings.Count(logs.String(), "cannot read the Redis maxmemory-policy"), logs.String())
	require.NotContains(t, logs.String(), "app-secret")

	noscript, err := eventstore.New(testenv.RedisAt(t, strings.Replace(srv.URL(), "redis://", "redis://noscript:noscript-secret@", 1)),
		eventstore.Config{Namespace: ns, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	start := time.Now()
	_, err = noscript.Append(ctx, st, eventstore.Exact(3), ev("A", "1"))
	require.ErrorIs(t, err, eventstore.ErrRefused)
	require.ErrorContains(t, err, "NOPERM")
	require.Less(t, time.Since(start), 5*time.Second, "refused at once, not retried for RetryUnavailable")
	require.Len(t, collect(t, s.Read(ctx, st, 0)), 3)
}

// A Redis that cannot be reached stays unavailable for the store's
// budget: the append waits for it, and succeeds when it comes back; with
// a short budget it gives up with ErrUnavailable and nothing written.
func TestUnavailableRedisIsRetriedWithinABudget(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	srv := faultenv.Start(t, faultenv.Options{AOF: "always"})
	c := testenv.RedisAt(t, srv.URL())
	s, err := eventstore.New(c, eventstore.Config{Namespace: "gone"})
	require.NoError(t, err)
	short, err := eventstore.New(c, eventstore.Config{Namespace: "gone", RetryUnavailable: 300 * time.Millisecond})
	require.NoError(t, err)
	st := eventstore.StreamID{Category: "acc", ID: "a1"}
	_, err = s.Append(ctx, st, eventstore.NoStream, ev("A", "1"))
	require.NoError(t, err)
	_, err = short.Append(ctx, st, eventstore.Exact(1), ev("A", "2"))
	require.NoError(t, err)

	require.NoError(t, srv.Kill())
	start := time.Now()
	_, err = short.Append(ctx, st, eventstore.Exact(2), ev("A", "3"))
	require.ErrorIs(t, err, eventstore.ErrUnavailable, "%v", err)
	require.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond, "retried for its budget")
	require.Equal(t, faultenv.Failed, faultenv.Classify(err), "nothing was sent")

	// Also a store's very first call, which reads the namespace identity
	// (a read rueidis itself would retry until the context ends).
	fresh, err := eventstore.New(c, eventstore.Config{Namespace: "gone", RetryUnavailable: 300 * time.Millisecond})
	require.NoError(t, err)
	start = time.Now()
	_, err = fresh.Append(ctx, st, eventstore.Exact(2), ev("A", "3"))
	require.ErrorIs(t, err, eventstore.ErrUnavailable, "%v", err)
	require.Less(t, time.Since(start), 5*time.Second, "bounded by the budget, not by the context")
	require.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond, "and retried within it")
	for _, err := range fresh.Read(ctx, st, 0) {
		require.ErrorIs(t, err, eventstore.ErrUnavailable)
	}

	restarted := make(chan error, 1)
	go func() {
		// Down for a while, then back: the append in flight waits for it.
		time.Sleep(time.Second)
		restarted <- srv.Restart()
	}()
	res, err := s.Append(ctx, st, eventstore.Exact(2), ev("A", "3"))
	require.NoError(t, <-restarted)
	require.NoError(t, err)
	require.Equal(t, uint64(3), res.FirstVersion)
	require.Len(t, collect(t, s.Read(ctx, st, 0)), 3)
}
