package eventstore

import (
	"strconv"
	"time"

	"github.com/google/uuid"
)

// StreamID names one aggregate's stream: its category (aggregate type) and
// its ID.
type StreamID struct{ Category, ID string }

func (s StreamID) String() string { return s.Category + "/" + s.ID }

// EventData is what a writer appends.
type EventData struct {
	// ID identifies the event for idempotency. Zero: a UUIDv7 is generated.
	// Set it yourself (and keep it across retries) to make a retry after a
	// timeout safe; see docs/guarantees.md.
	ID       uuid.UUID
	Type     string
	Data     []byte
	Metadata map[string]string
}

// Event is what a reader gets.
type Event struct {
	Stream    StreamID
	Partition int
	Version   uint64   // 1-based position in the aggregate stream
	Position  Position // the entry ID in the partition log
	ID        uuid.UUID
	Type      string
	Data      []byte
	Metadata  map[string]string
	// RecordedAt is when Redis appended the event: its position's
	// millisecond (Position.Time). After the server's clock went back it
	// is the last earlier entry's millisecond, later than the wall clock.
	RecordedAt time.Time
}

type expectedKind uint8

const (
	expectAny expectedKind = iota
	expectExact
	expectExists
)

// Expected is the version an append expects the stream to be at. The zero
// value is Any.
type Expected struct {
	kind    expectedKind
	version uint64
}

var (
	// Any appends whatever the stream's version.
	Any = Expected{}
	// NoStream expects a stream with no events; the same as Exact(0).
	NoStream = Exact(0)
	// StreamExists expects a stream with at least one event.
	StreamExists = Expected{kind: expectExists}
)

// Exact expects the stream to be at version n: n events so far.
func Exact(n uint64) Expected { return Expected{kind: expectExact, version: n} }

// Version returns the exact version expected, if any.
func (e Expected) Version() (uint64, bool) { return e.version, e.kind == expectExact }

func (e Expected) String() string {
	switch e.kind {
	case expectExact:
		if e.version == 0 {
			return "no stream"
		}
		return "version " + strconv.FormatUint(e.version, 10)
	case expectExists:
		return "stream exists"
	}
	return "any"
}

// AppendResult says where an append's events went.
type AppendResult struct {
	FirstVersion, LastVersion uint64
	Positions                 []Position  // one per event, in order
	EventIDs                  []uuid.UUID // one per event (generated ones included)
	Partition                 int
	// RecordedAt is when Redis appended the events (the first position's
	// millisecond), also for a duplicate.
	RecordedAt time.Time
	// Duplicate is true when these events were already appended (an
	// idempotent retry): nothing was written and the original positions
	// are returned.
	Duplicate bool
}
