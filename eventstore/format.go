package eventstore

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
)

// The entry wire format, version 1 (docs/format.md). A partition-log entry
// has exactly these fields, always all of them and in this order, so Redis
// stores the field names once per listpack node:
//
//	v     "1"
//	agg   aggregate ID
//	ver   version, decimal
//	eid   event UUID, canonical text form
//	type  event type
//	data  payload bytes, as given
//	meta  metadata as a JSON object of strings, or "" when empty
//	ts    server time at append, microseconds since the Unix epoch, decimal
//
// An aggregate-stream entry has one field, e = event UUID, under the same
// ID as the log entry.
const (
	FormatVersion = "1"

	fieldFormat   = "v"
	fieldAgg      = "agg"
	fieldVersion  = "ver"
	fieldEventID  = "eid"
	fieldType     = "type"
	fieldData     = "data"
	fieldMeta     = "meta"
	fieldRecorded = "ts"
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

// DecodeEntry decodes one partition-log entry (its ID and flat field/value
// list) of the given category and partition. Unknown fields are ignored so
// that later minor additions stay readable; an unknown format version, a
// missing field or a malformed value is an error matching ErrCorruptEntry.
func DecodeEntry(category string, partition int, id string, fields []string) (Event, error) {
	pos, err := ParsePosition(id)
	if err != nil {
		return Event{}, fmt.Errorf("%w: entry %q in %s partition %d: %w", ErrCorruptEntry, id, category, partition, err)
	}
	ev := Event{Stream: StreamID{Category: category}, Partition: partition, Position: pos}
	if len(fields)%2 != 0 {
		return ev, corrupt(ev, "odd number of field elements")
	}
	var seen uint8
	for i := 0; i < len(fields); i += 2 {
		v := fields[i+1]
		switch fields[i] {
		case fieldFormat:
			seen |= 1
			if v != FormatVersion {
				return ev, corrupt(ev, fmt.Sprintf("unsupported format version %q (this build reads %q)", v, FormatVersion))
			}
		case fieldAgg:
			seen |= 2
			ev.Stream.ID = v
		case fieldVersion:
			seen |= 4
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil || n == 0 {
				return ev, corrupt(ev, fmt.Sprintf("bad version %q", v))
			}
			ev.Version = n
		case fieldEventID:
			seen |= 8
			u, err := uuid.Parse(v)
			if err != nil {
				return ev, corrupt(ev, fmt.Sprintf("bad event ID %q", v))
			}
			ev.ID = u
		case fieldType:
			seen |= 16
			ev.Type = v
		case fieldData:
			seen |= 32
			ev.Data = []byte(v)
		case fieldMeta:
			if v != "" {
				if err := json.Unmarshal([]byte(v), &ev.Metadata); err != nil {
					return ev, corrupt(ev, "bad metadata: "+err.Error())
				}
			}
		case fieldRecorded:
			us, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return ev, corrupt(ev, fmt.Sprintf("bad recorded time %q", v))
			}
			ev.RecordedAt = time.UnixMicro(us).UTC()
		}
	}
	if seen != 63 {
		return ev, corrupt(ev, "missing fields (want v, agg, ver, eid, type, data)")
	}
	return ev, nil
}

func corrupt(ev Event, why string) error {
	return fmt.Errorf("%w: %s partition %d entry %s: %s", ErrCorruptEntry, ev.Stream.Category, ev.Partition, ev.Position, why)
}
