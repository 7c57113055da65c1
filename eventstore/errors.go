package eventstore

import (
	"errors"
	"fmt"

	"github.com/redsource/redsource/internal/keys"
)

var (
	// ErrConflict: the stream is not at the expected version. Errors that
	// match it are *ConflictError and carry the actual version.
	ErrConflict = errors.New("eventstore: wrong expected version")
	// ErrEventTooLarge: one event, or one append, is over the size limit.
	ErrEventTooLarge = errors.New("eventstore: event too large")
	// ErrInvalidName: a namespace, category, aggregate ID or event type
	// that cannot be used. The error names the field.
	ErrInvalidName = errors.New("eventstore: invalid name")
	// ErrInvalidAppend: an append that is malformed (no events, too many
	// events, a duplicate event ID in one batch).
	ErrInvalidAppend = errors.New("eventstore: invalid append")
	// ErrPartitionMismatch: the store is configured with a partition count
	// other than the one recorded for the category.
	ErrPartitionMismatch = errors.New("eventstore: partition count mismatch")
	// ErrCorruptEntry: a stream entry that cannot be decoded.
	ErrCorruptEntry = errors.New("eventstore: corrupt entry")
	// ErrMissingEntry: the aggregate stream points at a log entry that is
	// gone (trimmed or deleted).
	ErrMissingEntry = errors.New("eventstore: log entry missing")
)

// ConflictError is returned when an append's expected version does not
// match. errors.Is(err, ErrConflict) is true.
type ConflictError struct {
	Stream   StreamID
	Expected Expected
	Actual   uint64 // the stream's version when the append was refused
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("eventstore: wrong expected version for %s: expected %s, actual %d", e.Stream, e.Expected, e.Actual)
}

func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// NameError is the typed form of ErrInvalidName; Field says which name.
type NameError = keys.NameError

// invalidName wraps a keys.NameError so that errors.Is(err, ErrInvalidName)
// and errors.As(err, **NameError) both hold.
func invalidName(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrInvalidName, err)
}

// SizeError says which event is over which limit.
type SizeError struct {
	Index int    // index of the event in the append; -1 for the whole append
	Size  int    // bytes
	Limit int    // bytes
	What  string // "event", "append"
}

func (e *SizeError) Error() string {
	if e.Index < 0 {
		return fmt.Sprintf("eventstore: %s of %d bytes is over the limit of %d bytes", e.What, e.Size, e.Limit)
	}
	return fmt.Sprintf("eventstore: event %d is %d bytes (data+metadata+type), over the limit of %d bytes", e.Index, e.Size, e.Limit)
}

func (e *SizeError) Is(target error) bool { return target == ErrEventTooLarge }
