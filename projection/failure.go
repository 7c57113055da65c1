package projection

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// What a worker does when applying a batch fails depends on who failed:
//
//   - transient: PostgreSQL refused this try, and the next one will most
//     likely pass (a serialization failure, a deadlock, a lock timeout;
//     statement_timeout on one of the runner's own statements). The batch
//     is retried in place with backoff, logged at WARN.
//   - infrastructure: PostgreSQL, or the way to it, is broken in a way that
//     no event caused and no retry of an event can fix: a missing table,
//     column, schema or function, a missing privilege, a lost connection,
//     a server that shuts down, runs out of resources or fails inside. The
//     partition stops applying and retries the batch in place with
//     backoff, logged at ERROR and recorded as the partition's last_error,
//     until the cause is fixed; nothing is quarantined.
//   - handler failure: the handler failed on this event. It is retried up
//     to MaxAttempts times with backoff, then quarantined.
//   - poison: a Permanent error or an undecodable entry, quarantined at
//     once.
//
// Retrying in place keeps the ownership: nothing is re-claimed in Redis,
// so no delivery is counted (deliveries stay the mark of a worker that
// crashed on an event), and no handler attempt is counted either.
//
// The database's word wins over the handler's: a 42P01 that a handler
// returns wrapped in Permanent is still infrastructure.

// failureClass is what an error met while applying a batch means.
type failureClass int

const (
	failOther     failureClass = iota // not classified: ends the ownership (stopping, fenced out, Redis)
	failTransient                     // retried in place, WARN
	failInfra                         // retried in place, ERROR and last_error
	failHandler                       // a handler attempt: MaxAttempts, then quarantine
)

// classify says what err means. inHandler: the handler returned it; else
// one of the runner's own statements did. tx may be nil.
//
// statement_timeout (57014) is the one code whose class depends on where
// it hits. In the handler it is a handler attempt, never a delivery: a
// handler statement that times out is this event's handler being too slow
// for the limit it runs under, which retrying forever will not change, so
// it is retried with backoff and, if it persists, quarantined with
// PostgreSQL's own text ("canceling statement due to statement timeout
// (SQLSTATE 57014)"); a batch handler's batch is split first, so a batch
// too large for the limit gets through in smaller pieces. Waiting on a
// lock is not the event's fault: set lock_timeout below statement_timeout
// and such a wait is reported as 55P03, which is transient. On the
// runner's own statements (the checkpoint lock and update, the held-event
// rows, COMMIT) a timeout says the database is slow right now: transient.
// 57014 is also what an operator's pg_cancel_backend gives; it counts as
// one handler attempt.
func classify(ctx context.Context, tx pgx.Tx, err error, inHandler bool) failureClass {
	if ctx.Err() != nil {
		return failOther // stopping or lost the partition: nothing to retry, nobody to blame
	}
	var ce *pgconn.ConnectError
	if (tx != nil && tx.Conn().IsClosed()) || pgconn.Timeout(err) || errors.As(err, &ce) {
		return failInfra
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		if inHandler {
			return failHandler
		}
		return failOther
	}
	switch {
	case transientCode(pe.Code):
		return failTransient
	case pe.Code == "57014":
		if inHandler {
			return failHandler
		}
		return failTransient
	case infraCode(pe.Code):
		return failInfra
	case pe.Code == "25P02" && !inHandler:
		// Our statement ran in a transaction the handler left aborted: it
		// returned nil after one of its statements failed.
		return failHandler
	case inHandler:
		return failHandler
	default:
		// The database refused one of the runner's own statements: not
		// the event's doing.
		return failInfra
	}
}

// transientCode: serialization_failure, deadlock_detected,
// lock_not_available.
func transientCode(code string) bool {
	switch code {
	case "40001", "40P01", "55P03":
		return true
	}
	return false
}

// infraCode: SQLSTATEs that say the database (its schema, its grants, the
// server, the connection) is not in a state to apply anything.
func infraCode(code string) bool {
	switch code {
	case "42P01", // undefined_table
		"42703", // undefined_column
		"42704", // undefined_object (a type, say)
		"42883", // undefined_function (or operator)
		"3F000", // invalid_schema_name
		"3D000", // invalid_catalog_name: the database is gone
		"42501", // insufficient_privilege
		"25006", // read_only_sql_transaction: connected to a standby
		"25P03", // idle_in_transaction_session_timeout: the session was ended
		"25P04": // transaction_timeout
		return true
	}
	if len(code) != 5 {
		return false
	}
	switch code[:2] {
	case "08", // connection exception
		"28", // invalid authorization
		"53", // insufficient resources
		"57", // operator intervention: admin/crash shutdown, cannot connect now, database dropped (57014 is handled before)
		"58", // system error
		"XX": // internal error
		return true
	}
	return false
}

// handlerError is a failure of the projection's handler (as opposed to
// PostgreSQL or Redis failing under it).
type handlerError struct{ err error }

func (e *handlerError) Error() string { return e.err.Error() }
func (e *handlerError) Unwrap() error { return e.err }

// dbFailure is PostgreSQL failing under a batch, transient or
// infrastructure: the batch is retried in place.
type dbFailure struct {
	transient bool
	err       error
}

func (e *dbFailure) Error() string { return e.err.Error() }
func (e *dbFailure) Unwrap() error { return e.err }

// asFailure wraps err as class c says.
func asFailure(c failureClass, err error) error {
	switch c {
	case failTransient:
		return &dbFailure{transient: true, err: err}
	case failInfra:
		return &dbFailure{err: err}
	case failHandler:
		return &handlerError{err: err}
	}
	return err
}

// stmtFailure classifies an error of one of the runner's own statements
// in tx. Errors classified already pass through.
func stmtFailure(ctx context.Context, tx pgx.Tx, err error) error {
	var df *dbFailure
	var he *handlerError
	if errors.As(err, &df) || errors.As(err, &he) {
		return err
	}
	c := classify(ctx, tx, err, false)
	if c == failHandler {
		err = fmt.Errorf("the handler left the transaction aborted (it returned nil after a statement failed): %w", err)
	}
	return asFailure(c, err)
}

// beginFailure classifies a failed BEGIN: PostgreSQL or the way to it,
// unless the worker is stopping.
func beginFailure(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return err
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && transientCode(pe.Code) {
		return &dbFailure{transient: true, err: err}
	}
	return &dbFailure{err: err}
}

// classifiedTx is inTx with its failures classified (see stmtFailure).
func classifiedTx(ctx context.Context, db DB, fn func(pgx.Tx) error) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return beginFailure(ctx, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := fn(tx); err != nil {
		return stmtFailure(ctx, tx, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return stmtFailure(ctx, tx, err)
	}
	return nil
}

// applyInPlace is apply, retried in place while PostgreSQL fails under
// the batch.
func (w *worker) applyInPlace(ctx context.Context, es []entry) (int, error) {
	at := -1
	err := w.inPlace(ctx, es[0].id, func() error {
		var err error
		at, err = w.apply(ctx, es)
		return err
	})
	return at, err
}

// inPlace runs fn again, with backoff (Backoff doubling up to
// CheckInterval), for as long as it returns a *dbFailure, and returns
// what it returns then. Transient failures are logged at WARN;
// infrastructure failures at ERROR, each time, and recorded as the
// partition's last_error (a successful batch clears it).
func (w *worker) inPlace(ctx context.Context, position string, fn func() error) error {
	delay := w.r.cfg.Backoff
	failures := 0
	var since time.Time
	for {
		err := fn()
		var df *dbFailure
		if !errors.As(err, &df) {
			if failures > 0 && err == nil {
				w.log.Info("projection: database failure over; applying again", "position", position,
					"failures", failures, "stalled", time.Since(since).Round(time.Millisecond))
			}
			return err
		}
		if failures == 0 {
			since = time.Now()
		}
		failures++
		attrs := []any{"position", position, "failures", failures, "retry_in", delay, "err", df.err}
		var pe *pgconn.PgError
		if errors.As(df.err, &pe) {
			attrs = append(attrs, "sqlstate", pe.Code, "pg_message", pe.Message)
		}
		if df.transient {
			w.log.Warn("projection: transient database failure; retrying the batch", attrs...)
		} else {
			w.log.Error("projection: database failing under the partition; retrying the batch until it is fixed", attrs...)
			w.recordError(df.err)
		}
		if !sleep(ctx, delay) {
			return ctx.Err()
		}
		delay = min(delay*2, max(w.r.cfg.CheckInterval, w.r.cfg.Backoff))
	}
}
