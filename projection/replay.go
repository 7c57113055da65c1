package projection

import (
	"context"
	"fmt"

	"github.com/redsource/redsource/eventstore"
)

// ReplaySpec says which events to replay: a category, optionally one
// aggregate of it, between two positions (both inclusive; use
// eventstore.PositionAt and LastPositionAt for times). A zero To means
// the end of the log.
type ReplaySpec struct {
	Category    string
	AggregateID string
	From, To    eventstore.Position
}

// Replay hands the events a spec selects to fn, in (position, partition)
// order, without touching any checkpoint, consumer group or read model: to
// rerun logic over a window, export, or debug. It stops at fn's first
// error and returns the number of events handed over.
func Replay(ctx context.Context, store *eventstore.Store, spec ReplaySpec, fn func(context.Context, eventstore.Event) error) (int, error) {
	to := spec.To
	if to.IsZero() {
		to = eventstore.MaxPosition
	}
	n := 0
	var events func(func(eventstore.Event, error) bool)
	if spec.AggregateID != "" {
		// One aggregate: its stream is in version order, which is its log
		// order; the bounds filter by position.
		events = store.Read(ctx, eventstore.StreamID{Category: spec.Category, ID: spec.AggregateID}, 0)
	} else {
		events = store.ReadCategory(ctx, spec.Category, spec.From, to)
	}
	for ev, err := range events {
		if err != nil {
			return n, fmt.Errorf("projection: replay: %w", err)
		}
		if ev.Position.Compare(spec.From) < 0 {
			continue
		}
		if ev.Position.Compare(to) > 0 {
			break
		}
		if err := fn(ctx, ev); err != nil {
			return n, fmt.Errorf("projection: replay: event %s/%s version %d at %s (partition %d): %w",
				ev.Stream.Category, ev.Stream.ID, ev.Version, ev.Position, ev.Partition, err)
		}
		n++
	}
	return n, nil
}
