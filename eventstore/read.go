package eventstore

import (
	"container/heap"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"iter"
	"strconv"

	"github.com/redis/rueidis"

	"github.com/redsource/redsource/internal/keys"
)

//go:embed read.lua
var readLua string

// The read script writes nothing (no-writes, EVALSHA_RO), so rueidis
// retries it on connection errors like a read-only command.
var readScript = rueidis.NewLuaScriptReadOnly(readLua)

// Read returns an aggregate's events from fromVersion (inclusive; 0 and 1
// both mean the start), paging through Redis so that memory stays constant
// however long the stream. Iteration stops at the first error, which is
// yielded.
//
// Each page is one round trip: a script takes the page's log IDs from the
// aggregate's index and the events from the partition log. Every event is
// checked against the index (the same aggregate, the next version), so a
// log that lost or reused an entry is an error, never a silent gap.
func (s *Store) Read(ctx context.Context, stream StreamID, fromVersion uint64) iter.Seq2[Event, error] {
	return s.readIndexed(ctx, stream, max(fromVersion, 1), "")
}

// ErrPositionMismatch: ReadFrom found no event of the given version at the
// given position (the stream is shorter, or was rewritten after Redis lost
// data).
var ErrPositionMismatch = errors.New("eventstore: no such event at that position")

// ReadFrom returns an aggregate's events from the one at position from,
// which must be version version, onwards: a snapshot's position and
// version let a load continue after it. If the stream holds no event
// version at from, the first thing yielded is an error matching
// ErrPositionMismatch.
func (s *Store) ReadFrom(ctx context.Context, stream StreamID, from Position, version uint64) iter.Seq2[Event, error] {
	return s.readIndexed(ctx, stream, max(version, 1), from.String())
}

// readIndexed pages through an aggregate from version want; with first
// set, the event at want must have that position.
func (s *Store) readIndexed(ctx context.Context, stream StreamID, want uint64, first string) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		if err := s.checkStream(ctx, stream); err != nil {
			yield(Event{}, err)
			return
		}
		p := s.Partition(stream)
		keys := []string{s.keys.Aggregate(stream.Category, p, stream.ID), s.keys.Log(stream.Category, p)}
		n := s.cfg.ReadBatch
		if want > maxVersion {
			// No list is that long; Lua's numbers could not name it.
			if first != "" {
				yield(Event{}, fmt.Errorf("%w: %s has no event %d (at %s)", ErrPositionMismatch, stream, want, first))
			}
			return
		}
		for {
			bctx, cancel := s.bound(ctx)
			page, err := readScript.Exec(bctx, s.client, keys, []string{strconv.FormatUint(want, 10), strconv.Itoa(n)}).ToArray()
			cancel()
			if err != nil {
				yield(Event{}, fmt.Errorf("eventstore: read %s: %w", stream, classify(err)))
				return
			}
			if len(page) == 0 && want == 1 {
				// An empty stream: a new aggregate, or a Redis that lost the
				// namespace this store has worked with.
				if err := s.verifyIdentity(ctx); err != nil {
					yield(Event{}, err)
					return
				}
			}
			if first != "" && len(page) == 0 {
				yield(Event{}, fmt.Errorf("%w: %s has no event %d (at %s)", ErrPositionMismatch, stream, want, first))
				return
			}
			for i, m := range page {
				ev, err := s.indexedEvent(stream, p, want, m)
				if err == nil && i == 0 && first != "" && ev.Position.String() != first {
					err = fmt.Errorf("%w: %s has event %d at %s, not at %s", ErrPositionMismatch, stream, want, ev.Position, first)
				}
				if err != nil {
					yield(Event{}, err)
					return
				}
				if !yield(ev, nil) {
					return
				}
				want++
			}
			first = ""
			if len(page) < n {
				return
			}
		}
	}
}

// maxVersion is the highest version a read asks Redis for: beyond it Lua's
// numbers (doubles) lose integers, and no aggregate comes near.
const maxVersion = 1 << 52

// indexedEvent decodes one element of a read page and checks it: the log
// entry is there, of this aggregate, at the version expected next.
func (s *Store) indexedEvent(stream StreamID, p int, want uint64, m rueidis.RedisMessage) (Event, error) {
	parts, err := m.ToArray()
	if err != nil || len(parts) < 1 {
		return Event{}, fmt.Errorf("%w: %s: malformed read reply", ErrCorruptEntry, stream)
	}
	id, err := parts[0].ToString()
	if err != nil {
		return Event{}, fmt.Errorf("%w: %s: read reply without an ID", ErrCorruptEntry, stream)
	}
	if len(parts) == 1 {
		return Event{}, fmt.Errorf("%w: %s partition %d entry %s (version %d of %s)", ErrMissingEntry, stream.Category, p, id, want, stream)
	}
	ev, err := decodeMessage(stream.Category, p, m)
	switch {
	case err != nil:
		return Event{}, err
	case ev.Stream.ID != stream.ID:
		return Event{}, fmt.Errorf("%w: %s entry %s belongs to aggregate %q", ErrCorruptEntry, stream, ev.Position, ev.Stream.ID)
	case ev.Version != want:
		return Event{}, fmt.Errorf("%w: %s entry %s has version %d, want %d", ErrCorruptEntry, stream, ev.Position, ev.Version, want)
	}
	return ev, nil
}

// Version returns an aggregate stream's current version (its event count).
func (s *Store) Version(ctx context.Context, stream StreamID) (uint64, error) {
	if err := s.checkStream(ctx, stream); err != nil {
		return 0, err
	}
	p := s.Partition(stream)
	n, err := s.do(ctx, s.client.B().Llen().Key(s.keys.Aggregate(stream.Category, p, stream.ID)).Build()).AsInt64()
	if err != nil {
		return 0, fmt.Errorf("eventstore: version of %s: %w", stream, classify(err))
	}
	return uint64(n), nil
}

func validateStream(stream StreamID) error {
	if err := keys.ValidateCategory(stream.Category); err != nil {
		return invalidName(err)
	}
	return invalidName(keys.ValidateAggregateID(stream.ID))
}

// checkStream validates the names, that Redis holds the namespace this
// store knows (or its Witness remembers), and that the category's recorded
// partition count is this store's: with another count, Partition points at
// the wrong partition and the stream would read as empty. Identity and
// count are fetched once per store (and category).
func (s *Store) checkStream(ctx context.Context, stream StreamID) error {
	if err := validateStream(stream); err != nil {
		return err
	}
	if _, err := s.identity(ctx, false); err != nil {
		return err
	}
	_, err := s.recordedPartitions(ctx, stream.Category)
	return err
}

// ReadPartition returns the events of one partition log between two
// positions, both inclusive, in log order.
func (s *Store) ReadPartition(ctx context.Context, category string, partition int, from, to Position) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		if err := keys.ValidateCategory(category); err != nil {
			yield(Event{}, invalidName(err))
			return
		}
		if err := s.verifyIdentity(ctx); err != nil {
			yield(Event{}, err)
			return
		}
		r := s.partitionReader(category, partition, from, to)
		for {
			ev, ok, err := r.next(ctx)
			if err != nil {
				yield(Event{}, err)
				return
			}
			if !ok || !yield(ev, nil) {
				return
			}
		}
	}
}

// ReadCategory returns the events of a category between two positions, both
// inclusive, merged across partitions in (Position, partition) order. Use
// PositionAt and LastPositionAt for time bounds. Memory is bounded by
// partitions × ReadBatch entries. A category never appended to yields
// nothing.
func (s *Store) ReadCategory(ctx context.Context, category string, from, to Position) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		if err := s.verifyIdentity(ctx); err != nil {
			yield(Event{}, err)
			return
		}
		n, err := s.recordedPartitions(ctx, category)
		if err != nil || n == 0 {
			if err != nil {
				yield(Event{}, err)
			}
			return
		}
		h := make(mergeHeap, 0, n)
		for p := 0; p < n; p++ {
			r := s.partitionReader(category, p, from, to)
			ev, ok, err := r.next(ctx)
			if err != nil {
				yield(Event{}, err)
				return
			}
			if ok {
				h = append(h, mergeItem{ev, r})
			}
		}
		heap.Init(&h)
		for len(h) > 0 {
			top := h[0]
			if !yield(top.ev, nil) {
				return
			}
			ev, ok, err := top.r.next(ctx)
			switch {
			case err != nil:
				yield(Event{}, err)
				return
			case ok:
				h[0].ev = ev
				heap.Fix(&h, 0)
			default:
				heap.Pop(&h)
			}
		}
	}
}

// recordedPartitions returns the category's recorded partition count, or 0
// when the category has never been used.
func (s *Store) recordedPartitions(ctx context.Context, category string) (int, error) {
	return s.partitionCount(ctx, category, false)
}

// partitionReader pages through one partition log with XRANGE.
type partitionReader struct {
	s         *Store
	category  string
	partition int
	key       string
	start     string // inclusive, or exclusive "(id"
	end       string
	buf       []rueidis.RedisMessage
	done      bool
}

func (s *Store) partitionReader(category string, p int, from, to Position) *partitionReader {
	return &partitionReader{s: s, category: category, partition: p, key: s.keys.Log(category, p),
		start: from.String(), end: to.String(), done: from.Compare(to) > 0}
}

func (r *partitionReader) next(ctx context.Context) (Event, bool, error) {
	if len(r.buf) == 0 {
		if r.done {
			return Event{}, false, nil
		}
		c := r.s.client
		page, err := r.s.do(ctx, c.B().Xrange().Key(r.key).Start(r.start).End(r.end).Count(int64(r.s.cfg.ReadBatch)).Build()).ToArray()
		if err != nil {
			return Event{}, false, fmt.Errorf("eventstore: read %s partition %d: %w", r.category, r.partition, classify(err))
		}
		r.done = len(page) < r.s.cfg.ReadBatch
		if len(page) == 0 {
			return Event{}, false, nil
		}
		r.buf = page
	}
	ev, err := decodeMessage(r.category, r.partition, r.buf[0])
	r.buf = r.buf[1:]
	if err != nil {
		return Event{}, false, err
	}
	r.start = "(" + ev.Position.String()
	if ev.Position == MaxPosition {
		r.done = true
	}
	return ev, true, nil
}

// decodeMessage decodes one XRANGE reply element {id, {field, value...}}.
func decodeMessage(category string, p int, m rueidis.RedisMessage) (Event, error) {
	parts, err := m.ToArray()
	if err != nil || len(parts) != 2 {
		return Event{}, fmt.Errorf("%w: %s partition %d: malformed stream entry", ErrCorruptEntry, category, p)
	}
	id, err := parts[0].ToString()
	if err != nil {
		return Event{}, fmt.Errorf("%w: %s partition %d: entry without ID", ErrCorruptEntry, category, p)
	}
	if parts[1].IsNil() {
		return Event{}, fmt.Errorf("%w: %s partition %d entry %s", ErrMissingEntry, category, p, id)
	}
	fields, err := parts[1].AsStrSlice()
	if err != nil {
		return Event{}, fmt.Errorf("%w: %s partition %d entry %s: %w", ErrCorruptEntry, category, p, id, err)
	}
	return DecodeEntry(category, p, id, fields)
}

type mergeItem struct {
	ev Event
	r  *partitionReader
}

// mergeHeap orders by (Position, partition).
type mergeHeap []mergeItem

func (h mergeHeap) Len() int { return len(h) }
func (h mergeHeap) Less(i, j int) bool {
	if c := h[i].ev.Position.Compare(h[j].ev.Position); c != 0 {
		return c < 0
	}
	return h[i].ev.Partition < h[j].ev.Partition
}
func (h mergeHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *mergeHeap) Push(x any)   { *h = append(*h, x.(mergeItem)) }
func (h *mergeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
