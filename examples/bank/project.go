package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/projection"
)

func cmdProject(ctx context.Context, e *env, args []string) int {
	fs := flag.NewFlagSet("project", flag.ContinueOnError)
	fs.SetOutput(e.errOut)
	workers := fs.Int("workers", 1, "projection runners in this process; they share the partitions through leases")
	untilCaughtUp := fs.Bool("until-caught-up", false, "stop once every event in the log is applied (quarantined and parked ones aside)")
	if err := fs.Parse(args); err != nil {
		return exitError
	}
	if *workers < 1 {
		fmt.Fprintln(e.errOut, "bank project: want -workers >= 1")
		return exitError
	}
	if err := ensureSchema(ctx, e.pool, e.schema); err != nil {
		return e.fail(err)
	}
	start := time.Now()
	var last string
	progress := func(st []projection.PartitionStatus) {
		if line := statusLine(st); line != last {
			e.printf("  %s\n", line)
			last = line
		}
	}
	// Run the version readers see; when a blue/green rebuild switches
	// them to another, follow it.
	for {
		v, err := activeVersion(ctx, e)
		if err != nil {
			return e.fail(err)
		}
		p := balancesProjection(e.schema, e.bank.types, v)
		pr, err := startProjector(ctx, e, p, *workers)
		if err != nil {
			return e.fail(err)
		}
		pr.follow = true
		e.printf("projecting %s into %s (version %d) with %d worker(s)%s\n", Category, versionTable(e.schema, v), v, *workers,
			map[bool]string{true: " until caught up", false: "; stop with Ctrl-C"}[*untilCaughtUp])
		if *untilCaughtUp {
			err = waitCaughtUp(ctx, e, pr, 0, progress)
		} else {
			err = watch(ctx, e, pr, progress)
		}
		if stopErr := pr.stop(); err == nil {
			err = stopErr
		}
		if errors.Is(err, errSwitched) {
			e.printf("readers were switched to another version: following\n")
			last = ""
			continue
		}
		if err != nil && !(errors.Is(err, context.Canceled) && !*untilCaughtUp) {
			return e.fail(err)
		}
		st, err := e.admin().Status(context.WithoutCancel(ctx), e.store, p.ID())
		if err != nil {
			return e.fail(err)
		}
		e.printf("stopped after %s: %s\n", time.Since(start).Round(time.Millisecond), statusLine(st))
		return exitOK
	}
}

// errSwitched: the active version changed under a projector that follows
// it.
var errSwitched = errors.New("the active version of the projection changed")

// projector is a set of runners of one projection version working in the
// background.
type projector struct {
	p      projection.Projection
	follow bool // check says errSwitched when p is no longer the active version
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	errs   []error
}

// startProjector starts workers runners of p. Each fails fast when Redis
// or PostgreSQL does not answer; stop returns that error.
func startProjector(ctx context.Context, e *env, p projection.Projection, workers int) (*projector, error) {
	runners := make([]*projection.Runner, workers)
	for i := range runners {
		r, err := projection.NewRunner(e.projectionConfig(), p)
		if err != nil {
			return nil, err
		}
		runners[i] = r
	}
	ctx, cancel := context.WithCancel(ctx)
	pr := &projector{p: p, cancel: cancel}
	for i, r := range runners {
		pr.wg.Add(1)
		go func() {
			defer pr.wg.Done()
			if err := r.Run(ctx); err != nil {
				pr.mu.Lock()
				pr.errs = append(pr.errs, err)
				pr.mu.Unlock()
				cancel()
			}
		}()
		if i == 0 && len(runners) > 1 {
			// Workaround: runners that prepare a fresh toolkit schema at
			// the same moment can fail ("record namespace: no rows in
			// result set"); let the first one finish preparing it.
			if err := pr.waitPrepared(ctx, e); err != nil {
				pr.stop()
				return nil, err
			}
		}
	}
	return pr, nil
}

// waitPrepared waits until a runner has created the projection's
// checkpoints.
func (pr *projector) waitPrepared(ctx context.Context, e *env) error {
	for {
		if err := pr.failed(); err != nil {
			return err
		}
		st, err := e.admin().Status(ctx, e.store, pr.p.ID())
		switch {
		case err == nil && len(st) > 0:
			return nil
		case err != nil && !errors.Is(err, projection.ErrNoSchema) && ctx.Err() == nil:
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop stops the runners, waits for them and returns what made one fail.
func (pr *projector) stop() error {
	pr.cancel()
	pr.wg.Wait()
	return pr.failed()
}

// failed returns a runner's error while the projector still runs.
func (pr *projector) failed() error {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return errors.Join(pr.errs...)
}

// check returns a runner's error, or errSwitched for a follower whose
// version is no longer the active one.
func (pr *projector) check(ctx context.Context, e *env) error {
	if err := pr.failed(); err != nil {
		return err
	}
	if pr.follow {
		v, err := activeVersion(ctx, e)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			e.log.Warn("bank: read the active version", "err", err)
			return nil // the runners ride out a database outage; so do we
		}
		if max(v, 1) != max(pr.p.Version, 1) {
			return errSwitched
		}
	}
	return nil
}

// caughtUp reports whether the projection has applied (or held back)
// every event in the log: every partition has a checkpoint, and no log
// entry lies after it. Quarantined and parked events advance the
// checkpoint too, so they do not keep a projection from being caught up.
func caughtUp(ctx context.Context, e *env, name string) (bool, []projection.PartitionStatus, error) {
	parts, err := e.store.Partitions(ctx, Category)
	if err != nil {
		return false, nil, err
	}
	st, err := e.admin().Status(ctx, e.store, name)
	if errors.Is(err, projection.ErrNoSchema) {
		return false, nil, nil // no runner has prepared the schema yet
	}
	if err != nil {
		return false, nil, err
	}
	if len(st) < parts {
		return false, st, nil
	}
	// A partition stopped because Redis lost events will not catch up by
	// waiting.
	var stopped []string
	for _, s := range st {
		if s.Stopped != "" {
			stopped = append(stopped, fmt.Sprintf("partition %d (%s): %s", s.Partition, s.Stopped, s.LastError))
		}
	}
	if len(stopped) > 0 {
		return false, st, fmt.Errorf("%w: projection %q cannot catch up: %d of %d partitions stopped: %s", eventstore.ErrDataLoss, name, len(stopped), len(st), strings.Join(stopped, "; "))
	}
	for _, s := range st {
		if s.Lag > 0 || s.Pending > 0 {
			return false, st, nil
		}
		// The lag of a consumer group can be unknown (-1); the log itself
		// cannot lie.
		for _, err := range e.store.ReadPartition(ctx, s.Category, s.Partition, s.Checkpoint.Next(), eventstore.MaxPosition) {
			if err != nil && !errors.Is(err, eventstore.ErrCorruptEntry) {
				return false, st, err
			}
			return false, st, nil
		}
	}
	return true, st, nil
}

// waitCaughtUp polls until the projection is caught up, ctx ends, the
// projector fails or, with a non-zero timeout, the time is up. progress,
// if set, sees each status.
func waitCaughtUp(ctx context.Context, e *env, pr *projector, timeout time.Duration, progress func([]projection.PartitionStatus)) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := pr.check(ctx, e); err != nil {
			return err
		}
		ok, st, err := caughtUp(ctx, e, pr.p.ID())
		if progress != nil && st != nil {
			progress(st)
		}
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("projection %q not caught up after %s: %s", pr.p.ID(), timeout, statusLine(st))
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// watch shows the status every second until ctx ends or the projector
// fails.
func watch(ctx context.Context, e *env, pr *projector, progress func([]projection.PartitionStatus)) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		if err := pr.check(ctx, e); err != nil {
			return err
		}
		st, err := e.admin().Status(ctx, e.store, pr.p.ID())
		if err != nil && !errors.Is(err, projection.ErrNoSchema) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			e.log.Warn("bank: projection status", "err", err)
			continue
		}
		progress(st)
	}
}

// lag sums the partitions' lag (events not yet delivered) and pending
// entries; "?" when a partition's lag is unknown (Redis cannot tell).
func lag(st []projection.PartitionStatus) string {
	var n int64
	for _, s := range st {
		if s.Lag < 0 {
			return "?"
		}
		n += s.Lag + s.Pending
	}
	return strconv.FormatInt(n, 10)
}

func statusLine(st []projection.PartitionStatus) string {
	var applied int64
	var quarantined, parked, owned int
	var lastErr string
	for _, s := range st {
		applied += s.Applied
		quarantined += s.Quarantined
		parked += s.Parked
		if s.Owner != "" {
			owned++
		}
		switch {
		case s.Stopped != "":
			lastErr = fmt.Sprintf("; partition %d STOPPED (%s): %s", s.Partition, s.Stopped, s.LastError)
		case s.LastError != "" && !strings.Contains(lastErr, "STOPPED"):
			lastErr = fmt.Sprintf("; partition %d: %s", s.Partition, s.LastError)
		}
	}
	return fmt.Sprintf("applied %d, lag %s, quarantined %d, parked %d, partitions owned %d/%d%s",
		applied, lag(st), quarantined, parked, owned, len(st), lastErr)
}
