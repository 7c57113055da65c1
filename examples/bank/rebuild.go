package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/redsource/redsource/projection"
)

func cmdRebuild(ctx context.Context, e *env, args []string) int {
	fs := flag.NewFlagSet("rebuild", flag.ContinueOnError)
	fs.SetOutput(e.errOut)
	blueGreen := fs.Bool("blue-green", false, "build a new version beside the one readers see, then switch them to it")
	if err := fs.Parse(args); err != nil {
		return exitError
	}
	if err := ensureSchema(ctx, e.pool, e.schema); err != nil {
		return e.fail(err)
	}
	start := time.Now()
	show := func(p projection.Progress) { e.printf("  %s\n", progressLine(p)) }
	if !*blueGreen {
		v, err := activeVersion(ctx, e)
		if err != nil {
			return e.fail(err)
		}
		e.printf("rebuilding %s (version %d) in place from the start of the log; readers see it fill up again\n", versionTable(e.schema, v), v)
		if err := rebuildInPlace(ctx, e, v, show); err != nil {
			return e.fail(err)
		}
		e.printf("rebuilt in %s\n", time.Since(start).Round(time.Millisecond))
		return exitOK
	}
	from, to, err := rebuildBlueGreen(ctx, e, show, func(from, to int) error {
		e.printf("building version %d in %s while readers keep version %d\n", to, versionTable(e.schema, to), from)
		return nil
	}, nil)
	if err != nil {
		return e.fail(err)
	}
	e.printf("switched %s from version %d to %d and dropped version %d, in %s\n", balancesView(e.schema), from, to, from, time.Since(start).Round(time.Millisecond))
	return exitOK
}

func progressLine(p projection.Progress) string {
	pct := 100.0
	if p.Total > 0 {
		pct = 100 * float64(p.Done) / float64(p.Total)
	}
	line := fmt.Sprintf("%d/%d events (%.0f%%), %.0f/s", p.Done, p.Total, pct, p.Rate)
	if p.ETA > 0 {
		line += fmt.Sprintf(", ETA %s", p.ETA.Round(100*time.Millisecond))
	}
	for _, err := range p.Errors {
		line += "; " + err
	}
	return line
}

// rebuildInPlace rebuilds version v from the start of the log: the
// library makes every runner of it let go, truncates its table (Reset),
// resets its checkpoints, quarantine and consumer groups, projects the
// whole log and hands the partitions back. Readers see the table empty
// and filling up meanwhile; held events are held again (an operator's
// skip applied to the old generation).
func rebuildInPlace(ctx context.Context, e *env, v int, progress func(projection.Progress)) error {
	p := balancesProjection(e.schema, e.bank.types, v)
	return projection.Rebuild(ctx, e.projectionConfig(), p, projection.RebuildOptions{Progress: progress})
}

// rebuildBlueGreen builds version active+1 in its own table from the
// start of the log while readers keep the active one, then switches the
// balances view to it in one transaction, then drops the old version.
//
// A candidate version left behind by an interrupted attempt is dropped
// and built again. started, if set, is told the versions before the
// build; afterSwitch, if set, runs after the switch and must leave no
// runner of the old version (the demo restarts its projector there);
// without it, rebuildBlueGreen waits for the old version's runners to let
// go (the project command follows a switch within a second) before
// dropping it.
func rebuildBlueGreen(ctx context.Context, e *env, progress func(projection.Progress),
	started func(from, to int) error, afterSwitch func(from, to int) error) (from, to int, err error) {
	admin := e.admin()
	if from, err = activeVersion(ctx, e); err != nil {
		return 0, 0, err
	}
	from = max(from, 1)
	to = from + 1
	if err := dropCandidate(ctx, e, to); err != nil {
		return from, to, err
	}
	if err := inTx(ctx, e, func(tx pgx.Tx) error { return createBalances(ctx, tx, versionTable(e.schema, to)) }); err != nil {
		return from, to, err
	}
	if started != nil {
		if err := started(from, to); err != nil {
			return from, to, err
		}
	}
	p := balancesProjection(e.schema, e.bank.types, to)
	opts := projection.RebuildOptions{Progress: progress}
	if err := projection.CatchUp(ctx, e.projectionConfig(), p, opts); err != nil {
		return from, to, fmt.Errorf("build version %d: %w", to, err)
	}
	// A second pass takes what was appended during the first, so that
	// readers switch to a version as fresh as the one they leave.
	if err := projection.CatchUp(ctx, e.projectionConfig(), p, projection.RebuildOptions{}); err != nil {
		return from, to, fmt.Errorf("build version %d: %w", to, err)
	}
	if err := admin.Switch(ctx, ProjectionName, to, func(ctx context.Context, tx pgx.Tx) error {
		return pointView(ctx, tx, e.schema, to)
	}); err != nil {
		return from, to, err
	}
	if afterSwitch != nil {
		if err := afterSwitch(from, to); err != nil {
			return from, to, err
		}
	} else if err := waitUnowned(ctx, e, projection.VersionID(ProjectionName, from), 30*time.Second); err != nil {
		return from, to, fmt.Errorf("switched to version %d, but version %d was not dropped: %w", to, from, err)
	}
	err = admin.DropVersion(ctx, e.store, ProjectionName, from, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "DROP TABLE IF EXISTS "+versionTable(e.schema, from))
		return err
	})
	if err != nil {
		return from, to, fmt.Errorf("switched to version %d; dropping version %d: %w", to, from, err)
	}
	return from, to, nil
}

// dropCandidate removes what an interrupted blue/green attempt left of
// version v: its state and its table.
func dropCandidate(ctx context.Context, e *env, v int) error {
	dropTable := func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "DROP TABLE IF EXISTS "+versionTable(e.schema, v))
		return err
	}
	st, err := e.admin().Status(ctx, e.store, projection.VersionID(ProjectionName, v))
	if err != nil && !errors.Is(err, projection.ErrNoSchema) {
		return err
	}
	if len(st) > 0 {
		if err := waitUnowned(ctx, e, projection.VersionID(ProjectionName, v), 30*time.Second); err != nil {
			return fmt.Errorf("version %d is being built elsewhere: %w", v, err)
		}
		return e.admin().DropVersion(ctx, e.store, ProjectionName, v, dropTable)
	}
	return inTx(ctx, e, func(tx pgx.Tx) error { return dropTable(ctx, tx) })
}

// waitUnowned waits until no worker owns a partition of projection id.
func waitUnowned(ctx context.Context, e *env, id string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := e.admin().Status(ctx, e.store, id)
		if err != nil {
			return err
		}
		owned := 0
		for _, s := range st {
			if s.Owner != "" {
				owned++
			}
		}
		if owned == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d partition(s) of %s still owned after %s (a runner that does not follow the switch?)", owned, id, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func inTx(ctx context.Context, e *env, fn func(pgx.Tx) error) error {
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}
