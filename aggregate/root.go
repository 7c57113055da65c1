package aggregate

import (
	"github.com/google/uuid"

	"github.com/redsource/redsource/eventstore"
)

// Interface is what a Repository needs of an aggregate: a pointer to a
// struct that embeds Root and applies events to its state.
//
//	type Account struct {
//		aggregate.Root
//		balance int64
//	}
//
//	func (a *Account) Apply(event any) {
//		switch e := event.(type) {
//		case Deposited:
//			a.balance += e.Amount
//		}
//	}
type Interface interface {
	// Apply changes the state by one event. It is the one place that
	// does: Record calls it for a new event, Load for each stored one.
	// It must not fail: the event has happened. It must not record.
	Apply(event any)
	// ID, Version, Record and Changes come from the embedded Root.
	ID() string
	Version() uint64
	Record(event any)
	Changes() []any
	root() *Root
}

// Root is embedded (by value) in every aggregate. It holds the aggregate's
// identity, the stream version its state reflects and the events recorded
// since. Its methods are promoted onto the aggregate.
//
// An aggregate comes from a Repository (New, Load, Update) or from
// Config.Build, which set its Root up. It is not safe for concurrent use.
type Root struct {
	id       string
	version  uint64              // stream version that the stored part of the state reflects
	position eventstore.Position // log position of the event at version
	snapshot uint64              // version of the last snapshot read or written
	pending  []pending
	apply    func(any)
}

type pending struct {
	id    uuid.UUID // assigned by the first Save attempt, kept until the append succeeds
	event any
}

func (r *Root) root() *Root { return r }

// ID returns the aggregate's ID.
func (r *Root) ID() string { return r.id }

// Version returns the version of the aggregate's stream that its state was
// loaded or saved at: the number of stored events, not counting the ones
// recorded since. Save appends with eventstore.Exact(Version()).
func (r *Root) Version() uint64 { return r.version }

// Record applies event to the aggregate and keeps it for the next Save.
// Call it from a decision method once every rule has passed. event must be
// of a Go type registered with the repository (Save says otherwise).
func (r *Root) Record(event any) {
	if r.apply == nil {
		panic("aggregate: Record on an aggregate not made by a Repository or Config.Build")
	}
	r.apply(event)
	r.pending = append(r.pending, pending{event: event})
}

// Changes returns the events recorded since the aggregate was loaded or
// last saved, in order.
func (r *Root) Changes() []any {
	out := make([]any, len(r.pending))
	for i, p := range r.pending {
		out[i] = p.event
	}
	return out
}

// init sets up the Root of a fresh aggregate a.
func initRoot[A Interface](a A, id string) *Root {
	r := a.root()
	*r = Root{id: id, apply: a.Apply}
	return r
}

// saved moves the aggregate past a successful append of its pending events.
func (r *Root) saved(last uint64, pos eventstore.Position) {
	r.version, r.position = last, pos
	r.pending = nil
}
