package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/redsource/redsource/aggregate"
	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/snapshot"
)

// SnapshotEvery is the snapshot policy: a snapshot after every 50 events
// of an account.
const SnapshotEvery = 50

// Bank runs commands on accounts. It is safe for concurrent use.
type Bank struct {
	store    *eventstore.Store
	accounts *aggregate.Repository[*Account]
	types    *aggregate.Registry
	snaps    *countingSnapshots
	stats    stats
}

// stats counts what the bank did, for the numbers the commands print.
type stats struct {
	events    atomic.Int64 // appended
	conflicts atomic.Int64 // decisions run again after a concurrent write
}

func newBank(store *eventstore.Store, log *slog.Logger) (*Bank, error) {
	snaps := &countingSnapshots{Store: snapshot.NewRedis(store)}
	accounts, err := aggregate.NewRepository(store, aggregate.Config[*Account]{
		Category: Category,
		New:      func() *Account { return new(Account) },
		Events:   eventTypes(),
		Snapshots: aggregate.Snapshots[*Account]{
			Store:     snaps,
			Schema:    1,
			Every:     SnapshotEvery,
			Marshal:   marshalAccount,
			Unmarshal: unmarshalAccount,
		},
		// Writers share a few hot accounts: give Update room to retry.
		MaxAttempts: 200,
		MaxBackoff:  50 * time.Millisecond,
		Logger:      log,
	})
	if err != nil {
		return nil, err
	}
	return &Bank{store: store, accounts: accounts, types: accounts.Registry(), snaps: snaps}, nil
}

// update is Repository.Update that counts conflicts (decide run again) and
// appended events.
func (b *Bank) update(ctx context.Context, id string, decide func(*Account) error) (*Account, error) {
	calls, recorded := 0, 0
	a, err := b.accounts.Update(ctx, id, func(a *Account) error {
		calls++
		err := decide(a)
		recorded = len(a.Changes())
		return err
	})
	if calls > 1 {
		b.stats.conflicts.Add(int64(calls - 1))
	}
	if err == nil {
		b.stats.events.Add(int64(recorded))
	}
	return a, err
}

// Open opens account id for owner; opened is false when it was open
// already (then nothing is appended).
func (b *Bank) Open(ctx context.Context, id, owner string) (opened bool, err error) {
	_, err = b.update(ctx, id, func(a *Account) error {
		opened = false
		if a.Opened() {
			return nil
		}
		opened = true
		return a.Open(owner)
	})
	return opened, err
}

func (b *Bank) Deposit(ctx context.Context, id string, amount int64) error {
	_, err := b.update(ctx, id, func(a *Account) error { return a.Deposit(amount) })
	return err
}

func (b *Bank) Withdraw(ctx context.Context, id string, amount int64) error {
	_, err := b.update(ctx, id, func(a *Account) error { return a.Withdraw(amount) })
	return err
}

// NewTransferID returns a fresh transfer ID.
func NewTransferID() string { return "t-" + uuid.Must(uuid.NewV7()).String() }

// Transfer moves amount from one account to another under transfer ID
// tid. It is two appends on two aggregates, which are not atomic together:
//
//  1. TransferSent on the source, through Update with the balance rule:
//     this is where the transfer is accepted or refused;
//  2. TransferReceived on the target, through Update.
//
// A crash (or an error) between the two leaves the money debited and not
// yet credited: the transfer is "in flight". Both steps are idempotent on
// tid (each account remembers the transfer IDs it has sent and received),
// so calling Transfer again with the same tid, or CompleteTransfers, which
// finds every TransferSent without its TransferReceived in the log,
// finishes it without debiting or crediting twice.
//
// The target must be open before the debit; accounts are never closed, so
// the credit cannot be refused afterwards.
func (b *Bank) Transfer(ctx context.Context, tid, from, to string, amount int64) error {
	if from == to {
		return ErrSameAccount
	}
	dst, err := b.accounts.Load(ctx, to)
	switch {
	case errors.Is(err, aggregate.ErrNotFound):
		return fmt.Errorf("%w: %s", ErrUnknownTarget, to)
	case err != nil:
		return err
	case !dst.Opened():
		return fmt.Errorf("%w: %s", ErrUnknownTarget, to)
	}
	if _, err := b.update(ctx, from, func(a *Account) error { return a.SendTransfer(tid, to, amount) }); err != nil {
		return err
	}
	return b.credit(ctx, tid, from, to, amount)
}

// SendOnly runs only the first step of a transfer: what a crash right
// after the debit leaves behind. The demo uses it.
func (b *Bank) SendOnly(ctx context.Context, tid, from, to string, amount int64) error {
	_, err := b.update(ctx, from, func(a *Account) error { return a.SendTransfer(tid, to, amount) })
	return err
}

func (b *Bank) credit(ctx context.Context, tid, from, to string, amount int64) error {
	_, err := b.update(ctx, to, func(a *Account) error { return a.ReceiveTransfer(tid, from, amount) })
	if err != nil {
		return fmt.Errorf("transfer %s debited from %s but not yet credited to %s (CompleteTransfers will finish it): %w", tid, from, to, err)
	}
	return nil
}

// inFlight is a transfer whose debit is in the log and whose credit is not.
type inFlight struct {
	id, from, to string
	amount       int64
}

// InFlight scans the log for transfers debited and not credited.
// Undecodable events are left out (verify reports them).
func (b *Bank) InFlight(ctx context.Context) ([]inFlight, error) {
	sent := map[string]inFlight{}
	var order []string
	received := map[string]bool{}
	for ev, err := range b.store.ReadCategory(ctx, Category, eventstore.MinPosition, eventstore.MaxPosition) {
		if err != nil {
			return nil, err
		}
		e, err := b.types.Decode(ev)
		if err != nil {
			continue
		}
		switch e := e.(type) {
		case TransferSent:
			if _, dup := sent[e.Transfer]; !dup {
				order = append(order, e.Transfer)
			}
			sent[e.Transfer] = inFlight{id: e.Transfer, from: ev.Stream.ID, to: e.To, amount: e.Amount}
		case TransferReceived:
			received[e.Transfer] = true
		}
	}
	var out []inFlight
	for _, id := range order {
		if !received[id] {
			out = append(out, sent[id])
		}
	}
	return out, nil
}

// CompleteTransfers credits every transfer in flight. It is safe to run
// while other writers work: a credit is recorded at most once per
// transfer ID. A credit that fails on its account's stored events (an
// undecodable event) is counted in failed and left in flight; any other
// error stops it.
func (b *Bank) CompleteTransfers(ctx context.Context) (done, failed int, err error) {
	todo, err := b.InFlight(ctx)
	if err != nil {
		return 0, 0, err
	}
	for _, t := range todo {
		err := b.credit(ctx, t.id, t.from, t.to, t.amount)
		switch {
		case err == nil:
			done++
		case isAggregateFailure(err):
			failed++
		default:
			return done, failed, err
		}
	}
	return done, failed, nil
}

// countingSnapshots counts snapshot reads that found one and writes.
type countingSnapshots struct {
	snapshot.Store
	hits, puts atomic.Int64
}

func (c *countingSnapshots) Get(ctx context.Context, s eventstore.StreamID) (snapshot.Snapshot, error) {
	sn, err := c.Store.Get(ctx, s)
	if err == nil {
		c.hits.Add(1)
	}
	return sn, err
}

func (c *countingSnapshots) Put(ctx context.Context, s snapshot.Snapshot) error {
	err := c.Store.Put(ctx, s)
	if err == nil {
		c.puts.Add(1)
	}
	return err
}

// isAggregateFailure reports whether err concerns one aggregate's stored
// events (an undecodable or corrupt event), not the servers: the command
// failed on that account, and other accounts are fine.
func isAggregateFailure(err error) bool {
	for _, t := range []error{ErrBadEventData, aggregate.ErrUnknownEventType, aggregate.ErrSchema,
		eventstore.ErrCorruptEntry, eventstore.ErrMissingEntry} {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
