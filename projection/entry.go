package projection

import (
	"fmt"

	"github.com/redis/rueidis"

	"github.com/redsource/redsource/eventstore"
)

// entry is one partition-log entry on its way through a worker.
type entry struct {
	id         string
	pos        eventstore.Position
	ev         eventstore.Event // as much as could be decoded
	decodeErr  error            // the entry could not be decoded
	missing    bool             // pending, but gone from the log
	deliveries int              // from the pending list; 0 when not pending
	// quarantine, when set, sends the entry to quarantine without calling
	// the handler (retries exhausted, delivery limit reached).
	quarantine *held
}

// held says why an entry is quarantined and after how many attempts.
type held struct {
	err      error
	attempts int
}

// decodeEntries turns XRANGE/XREADGROUP entries into entries.
func decodeEntries(category string, partition int, msgs []rueidis.RedisMessage) ([]entry, error) {
	out := make([]entry, 0, len(msgs))
	for _, m := range msgs {
		parts, err := m.ToArray()
		if err != nil || len(parts) != 2 {
			return nil, fmt.Errorf("projection: malformed stream entry in %s partition %d", category, partition)
		}
		id, err := parts[0].ToString()
		if err != nil {
			return nil, fmt.Errorf("projection: stream entry without ID in %s partition %d", category, partition)
		}
		pos, err := eventstore.ParsePosition(id)
		if err != nil {
			return nil, fmt.Errorf("projection: %w", err)
		}
		e := entry{id: id, pos: pos}
		if parts[1].IsNil() {
			e.missing = true
			e.ev = eventstore.Event{Stream: eventstore.StreamID{Category: category}, Partition: partition, Position: pos}
		} else {
			fields, err := parts[1].AsStrSlice()
			if err != nil {
				e.decodeErr = err
			} else {
				e.ev, e.decodeErr = eventstore.DecodeEntry(category, partition, id, fields)
			}
			e.ev.Stream.Category, e.ev.Partition, e.ev.Position = category, partition, pos
		}
		out = append(out, e)
	}
	return out, nil
}

// streamEntries extracts one stream's entries from an XREADGROUP reply
// (a map in RESP3, an array of [key, entries] pairs in RESP2).
func streamEntries(res rueidis.RedisResult, key string) ([]rueidis.RedisMessage, error) {
	if err := res.Error(); err != nil {
		if rueidis.IsRedisNil(err) {
			return nil, nil
		}
		return nil, err
	}
	if m, err := res.AsMap(); err == nil {
		if v, ok := m[key]; ok {
			return v.ToArray()
		}
		return nil, nil
	}
	arr, err := res.ToArray()
	if err != nil {
		return nil, err
	}
	for _, pair := range arr {
		kv, err := pair.ToArray()
		if err != nil || len(kv) != 2 {
			continue
		}
		if k, _ := kv[0].ToString(); k == key {
			return kv[1].ToArray()
		}
	}
	return nil, nil
}
