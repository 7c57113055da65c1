package eventstore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/google/uuid"
)

// The entry wire format, version 2 (docs/format.md). A partition-log entry
// has exactly two fields, always in this order, so Redis stores the field
// names once per stream node and each entry pays only for its values:
//
//	h2  the header: event UUID (16 raw bytes), version (decimal) SP
//	    type NUL aggregate ID NUL metadata (a JSON object of strings, or
//	    nothing)
//	d   the payload, bytes as given
//
// The field name carries the format version: a later format names its
// header otherwise, and a reader refuses a header it does not know.
// The entry's time is its ID's millisecond (the Redis server's clock when
// it was appended; see Event.RecordedAt).
//
// An aggregate index is a Redis list with an element per event: element i
// is version i+1, its log ID followed by the last two bytes of its event
// UUID (a fingerprint that lets an append look for a retried batch without
// reading the log).
const (
	FormatVersion = "2"

	fieldHeader = "h2"
	fieldData   = "d"
)

func encodeMetadata(m map[string]string) (string, error) {
	if len(m) == 0 {
		return "", nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// header is an h2 header; with version "" it is the header the append
// script completes, putting the version after the UUID.
func header(id uuid.UUID, version, typ, aggregate, meta string) string {
	b := make([]byte, 0, 16+len(version)+1+len(typ)+1+len(aggregate)+1+len(meta))
	b = append(b, id[:]...)
	b = append(b, version...)
	b = append(b, ' ')
	b = append(b, typ...)
	b = append(b, 0)
	b = append(b, aggregate...)
	b = append(b, 0)
	b = append(b, meta...)
	return string(b)
}

// DecodeEntry decodes one partition-log entry (its ID and flat field/value
// list) of the given category and partition. Unknown fields are ignored so
// that later minor additions stay readable; an entry without an h2 header
// (another format), a missing field or a malformed value is an error
// matching ErrCorruptEntry.
func DecodeEntry(category string, partition int, id string, fields []string) (Event, error) {
	pos, err := ParsePosition(id)
	if err != nil {
		return Event{}, fmt.Errorf("%w: entry %q in %s partition %d: %w", ErrCorruptEntry, id, category, partition, err)
	}
	ev := Event{Stream: StreamID{Category: category}, Partition: partition, Position: pos,
		RecordedAt: pos.Time()}
	if len(fields)%2 != 0 {
		return ev, corrupt(ev, "odd number of field elements")
	}
	var header, data *string
	var others []string
	for i := 0; i < len(fields); i += 2 {
		switch fields[i] {
		case fieldHeader:
			header = &fields[i+1]
		case fieldData:
			data = &fields[i+1]
		default:
			others = append(others, fields[i])
		}
	}
	switch {
	case header == nil && len(others) > 0:
		return ev, corrupt(ev, fmt.Sprintf("no h2 header: an entry of another format (fields %q; this build reads format %s)", others, FormatVersion))
	case header == nil || data == nil:
		return ev, corrupt(ev, "missing fields (want h2, d)")
	}
	if err := decodeHeader(&ev, *header); err != nil {
		return ev, corrupt(ev, err.Error())
	}
	ev.Data = []byte(*data)
	return ev, nil
}

// decodeHeader parses an h2 header into ev.
func decodeHeader(ev *Event, h string) error {
	b := []byte(h)
	if len(b) < 16 {
		return fmt.Errorf("bad header: event ID cut short")
	}
	copy(ev.ID[:], b[:16])
	rest := b[16:]
	sp := bytes.IndexByte(rest, ' ')
	if sp < 1 {
		return fmt.Errorf("bad header: no version")
	}
	ver := string(rest[:sp])
	v, err := strconv.ParseUint(ver, 10, 64)
	if err != nil || v == 0 || ver[0] == '+' || ver[0] == '0' {
		return fmt.Errorf("bad version %q", ver)
	}
	ev.Version = v
	typ, rest, ok := bytes.Cut(rest[sp+1:], []byte{0})
	if !ok {
		return fmt.Errorf("bad header: no end to the event type")
	}
	agg, meta, ok := bytes.Cut(rest, []byte{0})
	if !ok {
		return fmt.Errorf("bad header: no end to the aggregate ID")
	}
	if len(typ) == 0 || len(agg) == 0 {
		return fmt.Errorf("bad header: empty event type or aggregate ID")
	}
	ev.Type, ev.Stream.ID = string(typ), string(agg)
	if len(meta) > 0 {
		if err := json.Unmarshal(meta, &ev.Metadata); err != nil {
			return fmt.Errorf("bad metadata: %w", err)
		}
	}
	return nil
}

func corrupt(ev Event, why string) error {
	return fmt.Errorf("%w: %s partition %d entry %s: %s", ErrCorruptEntry, ev.Stream.Category, ev.Partition, ev.Position, why)
}
