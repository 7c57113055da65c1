package snapshot

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/keys"
	"github.com/redsource/redsource/internal/pgschema"
)

// DB is what the PostgreSQL store needs: a *pgxpool.Pool, or anything with
// the same three methods.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// PostgresConfig configures a Postgres store. Zero fields take the
// documented defaults.
type PostgresConfig struct {
	// Schema holds the toolkit's tables. Default "redsource".
	Schema string
	// Namespace is the event store's namespace (eventstore.Store.Namespace),
	// part of every row's key so that several event stores can share one
	// schema. Default "rs".
	Namespace string
}

// Postgres is a Store in the snapshots table of the toolkit's schema
// (migration 0002). Use it when snapshots should outlive Redis or stay out
// of Redis memory.
type Postgres struct {
	db    DB
	ns    string
	table string
}

// NewPostgres returns a snapshot store in db, first bringing the toolkit's
// schema up to date (pgschema.Migrate: idempotent, safe from many processes
// at once). It does not own db.
func NewPostgres(ctx context.Context, db DB, cfg PostgresConfig) (*Postgres, error) {
	if cfg.Schema == "" {
		cfg.Schema = pgschema.DefaultSchema
	}
	if cfg.Namespace == "" {
		cfg.Namespace = eventstore.DefaultNamespace
	}
	if err := keys.ValidateNamespace(cfg.Namespace); err != nil {
		return nil, fmt.Errorf("%w: %w", eventstore.ErrInvalidName, err)
	}
	if err := pgschema.Migrate(ctx, db, cfg.Schema); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	return &Postgres{db: db, ns: cfg.Namespace, table: pgschema.Quote(cfg.Schema) + ".snapshots"}, nil
}

// Get implements Store.
func (p *Postgres) Get(ctx context.Context, stream eventstore.StreamID) (Snapshot, error) {
	if err := validateStream(stream); err != nil {
		return Snapshot{}, err
	}
	s := Snapshot{Stream: stream}
	var version int64
	var pos string
	var identity *string
	err := p.db.QueryRow(ctx, `SELECT version, position, schema_version, payload, identity FROM `+p.table+`
		WHERE namespace = $1 AND category = $2 AND aggregate_id = $3`,
		p.ns, stream.Category, stream.ID).Scan(&version, &pos, &s.Schema, &s.Payload, &identity)
	if errors.Is(err, pgx.ErrNoRows) {
		return Snapshot{}, fmt.Errorf("%w: %s", ErrNotFound, stream)
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot: get %s: %w", stream, err)
	}
	s.Version = uint64(version) // CHECK (version > 0)
	if s.Position, err = eventstore.ParsePosition(pos); err != nil {
		return Snapshot{}, fmt.Errorf("%w: %s in PostgreSQL: %w", ErrCorrupt, stream, err)
	}
	if s.Payload == nil {
		s.Payload = []byte{}
	}
	if identity != nil {
		s.Identity = *identity
	}
	return s, nil
}

// Put implements Store.
func (p *Postgres) Put(ctx context.Context, s Snapshot) error {
	if err := validate(s); err != nil {
		return err
	}
	payload := s.Payload
	if payload == nil {
		payload = []byte{} // NOT NULL: an empty state is still a state
	}
	_, err := p.db.Exec(ctx, `INSERT INTO `+p.table+`
		(namespace, category, aggregate_id, version, position, schema_version, payload, identity)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (namespace, category, aggregate_id) DO UPDATE SET
			version = EXCLUDED.version, position = EXCLUDED.position,
			schema_version = EXCLUDED.schema_version, payload = EXCLUDED.payload,
			identity = EXCLUDED.identity, taken_at = now()`,
		p.ns, s.Stream.Category, s.Stream.ID, int64(s.Version), s.Position.String(), s.Schema, payload, nullable(s.Identity))
	if err != nil {
		return fmt.Errorf("snapshot: put %s: %w", s.Stream, err)
	}
	return nil
}

// Delete implements Store.
func (p *Postgres) Delete(ctx context.Context, stream eventstore.StreamID) error {
	if err := validateStream(stream); err != nil {
		return err
	}
	_, err := p.db.Exec(ctx, `DELETE FROM `+p.table+` WHERE namespace = $1 AND category = $2 AND aggregate_id = $3`,
		p.ns, stream.Category, stream.ID)
	if err != nil {
		return fmt.Errorf("snapshot: delete %s: %w", stream, err)
	}
	return nil
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}
