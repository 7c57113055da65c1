package eventstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"

	"github.com/redis/rueidis"

	"github.com/redsource/redsource/internal/keys"
)

// Config configures a Store. Zero fields take the documented defaults.
type Config struct {
	// Namespace prefixes every key. Default "rs".
	Namespace string
	// Partitions per category. Default 8. Fixed once a category has been
	// used: a Store configured with another count gets ErrPartitionMismatch
	// for that category.
	Partitions int
	// MaxEventBytes limits one event's type+data+metadata. Default 1 MiB.
	MaxEventBytes int
	// MaxAppendEvents limits the events of one append. Default 1000.
	MaxAppendEvents int
	// MaxAppendBytes limits the total size of one append. Default 16 MiB.
	MaxAppendBytes int
	// ReadBatch is how many entries a read fetches per round trip.
	// Default 512.
	ReadBatch int
	// Logger receives the store's logs. Default slog.Default().
	Logger *slog.Logger
}

// Defaults, as documented on Config.
const (
	DefaultNamespace       = "rs"
	DefaultPartitions      = 8
	DefaultMaxEventBytes   = 1 << 20
	DefaultMaxAppendEvents = 1000
	DefaultMaxAppendBytes  = 16 << 20
	DefaultReadBatch       = 512
	// MaxPartitions is the largest partition count a category can have.
	MaxPartitions = 1024
)

func (c Config) withDefaults() Config {
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
	}
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.MaxEventBytes == 0 {
		c.MaxEventBytes = DefaultMaxEventBytes
	}
	if c.MaxAppendEvents == 0 {
		c.MaxAppendEvents = DefaultMaxAppendEvents
	}
	if c.MaxAppendBytes == 0 {
		c.MaxAppendBytes = DefaultMaxAppendBytes
	}
	if c.ReadBatch == 0 {
		c.ReadBatch = DefaultReadBatch
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	if err := keys.ValidateNamespace(c.Namespace); err != nil {
		return invalidName(err)
	}
	switch {
	case c.Partitions < 1 || c.Partitions > MaxPartitions:
		return fmt.Errorf("eventstore: Config.Partitions is %d, want 1..%d", c.Partitions, MaxPartitions)
	case c.MaxEventBytes < 1:
		return fmt.Errorf("eventstore: Config.MaxEventBytes is %d, want > 0", c.MaxEventBytes)
	case c.MaxAppendEvents < 1:
		return fmt.Errorf("eventstore: Config.MaxAppendEvents is %d, want > 0", c.MaxAppendEvents)
	case c.MaxAppendBytes < c.MaxEventBytes:
		return fmt.Errorf("eventstore: Config.MaxAppendBytes (%d) is below MaxEventBytes (%d)", c.MaxAppendBytes, c.MaxEventBytes)
	case c.ReadBatch < 1:
		return fmt.Errorf("eventstore: Config.ReadBatch is %d, want > 0", c.ReadBatch)
	}
	return nil
}

// Store appends and reads events. It is safe for concurrent use. It does
// not own the rueidis client: closing it is the caller's job.
type Store struct {
	client rueidis.Client
	cfg    Config
	keys   keys.Layout

	mu         sync.Mutex
	partitions map[string]int // categories whose partition count is checked
}

// New returns a Store over client. cfg is copied; defaults are applied to
// the copy and then validated.
func New(client rueidis.Client, cfg Config) (*Store, error) {
	if client == nil {
		return nil, errors.New("eventstore: nil rueidis client")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Store{client: client, cfg: cfg, keys: keys.Layout{NS: cfg.Namespace}, partitions: map[string]int{}}, nil
}

// Config returns the store's configuration, defaults applied.
func (s *Store) Config() Config { return s.cfg }

// Namespace returns the key prefix.
func (s *Store) Namespace() string { return s.cfg.Namespace }

// Client returns the rueidis client the store was built with.
func (s *Store) Client() rueidis.Client { return s.client }

// Partition returns the partition of an aggregate stream under this store's
// partition count: fnv1a32(ID) mod Partitions, stable forever.
func (s *Store) Partition(stream StreamID) int { return keys.Partition(stream.ID, s.cfg.Partitions) }

// Partitions returns the partition count of a category, recording this
// store's count for a category that has none yet. A category recorded
// with another count gives ErrPartitionMismatch.
func (s *Store) Partitions(ctx context.Context, category string) (int, error) {
	return s.partitionCount(ctx, category, true)
}

// partitionCount returns the category's partition count from the cache or
// Redis. With record, a category never used gets this store's count (SET NX
// GET records and reads in one command, Redis 7.0+; SADD keeps the category
// list for operators; both are idempotent, and sent only when the count or
// the listing is missing); without, it counts 0. A count other than this
// store's is ErrPartitionMismatch.
func (s *Store) partitionCount(ctx context.Context, category string, record bool) (int, error) {
	if err := keys.ValidateCategory(category); err != nil {
		return 0, invalidName(err)
	}
	s.mu.Lock()
	n, ok := s.partitions[category]
	s.mu.Unlock()
	if ok {
		return n, nil
	}
	want := strconv.Itoa(s.cfg.Partitions)
	var got string
	var err error
	if record {
		// Read first: SET and SADD are refused when Redis is full
		// (DENYOOM), and a category already recorded and listed needs
		// neither, so a process starting on a full Redis can still read.
		res := s.client.DoMulti(ctx,
			s.client.B().Get().Key(s.keys.Meta(category)).Build(),
			s.client.B().Sismember().Key(s.keys.Categories()).Member(category).Build())
		got, err = res[0].ToString()
		if listed, lerr := res[1].AsBool(); err != nil || lerr != nil || !listed {
			res = s.client.DoMulti(ctx,
				s.client.B().Set().Key(s.keys.Meta(category)).Value(want).Nx().Get().Build(),
				s.client.B().Sadd().Key(s.keys.Categories()).Member(category).Build())
			if err := res[1].Error(); err != nil {
				return 0, fmt.Errorf("eventstore: record category %q: %w", category, err)
			}
			got, err = res[0].ToString()
			if rueidis.IsRedisNil(err) { // first use: recorded now
				got, err = want, nil
			}
		}
	} else {
		got, err = s.client.Do(ctx, s.client.B().Get().Key(s.keys.Meta(category)).Build()).ToString()
		if rueidis.IsRedisNil(err) {
			return 0, nil
		}
	}
	switch {
	case err != nil:
		return 0, fmt.Errorf("eventstore: partition count of %q: %w", category, err)
	case got != want:
		return 0, fmt.Errorf("%w: category %q has %s partitions in Redis, this store is configured with %d", ErrPartitionMismatch, category, got, s.cfg.Partitions)
	}
	s.mu.Lock()
	s.partitions[category] = s.cfg.Partitions
	s.mu.Unlock()
	return s.cfg.Partitions, nil
}

// Categories lists every category that has been used in this namespace.
func (s *Store) Categories(ctx context.Context) ([]string, error) {
	cats, err := s.client.Do(ctx, s.client.B().Smembers().Key(s.keys.Categories()).Build()).AsStrSlice()
	if err != nil {
		return nil, fmt.Errorf("eventstore: list categories: %w", err)
	}
	return cats, nil
}

// LogKey returns the Redis key of a partition log, for tools that read the
// log directly (projections, the CLI).
func (s *Store) LogKey(category string, partition int) string {
	return s.keys.Log(category, partition)
}
