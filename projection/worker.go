package projection

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/redis/rueidis"

	"github.com/redsource/redsource/eventstore"
)

// worker projects one partition of one category for one projection while
// its runner owns the lease.
type worker struct {
	r *Runner
	u unit
	p Projection

	name string // p.ID(): the version's name in groups, leases and checkpoints

	log      *slog.Logger
	logKey   string
	group    string
	consumer string

	fence     int64
	cp        eventstore.Position
	cpEvent   *uuid.UUID
	lastCheck time.Time
	lastRead  atomic.Value         // string: the last ID this ownership's reader got
	suspect   *eventstore.Position // delivered but not seen by us at the last check
	stopped   bool                 // the checkpoint may hold a stop or error of an earlier ownership
}

func (w *worker) init() {
	w.name = w.p.ID()
	w.group = w.name
	w.consumer = strconv.Itoa(w.u.partition)
	w.logKey = w.r.cfg.Store.LogKey(w.u.category, w.u.partition)
	w.log = w.r.cfg.Logger.With("projection", w.name, "category", w.u.category, "partition", w.u.partition, "worker", w.r.cfg.WorkerID)
	w.stopped = true // until the first ownership clears what an earlier one may have recorded
}

// run owns the partition until ctx ends or ownership is lost, starting
// over (with backoff) after any failure.
func (w *worker) run(ctx context.Context) {
	w.init()
	backoff := w.r.cfg.Backoff
	for ctx.Err() == nil {
		err := w.own(ctx)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, ErrLostOwnership) {
			w.log.Warn("projection: ownership lost", "err", err)
			return
		}
		if errors.Is(err, eventstore.ErrDataLoss) {
			// Redis lost what the checkpoint remembers: the partition
			// stays stopped (tried again in case Redis is restored) and
			// says so in its checkpoint.
			w.log.Error("projection: partition stopped: Redis lost events this read model has applied; restore Redis or rebuild the projection", "err", err, "retry_in", backoff)
			w.r.markStopped(ctx, w.u, err)
			w.stopped = true
		} else {
			w.log.Error("projection: partition stopped; will retry", "err", err, "retry_in", backoff)
			w.recordError(err)
			w.stopped = true
		}
		if !sleep(ctx, backoff) {
			return
		}
		backoff = min(backoff*2, w.r.cfg.CheckInterval)
	}
}

// own runs one ownership: fence, checks, catch-up, then the steady loop.
func (w *worker) own(ctx context.Context) error {
	if err := w.takeOver(ctx); err != nil {
		return err
	}
	// Before anything touches Redis (creating the group would create the
	// stream): is it still the namespace the schema remembers?
	if err := w.r.checkIdentity(ctx); err != nil {
		return err
	}
	if err := w.checkLog(ctx); err != nil {
		return err
	}
	if w.stopped {
		w.clearStopped(ctx)
	}
	last, err := w.ensureGroup(ctx)
	if err != nil {
		return err
	}
	if err := w.reconcileMirror(ctx); err != nil {
		return err
	}
	if err := w.catchUp(ctx, last); err != nil {
		return err
	}
	return w.steady(ctx)
}

// takeOver bumps the fence: from now on, a batch of any previous owner
// fails its compare-and-set.
func (w *worker) takeOver(ctx context.Context) error {
	var pos string
	err := w.inTx(ctx, func(tx pgx.Tx) error {
		// A previous owner's open transaction holds the row until it ends;
		// its idle timeout ends it if that owner is paused. Do not wait
		// longer than that here.
		if _, err := tx.Exec(ctx, "SELECT set_config('lock_timeout', $1, true)", w.r.lockTimeout()); err != nil {
			return err
		}
		return tx.QueryRow(ctx, "UPDATE "+w.r.table("checkpoints")+
			" SET fence = fence + 1, owner = $4 WHERE projection = $1 AND category = $2 AND partition = $3"+
			" RETURNING fence, position, event_id", w.name, w.u.category, w.u.partition, w.r.cfg.WorkerID).
			Scan(&w.fence, &pos, &w.cpEvent)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("projection: %s has no checkpoint for %s partition %d (was this version dropped with Admin.DropVersion while runners still run it?)",
			w.name, w.u.category, w.u.partition)
	}
	if err != nil {
		return fmt.Errorf("projection: take over checkpoint: %w", err)
	}
	w.cp, err = eventstore.ParsePosition(pos)
	return err
}

// checkLog verifies that the entry at the checkpoint is still in the log
// and is the same event: a log that lost its tail fails here, before a new
// event that reuses a lost ID could be skipped.
func (w *worker) checkLog(ctx context.Context) error {
	w.lastCheck = time.Now()
	regressed, err := regressions(ctx, w.r.cfg.Store, []checkpointRef{{w.u.category, w.u.partition, w.cp, w.cpEvent}})
	if err != nil {
		return err
	}
	return regressed[0]
}

// ensureGroup creates the consumer group at the checkpoint (never at $),
// moves a group that is behind the checkpoint up to it, and returns the
// group's last delivered ID.
func (w *worker) ensureGroup(ctx context.Context) (eventstore.Position, error) {
	c := w.r.cfg.Store.Client()
	// XGROUP CREATE is refused when Redis is full (DENYOOM), even for a
	// group that exists: send it only when the group is not there, so a
	// takeover works on a full Redis.
	last, err := w.lastDelivered(ctx)
	if err != nil {
		err := c.Do(ctx, c.B().XgroupCreate().Key(w.logKey).Group(w.group).Id(w.cp.String()).Mkstream().Build()).Error()
		if err != nil && !rueidis.IsRedisBusyGroup(err) {
			return eventstore.Position{}, fmt.Errorf("projection: create group: %w", err)
		}
		if last, err = w.lastDelivered(ctx); err != nil {
			return last, err
		}
	}
	if last.Compare(w.cp) < 0 {
		if err := c.Do(ctx, c.B().XgroupSetid().Key(w.logKey).Group(w.group).Id(w.cp.String()).Build()).Error(); err != nil {
			return last, fmt.Errorf("projection: move group to checkpoint: %w", err)
		}
		last = w.cp
	}
	return last, nil
}

func (w *worker) lastDelivered(ctx context.Context) (eventstore.Position, error) {
	info, err := w.groupInfo(ctx)
	if err != nil {
		return eventstore.Position{}, err
	}
	return eventstore.ParsePosition(info.lastDelivered)
}

type groupInfo struct {
	lastDelivered string
	pending       int64
	lag           int64 // -1 when Redis cannot tell
}

func (w *worker) groupInfo(ctx context.Context) (groupInfo, error) {
	return readGroupInfo(ctx, w.r.cfg.Store.Client(), w.logKey, w.group)
}

func readGroupInfo(ctx context.Context, c rueidis.Client, key, group string) (groupInfo, error) {
	groups, err := c.Do(ctx, c.B().XinfoGroups().Key(key).Build()).ToArray()
	if err != nil {
		return groupInfo{lag: -1}, fmt.Errorf("projection: XINFO GROUPS %s: %w", key, err)
	}
	for _, g := range groups {
		m, err := g.AsMap()
		if err != nil {
			continue
		}
		name, last, pending, lag := m["name"], m["last-delivered-id"], m["pending"], m["lag"]
		if n, _ := name.ToString(); n != group {
			continue
		}
		gi := groupInfo{lag: -1}
		gi.lastDelivered, _ = last.ToString()
		gi.pending, _ = pending.AsInt64()
		if !lag.IsNil() {
			if l, err := lag.AsInt64(); err == nil {
				gi.lag = l
			}
		}
		return gi, nil
	}
	return groupInfo{lag: -1}, fmt.Errorf("projection: no group %q on %s", group, key)
}

// catchUp applies everything between the checkpoint and the group's last
// delivered ID, in log order: entries still pending from an earlier owner
// (one at a time, so that a crash points at exactly one event) and entries
// that were delivered but are pending nowhere (a deleted consumer, a
// manual XACK). Pending entries gone from the log are reported and
// acknowledged.
func (w *worker) catchUp(ctx context.Context, last eventstore.Position) error {
	c := w.r.cfg.Store.Client()
	if err := w.ackApplied(ctx); err != nil {
		return err
	}
	pending, err := w.pendingAfter(ctx, w.cp)
	if err != nil {
		return err
	}
	for last.Compare(w.cp) > 0 {
		msgs, err := c.Do(ctx, c.B().Xrange().Key(w.logKey).Start("("+w.cp.String()).End(last.String()).
			Count(int64(w.r.cfg.BatchSize)).Build()).ToArray()
		if err != nil {
			return fmt.Errorf("projection: catch up: %w", err)
		}
		es, err := decodeEntries(w.u.category, w.u.partition, msgs)
		if err != nil {
			return err
		}
		upTo := last
		if len(msgs) == int(w.r.cfg.BatchSize) {
			upTo = es[len(es)-1].pos
		}
		// Pending entries up to here that the log no longer has are
		// reported in their place in the order.
		es = w.withMissing(es, pending, upTo)
		if len(es) == 0 {
			break
		}
		// Runs of entries pending nowhere go as batches; pending ones one
		// by one.
		for len(es) > 0 {
			n := 0
			for n < len(es) && !pending[es[n].id] {
				n++
			}
			if err := w.process(ctx, es[:n]); err != nil {
				return err
			}
			es = es[n:]
			if len(es) > 0 {
				delete(pending, es[0].id)
				if es[0].missing {
					err = w.process(ctx, es[:1])
				} else {
					err = w.processRedelivered(ctx, es[0])
				}
				if err != nil {
					return err
				}
				es = es[1:]
			}
		}
		if upTo.Compare(w.cp) > 0 {
			// Everything up to upTo was missing or already applied.
			break
		}
	}
	return nil
}

// withMissing merges into es (one XRANGE page, ending at upTo) the pending
// IDs up to upTo that the page lacks: entries deleted from the log while
// pending.
func (w *worker) withMissing(es []entry, pending map[string]bool, upTo eventstore.Position) []entry {
	inPage := make(map[string]bool, len(es))
	for _, e := range es {
		inPage[e.id] = true
	}
	var missing []entry
	for id := range pending {
		pos, err := eventstore.ParsePosition(id)
		if err != nil || inPage[id] || pos.Compare(upTo) > 0 || pos.Compare(w.cp) <= 0 {
			continue
		}
		missing = append(missing, entry{id: id, pos: pos, missing: true,
			ev: eventstore.Event{Stream: eventstore.StreamID{Category: w.u.category}, Partition: w.u.partition, Position: pos}})
	}
	if len(missing) == 0 {
		return es
	}
	es = append(es, missing...)
	sortEntries(es)
	return es
}

// ackApplied acknowledges pending entries at or below the checkpoint: they
// were applied, only their XACK was lost.
func (w *worker) ackApplied(ctx context.Context) error {
	c := w.r.cfg.Store.Client()
	for {
		rows, err := c.Do(ctx, c.B().Xpending().Key(w.logKey).Group(w.group).Start("-").End(w.cp.String()).Count(1000).Build()).ToArray()
		if err != nil {
			return fmt.Errorf("projection: XPENDING: %w", err)
		}
		if len(rows) == 0 {
			return nil
		}
		ids := make([]string, 0, len(rows))
		for _, r := range rows {
			if f, err := r.ToArray(); err == nil && len(f) > 0 {
				id, _ := f[0].ToString()
				ids = append(ids, id)
			}
		}
		if err := c.Do(ctx, c.B().Xack().Key(w.logKey).Group(w.group).Id(ids...).Build()).Error(); err != nil {
			return fmt.Errorf("projection: XACK: %w", err)
		}
		if len(rows) < 1000 {
			return nil
		}
	}
}

// pendingAfter returns the IDs pending in the group after from, moving any
// held by another consumer name to ours (JUSTID: no delivery counted).
func (w *worker) pendingAfter(ctx context.Context, from eventstore.Position) (map[string]bool, error) {
	c := w.r.cfg.Store.Client()
	out := map[string]bool{}
	start := "(" + from.String()
	for {
		rows, err := c.Do(ctx, c.B().Xpending().Key(w.logKey).Group(w.group).Start(start).End("+").Count(1000).Build()).ToArray()
		if err != nil {
			return nil, fmt.Errorf("projection: XPENDING: %w", err)
		}
		var foreign []string
		for _, r := range rows {
			f, err := r.ToArray()
			if err != nil || len(f) < 2 {
				continue
			}
			id, _ := f[0].ToString()
			owner, _ := f[1].ToString()
			out[id] = true
			start = "(" + id
			if owner != w.consumer {
				foreign = append(foreign, id)
			}
		}
		if len(foreign) > 0 {
			if err := c.Do(ctx, c.B().Xclaim().Key(w.logKey).Group(w.group).Consumer(w.consumer).MinIdleTime("0").Id(foreign...).Justid().Build()).Error(); err != nil {
				return nil, fmt.Errorf("projection: XCLAIM: %w", err)
			}
		}
		if len(rows) < 1000 {
			return out, nil
		}
	}
}

// processRedelivered applies one entry that an earlier owner received but
// did not acknowledge. Claiming it counts a delivery; at MaxDeliveries it
// goes to quarantine without reaching the handler, which ends crash loops.
func (w *worker) processRedelivered(ctx context.Context, e entry) error {
	c := w.r.cfg.Store.Client()
	res := c.DoMulti(ctx,
		c.B().Xclaim().Key(w.logKey).Group(w.group).Consumer(w.consumer).MinIdleTime("0").Id(e.id).Build(),
		c.B().Xpending().Key(w.logKey).Group(w.group).Start(e.id).End(e.id).Count(1).Build())
	if err := res[0].Error(); err != nil {
		return fmt.Errorf("projection: XCLAIM: %w", err)
	}
	rows, err := res[1].ToArray()
	if err != nil {
		return fmt.Errorf("projection: XPENDING: %w", err)
	}
	if len(rows) == 1 {
		if f, err := rows[0].ToArray(); err == nil && len(f) == 4 {
			n, _ := f[3].AsInt64()
			e.deliveries = int(n)
		}
	}
	if e.deliveries >= w.r.cfg.MaxDeliveries {
		e.quarantine = &held{err: fmt.Errorf("delivered %d times without being applied (the worker crashed or lost the partition while applying it); not handed to the handler again", e.deliveries)}
		w.log.Warn("projection: delivery limit reached", "position", e.id, "deliveries", e.deliveries)
	}
	return w.process(ctx, []entry{e})
}

// steady reads new entries and applies them, batch by batch.
func (w *worker) steady(ctx context.Context) error {
	// A reader fetches and decodes the next batch while the current one is
	// applied. Entries it read but this loop did not apply stay pending in
	// the group, where the next ownership's catch-up finds them.
	w.lastRead.Store("")
	w.suspect = nil
	rctx, cancel := context.WithCancel(ctx)
	next := make(chan readBatch, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.read(rctx, next)
	}()
	defer func() {
		cancel()
		<-done
	}()
	for ctx.Err() == nil {
		if time.Since(w.lastCheck) >= w.r.cfg.CheckInterval {
			if err := w.checkLog(ctx); err != nil {
				return err
			}
			if err := w.checkDelivered(ctx); err != nil {
				return err
			}
			if err := w.handleRequests(ctx); err != nil {
				return err
			}
		}
		var b readBatch
		select {
		case <-ctx.Done():
			return nil
		case b = <-next:
		}
		if b.err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return b.err
		}
		if len(b.es) == 0 {
			if err := w.handleRequests(ctx); err != nil {
				return err
			}
			continue
		}
		if err := w.process(ctx, b.es); err != nil {
			return err
		}
	}
	return nil
}

// checkDelivered notices entries that the group delivered to someone
// else since this ownership began: a worker that lost the partition but
// has not noticed yet can still read new entries (">") before its next
// commit is fenced out. They sit in the pending list where this owner's
// reads never see them, so it starts over: the catch-up of a new
// ownership applies them from the log, in order.
func (w *worker) checkDelivered(ctx context.Context) error {
	last, err := w.lastDelivered(ctx)
	if err != nil {
		return err
	}
	seen := w.cp
	if id, _ := w.lastRead.Load().(string); id != "" {
		if p, err := eventstore.ParsePosition(id); err == nil && p.Compare(seen) > 0 {
			seen = p
		}
	}
	// Our own reader may have been served just before the XINFO above and
	// not have recorded it yet: only an ID still unseen one check later
	// was read by someone else.
	if w.suspect != nil && w.suspect.Compare(seen) > 0 {
		stolen := *w.suspect
		w.suspect = nil
		return fmt.Errorf("projection: %s partition %d: entries up to %s were delivered to another reader (a worker that lost the partition); catching up from the checkpoint",
			w.u.category, w.u.partition, stolen)
	}
	w.suspect = nil
	if last.Compare(seen) > 0 {
		w.suspect = &last
	}
	return nil
}

// checkContiguous makes sure the log holds no entry between prev (the
// last entry this ownership read or applied) and first (the first of a new
// batch).
func (w *worker) checkContiguous(ctx context.Context, prev, first string) error {
	c := w.r.cfg.Store.Client()
	between, err := c.Do(ctx, c.B().Xrange().Key(w.logKey).Start("("+prev).End("("+first).Count(1).Build()).ToArray()
	if err != nil {
		return fmt.Errorf("projection: check batch order: %w", err)
	}
	if len(between) > 0 {
		return fmt.Errorf("projection: %s partition %d: entries between %s and %s were delivered to another reader (a worker that lost the partition); catching up from the checkpoint",
			w.u.category, w.u.partition, prev, first)
	}
	return nil
}

// readBatch is one XREADGROUP's entries, decoded, or the error that ended
// reading.
type readBatch struct {
	es  []entry
	err error
}

// read delivers batches of new entries (">") to out until ctx ends or a
// read fails; an empty batch means BLOCK timed out with nothing new.
//
// Batches must follow each other in the log: a worker that lost the
// partition but has not noticed yet can still take entries with ">",
// which would leave a hole that this owner's checkpoint then moves past.
// So each batch is checked against the log: an entry between the previous
// batch and this one ends reading with an error, and the next ownership's
// catch-up applies the missing entries from the log, in order.
func (w *worker) read(ctx context.Context, out chan<- readBatch) {
	c := w.r.cfg.Store.Client()
	block := w.r.cfg.Block.Milliseconds()
	prev := w.cp.String()
	for ctx.Err() == nil {
		res := c.Do(ctx, c.B().Xreadgroup().Group(w.group, w.consumer).Count(int64(w.r.cfg.BatchSize)).
			Block(block).Streams().Key(w.logKey).Id(">").Build())
		msgs, err := streamEntries(res, w.logKey)
		var b readBatch
		if err != nil {
			// NOGROUP (group or stream deleted) and lost replies both end
			// this ownership; the next one recreates the group at the
			// checkpoint and re-reads the pending list.
			b.err = fmt.Errorf("projection: XREADGROUP: %w", err)
		} else if b.es, b.err = decodeEntries(w.u.category, w.u.partition, msgs); b.err == nil {
			for i := range b.es {
				b.es[i].deliveries = 1
			}
			if len(b.es) > 0 {
				b.err = w.checkContiguous(ctx, prev, b.es[0].id)
				prev = b.es[len(b.es)-1].id
				w.lastRead.Store(prev)
			}
		}
		select {
		case out <- b:
		case <-ctx.Done():
			return
		}
		if b.err != nil {
			return
		}
	}
}

// process applies entries in one transaction; when the handler fails, it
// splits the batch (at the failing event when known, else in halves) so
// that good events commit and only the failing one is retried and, past
// the limits, quarantined. PostgreSQL failing under the batch is retried
// in place (see failure.go) and never splits or quarantines anything.
func (w *worker) process(ctx context.Context, es []entry) error {
	if len(es) == 0 {
		return nil
	}
	at, err := w.applyInPlace(ctx, es)
	if err == nil {
		return nil
	}
	var he *handlerError
	if !errors.As(err, &he) {
		return err
	}
	if len(es) == 1 {
		return w.retry(ctx, es[0], he)
	}
	if at >= 0 && at < len(es) {
		if err := w.process(ctx, es[:at]); err != nil {
			return err
		}
		if err := w.retry(ctx, es[at], he); err != nil {
			return err
		}
		return w.process(ctx, es[at+1:])
	}
	mid := len(es) / 2
	if err := w.process(ctx, es[:mid]); err != nil {
		return err
	}
	return w.process(ctx, es[mid:])
}

// retry hands one failing event to the handler again with backoff, then
// quarantines it. Permanent errors skip the retries. Only handler
// failures count as attempts: transient and infrastructure failures in
// between are retried in place.
func (w *worker) retry(ctx context.Context, e entry, first *handlerError) error {
	attempts, last := 1, first.err
	delay := w.r.cfg.Backoff
	for attempts < w.r.cfg.MaxAttempts && !IsPermanent(last) {
		if !sleep(ctx, delay) {
			return ctx.Err()
		}
		delay = min(delay*2, 32*w.r.cfg.Backoff)
		_, err := w.applyInPlace(ctx, []entry{e})
		if err == nil {
			return nil
		}
		var he *handlerError
		if !errors.As(err, &he) {
			return err
		}
		attempts++
		last = he.err
	}
	e.quarantine = &held{err: last, attempts: attempts}
	_, err := w.applyInPlace(ctx, []entry{e})
	return err
}

func (w *worker) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return inTx(ctx, w.r.cfg.DB, fn)
}

// clearStopped clears what an earlier ownership recorded in the
// checkpoint when it ended in an error (a stop after a data loss, a last
// error): the checks of this ownership passed, so it is no longer current.
func (w *worker) clearStopped(ctx context.Context) {
	var cleared int64
	err := w.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "UPDATE "+w.r.table("checkpoints")+" SET stopped = '', last_error = '', updated_at = now()"+
			" WHERE projection = $1 AND category = $2 AND partition = $3 AND (stopped <> '' OR last_error <> '')", w.name, w.u.category, w.u.partition)
		cleared = tag.RowsAffected()
		return err
	})
	if err == nil {
		w.stopped = false
		if cleared > 0 {
			w.log.Info("projection: partition runs again")
		}
	}
}

func (w *worker) recordError(err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = w.inTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "UPDATE "+w.r.table("checkpoints")+" SET last_error = $4, updated_at = now()"+
			" WHERE projection = $1 AND category = $2 AND partition = $3", w.name, w.u.category, w.u.partition, err.Error())
		return err
	})
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
