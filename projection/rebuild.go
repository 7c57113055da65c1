package projection

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/redis/rueidis"

	"github.com/redsource/redsource/eventstore"
)

// ErrRebuildInProgress: another process is rebuilding the projection.
var ErrRebuildInProgress = errors.New("projection: a rebuild of this projection is in progress")

// Progress reports how far a rebuild or catch-up is.
type Progress struct {
	Done    int64         `json:"done"`  // events applied (or held) so far
	Total   int64         `json:"total"` // events to apply, as of the start
	Elapsed time.Duration `json:"elapsed"`
	Rate    float64       `json:"rate"` // events per second so far
	ETA     time.Duration `json:"eta"`  // -1 when unknown
	// Errors lists partitions that are stopped (for example a regressed
	// log), as "category/partition: error".
	Errors []string `json:"errors,omitempty"`
}

// RebuildOptions tune Rebuild and CatchUp.
type RebuildOptions struct {
	// Progress, if set, is called about every ProgressEvery and once at the
	// end.
	Progress func(Progress)
	// ProgressEvery defaults to 500ms.
	ProgressEvery time.Duration
}

// Rebuild rebuilds a projection in place from the start of the log. It is
// coordinated through Redis: every runner of the projection, in every
// process, lets go of its partitions and waits while the rebuild lock is
// held; the read model (p.Reset), checkpoints, quarantined and parked
// events and the consumer groups with their pending lists are reset in one
// step that also fences out any worker still busy with an old batch; then
// this call projects the whole log, all partitions in parallel, reporting
// progress, and hands the projection back to the runners.
//
// If the rebuilding process dies, its lock expires after cfg.LeaseTTL and
// the runners carry on from where the rebuild got to.
func Rebuild(ctx context.Context, cfg Config, p Projection, opts RebuildOptions) error {
	if p.Reset == nil {
		return fmt.Errorf("projection %q: an in-place rebuild needs Projection.Reset to clear the read model", p.Name)
	}
	r, err := NewRunner(cfg, p)
	if err != nil {
		return err
	}
	cfg = r.cfg
	c := cfg.Store.Client()
	lock := r.keys.Projection(p.ID(), "rebuild")
	ttl := strconv.FormatInt(cfg.LeaseTTL.Milliseconds(), 10)
	// A plain SET, not lease.lua (which runs on a full Redis): a rebuild
	// drops the consumer groups, and a full Redis refuses to create new
	// ones, so it must not start then.
	err = c.Do(ctx, c.B().Set().Key(lock).Value(cfg.WorkerID).Nx().Px(cfg.LeaseTTL).Build()).Error()
	if rueidis.IsRedisNil(err) {
		if holder, gerr := c.Do(ctx, c.B().Get().Key(lock).Build()).ToString(); gerr != nil || holder != cfg.WorkerID {
			return fmt.Errorf("%w: %q is held by %s", ErrRebuildInProgress, p.ID(), holder)
		}
		err = nil // ours already, as lease.lua's acquire would say
	}
	if err != nil {
		return fmt.Errorf("projection: take rebuild lock: %w", err)
	}
	lctx, stopRenew := context.WithCancel(ctx)
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		t := time.NewTicker(cfg.LeaseTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-lctx.Done():
				return
			case <-t.C:
				leaseScript.Exec(lctx, c, []string{lock}, []string{cfg.WorkerID, ttl, "renew"})
			}
		}
	}()
	defer func() {
		stopRenew()
		<-renewed
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		leaseScript.Exec(rctx, c, []string{lock}, []string{cfg.WorkerID, "0", "release"})
	}()

	units, err := r.prepare(ctx)
	if err != nil {
		return err
	}
	if err := r.waitLeasesFree(ctx, units[0]); err != nil {
		return err
	}
	if err := r.reset(ctx, p, units[0]); err != nil {
		return err
	}
	cfg.Logger.Info("projection: rebuild reset done; projecting from the start", "projection", p.ID(), "worker", cfg.WorkerID)
	return r.catchUp(ctx, units[0], opts)
}

// CatchUp runs a projection (typically a new version, for a blue/green
// rebuild) until it has applied the log up to where it stood when CatchUp
// began, reporting progress. Runners elsewhere may share the work.
func CatchUp(ctx context.Context, cfg Config, p Projection, opts RebuildOptions) error {
	r, err := NewRunner(cfg, p)
	if err != nil {
		return err
	}
	units, err := r.prepare(ctx)
	if err != nil {
		return err
	}
	return r.catchUp(ctx, units[0], opts)
}

// waitLeasesFree waits until no worker holds a partition of the
// projection: running workers let go at their next balancing tick, dead
// ones' leases expire.
func (r *Runner) waitLeasesFree(ctx context.Context, units []unit) error {
	c := r.cfg.Store.Client()
	deadline := time.Now().Add(3*r.cfg.LeaseTTL + time.Second)
	for {
		cmds := make(rueidis.Commands, len(units))
		for i, u := range units {
			cmds[i] = c.B().Exists().Key(r.leaseKey(u)).Build()
		}
		held := 0
		for _, res := range c.DoMulti(ctx, cmds...) {
			n, err := res.AsInt64()
			if err != nil {
				return fmt.Errorf("projection: check leases: %w", err)
			}
			held += int(n)
		}
		if held == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("projection: %d partitions of %q are still owned after %s", held, r.projs[0].ID(), 3*r.cfg.LeaseTTL)
		}
		if !sleep(ctx, 50*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// reset clears the read model and the projection's state in one
// transaction (bumping every fence, so that no batch of the old generation
// can commit after it), then drops the consumer groups and dead letters.
func (r *Runner) reset(ctx context.Context, p Projection, units []unit) error {
	err := inTx(ctx, r.cfg.DB, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT 1 FROM "+r.table("checkpoints")+" WHERE projection = $1 FOR UPDATE", p.ID()); err != nil {
			return err
		}
		if err := p.Reset(ctx, tx); err != nil {
			return fmt.Errorf("Reset: %w", err)
		}
		if _, err := tx.Exec(ctx, "UPDATE "+r.table("checkpoints")+" SET position = '0-0', event_id = NULL, applied = 0,"+
			" generation = generation + 1, fence = fence + 1, owner = '', last_error = '', stopped = '', updated_at = now() WHERE projection = $1", p.ID()); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "DELETE FROM "+r.table("held_events")+" WHERE projection = $1", p.ID())
		return err
	})
	if err != nil {
		return fmt.Errorf("projection: reset %q: %w", p.ID(), err)
	}
	c := r.cfg.Store.Client()
	for _, u := range units {
		log := r.cfg.Store.LogKey(u.category, u.partition)
		if err := c.Do(ctx, c.B().Del().Key(r.keys.DLQ(u.category, u.partition, p.ID()), r.keys.DLQIndex(u.category, u.partition, p.ID())).Build()).Error(); err != nil {
			return fmt.Errorf("projection: reset dead letters of %s: %w", log, err)
		}
		// XGROUP DESTROY needs the stream; an empty partition has none.
		if n, err := c.Do(ctx, c.B().Exists().Key(log).Build()).AsInt64(); err != nil || n == 0 {
			if err != nil {
				return fmt.Errorf("projection: reset consumer group on %s: %w", log, err)
			}
			continue
		}
		if err := c.Do(ctx, c.B().XgroupDestroy().Key(log).Group(p.ID()).Build()).Error(); err != nil {
			return fmt.Errorf("projection: reset consumer group on %s: %w", log, err)
		}
	}
	return nil
}

// catchUp runs the runner until every partition's checkpoint has reached
// the log's last entry as it stood at the start.
func (r *Runner) catchUp(ctx context.Context, units []unit, opts RebuildOptions) error {
	if opts.ProgressEvery <= 0 {
		opts.ProgressEvery = 500 * time.Millisecond
	}
	c := r.cfg.Store.Client()
	targets := make([]eventstore.Position, len(units))
	var total int64
	for i, u := range units {
		log := r.cfg.Store.LogKey(u.category, u.partition)
		res := c.DoMulti(ctx, c.B().Xrevrange().Key(log).End("+").Start("-").Count(1).Build(), c.B().Xlen().Key(log).Build())
		last, err := res[0].ToArray()
		if err != nil {
			return fmt.Errorf("projection: read log head: %w", err)
		}
		if len(last) == 1 {
			es, err := decodeEntries(u.category, u.partition, last)
			if err != nil {
				return err
			}
			targets[i] = es[0].pos
		}
		n, err := res[1].AsInt64()
		if err != nil {
			return fmt.Errorf("projection: XLEN: %w", err)
		}
		total += n
	}
	start := time.Now()
	st0, err := r.checkpoints(ctx)
	if err != nil {
		return err
	}
	total -= st0.done

	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	stop := func() error { cancel(); return <-done }

	tick := time.NewTicker(opts.ProgressEvery)
	defer tick.Stop()
	for {
		st, err := r.checkpoints(ctx)
		if err != nil {
			stop()
			return err
		}
		if opts.Progress != nil {
			opts.Progress(progress(st.done-st0.done, total, time.Since(start), st.errs))
		}
		// A partition that stopped because Redis lost events will not
		// catch up by waiting; and one whose log lost its tail may look
		// caught up (its checkpoint is past the log's end), so the
		// checkpoints are checked against Redis before they are trusted.
		err = st.stoppedErr()
		if err == nil {
			err = r.verifyCheckpoints(ctx, st)
		}
		if err != nil {
			stop()
			return fmt.Errorf("projection: catch up %q: %w", r.projs[0].ID(), err)
		}
		caught := true
		for i, u := range units {
			if st.pos[u].Compare(targets[i]) < 0 {
				caught = false
			}
		}
		if caught {
			return stop()
		}
		select {
		case <-ctx.Done():
			stop()
			return ctx.Err()
		case err := <-done:
			cancel()
			if err == nil {
				err = errors.New("runner stopped")
			}
			return fmt.Errorf("projection: catch up: %w", err)
		case <-tick.C:
		}
	}
}

func progress(done, total int64, elapsed time.Duration, errs []string) Progress {
	done = min(max(done, 0), max(total, 0))
	p := Progress{Done: done, Total: total, Elapsed: elapsed, ETA: -1, Errors: errs}
	if s := elapsed.Seconds(); s > 0 {
		p.Rate = float64(done) / s
	}
	if p.Rate > 0 {
		p.ETA = time.Duration(float64(total-done) / p.Rate * float64(time.Second))
	}
	return p
}

type checkpointState struct {
	pos     map[unit]eventstore.Position
	refs    []checkpointRef
	done    int64 // applied + held, over all partitions
	errs    []string
	stopped map[string][]string // reason (checkpoints.stopped) → "category/partition: error"
}

// stoppedErr is the error of the partitions that stopped because Redis lost
// what their checkpoints remember: ErrLogRegressed or
// eventstore.ErrNamespaceLost, both eventstore.ErrDataLoss.
// verifyCheckpoints checks what the checkpoints remember against Redis
// now: the namespace identity, and the entry at each checkpoint.
func (r *Runner) verifyCheckpoints(ctx context.Context, st checkpointState) error {
	if err := r.checkIdentity(ctx); err != nil {
		return err
	}
	regressed, err := regressions(ctx, r.cfg.Store, st.refs)
	if err != nil {
		return err
	}
	return errors.Join(regressed...)
}

func (st checkpointState) stoppedErr() error {
	if len(st.stopped) == 0 {
		return nil
	}
	var errs []error
	if parts := st.stopped[stoppedNamespaceLost]; len(parts) > 0 {
		errs = append(errs, fmt.Errorf("%w: %d partitions stopped: %s", eventstore.ErrNamespaceLost, len(parts), strings.Join(parts, "; ")))
	}
	if parts := st.stopped[stoppedLogRegressed]; len(parts) > 0 {
		errs = append(errs, fmt.Errorf("%w: %d partitions stopped: %s", ErrLogRegressed, len(parts), strings.Join(parts, "; ")))
	}
	return errors.Join(errs...)
}

func (r *Runner) checkpoints(ctx context.Context) (checkpointState, error) {
	st := checkpointState{pos: map[unit]eventstore.Position{}}
	p := r.projs[0]
	err := inTx(ctx, r.cfg.DB, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, "SELECT c.category, c.partition, c.position, c.event_id, c.applied, c.last_error, c.stopped,"+
			" (SELECT count(*) FROM "+r.table("held_events")+" h WHERE h.projection = c.projection AND h.category = c.category AND h.partition = c.partition)"+
			" FROM "+r.table("checkpoints")+" c WHERE c.projection = $1", p.ID())
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var u unit
			var pos, lastErr, stopped string
			var eid *uuid.UUID
			var applied, held int64
			if err := rows.Scan(&u.category, &u.partition, &pos, &eid, &applied, &lastErr, &stopped, &held); err != nil {
				return err
			}
			if stopped != "" {
				if st.stopped == nil {
					st.stopped = map[string][]string{}
				}
				st.stopped[stopped] = append(st.stopped[stopped], fmt.Sprintf("%s/%d: %s", u.category, u.partition, lastErr))
			}
			if st.pos[u], err = eventstore.ParsePosition(pos); err != nil {
				return err
			}
			st.refs = append(st.refs, checkpointRef{u.category, u.partition, st.pos[u], eid})
			st.done += applied + held
			if lastErr != "" {
				st.errs = append(st.errs, fmt.Sprintf("%s/%d: %s", u.category, u.partition, lastErr))
			}
		}
		return rows.Err()
	})
	if err != nil {
		return st, fmt.Errorf("projection: read checkpoints: %w", err)
	}
	return st, nil
}
