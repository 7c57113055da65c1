package aggregate

import (
	"errors"
	"fmt"

	"github.com/redsource/redsource/eventstore"
)

var (
	// ErrNotFound: Load found no events for the aggregate.
	ErrNotFound = errors.New("aggregate: not found")
	// ErrUnknownEventType: an event whose type is not registered with the
	// repository: a stored type name on load, a recorded Go type on save.
	// Never skipped silently.
	ErrUnknownEventType = errors.New("aggregate: unregistered event type")
	// ErrSchema: a stored event whose schema version cannot be brought to
	// the current one (newer than this build, or a missing upcaster).
	ErrSchema = errors.New("aggregate: unreadable event schema version")
)

// ErrSnapshotAhead: an aggregate's snapshot is newer than its stream: Redis
// lost events the snapshot was taken after (a restart without
// persistence, a lost AOF tail, a failover to a lagging replica). It
// matches eventstore.ErrDataLoss; errors that match it are
// *SnapshotAheadError.
var ErrSnapshotAhead = errors.New("aggregate: snapshot is newer than its stream")

// SnapshotAheadError says how far a snapshot is ahead of its stream.
type SnapshotAheadError struct {
	Stream          eventstore.StreamID
	SnapshotVersion uint64
	StreamVersion   uint64
	Position        eventstore.Position // the snapshot's position
}

func (e *SnapshotAheadError) Error() string {
	return fmt.Sprintf("aggregate: the snapshot of %s is at version %d (position %s) but its stream holds %d events: Redis lost acknowledged events."+
		" Nothing was loaded. Restore Redis from a backup, or accept the loss by deleting the snapshot (snapshot.Store.Delete); see docs/operations.md, \"When Redis forgets\"",
		e.Stream, e.SnapshotVersion, e.Position, e.StreamVersion)
}

func (e *SnapshotAheadError) Is(target error) bool {
	return target == ErrSnapshotAhead || target == eventstore.ErrDataLoss
}
