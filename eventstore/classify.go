package eventstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/redis/rueidis"
)

// The three ways a command sent to Redis can fail. Every error the store
// returns from Redis matches exactly one of them (errors.Is), next to the
// error Redis or the network gave.
var (
	// ErrRefused: Redis answered and refused the command (OOM, NOPERM,
	// WRONGTYPE, MISCONF, a script error…). Nothing was written, and
	// sending it again will not help until the cause is fixed.
	ErrRefused = errors.New("eventstore: refused by Redis")
	// ErrUnavailable: Redis could not take the command for a while
	// (connection refused, LOADING, CLUSTERDOWN, TRYAGAIN, MASTERDOWN,
	// READONLY, BUSY). Nothing was written. The store has retried it for
	// Config.RetryUnavailable before giving up.
	ErrUnavailable = errors.New("eventstore: Redis unavailable")
	// ErrUnknownOutcome: the command may or may not have run (a timeout, a
	// connection reset or closed after it was sent). Retry an append with
	// the same events and event IDs: it is applied at most once.
	ErrUnknownOutcome = errors.New("eventstore: outcome unknown")
)

// unavailableCodes are the Redis error codes that mean "not now": the
// command did not run and will succeed once a failover, a load or a
// resharding is over.
var unavailableCodes = map[string]bool{
	"LOADING": true, "CLUSTERDOWN": true, "TRYAGAIN": true, "MASTERDOWN": true,
	"READONLY": true, "BUSY": true, "NOREPLICAS": true,
}

// Classify returns ErrRefused, ErrUnavailable or ErrUnknownOutcome for an
// error of the store or from a Redis command (already classified or raw
// from rueidis), and nil for nil. The store's own refusals (a conflict,
// bad input, a partition count mismatch, a data loss) are ErrRefused:
// nothing was written. A done context counts as an unknown outcome: the
// command may have been sent.
func Classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrRefused):
		return ErrRefused
	case errors.Is(err, ErrUnavailable):
		return ErrUnavailable
	case errors.Is(err, ErrUnknownOutcome):
		return ErrUnknownOutcome
	}
	for _, refused := range storeRefusals {
		if errors.Is(err, refused) {
			return ErrRefused
		}
	}
	if re, ok := rueidis.IsRedisErr(err); ok {
		if unavailableCodes[redisCode(re)] {
			return ErrUnavailable
		}
		return ErrRefused
	}
	// A dial that failed sent nothing.
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" || errors.Is(err, syscall.ECONNREFUSED) {
		return ErrUnavailable
	}
	return ErrUnknownOutcome
}

// redisCode is the error code of a Redis error reply: its first word
// ("OOM", "NOPERM", "LOADING"), which RESP defines as the machine-readable
// part of an error.
func redisCode(re *rueidis.RedisError) string {
	code, _, _ := strings.Cut(re.Error(), " ")
	return code
}

// classified is a Redis failure with its class.
type classified struct {
	class error
	err   error
}

func (e *classified) Error() string {
	switch e.class {
	case ErrRefused:
		return e.err.Error() + " (refused by Redis: nothing written)"
	case ErrUnavailable:
		return e.err.Error() + " (Redis unavailable: nothing written)"
	}
	return e.err.Error() + " (outcome unknown: retry with the same event IDs)"
}

func (e *classified) Unwrap() []error { return []error{e.class, e.err} }

// classify wraps a Redis failure with its class; nil stays nil, and an
// error that is not about Redis (a conflict, bad input) is returned as is.
func classify(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrRefused) || errors.Is(err, ErrUnavailable) || errors.Is(err, ErrUnknownOutcome) {
		return err
	}
	for _, refused := range storeRefusals {
		if errors.Is(err, refused) {
			return err
		}
	}
	return &classified{class: Classify(err), err: err}
}

// storeRefusals are the store's own errors that mean "nothing written,
// and sending it again will not help".
var storeRefusals = []error{ErrConflict, ErrInvalidName, ErrInvalidAppend, ErrEventTooLarge,
	ErrPartitionMismatch, ErrDataLoss, ErrUnsafeRedis, ErrCorruptEntry, ErrMissingEntry, ErrPositionMismatch}

// retrier waits between attempts of a command that Redis could not take,
// within a time budget.
type retrier struct {
	deadline time.Time
	delay    time.Duration
}

func newRetrier(budget time.Duration) *retrier {
	return &retrier{deadline: time.Now().Add(budget), delay: 5 * time.Millisecond}
}

// wait sleeps before the next attempt and reports whether there is one: the
// budget is not spent and ctx is not done. Delays double from 5 ms up to
// 500 ms with full jitter.
func (r *retrier) wait(ctx context.Context) bool {
	if ctx.Err() != nil || time.Now().After(r.deadline) {
		return false
	}
	d := rand.N(r.delay) + r.delay/2
	r.delay = min(2*r.delay, 500*time.Millisecond)
	if left := time.Until(r.deadline); d > left {
		d = max(left, 0)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// bound gives a call the store's budget for an unavailable Redis as its
// deadline: rueidis retries read-only commands on connection errors until
// the context ends, and no call of the store waits for a Redis that is
// away longer than an append would. A negative budget leaves ctx as is.
func (s *Store) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.cfg.RetryUnavailable <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.cfg.RetryUnavailable)
}

// do sends one command within the store's budget (see bound). A call cut
// off by the budget (not by the caller's context) is ErrUnavailable.
func (s *Store) do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	bctx, cancel := s.bound(ctx)
	defer cancel()
	res := s.client.Do(bctx, cmd)
	if err := res.Error(); err != nil && bctx.Err() != nil && ctx.Err() == nil {
		return rueidis.NewErrorResult(s.outOfBudget(err))
	}
	return res
}

// doMulti pipelines commands within the store's budget (see do).
func (s *Store) doMulti(ctx context.Context, cmds ...rueidis.Completed) []rueidis.RedisResult {
	bctx, cancel := s.bound(ctx)
	defer cancel()
	res := s.client.DoMulti(bctx, cmds...)
	if bctx.Err() != nil && ctx.Err() == nil {
		for i, r := range res {
			if err := r.Error(); err != nil {
				res[i] = rueidis.NewErrorResult(s.outOfBudget(err))
			}
		}
	}
	return res
}

func (s *Store) outOfBudget(err error) error {
	return &classified{class: ErrUnavailable, err: fmt.Errorf("no answer from Redis within %s (Config.RetryUnavailable): %w", s.cfg.RetryUnavailable, err)}
}
