package projection

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sort"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/redsource/redsource/eventstore"
)

// Reasons an event is held back (held_events.reason).
const (
	reasonQuarantined = "quarantined"
	reasonParked      = "parked"
	reasonMissing     = "missing"
)

// heldRow is a held_events row about to be written.
type heldRow struct {
	e        entry
	reason   string
	errText  string
	attempts int
}

// apply runs one transaction over es (ascending positions): it locks the
// checkpoint row and checks the fence (a worker that lost its lease cannot
// commit), skips entries at or below the checkpoint, holds back what must
// not reach the handler (quarantined, parked, missing), hands the rest to
// the handler, advances the checkpoint and commits; then it acknowledges
// everything in Redis and mirrors new quarantine entries.
//
// A handler failure comes back as *handlerError, with the index in es of
// the failing event when the handler is per-event (else -1); PostgreSQL
// failing under the batch as *dbFailure (see classify). Nothing is
// committed then.
func (w *worker) apply(ctx context.Context, es []entry) (int, error) {
	start := time.Now()
	tx, err := w.r.cfg.DB.Begin(ctx)
	if err != nil {
		return -1, beginFailure(ctx, fmt.Errorf("projection: begin: %w", err))
	}
	defer tx.Rollback(context.WithoutCancel(ctx))

	var (
		fence   int64
		pos     string
		cpEvent *uuid.UUID
		blocked []string
	)
	// set_config bounds how long this transaction may sit idle while it
	// holds the checkpoint lock: a worker paused mid-batch (SIGSTOP, a VM
	// freeze) must not block the next owner's takeover forever.
	err = tx.QueryRow(ctx, "SELECT set_config('idle_in_transaction_session_timeout', $4, true), c.fence, c.position, c.event_id,"+
		" coalesce((SELECT array_agg(DISTINCT h.aggregate_id) FROM "+w.r.table("held_events")+
		" h WHERE h.projection = c.projection AND h.category = c.category AND h.partition = c.partition"+
		" AND h.resolved_at IS NULL AND h.reason IN ('quarantined', 'parked')), '{}') FROM "+w.r.table("checkpoints")+
		" c WHERE c.projection = $1 AND c.category = $2 AND c.partition = $3 FOR UPDATE OF c",
		w.name, w.u.category, w.u.partition, w.r.idleTimeout()).Scan(nil, &fence, &pos, &cpEvent, &blocked)
	if err != nil {
		return -1, stmtFailure(ctx, tx, fmt.Errorf("projection: lock checkpoint: %w", err))
	}
	if fence != w.fence {
		return -1, fmt.Errorf("%w: %s partition %d is fenced by a newer owner (fence %d, ours %d)", ErrLostOwnership, w.u.category, w.u.partition, fence, w.fence)
	}
	cp, err := eventstore.ParsePosition(pos)
	if err != nil {
		return -1, fmt.Errorf("projection: checkpoint: %w", err)
	}
	// Ahead of ours: an earlier try of this batch committed, but the
	// connection died before COMMIT's reply. Take its checkpoint; what it
	// quarantined still has to be mirrored.
	lostCommit := cp.Compare(w.cp) > 0
	if lostCommit {
		w.cp, w.cpEvent = cp, cpEvent
	}
	isBlocked := make(map[string]bool, len(blocked))
	if w.p.Mode == Sequenced {
		for _, a := range blocked {
			isBlocked[a] = true
		}
	}

	var (
		events []eventstore.Event
		index  []int // index in es of each event handed to the handler
		rows   []heldRow
		last   *entry
	)
	for i := range es {
		e := &es[i]
		if e.pos.Compare(cp) <= 0 {
			continue // applied before; only its XACK was lost
		}
		last = e
		agg := e.ev.Stream.ID
		switch {
		case e.missing:
			rows = append(rows, heldRow{e: *e, reason: reasonMissing, errText: "the log entry was deleted or trimmed while it was pending"})
		case isBlocked[agg]:
			rows = append(rows, heldRow{e: *e, reason: reasonParked})
		case e.quarantine != nil:
			rows = append(rows, heldRow{e: *e, reason: reasonQuarantined, errText: e.quarantine.err.Error(), attempts: e.quarantine.attempts})
			isBlocked[agg] = w.p.Mode == Sequenced
		case e.decodeErr != nil:
			rows = append(rows, heldRow{e: *e, reason: reasonQuarantined, errText: e.decodeErr.Error()})
			isBlocked[agg] = w.p.Mode == Sequenced
		default:
			events = append(events, e.ev)
			index = append(index, i)
		}
	}
	if last == nil {
		tx.Rollback(ctx)
		if err := w.ack(ctx, es, nil); err != nil || !lostCommit {
			return -1, err
		}
		return -1, w.reconcileMirror(ctx)
	}

	if len(events) > 0 {
		if at, err := w.callHandler(ctx, tx, events); err != nil {
			c := classify(ctx, tx, err, true)
			if c != failHandler {
				return -1, asFailure(c, fmt.Errorf("projection: applying a batch: %w", err))
			}
			if at >= 0 {
				at = index[at]
			}
			return at, &handlerError{err: err}
		}
	}
	if err := w.insertHeld(ctx, tx, rows); err != nil {
		return -1, stmtFailure(ctx, tx, err)
	}
	var eid any
	if last.decodeErr == nil && !last.missing {
		eid = last.ev.ID
	}
	tag, err := tx.Exec(ctx, "UPDATE "+w.r.table("checkpoints")+
		" SET position = $4, event_id = $5, applied = applied + $6, owner = $7, last_error = '', updated_at = now()"+
		" WHERE projection = $1 AND category = $2 AND partition = $3 AND fence = $8",
		w.name, w.u.category, w.u.partition, last.id, eid, len(events), w.r.cfg.WorkerID, w.fence)
	if err != nil {
		return -1, stmtFailure(ctx, tx, fmt.Errorf("projection: advance checkpoint: %w", err))
	}
	if tag.RowsAffected() != 1 {
		return -1, fmt.Errorf("%w: checkpoint compare-and-set failed", ErrLostOwnership)
	}
	if err := tx.Commit(ctx); err != nil {
		// The outcome may be unknown (the connection died in COMMIT): the
		// retry in place finds out from the checkpoint.
		return -1, stmtFailure(ctx, tx, fmt.Errorf("projection: commit: %w", err))
	}
	w.cp = last.pos
	if eid != nil {
		id := last.ev.ID
		w.cpEvent = &id
	} else {
		w.cpEvent = nil
	}
	if f := w.r.cfg.Faults; f != nil && f.AfterCommit != nil {
		if err := f.AfterCommit(w.name, w.u.category, w.u.partition); err != nil {
			return -1, err
		}
	}
	if h := w.r.cfg.Hooks; h != nil && h.Applied != nil {
		h.Applied(w.name, w.u.category, w.u.partition, len(events), time.Since(start))
	}
	for _, r := range rows {
		switch r.reason {
		case reasonQuarantined:
			w.log.Warn("projection: event quarantined", "position", r.e.id, "aggregate", r.e.ev.Stream.ID,
				"version", r.e.ev.Version, "type", r.e.ev.Type, "attempts", r.attempts, "err", r.errText)
			if h := w.r.cfg.Hooks; h != nil && h.Quarantined != nil {
				h.Quarantined(w.name, r.e.ev, errors.New(r.errText))
			}
		case reasonMissing:
			w.log.Error("projection: pending entry missing from the log; acknowledged and recorded", "position", r.e.id)
		}
	}
	return -1, w.ack(ctx, es, rows)
}

// callHandler hands events to the projection's handler. For a per-event
// handler it returns the index of the failing event.
// A panicking handler is an error like any other: the worker survives it.
func (w *worker) callHandler(ctx context.Context, tx pgx.Tx, events []eventstore.Event) (at int, err error) {
	at = -1
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("handler panicked: %v\n%s", v, debug.Stack())
		}
	}()
	if w.p.Batch != nil {
		return -1, w.p.Batch.ApplyBatch(ctx, tx, events)
	}
	for i, ev := range events {
		at = i
		if err := w.p.Handler.Apply(ctx, tx, ev); err != nil {
			return i, err
		}
	}
	return -1, nil
}

func (w *worker) insertHeld(ctx context.Context, tx pgx.Tx, rows []heldRow) error {
	for _, r := range rows {
		var eid any
		if r.e.decodeErr == nil && !r.e.missing {
			eid = r.e.ev.ID
		}
		_, err := tx.Exec(ctx, "INSERT INTO "+w.r.table("held_events")+
			" (projection, category, partition, position, ms, seq, aggregate_id, version, event_id, event_type, reason, error, attempts, deliveries)"+
			" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"+
			" ON CONFLICT (projection, category, partition, position) DO UPDATE SET reason = EXCLUDED.reason, error = EXCLUDED.error,"+
			" attempts = EXCLUDED.attempts, deliveries = EXCLUDED.deliveries, held_at = now(), resolved_at = NULL, resolution = NULL, requested = NULL, mirrored = false",
			w.name, w.u.category, w.u.partition, r.e.id, r.e.pos.Ms, r.e.pos.Seq, r.e.ev.Stream.ID, int64(r.e.ev.Version),
			eid, r.e.ev.Type, r.reason, r.errText, r.attempts, r.e.deliveries)
		if err != nil {
			return fmt.Errorf("projection: hold event %s: %w", r.e.id, err)
		}
	}
	return nil
}

// ack acknowledges every entry of a committed batch, then mirrors the new
// quarantine entries into the dead-letter stream. A crash in between is
// mended by the next owner (ackApplied, reconcileMirror).
func (w *worker) ack(ctx context.Context, es []entry, rows []heldRow) error {
	c := w.r.cfg.Store.Client()
	ids := make([]string, len(es))
	for i, e := range es {
		ids[i] = e.id
	}
	if err := c.Do(ctx, c.B().Xack().Key(w.logKey).Group(w.group).Id(ids...).Build()).Error(); err != nil {
		return fmt.Errorf("projection: XACK: %w", err)
	}
	for _, r := range rows {
		if r.reason == reasonQuarantined {
			if err := w.mirror(ctx, r.e.id, true); err != nil {
				return err
			}
		}
	}
	return nil
}

func sortEntries(es []entry) {
	sort.Slice(es, func(i, j int) bool { return es[i].pos.Compare(es[j].pos) < 0 })
}
