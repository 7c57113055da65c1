package aggregate

import (
	"context"
	"errors"
	"fmt"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/snapshot"
)

// Snapshots configures a repository's snapshots. A snapshot is an
// optimisation, never the truth: Load uses one only if its schema version
// is Schema and the stream still holds the event it was taken at, and
// falls back to the events otherwise (deleting a snapshot that does not
// match its stream, with a warning); a snapshot that cannot be read or
// written is logged, and Load and Save go on without it.
type Snapshots[A Interface] struct {
	// Store keeps the snapshots: snapshot.NewRedis (next to the events) or
	// snapshot.NewPostgres. Nil: no snapshots.
	Store snapshot.Store
	// Schema is the version of the payload format that Marshal writes and
	// Unmarshal reads. Bump it when the format changes: snapshots of any
	// other version are then ignored (logged at debug level) and replaced
	// as the policy writes new ones. Default 1.
	Schema int
	// Every writes a snapshot after a Save that leaves the aggregate at
	// least Every events past the snapshot it was loaded from (or past its
	// first event, without one). Default DefaultSnapshotEvery. Ignored when
	// When is set.
	Every uint64
	// When, if set, decides after each successful Save instead of Every;
	// sinceSnapshot counts the events since the aggregate's last snapshot.
	When func(a A, sinceSnapshot uint64) bool
	// Marshal encodes the aggregate's state (its Root excluded: version and
	// ID are kept beside the payload). Required with a Store.
	Marshal func(a A) ([]byte, error)
	// Unmarshal restores the state Marshal encoded into a, a new aggregate
	// from Config.New. Required with a Store.
	Unmarshal func(a A, payload []byte) error
}

func (s Snapshots[A]) withDefaults() Snapshots[A] {
	if s.Schema == 0 {
		s.Schema = 1
	}
	if s.Every == 0 {
		s.Every = DefaultSnapshotEvery
	}
	return s
}

func (s Snapshots[A]) validate() error {
	switch {
	case s.Store == nil:
		return nil
	case s.Marshal == nil || s.Unmarshal == nil:
		return fmt.Errorf("Config.Snapshots needs Marshal and Unmarshal with a Store")
	case s.Schema < 1:
		return fmt.Errorf("Config.Snapshots.Schema is %d, want >= 1", s.Schema)
	}
	return nil
}

// fromSnapshot returns a new aggregate restored from the stream's
// snapshot, or false when there is none it can use. Only a done ctx is an
// error; anything else falls back to the events.
func (r *Repository[A]) fromSnapshot(ctx context.Context, stream eventstore.StreamID) (A, bool, error) {
	var zero A
	sc := r.cfg.Snapshots
	s, err := sc.Store.Get(ctx, stream)
	switch {
	case errors.Is(err, snapshot.ErrNotFound):
		return zero, false, nil
	case err != nil && ctx.Err() != nil:
		return zero, false, err
	case err != nil:
		r.log.WarnContext(ctx, "aggregate: snapshot unreadable; loading from events", "stream", stream.String(), "error", err)
		return zero, false, nil
	case s.Schema != sc.Schema:
		r.log.DebugContext(ctx, "aggregate: snapshot of another schema version ignored; loading from events",
			"stream", stream.String(), "snapshot_schema", s.Schema, "schema", sc.Schema)
		return zero, false, nil
	}
	if s.Identity != "" {
		// A snapshot kept outside Redis (PostgreSQL) outlives a Redis that
		// lost the namespace: one taken in another incarnation of it says
		// Redis forgot.
		id, err := r.store.Identity(ctx)
		if err != nil {
			return zero, false, err
		}
		if id != s.Identity {
			return zero, false, fmt.Errorf("aggregate: load %s: %w", stream, &eventstore.NamespaceError{Namespace: r.store.Namespace(),
				Remembered: s.Identity, Found: id, By: fmt.Sprintf("the snapshot of %s (version %d)", stream, s.Version)})
		}
	}
	a := r.New(stream.ID)
	if err := sc.Unmarshal(a, s.Payload); err != nil {
		r.log.WarnContext(ctx, "aggregate: snapshot payload unreadable; loading from events",
			"stream", stream.String(), "version", s.Version, "error", err)
		return zero, false, nil
	}
	root := a.root()
	root.version, root.position, root.snapshot = s.Version, s.Position, s.Version
	return a, true, nil
}

// snapshotAfterSave writes a snapshot if the policy asks for one. Errors
// are logged: a Save that appended has succeeded.
func (r *Repository[A]) snapshotAfterSave(ctx context.Context, a A) {
	sc := r.cfg.Snapshots
	if sc.Store == nil {
		return
	}
	root := a.root()
	since := root.version - root.snapshot
	if sc.When != nil && !sc.When(a, since) || sc.When == nil && since < sc.Every {
		return
	}
	stream := r.Stream(root.id)
	payload, err := sc.Marshal(a)
	if err != nil {
		r.log.WarnContext(ctx, "aggregate: snapshot not written: marshal failed", "stream", stream.String(), "version", root.version, "error", err)
		return
	}
	id, err := r.store.Identity(ctx)
	if err != nil {
		r.log.WarnContext(ctx, "aggregate: snapshot not written: namespace identity unknown", "stream", stream.String(), "version", root.version, "error", err)
		return
	}
	err = sc.Store.Put(ctx, snapshot.Snapshot{Stream: stream, Version: root.version, Position: root.position, Schema: sc.Schema, Payload: payload, Identity: id})
	if err != nil {
		r.log.WarnContext(ctx, "aggregate: snapshot not written", "stream", stream.String(), "version", root.version, "error", err)
		return
	}
	root.snapshot = root.version
}
