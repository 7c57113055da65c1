package eventstore

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
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
	keys := []string{s.keys.Log(stream.Category, p), s.keys.Aggregate(stream.Category, p, stream.ID), s.keys.PartitionMeta(stream.Category, p)}
	args[0], args[1] = partitionMeta(ident, n), "0"
	for {
		reply, err := appendScript.Exec(ctx, s.client, keys, args).ToArray()
		if err != nil {
			// Nothing ran (unavailable), or the same events with the same
			// IDs at an exact version are recognised if the first try ran
			// (unknown): either way another try is safe.
			class := Classify(err)
			if (class == ErrUnavailable || class == ErrUnknownOutcome && expected.kind == expectExact) && retry.wait(ctx) {
				continue
			}
			return AppendResult{}, fmt.Errorf("eventstore: append to %s: %w", stream, classify(err))
		}
		if st, _ := reply[0].AsInt64(); st == 3 && len(reply) == 2 {
			have, _ := reply[1].ToString()
			if err := s.partitionMetaRefused(ctx, stream, p, ident, n, have, args[1] == "1"); err != nil {
				return AppendResult{}, err
			}
			args[1] = "1" // a partition new to this namespace: create its meta key
			continue
		}
		return parseAppendReply(stream, expected, p, ids, reply)
	}
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

// appendArgs validates an append and builds the script's ARGV.
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
	kind := "a"
	switch expected.kind {
	case expectExact:
		kind = "e"
	case expectExists:
		kind = "x"
	}
	// args[0] and args[1] (the partition meta and whether to create it)
	// are filled in by Append.
	args := make([]string, 6, 6+4*len(events))
	args[2], args[3], args[4], args[5] = kind, strconv.FormatUint(expected.version, 10), strconv.Itoa(len(events)), stream.ID
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
		args = append(args, id.String(), e.Type, string(e.Data), meta)
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

func parseAppendReply(stream StreamID, expected Expected, p int, ids []uuid.UUID, reply []rueidis.RedisMessage) (AppendResult, error) {
	bad := func(why string) (AppendResult, error) {
		return AppendResult{}, fmt.Errorf("eventstore: append to %s: unexpected script reply: %s", stream, why)
	}
	if len(reply) < 2 {
		return bad("too short")
	}
	status, err := reply[0].AsInt64()
	if err != nil {
		return bad(err.Error())
	}
	version, err := reply[1].AsInt64()
	if err != nil {
		return bad(err.Error())
	}
	if status == 0 {
		return AppendResult{}, &ConflictError{Stream: stream, Expected: expected, Actual: uint64(version)}
	}
	if len(reply) != 3+len(ids) {
		return bad(fmt.Sprintf("%d elements for %d events", len(reply), len(ids)))
	}
	res := AppendResult{
		FirstVersion: uint64(version),
		LastVersion:  uint64(version) + uint64(len(ids)) - 1,
		Positions:    make([]Position, len(ids)),
		EventIDs:     ids,
		Partition:    p,
		Duplicate:    status == 2,
	}
	if ts, _ := reply[2].ToString(); ts != "" {
		if res.RecordedAt, err = recordedAt(ts); err != nil {
			return bad(err.Error())
		}
	}
	for i := range ids {
		id, err := reply[3+i].ToString()
		if err != nil {
			return bad(err.Error())
		}
		if res.Positions[i], err = ParsePosition(id); err != nil {
			return bad(err.Error())
		}
	}
	return res, nil
}

// recordedAt converts the script's microsecond timestamp.
func recordedAt(us string) (time.Time, error) {
	n, err := strconv.ParseInt(us, 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	return time.UnixMicro(n).UTC(), nil
}
