package projection

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/keys"
	"github.com/redsource/redsource/internal/pgschema"
)

// Handler applies one event to a read model inside the batch's
// transaction. It must not commit or roll back tx.
type Handler interface {
	Apply(ctx context.Context, tx pgx.Tx, ev eventstore.Event) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, tx pgx.Tx, ev eventstore.Event) error

func (f HandlerFunc) Apply(ctx context.Context, tx pgx.Tx, ev eventstore.Event) error {
	return f(ctx, tx, ev)
}

// BatchHandler applies a batch of events (of one partition, in log order)
// at once, for set-based writes (unnest, COPY). When a batch fails, the
// runner calls it again with one event at a time to find the failing one.
type BatchHandler interface {
	ApplyBatch(ctx context.Context, tx pgx.Tx, events []eventstore.Event) error
}

// BatchHandlerFunc adapts a function to BatchHandler.
type BatchHandlerFunc func(ctx context.Context, tx pgx.Tx, events []eventstore.Event) error

func (f BatchHandlerFunc) ApplyBatch(ctx context.Context, tx pgx.Tx, events []eventstore.Event) error {
	return f(ctx, tx, events)
}

// Projection is a named read model fed by one or more categories.
type Projection struct {
	// Name names the consumer groups, leases and checkpoints. It is
	// validated like a category (no ':', '{', '}', spaces).
	Name string
	// Version numbers the read model's shape. 0 and 1 are the first
	// version. A new version is a separate projection for the runner (its
	// own consumer groups, leases and checkpoints, see ID) that builds its
	// own tables from the start of the log while the old one serves; see
	// CatchUp and Admin.Switch.
	Version    int
	Categories []string
	// Exactly one of Handler and Batch is set.
	Handler Handler
	Batch   BatchHandler
	// Reset, if set, clears the read model for a rebuild, inside the
	// rebuild's transaction.
	Reset func(ctx context.Context, tx pgx.Tx) error
	// Mode says what a quarantined event does to its aggregate's later
	// events. Default Sequenced.
	Mode QuarantineMode
}

// QuarantineMode is what happens to the later events of an aggregate
// whose event was quarantined.
type QuarantineMode int

const (
	// Sequenced parks the aggregate's later events for this projection
	// until an operator retries or skips the quarantined one; other
	// aggregates keep flowing. Per-aggregate order always holds.
	Sequenced QuarantineMode = iota
	// Skip lets the aggregate's later events flow; the quarantined one is
	// left out until retried.
	Skip
)

func (m QuarantineMode) String() string {
	if m == Skip {
		return "skip"
	}
	return "sequenced"
}

// ID is the name under which this version keeps its state: Name for
// version 0 and 1, "Name@vN" for version N ≥ 2.
func (p Projection) ID() string { return VersionID(p.Name, p.Version) }

// VersionID is the ID of version v of the projection called name.
func VersionID(name string, v int) string {
	if v <= 1 {
		return name
	}
	return name + "@v" + strconv.Itoa(v)
}

func (p Projection) validate() error {
	if err := keys.ValidateProjection(p.Name); err != nil {
		return err
	}
	if strings.ContainsRune(p.Name, '@') {
		return fmt.Errorf("projection %q: the name must not contain '@' (it marks versions)", p.Name)
	}
	if p.Version < 0 {
		return fmt.Errorf("projection %q: negative version %d", p.Name, p.Version)
	}
	if len(p.Categories) == 0 {
		return fmt.Errorf("projection %q: no categories", p.Name)
	}
	seen := map[string]bool{}
	for _, c := range p.Categories {
		if err := keys.ValidateCategory(c); err != nil {
			return fmt.Errorf("projection %q: %w", p.Name, err)
		}
		if seen[c] {
			return fmt.Errorf("projection %q: category %q listed twice", p.Name, c)
		}
		seen[c] = true
	}
	if (p.Handler == nil) == (p.Batch == nil) {
		return fmt.Errorf("projection %q: set exactly one of Handler and Batch", p.Name)
	}
	if p.Mode != Sequenced && p.Mode != Skip {
		return fmt.Errorf("projection %q: unknown quarantine mode %d", p.Name, p.Mode)
	}
	return nil
}

// DB is what the runner needs of PostgreSQL: a *pgxpool.Pool fits.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Config configures a Runner. Zero fields take the documented defaults.
type Config struct {
	Store *eventstore.Store // required
	DB    DB                // required
	// Schema holds the toolkit's tables. Default "redsource".
	Schema string
	// WorkerID names this worker in leases and status. Default
	// host-pid-random.
	WorkerID string
	// BatchSize is the most events applied in one transaction. Default 500.
	BatchSize int
	// LeaseTTL is how long a partition stays owned without renewal; a dead
	// worker's partitions move within it. Default 10s.
	LeaseTTL time.Duration
	// Block is how long one XREADGROUP waits for new events. Default 1s;
	// shutdown waits at most about this long for a read.
	Block time.Duration
	// MaxAttempts is how many times a failing event is handed to the
	// handler (with backoff) before it is quarantined. Default 5.
	MaxAttempts int
	// MaxDeliveries is the delivery count (Redis pending list) at which an
	// event is quarantined without calling the handler again: it ends
	// crash loops. Default 5.
	MaxDeliveries int
	// Backoff is the first retry delay. Retries of a failing handler
	// double it up to 32×; a batch retried in place because PostgreSQL
	// failed under it (see the package doc) doubles it up to
	// CheckInterval. Default 50ms.
	Backoff time.Duration
	// CheckInterval is how often an owner re-checks the log for regression
	// and polls operator requests, and the longest wait between two tries
	// of a batch that PostgreSQL keeps refusing. Default 5s.
	CheckInterval time.Duration
	// Logger default slog.Default().
	Logger *slog.Logger
	// Hooks receive metrics; nil costs nothing.
	Hooks *Hooks
	// Faults are test hooks; leave nil.
	Faults *Faults
}

// Hooks are optional callbacks for metrics. Each may be nil.
type Hooks struct {
	// Applied is called after a batch commits.
	Applied func(projection, category string, partition, events int, took time.Duration)
	// Quarantined is called when an event is quarantined.
	Quarantined func(projection string, ev eventstore.Event, err error)
}

// Faults lets tests inject failures at exact points. Leave nil.
type Faults struct {
	// AfterCommit runs after a batch's COMMIT and before its XACK; a
	// non-nil error aborts the worker as a crash would.
	AfterCommit func(projection, category string, partition int) error
}

func (c Config) withDefaults() Config {
	if c.Schema == "" {
		c.Schema = pgschema.DefaultSchema
	}
	if c.WorkerID == "" {
		host, _ := os.Hostname()
		c.WorkerID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), randomHex(3))
	}
	if c.BatchSize == 0 {
		c.BatchSize = 500
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 10 * time.Second
	}
	if c.Block == 0 {
		c.Block = time.Second
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 5
	}
	if c.MaxDeliveries == 0 {
		c.MaxDeliveries = 5
	}
	if c.Backoff == 0 {
		c.Backoff = 50 * time.Millisecond
	}
	if c.CheckInterval == 0 {
		c.CheckInterval = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Store == nil:
		return errors.New("projection: Config.Store is required")
	case c.DB == nil:
		return errors.New("projection: Config.DB is required")
	case c.BatchSize < 1:
		return fmt.Errorf("projection: Config.BatchSize is %d, want > 0", c.BatchSize)
	case c.LeaseTTL < 100*time.Millisecond:
		return fmt.Errorf("projection: Config.LeaseTTL is %s, want at least 100ms", c.LeaseTTL)
	case c.Block < time.Millisecond || c.Block >= c.LeaseTTL:
		return fmt.Errorf("projection: Config.Block is %s, want 1ms..LeaseTTL", c.Block)
	case c.MaxAttempts < 1:
		return fmt.Errorf("projection: Config.MaxAttempts is %d, want > 0", c.MaxAttempts)
	case c.MaxDeliveries < 2:
		return fmt.Errorf("projection: Config.MaxDeliveries is %d, want at least 2", c.MaxDeliveries)
	}
	return keys.Validate("worker ID", c.WorkerID, 128)
}

var (
	// ErrLogRegressed: the partition log no longer holds the entry at the
	// checkpoint, or its last ID is behind the checkpoint: Redis lost
	// acknowledged events (a lost AOF tail, a failover to a lagging
	// replica). The partition stops; nothing is skipped silently.
	// It matches eventstore.ErrDataLoss.
	ErrLogRegressed error = &dataLoss{"projection: log regressed behind the checkpoint"}
	// ErrLostOwnership: another worker took the partition.
	ErrLostOwnership = errors.New("projection: partition ownership lost")
)

// dataLoss is a sentinel that also matches eventstore.ErrDataLoss.
type dataLoss struct{ msg string }

func (e *dataLoss) Error() string        { return e.msg }
func (e *dataLoss) Is(target error) bool { return target == eventstore.ErrDataLoss }

// permanentError marks a handler error that retrying cannot fix.
type permanentError struct{ err error }

func (e permanentError) Error() string   { return e.err.Error() }
func (e permanentError) Unwrap() error   { return e.err }
func (e permanentError) Permanent() bool { return true }

// Permanent marks err as one that retrying cannot fix (an undecodable
// payload, an unknown event type): the event is quarantined at once.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err, or an error it wraps, says it is
// permanent (has a Permanent() bool method returning true), or is an
// undecodable entry.
func IsPermanent(err error) bool {
	var p interface{ Permanent() bool }
	if errors.As(err, &p) && p.Permanent() {
		return true
	}
	return errors.Is(err, eventstore.ErrCorruptEntry)
}
