package aggregate

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"time"

	"github.com/google/uuid"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/keys"
)

// Config configures a Repository. Zero fields take the documented
// defaults; Category, New and Events are required.
type Config[A Interface] struct {
	// Category is the aggregate type, the category of its streams
	// ("account").
	Category string
	// New returns an aggregate before its first event. The repository sets
	// up the Root it embeds.
	New func() A
	// Events lists every event type the aggregate records or may find in
	// its stream. There is no global registry: each repository knows its
	// own.
	Events []EventType
	// Snapshots is off while Snapshots.Store is nil.
	Snapshots Snapshots[A]
	// MaxAttempts bounds Update's attempts: loads after a conflict plus
	// re-sends after an append of unknown outcome. Default 10.
	MaxAttempts int
	// MinBackoff and MaxBackoff bound Update's wait before another attempt:
	// the n-th retry waits a random time in [0, min(MaxBackoff,
	// MinBackoff·2^(n-1))]. Defaults 2ms and 200ms.
	MinBackoff, MaxBackoff time.Duration
	// Logger receives snapshot problems (never returned as errors).
	// Default slog.Default().
	Logger *slog.Logger
}

// Defaults, as documented on Config and Snapshots.
const (
	DefaultMaxAttempts   = 10
	DefaultMinBackoff    = 2 * time.Millisecond
	DefaultMaxBackoff    = 200 * time.Millisecond
	DefaultSnapshotEvery = 100
)

func (c Config[A]) withDefaults() Config[A] {
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Snapshots = c.Snapshots.withDefaults()
	return c
}

func (c Config[A]) validate() error {
	if err := keys.ValidateCategory(c.Category); err != nil {
		return fmt.Errorf("aggregate: Config.Category: %w: %w", eventstore.ErrInvalidName, err)
	}
	switch {
	case c.New == nil:
		return fmt.Errorf("aggregate: %s: Config.New is nil", c.Category)
	case c.MaxAttempts < 1:
		return fmt.Errorf("aggregate: %s: Config.MaxAttempts is %d, want >= 1", c.Category, c.MaxAttempts)
	case c.MinBackoff < 0 || c.MaxBackoff < c.MinBackoff:
		return fmt.Errorf("aggregate: %s: Config.MinBackoff %v and MaxBackoff %v, want 0 <= min <= max", c.Category, c.MinBackoff, c.MaxBackoff)
	}
	if err := c.Snapshots.validate(); err != nil {
		return fmt.Errorf("aggregate: %s: %w", c.Category, err)
	}
	return nil
}

// Build returns the aggregate that history leads to, without any store:
// what Load returns for a stream holding these events, at version
// len(history). Each event goes through its codec and upcasters on the
// way, as it would through Redis. It serves tests and tools.
func (c Config[A]) Build(id string, history ...any) (A, error) {
	var zero A
	if c.New == nil {
		return zero, fmt.Errorf("aggregate: %s: Config.New is nil", c.Category)
	}
	types, err := NewRegistry(c.Events...)
	if err != nil {
		return zero, err
	}
	a := c.New()
	root := initRoot(a, id)
	stream := eventstore.StreamID{Category: c.Category, ID: id}
	for i, e := range history {
		ed, err := types.Encode(e)
		if err != nil {
			return zero, fmt.Errorf("aggregate: build %s: event %d: %w", stream, i, err)
		}
		ev := eventstore.Event{Stream: stream, Version: uint64(i + 1), Type: ed.Type, Data: ed.Data, Metadata: ed.Metadata}
		if err := applyStored(types, a, ev); err != nil {
			return zero, err
		}
		root.version = ev.Version
	}
	return a, nil
}

// Repository loads and saves the aggregates of one category. It is safe
// for concurrent use; the aggregates it returns are not.
type Repository[A Interface] struct {
	store *eventstore.Store
	cfg   Config[A]
	types *Registry
	log   *slog.Logger
}

// NewRepository returns a repository of cfg.Category's aggregates in
// store. cfg is copied; defaults are applied to the copy, then validated.
func NewRepository[A Interface](store *eventstore.Store, cfg Config[A]) (*Repository[A], error) {
	if store == nil {
		return nil, fmt.Errorf("aggregate: nil event store")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	types, err := NewRegistry(cfg.Events...)
	if err != nil {
		return nil, fmt.Errorf("aggregate: %s: %w", cfg.Category, err)
	}
	return &Repository[A]{store: store, cfg: cfg, types: types, log: cfg.Logger}, nil
}

// Registry returns the repository's event types, to decode its events
// elsewhere (projection handlers) exactly as Load does.
func (r *Repository[A]) Registry() *Registry { return r.types }

// Stream returns the stream of the aggregate with this ID.
func (r *Repository[A]) Stream(id string) eventstore.StreamID {
	return eventstore.StreamID{Category: r.cfg.Category, ID: id}
}

// New returns a new aggregate with this ID, at version 0. Saving it
// appends with eventstore.NoStream, so it fails with ErrConflict if the
// aggregate already has events.
func (r *Repository[A]) New(id string) A {
	a := r.cfg.New()
	initRoot(a, id)
	return a
}

// Load returns the aggregate's current state: its snapshot, if one is
// usable, then the events after it. An aggregate without events is an
// error matching ErrNotFound. A stored event of a type not registered is
// an error matching ErrUnknownEventType, never skipped.
func (r *Repository[A]) Load(ctx context.Context, id string) (A, error) {
	a, err := r.load(ctx, id)
	if err != nil {
		var zero A
		return zero, err
	}
	if a.root().version == 0 {
		var zero A
		return zero, fmt.Errorf("%w: %s", ErrNotFound, r.Stream(id))
	}
	return a, nil
}

// Save appends the events recorded on a since it was loaded or saved,
// with eventstore.Exact(a.Version()): a *eventstore.ConflictError
// (errors.Is ErrConflict) means another writer got there first and
// nothing was written; load again and decide again (Update does). With
// nothing recorded, Save does nothing.
//
// Save gives every recorded event its UUIDv7 before the append and keeps
// it with the event in a's Root until an append succeeds. So after an
// error of unknown outcome (a timeout, a dropped connection), calling Save
// again with the same aggregate re-sends the same IDs at the same expected
// version: if the first append got through, the event store recognises it
// (invariant I4) and Save succeeds without writing twice.
//
// The metadata carried by ctx (WithCorrelation, WithCausation,
// WithMetadata) is added to every event. After the append, a snapshot is
// written if the policy says so; a failure to write it is logged, never
// returned.
func (r *Repository[A]) Save(ctx context.Context, a A) error {
	if len(a.root().pending) == 0 {
		return nil
	}
	events, err := r.prepare(ctx, a.root())
	if err != nil {
		return err
	}
	return r.append(ctx, a, events)
}

// prepare encodes the pending events, assigning IDs to those without.
func (r *Repository[A]) prepare(ctx context.Context, root *Root) ([]eventstore.EventData, error) {
	stream := r.Stream(root.id)
	if root.apply == nil {
		return nil, fmt.Errorf("aggregate: save %s: aggregate not made by a Repository or Config.Build", stream)
	}
	meta := metadata(ctx)
	if _, ok := meta[MetaSchema]; ok {
		return nil, fmt.Errorf("aggregate: save %s: metadata key %q is reserved", stream, MetaSchema)
	}
	events := make([]eventstore.EventData, len(root.pending))
	for i := range root.pending {
		p := &root.pending[i]
		ed, err := r.types.Encode(p.event)
		if err != nil {
			return nil, fmt.Errorf("aggregate: save %s: event %d: %w", stream, i, err)
		}
		if p.id == uuid.Nil {
			if p.id, err = uuid.NewV7(); err != nil {
				return nil, fmt.Errorf("aggregate: save %s: event ID: %w", stream, err)
			}
		}
		ed.ID = p.id
		if len(meta) > 0 {
			m := maps.Clone(meta)
			maps.Copy(m, ed.Metadata)
			ed.Metadata = m
		}
		events[i] = ed
	}
	return events, nil
}

// append appends prepared events and moves a past them.
func (r *Repository[A]) append(ctx context.Context, a A, events []eventstore.EventData) error {
	root := a.root()
	res, err := r.store.Append(ctx, r.Stream(root.id), eventstore.Exact(root.version), events...)
	if err != nil {
		return err
	}
	root.saved(res.LastVersion, res.Positions[len(res.Positions)-1])
	r.snapshotAfterSave(ctx, a)
	return nil
}
