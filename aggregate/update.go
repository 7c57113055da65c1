package aggregate

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/redsource/redsource/eventstore"
)

// Update runs one command on an aggregate: it loads the aggregate (a new
// one, at version 0, if it has no events yet), calls decide, and saves what
// decide recorded.
//
// An error from decide is returned unchanged and nothing is appended: the
// domain refused the command. When another writer appended first
// (ErrConflict), Update loads again and calls decide again on the fresh
// state, so decide must have no effect besides recording on the aggregate.
// When the append's outcome is unknown (a network error), Update re-sends
// the same events with the same IDs, which the event store applies at most
// once (see Save). Attempts are bounded by Config.MaxAttempts, with
// jittered exponential backoff between them; running out returns the last
// error, which still matches ErrConflict when that was the cause.
//
// Update returns the aggregate as saved. An error loading the aggregate,
// an error from the context, or one that retrying cannot cure (bad names,
// sizes, an unregistered event type, a failing codec, a refusal by Redis
// (eventstore.ErrRefused), a Redis that stayed unavailable past the event
// store's RetryUnavailable (eventstore.ErrUnavailable), a Redis that lost
// data (eventstore.ErrDataLoss)) is returned at once. Only an error
// matching eventstore.ErrUnknownOutcome leaves it open whether the events
// were appended: a command that must not run twice should carry its own
// ID and check it in decide.
func (r *Repository[A]) Update(ctx context.Context, id string, decide func(A) error) (A, error) {
	var zero A
	var last error
	attempt := 0
	for attempt < r.cfg.MaxAttempts {
		if attempt > 0 {
			if err := r.backoff(ctx, attempt); err != nil {
				return zero, err
			}
		}
		attempt++
		a, err := r.load(ctx, id)
		if err != nil {
			return zero, err
		}
		if err := decide(a); err != nil {
			return zero, err
		}
		if len(a.root().pending) == 0 {
			return a, nil
		}
		events, err := r.prepare(ctx, a.root())
		if err != nil {
			return zero, err
		}
		for {
			err = r.append(ctx, a, events)
			if err == nil {
				return a, nil
			}
			last = err
			if errors.Is(err, eventstore.ErrConflict) || !retryable(ctx, err) || attempt >= r.cfg.MaxAttempts {
				break
			}
			// Unknown outcome: same events, same IDs, same expected version.
			if err := r.backoff(ctx, attempt); err != nil {
				return zero, err
			}
			attempt++
		}
		if !errors.Is(err, eventstore.ErrConflict) && !retryable(ctx, err) {
			return zero, err
		}
	}
	return zero, fmt.Errorf("aggregate: update %s: gave up after %d attempts: %w", r.Stream(id), attempt, last)
}

// retryable reports whether an append error is worth sending the same
// events again: only an outcome the event store could not learn
// (eventstore.ErrUnknownOutcome), since the same IDs make the retry
// idempotent. A refusal (bad input, OOM, NOPERM, a Redis that lost the
// namespace) is final, and the event store has already retried a Redis
// that was unavailable for its Config.RetryUnavailable.
func retryable(ctx context.Context, err error) bool {
	return ctx.Err() == nil && errors.Is(err, eventstore.ErrUnknownOutcome) &&
		!errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// backoff waits before retry n (n >= 1): a random time in
// [0, min(MaxBackoff, MinBackoff·2^(n-1))], "full jitter", so that writers
// that collided spread out instead of colliding again.
func (r *Repository[A]) backoff(ctx context.Context, n int) error {
	d := r.cfg.MaxBackoff
	if n-1 < 30 {
		if e := r.cfg.MinBackoff << (n - 1); e > 0 && e < d {
			d = e
		}
	}
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(rand.N(d + 1))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
