package projection

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/pgschema"
)

// NewWitness returns durable memory of a namespace in the toolkit's
// PostgreSQL schema (the row the runners of that schema record the
// namespace and its identity in), for eventstore.Config.Witness: a store
// with it records the namespace's identity on first use and refuses a Redis
// that lost the namespace, in every process, including those that never ran
// a projection. The schema is migrated on first use. One schema serves one
// namespace.
func NewWitness(db DB, schema string) eventstore.Witness {
	if schema == "" {
		schema = pgschema.DefaultSchema
	}
	return &witness{db: db, schema: schema}
}

type witness struct {
	db     DB
	schema string

	mu       sync.Mutex
	migrated bool
}

func (w *witness) String() string { return fmt.Sprintf("PostgreSQL schema %q", w.schema) }

func (w *witness) table() string { return pgschema.Quote(w.schema) + ".projection_namespace" }

func (w *witness) migrate(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.migrated {
		return nil
	}
	if err := pgschema.Migrate(ctx, w.db, w.schema); err != nil {
		return err
	}
	w.migrated = true
	return nil
}

// Remembered implements eventstore.Witness.
func (w *witness) Remembered(ctx context.Context, namespace string) (string, error) {
	if err := w.migrate(ctx); err != nil {
		return "", err
	}
	var id string
	err := inTx(ctx, w.db, func(tx pgx.Tx) error {
		var err error
		id, err = recordedIdentity(ctx, tx, w.table(), w.schema, namespace)
		return err
	})
	return id, err
}

// Remember implements eventstore.Witness.
func (w *witness) Remember(ctx context.Context, namespace, identity string) error {
	if err := w.migrate(ctx); err != nil {
		return err
	}
	return inTx(ctx, w.db, func(tx pgx.Tx) error {
		return recordIdentity(ctx, tx, w.table(), w.schema, namespace, identity)
	})
}

// recordedIdentity reads the namespace identity a toolkit schema holds ("" if
// none yet); a schema of another namespace is an error.
func recordedIdentity(ctx context.Context, tx pgx.Tx, table, schema, namespace string) (string, error) {
	var ns string
	var id *string
	err := tx.QueryRow(ctx, "SELECT namespace, identity FROM "+table).Scan(&ns, &id)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return "", nil
	case err != nil:
		return "", err
	case ns != namespace:
		return "", fmt.Errorf("projection: schema %q holds the projections of namespace %q, not %q: give each namespace its own schema", schema, ns, namespace)
	case id == nil:
		return "", nil
	}
	return *id, nil
}

// recordIdentity records the namespace and its identity in a toolkit
// schema unless it holds them already; another identity recorded there is
// an error. Two statements: the SELECT takes a new snapshot, so it sees a
// row that a process starting at the same moment committed while the
// INSERT waited for it.
func recordIdentity(ctx context.Context, tx pgx.Tx, table, schema, namespace, identity string) error {
	if _, err := tx.Exec(ctx, "INSERT INTO "+table+" (namespace, identity) VALUES ($1, $2) ON CONFLICT (singleton) DO UPDATE SET identity = EXCLUDED.identity"+
		" WHERE "+table+".identity IS NULL AND "+table+".namespace = EXCLUDED.namespace", namespace, identity); err != nil {
		return fmt.Errorf("projection: record the namespace identity: %w", err)
	}
	got, err := recordedIdentity(ctx, tx, table, schema, namespace)
	if err != nil {
		return err
	}
	if got != identity {
		return &eventstore.NamespaceError{Namespace: namespace, Remembered: got, Found: identity, By: fmt.Sprintf("PostgreSQL schema %q", schema)}
	}
	return nil
}
