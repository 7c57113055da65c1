package eventstore

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

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
	// RetryUnavailable is how long an append keeps trying while Redis
	// cannot take it (ErrUnavailable: connection refused, LOADING,
	// CLUSTERDOWN, TRYAGAIN, MASTERDOWN, READONLY, BUSY) and, for Exact
	// and NoStream appends, after an outcome it could not learn
	// (ErrUnknownOutcome; the retry carries the same event IDs, so it is
	// applied at most once). It also bounds every call of the store to a
	// Redis that does not answer: rueidis retries read-only commands on
	// connection errors until the context ends, and the store cuts that
	// off after this long with ErrUnavailable. The default, 30s, outlasts
	// a Redis Cluster failover (docs/reliability.md); negative: no retries
	// by the store, and reads wait as long as the context lets them.
	RetryUnavailable time.Duration
	// Witness, if set, is durable memory of the namespace outside Redis
	// (projection.NewWitness: the toolkit's PostgreSQL schema). The store
	// records the namespace's identity there and refuses, with a
	// *NamespaceError, a Redis that lost it — also in a process that never
	// saw the namespace before. Without it, a store notices a Redis that
	// lost the namespace only once it has seen the namespace itself.
	Witness Witness
	// AllowEviction lets the store work against a Redis whose
	// maxmemory-policy evicts keys (allkeys-lru, allkeys-lfu,
	// allkeys-random), which deletes events without an error. Only for
	// throwaway data: by default such a Redis is refused with a
	// *SettingError before anything is written.
	AllowEviction bool
	// Logger receives the store's logs. Default slog.Default().
	Logger *slog.Logger
}

// Defaults, as documented on Config.
const (
	DefaultNamespace        = "rs"
	DefaultPartitions       = 8
	DefaultMaxEventBytes    = 1 << 20
	DefaultMaxAppendEvents  = 1000
	DefaultMaxAppendBytes   = 16 << 20
	DefaultReadBatch        = 512
	DefaultRetryUnavailable = 30 * time.Second
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
	if c.RetryUnavailable == 0 {
		c.RetryUnavailable = DefaultRetryUnavailable
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
	ident      string         // the namespace identity, once known
	// serverChecked: the Redis settings were read and are safe.
	serverChecked bool
	unknown       resends  // appends of unknown outcome, to flag their re-sends
	appends       appender // concurrent appends per partition (batch.go)
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

// LogKey returns the Redis key of a partition log, for tools that read the
// log directly (projections, the CLI).
func (s *Store) LogKey(category string, partition int) string {
	return s.keys.Log(category, partition)
}
