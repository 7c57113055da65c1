package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/projection"
)

// The demo's workload.
const (
	demoAccounts = 12
	demoOps      = 2000
	demoWriters  = 8
)

// cmdDemo runs everything end to end in its own namespace and schema
// (<namespace>_demo), which it wipes first, so that runs repeat and never
// touch the user's data. It leaves them in place afterwards, to look at
// with the other commands (-namespace bank_demo).
func cmdDemo(ctx context.Context, e *env, args []string) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(e.errOut)
	if err := fs.Parse(args); err != nil {
		return exitError
	}
	// Short leases: runners notice an in-place rebuild (and a crashed
	// runner's partitions move) within a second.
	e.leaseTTL = 3 * time.Second
	d := &demo{env: e}
	failures, err := d.run(ctx)
	if err != nil {
		return e.fail(err)
	}
	if failures > 0 {
		e.printf("\nDEMO FAILED: %d check(s) did not hold\n", failures)
		return exitMismatch
	}
	e.printf("\ndemo OK; its data stays until the next run: go run ./examples/bank -namespace %s verify\n", e.namespace)
	return exitOK
}

type demo struct {
	*env
	pr                         *projector // the running projector
	failures                   int
	raceRefused                int64
	inPlaceTook, blueGreenTook time.Duration
	quarantined, parked        int
}

// check records a demo expectation.
func (d *demo) check(ok bool, format string, args ...any) {
	if !ok {
		d.failures++
		d.printf("  CHECK FAILED: %s\n", fmt.Sprintf(format, args...))
	}
}

func (d *demo) step(format string, args ...any) {
	d.printf("\n== %s\n", fmt.Sprintf(format, args...))
}

func (d *demo) run(ctx context.Context) (int, error) {
	start := time.Now()
	d.step("namespace %q in Redis, schema %q in PostgreSQL: wiped and created", d.namespace, d.schema)
	n, err := deleteKeys(ctx, d.redis, d.namespace)
	if err != nil {
		return 0, fmt.Errorf("wipe the demo's keys: %w", err)
	}
	if err := dropOwnSchema(ctx, d.pool, d.schema); err != nil {
		return 0, err
	}
	if err := ensureSchema(ctx, d.pool, d.schema); err != nil {
		return 0, err
	}
	d.printf("removed %d keys under %q; created the view %s on %s (toolkit tables go in the same schema)\n",
		n, d.namespace+":", balancesView(d.schema), versionTable(d.schema, 1))

	if d.pr, err = startProjector(ctx, d.env, balancesProjection(d.schema, d.bank.types, 1), 2); err != nil {
		return 0, err
	}
	defer func() { d.pr.stop() }()
	d.printf("projector: 2 runners share the %d partitions of %q through leases\n", d.store.Config().Partitions, Category)

	ids := accountIDs(demoAccounts)
	res := newLoadResult()
	d.step("%d accounts opened, each with a first deposit of %s", demoAccounts, money(10000))
	if err := openAccounts(ctx, d.bank, ids, demoWriters, res); err != nil {
		return 0, err
	}
	if err := parallel(ctx, len(ids), demoWriters, func(ctx context.Context, i int) error {
		return d.bank.Deposit(ctx, ids[i], 10000)
	}); err != nil {
		return 0, err
	}
	d.printf("opened %d\n", res.opened)

	d.step("%d random deposits, withdrawals and transfers from %d concurrent writers on %d accounts", demoOps, demoWriters, demoAccounts)
	conflicts0 := d.bank.stats.conflicts.Load()
	t0 := time.Now()
	if err := runCommands(ctx, d.bank, ids, demoOps, demoWriters, res); err != nil {
		return 0, err
	}
	res.took = time.Since(t0)
	writesDone := time.Now()
	st, err := d.admin().Status(ctx, d.store, d.pr.p.ID())
	if err != nil {
		return 0, err
	}
	lagAtEnd := lag(st)
	printLoad(d.env, res, demoOps, demoWriters)
	d.printf("conflicts: %d decisions were taken again on fresh state after another writer got there first\n", d.bank.stats.conflicts.Load()-conflicts0)
	d.check(res.failed == 0 && res.gaveUp == 0, "no command failed (failed %d, gave up %d)", res.failed, res.gaveUp)

	if err := d.race(ctx); err != nil {
		return 0, err
	}
	if err := d.crashedTransfer(ctx, ids); err != nil {
		return 0, err
	}

	d.step("projection catching up")
	if err := waitCaughtUp(ctx, d.env, d.pr, time.Minute, nil); err != nil {
		return 0, err
	}
	catchUp := time.Since(writesDone)
	if st, err = d.admin().Status(ctx, d.store, d.pr.p.ID()); err != nil {
		return 0, err
	}
	d.printf("lag when the writers stopped: %s event(s); caught up %s later: %s\n", lagAtEnd, catchUp.Round(time.Millisecond), statusLine(st))

	if err := d.rebuildInPlace(ctx); err != nil {
		return 0, err
	}
	bgOps, err := d.blueGreen(ctx, ids, res)
	if err != nil {
		return 0, err
	}

	poisonPos, poisonPart, err := d.poison(ctx)
	if err != nil {
		return 0, err
	}
	if err := waitCaughtUp(ctx, d.env, d.pr, time.Minute, nil); err != nil {
		return 0, err
	}
	if err := d.quarantine(ctx, poisonPart, poisonPos); err != nil {
		return 0, err
	}
	if err := d.pr.stop(); err != nil {
		return 0, err
	}

	d.step("read model: %s, now on %s", balancesView(d.schema), versionTable(d.schema, d.pr.p.Version))
	rows, err := readBalances(ctx, d.pool, balancesView(d.schema))
	if err != nil {
		return 0, err
	}
	var total int64
	d.printf("  %-10s %-10s %12s %8s\n", "account", "owner", "balance", "version")
	for _, id := range slices.Sorted(maps.Keys(rows)) {
		r := rows[id]
		d.printf("  %-10s %-10s %12s %8d\n", r.ID, r.Owner, money(r.Balance), r.Version)
		total += r.Balance
		d.check(r.Balance >= 0, "%s: balance %d below zero", id, r.Balance)
	}
	d.printf("  %-10s %-10s %12s\n", "total", "", money(total))

	d.step("verify: the read model against the log, and the aggregates (snapshot + tail) against the log")
	rep, err := verify(ctx, d.env)
	if err != nil {
		return 0, err
	}
	if rep.print(d.env) != exitOK {
		d.failures++
	}

	d.step("numbers")
	d.printf("  events in the log:        %d\n", rep.events)
	d.printf("  commands:                 %d random (%d of them during the blue/green build), %d opens, %d first deposits, %d racing withdrawals\n",
		demoOps+bgOps, bgOps, demoAccounts+2, demoAccounts, raceWriters)
	d.printf("  refused by the rule:      %d\n", res.refusedTotal()+int(d.raceRefused))
	d.printf("  conflicts retried:        %d\n", d.bank.stats.conflicts.Load())
	d.printf("  snapshots:                %d written, %d loads started from one\n", d.bank.snaps.puts.Load(), d.bank.snaps.hits.Load())
	d.printf("  projection lag:           %s event(s) when the writers stopped; caught up %s later\n", lagAtEnd, catchUp.Round(time.Millisecond))
	d.printf("  rebuilds:                 in place %s; blue/green %s\n", d.inPlaceTook.Round(time.Millisecond), d.blueGreenTook.Round(time.Millisecond))
	d.printf("  quarantined / parked:     %d / %d (then skipped / applied on request)\n", d.quarantined, d.parked)
	d.printf("  took:                     %s\n", time.Since(start).Round(time.Millisecond))
	return d.failures, nil
}

// rebuildInPlace rebuilds version 1 while its runners run: they let go of
// their partitions for the rebuild and take them back after.
func (d *demo) rebuildInPlace(ctx context.Context) error {
	d.step("rebuild in place: %s from the start of the log, while the projector runs (its runners let go at their next lease tick, then take over again)", versionTable(d.schema, 1))
	before, err := readBalances(ctx, d.pool, balancesView(d.schema))
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := rebuildInPlace(ctx, d.env, 1, func(p projection.Progress) { d.printf("  %s\n", progressLine(p)) }); err != nil {
		return err
	}
	d.inPlaceTook = time.Since(t0)
	after, err := readBalances(ctx, d.pool, balancesView(d.schema))
	if err != nil {
		return err
	}
	d.printf("rebuilt in %s: %d rows, the same as before: %v\n", d.inPlaceTook.Round(time.Millisecond), len(after), maps.Equal(before, after))
	d.check(maps.Equal(before, after), "the rebuilt read model equals the one before")
	return nil
}

// blueGreen builds version 2 beside version 1 while writers keep writing
// and readers keep reading version 1, then switches them.
func (d *demo) blueGreen(ctx context.Context, ids []string, res *loadResult) (int, error) {
	const ops = 300
	d.step("blue/green rebuild: version 2 builds in %s while readers keep version 1 and %d more commands run", versionTable(d.schema, 2), ops)
	writes := make(chan error, 1)
	t0 := time.Now()
	started := func(from, to int) error {
		go func() { writes <- runCommands(ctx, d.bank, ids, ops, 4, res) }()
		return nil
	}
	progress := func(p projection.Progress) {
		var n int
		var sum int64
		err := d.pool.QueryRow(ctx, "SELECT count(*), coalesce(sum(balance), 0) FROM "+balancesView(d.schema)).Scan(&n, &sum)
		if err != nil {
			d.printf("  %s; readers: %v\n", progressLine(p), err)
			return
		}
		d.printf("  %s; readers see %d accounts holding %s\n", progressLine(p), n, money(sum))
	}
	afterSwitch := func(from, to int) error {
		// Move the projector to the new version before the old one is
		// dropped (the project command does this by itself).
		if err := d.pr.stop(); err != nil {
			return err
		}
		pr, err := startProjector(ctx, d.env, balancesProjection(d.schema, d.bank.types, to), 2)
		if err != nil {
			return err
		}
		d.pr = pr
		return nil
	}
	from, to, err := rebuildBlueGreen(ctx, d.env, progress, started, afterSwitch)
	if err != nil {
		return 0, err
	}
	if err := <-writes; err != nil {
		return 0, err
	}
	d.blueGreenTook = time.Since(t0)
	v, err := activeVersion(ctx, d.env)
	if err != nil {
		return 0, err
	}
	var old *string
	if err := d.pool.QueryRow(ctx, "SELECT to_regclass($1)::text", versionTable(d.schema, from)).Scan(&old); err != nil {
		return 0, err
	}
	d.printf("switched %s from version %d to %d in one transaction; version %d dropped; took %s\n",
		balancesView(d.schema), from, to, from, d.blueGreenTook.Round(time.Millisecond))
	d.check(v == 2 && old == nil, "readers are on version 2 and version 1 is gone")
	return ops, nil
}

const (
	raceWriters = 16
	raceAmount  = 10000
	raceBalance = 50000
)

// race: many writers withdraw from one account at once. Optimistic
// concurrency makes every decision see the balance it changes: exactly
// balance/amount withdrawals succeed, whatever the interleaving.
func (d *demo) race(ctx context.Context) error {
	const id = "acc-race"
	d.step("the rule under concurrency: %d writers each withdraw %s from %s holding %s", raceWriters, money(raceAmount), id, money(raceBalance))
	if _, err := d.bank.Open(ctx, id, "Racer"); err != nil {
		return err
	}
	if err := d.bank.Deposit(ctx, id, raceBalance); err != nil {
		return err
	}
	var ok, refused atomic.Int64
	c0 := d.bank.stats.conflicts.Load()
	err := parallel(ctx, raceWriters, raceWriters, func(ctx context.Context, _ int) error {
		err := d.bank.Withdraw(ctx, id, raceAmount)
		switch {
		case err == nil:
			ok.Add(1)
		case errors.Is(err, ErrInsufficientFunds):
			refused.Add(1)
		default:
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	d.raceRefused = refused.Load()
	a, err := d.bank.accounts.Load(ctx, id)
	if err != nil {
		return err
	}
	d.printf("%d succeeded, %d refused (insufficient funds), %d conflicts retried; balance %s\n",
		ok.Load(), refused.Load(), d.bank.stats.conflicts.Load()-c0, money(a.Balance()))
	d.check(ok.Load() == raceBalance/raceAmount && a.Balance() == 0,
		"want %d withdrawals and a zero balance", raceBalance/raceAmount)
	return nil
}

// crashedTransfer shows a transfer interrupted between its two appends,
// completed from the log, then retried without a second credit.
func (d *demo) crashedTransfer(ctx context.Context, ids []string) error {
	d.step("a transfer interrupted between its two appends (debit and credit are two aggregates, not atomic)")
	from, to := ids[0], ids[1]
	src, err := d.bank.accounts.Load(ctx, from)
	if err != nil {
		return err
	}
	amount := min(src.Balance(), 2500)
	if amount <= 0 {
		if err := d.bank.Deposit(ctx, from, 2500); err != nil {
			return err
		}
		amount = 2500
	}
	tid := NewTransferID()
	if err := d.bank.SendOnly(ctx, tid, from, to, amount); err != nil {
		return err
	}
	flying, err := d.bank.InFlight(ctx)
	if err != nil {
		return err
	}
	d.printf("%s debited %s for %s, then \"crashed\": %d transfer(s) in flight\n", from, money(amount), to, len(flying))
	before, err := d.bank.accounts.Load(ctx, to)
	if err != nil {
		return err
	}
	done, _, err := d.bank.CompleteTransfers(ctx)
	if err != nil {
		return err
	}
	ev0 := d.bank.stats.events.Load()
	// A client that retries the whole transfer with the same ID (it never
	// saw the first reply) changes nothing: both sides know the ID.
	if err := d.bank.Transfer(ctx, tid, from, to, amount); err != nil {
		return err
	}
	after, err := d.bank.accounts.Load(ctx, to)
	if err != nil {
		return err
	}
	d.printf("completed from the log: %d; retried with the same transfer ID: %d new events; %s got %s once\n",
		done, d.bank.stats.events.Load()-ev0, to, money(after.Balance()-before.Balance()))
	d.check(len(flying) == 1 && done == 1 && d.bank.stats.events.Load() == ev0 && after.Balance()-before.Balance() == amount,
		"the interrupted transfer is credited exactly once")
	return nil
}

// poison appends a Deposited whose amount is not an integer, as a buggy
// writer or a hand-made append would, then a good one behind it.
func (d *demo) poison(ctx context.Context) (eventstore.Position, int, error) {
	const id = "acc-poison"
	d.step("a poison event: %s gets a Deposited whose amount is \"12.50\", a string", id)
	if _, err := d.bank.Open(ctx, id, "Mallory"); err != nil {
		return eventstore.Position{}, 0, err
	}
	if err := d.bank.Deposit(ctx, id, 1000); err != nil {
		return eventstore.Position{}, 0, err
	}
	res, err := d.store.Append(ctx, d.bank.accounts.Stream(id), eventstore.Exact(2),
		eventstore.EventData{Type: "Deposited", Data: []byte(`{"amount":"12.50"}`)},
		eventstore.EventData{Type: "Deposited", Data: []byte(`{"amount":500}`)})
	if err != nil {
		return eventstore.Position{}, 0, err
	}
	d.printf("appended at versions %d..%d, partition %d, positions %s %s\n", res.FirstVersion, res.LastVersion, res.Partition, res.Positions[0], res.Positions[1])
	err = d.bank.Deposit(ctx, id, 100)
	d.printf("the aggregate cannot load any more; a command on it fails on that account only:\n  %v\n", err)
	d.check(isAggregateFailure(err), "a command on the poisoned account fails with a decode error")
	return res.Positions[0], res.Partition, nil
}

// quarantine shows the held events, then has the operator skip the poison
// one, which releases the parked event behind it.
func (d *demo) quarantine(ctx context.Context, part int, pos eventstore.Position) error {
	name := d.pr.p.ID()
	d.step("quarantine: the poison event is held, the account's later event parked behind it, every other account flowed")
	held, err := d.admin().Held(ctx, name)
	if err != nil {
		return err
	}
	for _, h := range held {
		switch h.Reason {
		case "quarantined":
			d.quarantined++
		case "parked":
			d.parked++
		}
		d.printf("  %-11s %s v%d %s at %d/%s  %s\n", h.Reason, h.AggregateID, h.Version, h.Type, h.Partition, h.Position, firstLine(h.Error))
	}
	d.check(len(held) == 2 && held[0].Reason == "quarantined" && held[0].Position == pos && held[1].Reason == "parked",
		"one quarantined and one parked event")
	if _, err := d.admin().Request(ctx, name, "skip", Category, part, pos); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		o, err := d.admin().Outcome(ctx, name, Category, part, pos)
		if err != nil {
			return err
		}
		if o.Resolved {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the skip request was not carried out within 10s (%s)", o.Error)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if held, err = d.admin().Held(ctx, name); err != nil {
		return err
	}
	rows, err := readBalances(ctx, d.pool, balancesView(d.schema))
	if err != nil {
		return err
	}
	r := rows["acc-poison"]
	d.printf("operator: skip it -> held events now %d; acc-poison in the read model: %s at version %d\n", len(held), money(r.Balance), r.Version)
	d.check(len(held) == 0 && r.Balance == 1500 && r.Version == 4, "the parked deposit is applied after the skip")
	return nil
}

// money formats cents.
func money(cents int64) string {
	sign := ""
	if cents < 0 {
		sign, cents = "-", -cents
	}
	return fmt.Sprintf("%s%d.%02d", sign, cents/100, cents%100)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// deleteKeys removes every key under the namespace, and nothing else, and
// returns how many it removed. A cluster spreads the namespace over all
// its masters, so every node the client knows is scanned (a replica lists
// its master's keys again; UNLINK's reply counts each key once), and each
// key is removed by a command of its own: the keys are in many slots.
func deleteKeys(ctx context.Context, c rueidis.Client, ns string) (int, error) {
	n := 0
	for _, node := range c.Nodes() {
		var cursor uint64
		for {
			page, err := node.Do(ctx, node.B().Scan().Cursor(cursor).Match(globEscape(ns)+":*").Count(1000).Build()).AsScanEntry()
			if err != nil {
				return n, err
			}
			for _, k := range page.Elements {
				removed, err := c.Do(ctx, c.B().Unlink().Key(k).Build()).AsInt64()
				if err != nil {
					return n, err
				}
				n += int(removed)
			}
			if cursor = page.Cursor; cursor == 0 {
				break
			}
		}
	}
	return n, nil
}

// globEscape quotes what SCAN MATCH treats as a pattern.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
