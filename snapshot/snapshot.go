package snapshot

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/keys"
)

// Snapshot is an aggregate's state as of one version of its stream.
type Snapshot struct {
	Stream eventstore.StreamID
	// Version is the stream version the payload reflects: events 1…Version
	// are folded into it.
	Version uint64
	// Position is the log position of the event at Version. A reader checks
	// that the stream still holds that event there before trusting the
	// snapshot.
	Position eventstore.Position
	// Schema is the version of the payload's format, chosen by the writer.
	Schema int
	// Payload is the encoded state.
	Payload []byte
	// Identity is the identity of the namespace the snapshot was taken in
	// (eventstore.Store.Identity), "" if unknown. A snapshot outlives a
	// Redis that lost its namespace when it is kept in PostgreSQL; a
	// repository refuses one taken in another incarnation of the namespace.
	Identity string
}

// Store keeps the latest snapshot of each aggregate. Implementations are
// safe for concurrent use.
type Store interface {
	// Get returns the snapshot of stream, or an error matching ErrNotFound.
	Get(ctx context.Context, stream eventstore.StreamID) (Snapshot, error)
	// Put stores s, replacing the stream's snapshot whatever its version:
	// last writer wins. Every snapshot a Repository writes is valid for its
	// own version, so a late write of an older one costs a longer tail on
	// the next load, never a wrong state.
	Put(ctx context.Context, s Snapshot) error
	// Delete removes the stream's snapshot; deleting none is not an error.
	Delete(ctx context.Context, stream eventstore.StreamID) error
}

var (
	// ErrNotFound: the aggregate has no snapshot.
	ErrNotFound = errors.New("snapshot: not found")
	// ErrCorrupt: a stored snapshot that cannot be decoded.
	ErrCorrupt = errors.New("snapshot: corrupt")
	// ErrInvalid: a snapshot that cannot be stored (bad names, version 0,
	// no position, schema below 1).
	ErrInvalid = errors.New("snapshot: invalid")
)

// validateStream applies the eventstore's name rules, so that a snapshot
// key can never be built from a name the event store would refuse.
func validateStream(stream eventstore.StreamID) error {
	if err := keys.ValidateCategory(stream.Category); err != nil {
		return fmt.Errorf("%w: %w", eventstore.ErrInvalidName, err)
	}
	if err := keys.ValidateAggregateID(stream.ID); err != nil {
		return fmt.Errorf("%w: %w", eventstore.ErrInvalidName, err)
	}
	return nil
}

func validate(s Snapshot) error {
	if err := validateStream(s.Stream); err != nil {
		return err
	}
	switch {
	case s.Version == 0:
		return fmt.Errorf("%w: %s: version 0 (a snapshot follows at least one event)", ErrInvalid, s.Stream)
	case s.Version > math.MaxInt64:
		return fmt.Errorf("%w: %s: version %d is over 2^63-1", ErrInvalid, s.Stream, s.Version)
	case s.Position.IsZero():
		return fmt.Errorf("%w: %s: no position", ErrInvalid, s.Stream)
	case s.Schema < 1:
		return fmt.Errorf("%w: %s: schema version %d, want >= 1", ErrInvalid, s.Stream, s.Schema)
	}
	return nil
}
