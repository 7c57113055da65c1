package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/redsource/redsource/aggregate"
	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/projection"
)

func cmdVerify(ctx context.Context, e *env, args []string) int {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(e.errOut)
	if err := fs.Parse(args); err != nil {
		return exitError
	}
	rep, err := verify(ctx, e)
	if err != nil {
		return e.fail(err)
	}
	return rep.print(e)
}

// verifyReport is what verify found: differences (the read model or an
// aggregate disagrees with the log, or the log breaks a rule) and notes
// (things an operator should know that are not errors).
type verifyReport struct {
	table               string
	version             int
	events, accounts    int
	projected, notYet   int
	rows                int
	aggregatesCompared  int
	diffs, notes        []string
	inFlight, heldTotal int
}

func (r *verifyReport) diff(format string, args ...any) {
	r.diffs = append(r.diffs, fmt.Sprintf(format, args...))
}
func (r *verifyReport) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

func (r *verifyReport) print(e *env) int {
	e.printf("verify %s (version %d) against the log of namespace %q\n", r.table, max(r.version, 1), e.namespace)
	e.printf("  log: %d events on %d accounts; %d projected, %d not yet (projection lag)\n", r.events, r.accounts, r.projected, r.notYet)
	e.printf("  read model: %d rows; aggregates loaded (snapshot + tail) and compared: %d\n", r.rows, r.aggregatesCompared)
	for _, n := range r.notes {
		e.printf("  note: %s\n", n)
	}
	for _, d := range r.diffs {
		e.printf("  DIFF: %s\n", d)
	}
	if len(r.diffs) > 0 {
		e.printf("FAIL: %d difference(s)\n", len(r.diffs))
		return exitMismatch
	}
	e.printf("OK: the read model matches the log")
	if r.notYet > 0 {
		e.printf(" up to the projection's checkpoints")
	}
	e.printf("; every account's balance stayed >= 0\n")
	return exitOK
}

// accountFold is an account folded from its events, as the read model
// should hold it.
type accountFold struct {
	owner            string
	balance, version int64
	events           int
	// lowest balance reached, and the version where: the rule says >= 0.
	low, lowAt int64
	// the first event that does not decode, if any
	badAt  uint64
	badErr error
}

func (f *accountFold) apply(e any, version uint64) {
	if o, ok := e.(AccountOpened); ok {
		f.owner = o.Owner
	}
	f.balance += balanceChange(e)
	f.version = int64(version)
	f.events++
	if f.balance < f.low {
		f.low, f.lowAt = f.balance, int64(version)
	}
}

// projState is a consistent view of the projection: the checkpoints and
// held events that go with the rows read.
type projState struct {
	version     int // active
	checkpoints map[int]eventstore.Position
	held        map[string]projection.HeldEvent // by "partition/position"
}

func heldKey(partition int, pos eventstore.Position) string {
	return fmt.Sprintf("%d/%s", partition, pos)
}

func readProjState(ctx context.Context, e *env) (projState, error) {
	ps := projState{checkpoints: map[int]eventstore.Position{}, held: map[string]projection.HeldEvent{}}
	v, err := activeVersion(ctx, e)
	if err != nil {
		return ps, err
	}
	ps.version = v
	name := projection.VersionID(ProjectionName, v)
	st, err := e.admin().Status(ctx, e.store, name)
	if errors.Is(err, projection.ErrNoSchema) {
		return ps, nil // nothing projected yet
	}
	if err != nil {
		return ps, err
	}
	for _, s := range st {
		if s.Category == Category {
			ps.checkpoints[s.Partition] = s.Checkpoint
		}
	}
	held, err := e.admin().Held(ctx, name)
	if err != nil {
		return ps, err
	}
	for _, h := range held {
		if h.Category == Category {
			ps.held[heldKey(h.Partition, h.Position)] = h
		}
	}
	return ps, nil
}

func (a projState) equal(b projState) bool {
	return a.version == b.version && maps.Equal(a.checkpoints, b.checkpoints) && slices.Equal(slices.Sorted(maps.Keys(a.held)), slices.Sorted(maps.Keys(b.held)))
}

// verify compares the read model in table with the log:
//
//   - projected: each account folded from its events up to the
//     projection's checkpoint of its partition, leaving out the events the
//     projection holds back (quarantined, parked), must equal its row
//     (owner, balance, version); events after the checkpoints are lag,
//     reported, not a difference;
//   - the balance rule: folded over the whole log, no account ever goes
//     below zero;
//   - aggregates: each account loaded through the repository (snapshot +
//     tail) must equal the fold of its whole stream;
//   - transfers: no credit without its debit; debits without their credit
//     are reported as in flight.
//
// Run it while the projection is stopped or caught up; with a running
// projector, it re-reads until the checkpoints hold still around the rows.
func verify(ctx context.Context, e *env) (*verifyReport, error) {
	table := balancesView(e.schema)
	rep := &verifyReport{table: table}
	var ps projState
	var rows map[string]balanceRow
	for attempt := 0; ; attempt++ {
		before, err := readProjState(ctx, e)
		if err != nil {
			return nil, err
		}
		if rows, err = readBalances(ctx, e.pool, table); err != nil {
			if isUndefinedTable(err) {
				return nil, fmt.Errorf("no read model yet (%s): run the project command first", table)
			}
			return nil, err
		}
		after, err := readProjState(ctx, e)
		if err != nil {
			return nil, err
		}
		ps = after
		if before.equal(after) {
			break
		}
		if attempt == 20 {
			rep.note("the projection kept moving while verify read it: differences may be transient")
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	rep.rows = len(rows)
	rep.version = ps.version

	parts, err := e.store.Partitions(ctx, Category)
	if err != nil {
		return nil, err
	}
	full := map[string]*accountFold{}      // the whole log
	projected := map[string]*accountFold{} // what the read model should hold
	sent := map[string]string{}            // transfer → source account
	received := map[string]string{}        // transfer → target account
	skipped := 0
	for p := range parts {
		cp := ps.checkpoints[p]
		for ev, err := range e.store.ReadPartition(ctx, Category, p, eventstore.MinPosition, eventstore.MaxPosition) {
			if err != nil {
				return nil, err
			}
			rep.events++
			id := ev.Stream.ID
			f := full[id]
			if f == nil {
				f = &accountFold{}
				full[id] = f
			}
			decoded, decErr := e.bank.types.Decode(ev)
			if decErr == nil && f.badErr == nil {
				f.apply(decoded, ev.Version)
				switch d := decoded.(type) {
				case TransferSent:
					sent[d.Transfer] = id
				case TransferReceived:
					received[d.Transfer] = id
				}
			} else if f.badErr == nil {
				f.badAt, f.badErr = ev.Version, decErr
			}

			if ev.Position.Compare(cp) > 0 {
				rep.notYet++
				continue
			}
			rep.projected++
			if _, held := ps.held[heldKey(p, ev.Position)]; held {
				continue
			}
			if decErr != nil {
				// Applied past the checkpoint without being held: an
				// operator skipped it; the read model left it out too.
				skipped++
				continue
			}
			pf := projected[id]
			if pf == nil {
				pf = &accountFold{}
				projected[id] = pf
			}
			pf.apply(decoded, ev.Version)
		}
	}
	rep.accounts = len(full)
	if skipped > 0 {
		rep.note("%d undecodable event(s) were skipped by an operator: left out of the read model and of this fold", skipped)
	}

	// The read model against the projected fold.
	for _, id := range slices.Sorted(maps.Keys(projected)) {
		want := projected[id]
		got, ok := rows[id]
		switch {
		case !ok:
			rep.diff("%s: no row in the read model; the log says owner %q, balance %d, version %d", id, want.owner, want.balance, want.version)
		case got.Owner != want.owner || got.Balance != want.balance || got.Version != want.version:
			rep.diff("%s: read model has owner %q, balance %d, version %d; the log says owner %q, balance %d, version %d",
				id, got.Owner, got.Balance, got.Version, want.owner, want.balance, want.version)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(rows)) {
		if projected[id] == nil {
			rep.diff("%s: row in the read model (balance %d, version %d) but no projected event in the log", id, rows[id].Balance, rows[id].Version)
		}
	}

	// Held events: reported as such, not as differences.
	heldBy := map[string][]projection.HeldEvent{}
	for _, h := range ps.held {
		heldBy[h.AggregateID] = append(heldBy[h.AggregateID], h)
		rep.heldTotal++
	}
	for _, id := range slices.Sorted(maps.Keys(heldBy)) {
		hs := heldBy[id]
		slices.SortFunc(hs, func(a, b projection.HeldEvent) int { return a.Position.Compare(b.Position) })
		parked := 0
		for _, h := range hs {
			switch h.Reason {
			case "quarantined":
				rep.note("%s: event at version %d (%s, partition %d, position %s) is quarantined: %s",
					id, h.Version, h.Type, h.Partition, h.Position, h.Error)
			case "parked":
				parked++
			default:
				rep.note("%s: event at version %d is held: %s: %s", id, h.Version, h.Reason, h.Error)
			}
		}
		if parked > 0 {
			rep.note("%s: %d later event(s) parked behind it; the read model holds the account as of the events before", id, parked)
		}
	}

	// The rule, on the whole log.
	for _, id := range slices.Sorted(maps.Keys(full)) {
		if f := full[id]; f.low < 0 {
			rep.diff("%s: the balance rule is broken in the log: balance %d at version %d", id, f.low, f.lowAt)
		}
	}

	// Transfers.
	for _, t := range slices.Sorted(maps.Keys(received)) {
		if _, ok := sent[t]; !ok {
			rep.diff("%s: transfer %s credited without a debit", received[t], t)
		}
	}
	for t := range sent {
		if _, ok := received[t]; !ok {
			rep.inFlight++
		}
	}
	if rep.inFlight > 0 {
		rep.note("%d transfer(s) in flight: debited, not yet credited (load and demo complete them)", rep.inFlight)
	}

	// Aggregates, through the repository: snapshots must agree with the log.
	if err := verifyAggregates(ctx, e, full, rep); err != nil {
		return nil, err
	}
	return rep, nil
}

func verifyAggregates(ctx context.Context, e *env, full map[string]*accountFold, rep *verifyReport) error {
	ids := slices.Sorted(maps.Keys(full))
	var mu sync.Mutex
	return parallel(ctx, len(ids), 8, func(ctx context.Context, i int) error {
		id := ids[i]
		f := full[id]
		a, err := e.bank.accounts.Load(ctx, id)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err != nil && f.badErr != nil && isAggregateFailure(err):
			rep.note("%s: cannot be loaded: its event at version %d does not decode: %v", id, f.badAt, f.badErr)
		case err != nil && (isAggregateFailure(err) || errors.Is(err, aggregate.ErrNotFound)):
			rep.diff("%s: the repository cannot load it, but its events fold: %v", id, err)
		case err != nil:
			return err
		case f.badErr != nil:
			rep.diff("%s: loads at version %d although its event at version %d does not decode", id, a.Version(), f.badAt)
		case int64(a.Version()) != f.version:
			rep.note("%s: changed while verify ran (version %d, log read at %d)", id, a.Version(), f.version)
		case a.Owner() != f.owner || a.Balance() != f.balance:
			rep.diff("%s: aggregate (snapshot + tail) has owner %q, balance %d at version %d; its events fold to owner %q, balance %d",
				id, a.Owner(), a.Balance(), a.Version(), f.owner, f.balance)
		default:
			rep.aggregatesCompared++
		}
		return nil
	})
}
