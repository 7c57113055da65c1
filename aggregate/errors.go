package aggregate

import "errors"

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
