package projection

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/rueidis"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/keys"
	"github.com/redsource/redsource/internal/pgschema"
)

//go:embed dlq.lua
var dlqLua string

var dlqScript = rueidis.NewLuaScript(dlqLua)

// HeldEvent is an event a projection holds back: quarantined (its handler
// failed past the limits), parked (behind a quarantined event of the same
// aggregate) or missing (deleted from the log while pending).
type HeldEvent struct {
	Projection  string              `json:"projection"`
	Category    string              `json:"category"`
	Partition   int                 `json:"partition"`
	Position    eventstore.Position `json:"position"`
	AggregateID string              `json:"id"`
	Version     uint64              `json:"version"`
	EventID     string              `json:"event_id,omitempty"`
	Type        string              `json:"type"`
	Reason      string              `json:"reason"`
	Error       string              `json:"error"`
	Attempts    int                 `json:"attempts"`
	Deliveries  int                 `json:"deliveries"`
	HeldAt      time.Time           `json:"held_at"`
	Requested   string              `json:"requested,omitempty"`
}

// Admin lists held events and files operator requests. It needs no
// handler: the worker that owns a partition carries requests out, in
// order, with the projection's handler.
type Admin struct {
	db     DB
	schema string
}

// NewAdmin returns an Admin over the toolkit schema (default "redsource").
func NewAdmin(db DB, schema string) *Admin {
	if schema == "" {
		schema = pgschema.DefaultSchema
	}
	return &Admin{db: db, schema: schema}
}

func (a *Admin) table(name string) string { return pgschema.Quote(a.schema) + "." + name }

// ErrNoSchema: the toolkit's tables are not there: no runner has started
// against that schema yet.
var ErrNoSchema = errors.New("projection: no redsource tables in the schema (no projection has run against it yet)")

func (a *Admin) wrap(what string, err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (pe.Code == "42P01" || pe.Code == "3F000") {
		return fmt.Errorf("%w: schema %q: %s", ErrNoSchema, a.schema, what)
	}
	return fmt.Errorf("projection: %s: %w", what, err)
}

// Held lists a projection's open held events in (category, partition,
// position) order. reasons filters by reason; none means all.
func (a *Admin) Held(ctx context.Context, projection string, reasons ...string) ([]HeldEvent, error) {
	if err := keys.ValidateProjection(projection); err != nil {
		return nil, err
	}
	var out []HeldEvent
	err := inTx(ctx, a.db, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, "SELECT category, partition, position, aggregate_id, version, coalesce(event_id::text, ''), event_type,"+
			" reason, error, attempts, deliveries, held_at, coalesce(requested, '') FROM "+a.table("held_events")+
			" WHERE projection = $1 AND resolved_at IS NULL AND (coalesce(cardinality($2::text[]), 0) = 0 OR reason = ANY($2))"+
			" ORDER BY category, partition, ms, seq", projection, reasons)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			h := HeldEvent{Projection: projection}
			var pos string
			var version int64
			if err := rows.Scan(&h.Category, &h.Partition, &pos, &h.AggregateID, &version, &h.EventID, &h.Type,
				&h.Reason, &h.Error, &h.Attempts, &h.Deliveries, &h.HeldAt, &h.Requested); err != nil {
				return err
			}
			h.Version = uint64(version)
			if h.Position, err = eventstore.ParsePosition(pos); err != nil {
				return err
			}
			out = append(out, h)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, a.wrap(fmt.Sprintf("list held events of %q", projection), err)
	}
	return out, nil
}

// ErrNotHeld: no open quarantined event at that place.
var ErrNotHeld = errors.New("projection: no quarantined event there")

// Request asks the owner of the partition to retry ("retry": apply the
// quarantined event again, then the events parked behind it, in order) or
// to skip ("skip": leave it out, then apply the parked events). A missing
// entry can only be skipped. It returns how many events were requested.
// category "" means every category of the projection, partition < 0 every
// partition, a zero position every quarantined event.
func (a *Admin) Request(ctx context.Context, projection, action, category string, partition int, pos eventstore.Position) (int, error) {
	if action != "retry" && action != "skip" {
		return 0, fmt.Errorf("projection: unknown request %q (want retry or skip)", action)
	}
	var n int64
	err := inTx(ctx, a.db, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "UPDATE "+a.table("held_events")+" SET requested = $2"+
			" WHERE projection = $1 AND resolved_at IS NULL AND reason IN ('quarantined', 'missing')"+
			" AND ($3 = '' OR category = $3) AND ($4 < 0 OR partition = $4) AND ($5 = '0-0' OR position = $5)",
			projection, action, category, partition, pos.String())
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, a.wrap("request "+action, err)
	}
	if n == 0 {
		return 0, fmt.Errorf("%w: projection %q, category %q, partition %d, position %s", ErrNotHeld, projection, category, partition, pos)
	}
	return int(n), nil
}

// Outcome is what became of an operator request on one held event.
type Outcome struct {
	// Resolved is true once the event is no longer held; Resolution then
	// says how: "retried", "skipped" or "applied" (a parked event).
	Resolved   bool
	Resolution string
	// Pending is true while the request waits for the owning worker.
	Pending bool
	// Error is the event's last error; after a failed retry, why it failed.
	Error string
}

// Outcome reports what became of a request on the held event at pos.
func (a *Admin) Outcome(ctx context.Context, projection, category string, partition int, pos eventstore.Position) (Outcome, error) {
	var o Outcome
	err := inTx(ctx, a.db, func(tx pgx.Tx) error {
		var resolved *time.Time
		var req, how *string
		err := tx.QueryRow(ctx, "SELECT resolved_at, resolution, requested, error FROM "+a.table("held_events")+
			" WHERE projection = $1 AND category = $2 AND partition = $3 AND position = $4",
			projection, category, partition, pos.String()).Scan(&resolved, &how, &req, &o.Error)
		o.Resolved, o.Pending = resolved != nil, req != nil
		if how != nil {
			o.Resolution = *how
		}
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return o, fmt.Errorf("%w: projection %q, category %q, partition %d, position %s", ErrNotHeld, projection, category, partition, pos)
	}
	if err != nil {
		return o, a.wrap("read request outcome", err)
	}
	return o, nil
}

// Namespace returns the event-store namespace whose projections the schema
// holds ("" when no runner has recorded one yet).
func (a *Admin) Namespace(ctx context.Context) (string, error) {
	var ns string
	err := inTx(ctx, a.db, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, "SELECT namespace FROM "+a.table("projection_namespace")).Scan(&ns)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	})
	if err != nil {
		return "", a.wrap("read namespace", err)
	}
	return ns, nil
}

// handleRequests carries out operator requests on this partition, oldest
// position first. PostgreSQL failing under them is retried in place, like
// a batch.
func (w *worker) handleRequests(ctx context.Context) error {
	type req struct {
		pos, agg, reason, action string
	}
	var reqs []req
	read := func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, "SELECT position, aggregate_id, reason, requested FROM "+w.r.table("held_events")+
			" WHERE projection = $1 AND category = $2 AND partition = $3 AND resolved_at IS NULL AND requested IS NOT NULL ORDER BY ms, seq",
			w.name, w.u.category, w.u.partition)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var r req
			if err := rows.Scan(&r.pos, &r.agg, &r.reason, &r.action); err != nil {
				return err
			}
			reqs = append(reqs, r)
		}
		return rows.Err()
	}
	err := w.inPlace(ctx, w.cp.String(), func() error {
		reqs = reqs[:0]
		return classifiedTx(ctx, w.r.cfg.DB, read)
	})
	if err != nil {
		return fmt.Errorf("projection: read requests: %w", err)
	}
	for _, r := range reqs {
		if err := w.inPlace(ctx, r.pos, func() error { return w.execRequest(ctx, r.pos, r.agg, r.reason, r.action) }); err != nil {
			return err
		}
	}
	return nil
}

// execRequest retries or skips one held event, then releases the events
// parked behind it in order; an event that fails on release becomes the
// aggregate's new quarantined head and the rest stay parked.
func (w *worker) execRequest(ctx context.Context, pos, agg, reason, action string) error {
	var newHead string
	resolved := false
	err := classifiedTx(ctx, w.r.cfg.DB, func(tx pgx.Tx) error {
		newHead, resolved = "", false
		var fence int64
		if err := tx.QueryRow(ctx, "SELECT set_config('idle_in_transaction_session_timeout', $4, true), fence FROM "+w.r.table("checkpoints")+
			" WHERE projection = $1 AND category = $2 AND partition = $3 FOR UPDATE",
			w.name, w.u.category, w.u.partition, w.r.idleTimeout()).Scan(nil, &fence); err != nil {
			return err
		}
		if fence != w.fence {
			return ErrLostOwnership
		}
		fail := func(msg string) error {
			_, err := tx.Exec(ctx, "UPDATE "+w.r.table("held_events")+" SET requested = NULL, error = $5, attempts = attempts + 1"+
				" WHERE projection = $1 AND category = $2 AND partition = $3 AND position = $4",
				w.name, w.u.category, w.u.partition, pos, msg)
			return err
		}
		applied := 0
		if action == "retry" {
			if reason == reasonMissing {
				return fail("the log entry is gone: it can only be skipped")
			}
			ok, msg, err := w.applyHeld(ctx, tx, pos)
			if err != nil {
				return err
			}
			if !ok {
				return fail(msg)
			}
			applied++
		}
		// Events applied here count in the partition's applied total.
		defer func() {
			if applied > 0 {
				_, _ = tx.Exec(ctx, "UPDATE "+w.r.table("checkpoints")+" SET applied = applied + $4"+
					" WHERE projection = $1 AND category = $2 AND partition = $3", w.name, w.u.category, w.u.partition, applied)
			}
		}()
		if err := w.resolve(ctx, tx, pos, map[string]string{"retry": "retried", "skip": "skipped"}[action]); err != nil {
			return err
		}
		resolved = true
		if w.p.Mode != Sequenced || reason == reasonMissing {
			return nil
		}
		rows, err := tx.Query(ctx, "SELECT position FROM "+w.r.table("held_events")+
			" WHERE projection = $1 AND category = $2 AND partition = $3 AND aggregate_id = $4 AND resolved_at IS NULL AND reason = 'parked' ORDER BY ms, seq",
			w.name, w.u.category, w.u.partition, agg)
		if err != nil {
			return err
		}
		parked, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for _, p := range parked {
			ok, msg, err := w.applyHeld(ctx, tx, p)
			if err != nil {
				return err
			}
			if !ok {
				newHead = p
				_, err := tx.Exec(ctx, "UPDATE "+w.r.table("held_events")+" SET reason = 'quarantined', error = $5, attempts = 1, mirrored = false"+
					" WHERE projection = $1 AND category = $2 AND partition = $3 AND position = $4",
					w.name, w.u.category, w.u.partition, p, msg)
				return err
			}
			if err := w.resolve(ctx, tx, p, "applied"); err != nil {
				return err
			}
			applied++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("projection: %s %s: %w", action, pos, err)
	}
	w.log.Info("projection: operator request carried out", "action", action, "position", pos, "resolved", resolved, "new_quarantined", newHead)
	if resolved && reason == reasonQuarantined {
		if err := w.mirror(ctx, pos, false); err != nil {
			return err
		}
	}
	if newHead != "" {
		return w.mirror(ctx, newHead, true)
	}
	return nil
}

// applyHeld reads one held event back from the log and hands it to the
// handler inside a savepoint. ok false with a message: the handler (or
// the log) refused it and the savepoint was rolled back. PostgreSQL
// failing under the handler comes back as a *dbFailure: the request is
// retried, not failed.
func (w *worker) applyHeld(ctx context.Context, tx pgx.Tx, pos string) (bool, string, error) {
	p, err := eventstore.ParsePosition(pos)
	if err != nil {
		return false, "", err
	}
	var ev *eventstore.Event
	for e, err := range w.r.cfg.Store.ReadPartition(ctx, w.u.category, w.u.partition, p, p) {
		if err != nil {
			return false, "cannot read the event: " + err.Error(), nil
		}
		ev = &e
	}
	if ev == nil {
		return false, "the log entry is gone: it can only be skipped", nil
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return false, "", err
	}
	if _, err := w.callHandler(ctx, sp, []eventstore.Event{*ev}); err != nil {
		if c := classify(ctx, tx, err, true); c != failHandler {
			return false, "", asFailure(c, err)
		}
		if rbErr := sp.Rollback(ctx); rbErr != nil {
			return false, "", rbErr
		}
		return false, err.Error(), nil
	}
	return true, "", sp.Commit(ctx)
}

func (w *worker) resolve(ctx context.Context, tx pgx.Tx, pos, how string) error {
	_, err := tx.Exec(ctx, "UPDATE "+w.r.table("held_events")+" SET resolved_at = now(), resolution = $5, requested = NULL"+
		" WHERE projection = $1 AND category = $2 AND partition = $3 AND position = $4",
		w.name, w.u.category, w.u.partition, pos, how)
	return err
}

// mirror adds a quarantined entry to the dead-letter stream (and XACKs
// it), or removes a resolved one, then records that in PostgreSQL.
func (w *worker) mirror(ctx context.Context, pos string, add bool) error {
	c := w.r.cfg.Store.Client()
	l := w.r.keys
	ks := []string{w.logKey, l.DLQ(w.u.category, w.u.partition, w.name), l.DLQIndex(w.u.category, w.u.partition, w.name)}
	if add {
		var agg, typ, errText, eid string
		var version int64
		var attempts, deliveries int
		err := w.inTx(ctx, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, "SELECT aggregate_id, version, event_type, error, coalesce(event_id::text, ''), attempts, deliveries FROM "+
				w.r.table("held_events")+" WHERE projection = $1 AND category = $2 AND partition = $3 AND position = $4",
				w.name, w.u.category, w.u.partition, pos).Scan(&agg, &version, &typ, &errText, &eid, &attempts, &deliveries)
		})
		if err != nil {
			return fmt.Errorf("projection: read quarantine entry %s: %w", pos, err)
		}
		args := []string{"add", w.group, pos, "position", pos, "aggregate", agg, "version", strconv.FormatInt(version, 10),
			"type", typ, "event_id", eid, "error", errText, "attempts", strconv.Itoa(attempts), "deliveries", strconv.Itoa(deliveries)}
		if err := dlqScript.Exec(ctx, c, ks, args).Error(); err != nil {
			return fmt.Errorf("projection: dead-letter %s: %w", pos, err)
		}
	} else if err := dlqScript.Exec(ctx, c, ks, []string{"remove", w.group, pos}).Error(); err != nil {
		return fmt.Errorf("projection: remove dead-letter %s: %w", pos, err)
	}
	return w.inTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "UPDATE "+w.r.table("held_events")+" SET mirrored = $5"+
			" WHERE projection = $1 AND category = $2 AND partition = $3 AND position = $4",
			w.name, w.u.category, w.u.partition, pos, add)
		return err
	})
}

// reconcileMirror brings the dead-letter stream in line with PostgreSQL
// after a crash between a commit and its mirror.
func (w *worker) reconcileMirror(ctx context.Context) error {
	type row struct {
		pos string
		add bool
	}
	var todo []row
	err := w.inTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, "SELECT position, resolved_at IS NULL FROM "+w.r.table("held_events")+
			" WHERE projection = $1 AND category = $2 AND partition = $3 AND reason = 'quarantined'"+
			" AND mirrored = (resolved_at IS NOT NULL) ORDER BY ms, seq", w.name, w.u.category, w.u.partition)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.pos, &r.add); err != nil {
				return err
			}
			todo = append(todo, r)
		}
		return rows.Err()
	})
	if err != nil {
		return fmt.Errorf("projection: reconcile dead letters: %w", err)
	}
	for _, r := range todo {
		if err := w.mirror(ctx, r.pos, r.add); err != nil {
			return err
		}
	}
	return nil
}

func inTx(ctx context.Context, db DB, fn func(pgx.Tx) error) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}
