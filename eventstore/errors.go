package eventstore

import (
	"errors"
	"fmt"
	"strings"

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
	// ErrDataLoss: Redis no longer holds data that was acknowledged, and
	// something remembers it (this store, a checkpoint, a snapshot). Every
	// error that reports such a loss matches it, whichever package found
	// it (ErrNamespaceLost here, projection.ErrLogRegressed,
	// aggregate.ErrSnapshotAhead). Never retried: an operator decides.
	ErrDataLoss = errors.New("eventstore: Redis lost acknowledged data")
	// ErrNamespaceLost: the namespace's identity in Redis is gone or is
	// another one than remembered: Redis restarted without persistence,
	// was flushed, failed over to a replica that never had the namespace,
	// or the namespace was deleted and created again. Errors that match it
	// are *NamespaceError and also match ErrDataLoss.
	ErrNamespaceLost = errors.New("eventstore: namespace lost")
)

// NamespaceError says how a namespace's identity in Redis disagrees with
// what is remembered of it. errors.Is(err, ErrNamespaceLost) and
// errors.Is(err, ErrDataLoss) are true.
type NamespaceError struct {
	Namespace string
	// Remembered is the identity something durable remembers; Found is the
	// one Redis holds ("" when Redis holds none).
	Remembered, Found string
	// By names what remembers it: "this process", "PostgreSQL schema
	// bank", "partition 3 of account".
	By string
	// Detail says what was seen, in words.
	Detail string
}

func (e *NamespaceError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "eventstore: namespace %q: ", e.Namespace)
	switch {
	case e.Detail != "":
		b.WriteString(e.Detail)
	case e.Found == "":
		fmt.Fprintf(&b, "%s remembers identity %s (created %s), but Redis has no identity for the namespace", e.By, e.Remembered, identityTime(e.Remembered))
	default:
		fmt.Fprintf(&b, "%s remembers identity %s (created %s), but Redis holds identity %s (created %s): the namespace was created again",
			e.By, e.Remembered, identityTime(e.Remembered), e.Found, identityTime(e.Found))
	}
	b.WriteString(": Redis lost data it had acknowledged (a restart without persistence, a flush, a failover to a replica that lacked it, or deleted keys)." +
		" Nothing was written. Restore Redis from a backup, or start over deliberately: see docs/operations.md, \"When Redis forgets\"")
	return b.String()
}

func (e *NamespaceError) Is(target error) bool {
	return target == ErrNamespaceLost || target == ErrDataLoss
}

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
