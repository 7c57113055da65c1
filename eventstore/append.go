package eventstore

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/redis/rueidis"

	"github.com/redsource/redsource/internal/keys"
)

//go:embed append.lua
var appendLua string

// The append script is not retried by rueidis (EVALSHA is not retryable);
// a caller that sees a timeout retries the same events and I4 makes that
// safe.
var appendScript = rueidis.NewLuaScript(appendLua)

// Append appends events to one aggregate stream, atomically, if the stream
// is at the expected version.
//
// A *ConflictError (errors.Is ErrConflict) says the stream was at another
// version; nothing was written. Re-sending an append whose events are
// already in the stream at the expected versions returns the original
// result with Duplicate set, so a retry after a timeout is safe as long as
// the events carry the same IDs (set EventData.ID, or reuse
// AppendResult.EventIDs). Bad input (names, sizes, an empty or oversized
// batch) is refused before anything is sent.
func (s *Store) Append(ctx context.Context, stream StreamID, expected Expected, events ...EventData) (AppendResult, error) {
	args, ids, err := s.appendArgs(stream, expected, events)
	if err != nil {
		return AppendResult{}, err
	}
	retry := newRetrier(s.cfg.RetryUnavailable)
	// What the store must know first (the server's settings, the
	// namespace identity, the partition count) is read with the same
	// budget: nothing is written before it.
	var ident string
	var n int
	for {
		if ident, err = s.identity(ctx, true); err == nil {
			n, err = s.Partitions(ctx, stream.Category)
		}
		if err == nil {
			break
		}
		if !errors.Is(Classify(err), ErrUnavailable) || !retry.wait(ctx) {
			return AppendResult{}, err
		}
	}
	p := s.Partition(stream)
	log, meta := s.keys.Log(stream.Category, p), s.keys.PartitionMeta(stream.Category, p)
	pending := &pendingAppend{index: s.keys.Aggregate(stream.Category, p, stream.ID), args: args}
	for _, a := range args {
		pending.size += len(a)
	}
	metaValue := partitionMeta(ident, n)
	resend := s.unknown.has(ids[0]) && expected.kind != expectExact
	for {
		pending.ctl = control(expected, resend, ids[0])
		reply, err := s.appendOnce(ctx, log, meta, metaValue, pending)
		if err == nil {
			err = appendLineError(reply)
		}
		if err != nil {
			// Nothing ran (unavailable), or it may have run (unknown): the
			// same events with the same IDs are recognised if it did, at
			// their versions (exact) or as a flagged re-send (any,
			// exists), so another try is safe either way.
			class := Classify(err)
			if class == ErrUnknownOutcome {
				resend = expected.kind != expectExact
				s.unknown.add(ids[0])
			}
			if (class == ErrUnavailable || class == ErrUnknownOutcome) && retry.wait(ctx) {
				continue
			}
			return AppendResult{}, fmt.Errorf("eventstore: append to %s: %w", stream, classify(err))
		}
		if have, ok := strings.CutPrefix(reply, "3 "); ok {
			if err := s.partitionMetaRefused(ctx, stream, p, ident, n, have, pending.create); err != nil {
				return AppendResult{}, err
			}
			pending.create = true // a partition new to this namespace: create its meta key
			continue
		}
		res, err := parseAppendReply(stream, expected, p, ids, reply)
		if err == nil {
			s.unknown.remove(ids[0])
		}
		return res, err
	}
}

// appendLineError is the error of an append whose write failed in the
// script ("4 <error>": nothing of it is left): refused, like the error of
// a command that Redis refused.
func appendLineError(line string) error {
	msg, ok := strings.CutPrefix(line, "4 ")
	if !ok {
		return nil
	}
	return &classified{class: ErrRefused, err: fmt.Errorf("%s", msg)}
}

// How far before an event UUIDv7's time the original of a retried append
// can have been appended (the writer's clock may be ahead of Redis's): a
// re-send the store knows of (it saw the outcome of the first try go
// unknown) looks back resendWindow; any other Any/StreamExists append
// compares the aggregate's last events only when the newest is within
// recentWindow, so that a first try costs one LINDEX.
const (
	resendWindow = 5 * time.Minute
	recentWindow = time.Second
)

// control is an append's control string (see append.lua): the expected
// version's kind, whether this is a known re-send, and the expected
// version (exact) or the lowest log
// millisecond the original of a retry can have (the first event's UUIDv7
// time less the window; 0, no bound, for an ID of another version).
func control(expected Expected, resend bool, first uuid.UUID) string {
	b := make([]byte, 2, 24)
	b[0], b[1] = 'a', '-'
	switch expected.kind {
	case expectExact:
		b[0] = 'e'
		return string(strconv.AppendUint(b, expected.version, 10))
	case expectExists:
		b[0] = 'x'
	}
	window := recentWindow
	if resend {
		b[1], window = 'R', resendWindow
	}
	bound := int64(0)
	if first.Version() == 7 {
		sec, nsec := first.Time().UnixTime()
		bound = max(0, time.Unix(sec, nsec).Add(-window).UnixMilli())
	}
	return string(strconv.AppendInt(b, bound, 10))
}

// partitionMetaRefused explains an append the script refused because the
// partition's meta key is missing or another one. It returns nil when the
// partition is simply new (no meta key, the namespace's identity checked
// just now): the append is sent again, allowed to create the meta key.
func (s *Store) partitionMetaRefused(ctx context.Context, stream StreamID, p int, ident string, n int, have string, created bool) error {
	key := s.keys.PartitionMeta(stream.Category, p)
	if have == "" {
		if created {
			return fmt.Errorf("eventstore: append to %s: %w: partition %d holds events but its meta key %s is gone; nothing written",
				stream, ErrDataLoss, p, key)
		}
		// Before a partition gets its meta key, make sure Redis still
		// holds the namespace this store knows.
		if _, err := s.checkIdentity(ctx, ident, "this process", false); err != nil {
			return fmt.Errorf("eventstore: append to %s: %w", stream, err)
		}
		return nil
	}
	id, count, ok := parsePartitionMeta(have)
	switch {
	case !ok:
		return fmt.Errorf("eventstore: append to %s: %w: %s holds %q", stream, ErrCorruptEntry, key, have)
	case id != ident:
		return fmt.Errorf("eventstore: append to %s: %w", stream, &NamespaceError{Namespace: s.cfg.Namespace, Remembered: ident, Found: id,
			By: "this process", Detail: fmt.Sprintf("partition %d of %q belongs to namespace identity %s (created %s), this process works with %s (created %s)",
				p, stream.Category, id, identityTime(id), ident, identityTime(ident))})
	}
	return fmt.Errorf("eventstore: append to %s: %w: category %q has %d partitions (partition %d's meta key says so), this store is configured with %d",
		stream, ErrPartitionMismatch, stream.Category, count, p, n)
}

// appendArgs validates an append and builds its part of the script's ARGV.
func (s *Store) appendArgs(stream StreamID, expected Expected, events []EventData) ([]string, []uuid.UUID, error) {
	if err := keys.ValidateCategory(stream.Category); err != nil {
		return nil, nil, invalidName(err)
	}
	if err := keys.ValidateAggregateID(stream.ID); err != nil {
		return nil, nil, invalidName(err)
	}
	switch {
	case len(events) == 0:
		return nil, nil, fmt.Errorf("%w: no events to append to %s", ErrInvalidAppend, stream)
	case len(events) > s.cfg.MaxAppendEvents:
		return nil, nil, fmt.Errorf("%w: %d events to append to %s, the limit is %d", ErrInvalidAppend, len(events), stream, s.cfg.MaxAppendEvents)
	}
	// Two per event: its header and its data.
	args := make([]string, 0, 2*len(events))
	ids := make([]uuid.UUID, len(events))
	seen := make(map[uuid.UUID]int, len(events))
	total := 0
	for i, e := range events {
		if err := keys.Validate("event type", e.Type, keys.MaxEventTypeLen); err != nil {
			return nil, nil, fmt.Errorf("%w: event %d: %w", ErrInvalidName, i, err)
		}
		meta, err := encodeMetadataChecked(e.Metadata)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: event %d (%s): %w", ErrInvalidAppend, i, e.Type, err)
		}
		size := len(e.Type) + len(e.Data) + len(meta)
		if size > s.cfg.MaxEventBytes {
			return nil, nil, &SizeError{Index: i, Size: size, Limit: s.cfg.MaxEventBytes, What: "event"}
		}
		if total += size; total > s.cfg.MaxAppendBytes {
			return nil, nil, &SizeError{Index: -1, Size: total, Limit: s.cfg.MaxAppendBytes, What: "append"}
		}
		id := e.ID
		if id == uuid.Nil {
			if id, err = uuid.NewV7(); err != nil {
				return nil, nil, fmt.Errorf("eventstore: generate event ID: %w", err)
			}
		}
		if j, dup := seen[id]; dup {
			return nil, nil, fmt.Errorf("%w: events %d and %d have the same ID %s", ErrInvalidAppend, j, i, id)
		}
		seen[id] = i
		ids[i] = id
		// With an exact version the header is whole; otherwise the script
		// puts the version in.
		version := ""
		if v, ok := expected.Version(); ok {
			version = strconv.FormatUint(v+uint64(i)+1, 10)
		}
		args = append(args, header(id, version, e.Type, stream.ID, meta), string(e.Data))
	}
	return args, ids, nil
}

func encodeMetadataChecked(m map[string]string) (string, error) {
	for k, v := range m {
		if k == "" || !utf8.ValidString(k) {
			return "", fmt.Errorf("metadata key %q must be non-empty valid UTF-8", k)
		}
		if !utf8.ValidString(v) {
			return "", fmt.Errorf("metadata value of %q is not valid UTF-8", k)
		}
	}
	return encodeMetadata(m)
}

// parseAppendReply reads the script's reply: "1 <first version> <ids>"
// (appended), "2 …" (already appended) or "0 <actual version>".
func parseAppendReply(stream StreamID, expected Expected, p int, ids []uuid.UUID, reply string) (AppendResult, error) {
	bad := func(why string) (AppendResult, error) {
		return AppendResult{}, fmt.Errorf("eventstore: append to %s: unexpected script reply %q: %s", stream, reply, why)
	}
	parts := strings.Split(reply, " ")
	if len(parts) < 2 {
		return bad("too short")
	}
	version, err := strconv.ParseUint(parts[1], 10, 64)
	if err != nil {
		return bad(err.Error())
	}
	switch parts[0] {
	case "0":
		return AppendResult{}, &ConflictError{Stream: stream, Expected: expected, Actual: version}
	case "1", "2":
	default:
		return bad("unknown status")
	}
	if len(parts) != 2+len(ids) {
		return bad(fmt.Sprintf("%d positions for %d events", len(parts)-2, len(ids)))
	}
	res := AppendResult{
		FirstVersion: version,
		LastVersion:  version + uint64(len(ids)) - 1,
		Positions:    make([]Position, len(ids)),
		EventIDs:     ids,
		Partition:    p,
		Duplicate:    parts[0] == "2",
	}
	for i := range ids {
		if res.Positions[i], err = ParsePosition(parts[2+i]); err != nil {
			return bad(err.Error())
		}
	}
	res.RecordedAt = res.Positions[0].Time()
	return res, nil
}
