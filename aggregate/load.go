package aggregate

import (
	"context"
	"errors"
	"fmt"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/keys"
)

// load returns the aggregate at its stream's current version; version 0
// when the stream has no events.
func (r *Repository[A]) load(ctx context.Context, id string) (A, error) {
	var zero A
	if err := keys.ValidateAggregateID(id); err != nil {
		return zero, fmt.Errorf("%w: %w", eventstore.ErrInvalidName, err)
	}
	stream := r.Stream(id)
	if r.cfg.Snapshots.Store != nil {
		a, ok, err := r.fromSnapshot(ctx, stream)
		if err != nil {
			return zero, err
		}
		if ok {
			trusted, err := r.replay(ctx, a, stream, true)
			if err != nil {
				return zero, err
			}
			if trusted {
				return a, nil
			}
		}
	}
	a := r.New(id)
	if _, err := r.replay(ctx, a, stream, false); err != nil {
		return zero, err
	}
	return a, nil
}

// replay applies the stream's events after a's version. With
// fromSnapshot, a's state comes from a snapshot, which is trusted only if
// the stream still holds, at the snapshot's position, the event of the
// snapshot's version: replay reads from that position (one event more
// than needed, and no paging through earlier versions) and checks it. An
// untrusted snapshot is logged and deleted (it can never match again; a
// valid one written meanwhile is merely lost), and replay returns false,
// with a in an undefined state.
func (r *Repository[A]) replay(ctx context.Context, a A, stream eventstore.StreamID, fromSnapshot bool) (bool, error) {
	root := a.root()
	events := r.store.Read(ctx, stream, root.version+1)
	if fromSnapshot {
		events = r.store.ReadFrom(ctx, stream, root.position, root.version)
	}
	check := fromSnapshot
	for ev, err := range events {
		if errors.Is(err, eventstore.ErrPositionMismatch) {
			v, verr := r.store.Version(ctx, stream)
			if verr != nil {
				return false, verr
			}
			if v < root.version {
				// The snapshot remembers events Redis no longer has: the
				// aggregate's state would silently go back. An operator
				// decides (restore Redis, or delete the snapshot to accept
				// the loss); the snapshot is kept as evidence.
				return false, &SnapshotAheadError{Stream: stream, SnapshotVersion: root.version, StreamVersion: v, Position: root.position}
			}
			r.log.WarnContext(ctx, "aggregate: snapshot ignored: the stream holds another event at its version (was the stream rewritten after a data loss?); loading from events",
				"stream", stream.String(), "snapshot_version", root.version, "snapshot_position", root.position.String(), "stream_version", v)
			r.dropSnapshot(ctx, stream)
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if check { // the snapshot's own event: checked by ReadFrom
			check = false
			continue
		}
		if err := applyStored(r.types, a, ev); err != nil {
			return false, err
		}
		root.version, root.position = ev.Version, ev.Position
	}
	return true, nil
}

// applyStored decodes a stored event and applies it.
func applyStored[A Interface](types *Registry, a A, ev eventstore.Event) error {
	e, err := types.Decode(ev)
	if err != nil {
		return err
	}
	a.Apply(e)
	return nil
}

// dropSnapshot deletes a snapshot that does not match its stream, so that
// loads stop paying for it. Best effort: a failure is logged.
func (r *Repository[A]) dropSnapshot(ctx context.Context, stream eventstore.StreamID) {
	if err := r.cfg.Snapshots.Store.Delete(ctx, stream); err != nil {
		r.log.WarnContext(ctx, "aggregate: could not delete a snapshot that does not match its stream", "stream", stream.String(), "error", err)
	}
}
