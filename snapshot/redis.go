package snapshot

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/rueidis"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/keys"
)

// The Redis snapshot format, version 1. One hash per aggregate at
// <ns>:{<category>:<p>}:snap:<id> (keys.Layout.Snapshot), in the slot of
// the aggregate's stream, so a snapshot lives and dies with its events:
//
//	v       "1", the format version
//	ver     aggregate version, decimal
//	pos     log position of the event at ver, "ms-seq"
//	schema  payload schema version, decimal
//	data    payload bytes, as given
//	nsid    the namespace identity it was taken in ("" when unknown)
//
// Put writes every field in one HSET, so a reader never sees a mix of two
// snapshots.
const (
	redisFormat = "1"

	fieldFormat   = "v"
	fieldVersion  = "ver"
	fieldPosition = "pos"
	fieldSchema   = "schema"
	fieldData     = "data"
	fieldIdentity = "nsid"
)

// Redis is a Store that keeps each snapshot next to its aggregate's events.
type Redis struct {
	client rueidis.Client
	store  *eventstore.Store
	layout keys.Layout
}

// NewRedis returns a snapshot store that shares store's Redis client,
// namespace and partitioning. It does not own the client.
func NewRedis(store *eventstore.Store) *Redis {
	return &Redis{client: store.Client(), store: store, layout: keys.Layout{NS: store.Namespace()}}
}

// Key returns the Redis key of stream's snapshot.
func (r *Redis) Key(stream eventstore.StreamID) string {
	return r.layout.Snapshot(stream.Category, r.store.Partition(stream), stream.ID)
}

// Get implements Store.
func (r *Redis) Get(ctx context.Context, stream eventstore.StreamID) (Snapshot, error) {
	if err := validateStream(stream); err != nil {
		return Snapshot{}, err
	}
	m, err := r.client.Do(ctx, r.client.B().Hgetall().Key(r.Key(stream)).Build()).AsStrMap()
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot: get %s: %w", stream, err)
	}
	if len(m) == 0 {
		return Snapshot{}, fmt.Errorf("%w: %s", ErrNotFound, stream)
	}
	return decodeRedis(stream, m)
}

func decodeRedis(stream eventstore.StreamID, m map[string]string) (Snapshot, error) {
	bad := func(why string) (Snapshot, error) {
		return Snapshot{}, fmt.Errorf("%w: %s in Redis: %s", ErrCorrupt, stream, why)
	}
	if v := m[fieldFormat]; v != redisFormat {
		return bad(fmt.Sprintf("format version %q, this build reads %q", v, redisFormat))
	}
	s := Snapshot{Stream: stream}
	var err error
	if s.Version, err = strconv.ParseUint(m[fieldVersion], 10, 64); err != nil || s.Version == 0 {
		return bad(fmt.Sprintf("bad version %q", m[fieldVersion]))
	}
	if s.Position, err = eventstore.ParsePosition(m[fieldPosition]); err != nil {
		return bad(err.Error())
	}
	if s.Schema, err = strconv.Atoi(m[fieldSchema]); err != nil || s.Schema < 1 {
		return bad(fmt.Sprintf("bad schema version %q", m[fieldSchema]))
	}
	data, ok := m[fieldData]
	if !ok {
		return bad("no data field")
	}
	s.Payload = []byte(data)
	s.Identity = m[fieldIdentity]
	return s, nil
}

// Put implements Store.
func (r *Redis) Put(ctx context.Context, s Snapshot) error {
	if err := validate(s); err != nil {
		return err
	}
	cmd := r.client.B().Hset().Key(r.Key(s.Stream)).FieldValue().
		FieldValue(fieldFormat, redisFormat).
		FieldValue(fieldVersion, strconv.FormatUint(s.Version, 10)).
		FieldValue(fieldPosition, s.Position.String()).
		FieldValue(fieldSchema, strconv.Itoa(s.Schema)).
		FieldValue(fieldData, rueidis.BinaryString(s.Payload)).
		FieldValue(fieldIdentity, s.Identity).Build()
	if err := r.client.Do(ctx, cmd).Error(); err != nil {
		return fmt.Errorf("snapshot: put %s: %w", s.Stream, err)
	}
	return nil
}

// Delete implements Store.
func (r *Redis) Delete(ctx context.Context, stream eventstore.StreamID) error {
	if err := validateStream(stream); err != nil {
		return err
	}
	if err := r.client.Do(ctx, r.client.B().Del().Key(r.Key(stream)).Build()).Error(); err != nil {
		return fmt.Errorf("snapshot: delete %s: %w", stream, err)
	}
	return nil
}
