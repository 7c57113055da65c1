package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/redsource/redsource/aggregate"
	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/projection"
)

// ProjectionName names the read model's projection: its consumer groups,
// leases and checkpoints.
const ProjectionName = "balances"

// schemaMarker is the comment this program puts on a schema it creates.
// The demo drops and recreates its schema only when it carries it.
const schemaMarker = "redsource examples/bank"

// ensureSchema creates the PostgreSQL schema if it is missing, marked as
// ours, and in it the balances view over the table of version 1.
func ensureSchema(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("PostgreSQL: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	// Several processes may start at once.
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext($1))", "redsource-bank:"+schema); err != nil {
		return fmt.Errorf("PostgreSQL: %w", err)
	}
	var exists bool
	if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema).Scan(&exists); err != nil {
		return fmt.Errorf("PostgreSQL: %w", err)
	}
	if !exists {
		q := ident(schema)
		if _, err := tx.Exec(ctx, "CREATE SCHEMA "+q); err != nil {
			return fmt.Errorf("create schema %s: %w", q, err)
		}
		if _, err := tx.Exec(ctx, "COMMENT ON SCHEMA "+q+" IS '"+schemaMarker+"'"); err != nil {
			return fmt.Errorf("mark schema %s: %w", q, err)
		}
	}
	// Readers query the view; a blue/green switch points it at another
	// version's table. Both are created once: the view may point at a
	// later version now, and version 1 may be gone.
	var view *string
	if err := tx.QueryRow(ctx, "SELECT to_regclass($1)::text", balancesView(schema)).Scan(&view); err != nil {
		return fmt.Errorf("PostgreSQL: %w", err)
	}
	if view == nil {
		if err := createBalances(ctx, tx, versionTable(schema, 1)); err != nil {
			return err
		}
		if err := pointView(ctx, tx, schema, 1); err != nil {
			return err
		}
	}
	return tx.Commit(ctx)
}

// pointView makes the balances view show version v's table.
func pointView(ctx context.Context, tx pgx.Tx, schema string, v int) error {
	_, err := tx.Exec(ctx, "CREATE OR REPLACE VIEW "+balancesView(schema)+" AS SELECT * FROM "+versionTable(schema, v))
	if err != nil {
		return fmt.Errorf("point %s at %s: %w", balancesView(schema), versionTable(schema, v), err)
	}
	return nil
}

// createBalances creates a balances table: one row per account, with the
// version of the last event applied to it.
func createBalances(ctx context.Context, tx pgx.Tx, table string) error {
	_, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+table+` (
	account_id text PRIMARY KEY,
	owner      text NOT NULL DEFAULT '',
	balance    bigint NOT NULL DEFAULT 0,
	version    bigint NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now()
)`)
	if err != nil {
		return fmt.Errorf("create %s: %w", table, err)
	}
	return nil
}

// ident quotes a PostgreSQL identifier path ("bank"."balances").
func ident(parts ...string) string { return pgx.Identifier(parts).Sanitize() }

// balancesView is what readers query: a view on the active version's
// table (a simple view: UPDATE and DELETE go through to the table).
func balancesView(schema string) string { return ident(schema, "balances") }

// versionTable is the table version v of the projection writes:
// balances_v1 for version 0 or 1, balances_v<v> after.
func versionTable(schema string, v int) string {
	return ident(schema, fmt.Sprintf("balances_v%d", max(v, 1)))
}

// balancesProjection is version v of the read model: its table fed by the
// account category through a batch handler.
func balancesProjection(schema string, types *aggregate.Registry, v int) projection.Projection {
	table := versionTable(schema, v)
	return projection.Projection{
		Name:       ProjectionName,
		Version:    v,
		Categories: []string{Category},
		Batch:      &balancesHandler{table: table, types: types},
		Reset: func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "TRUNCATE "+table)
			return err
		},
	}
}

// activeVersion is the version readers see: the one last switched to, or 1.
func activeVersion(ctx context.Context, e *env) (int, error) {
	v, err := e.admin().ActiveVersion(ctx, ProjectionName)
	if errors.Is(err, projection.ErrNoSchema) {
		return 1, nil // no runner has prepared the schema yet
	}
	return v, err
}

// balancesHandler folds a batch per account and writes it with one
// set-based upsert.
//
// An event that does not decode fails the whole batch with a permanent
// error. The runner then bisects the batch until the failing event is
// alone, commits the others, and quarantines that one at once (no
// retries: retrying cannot fix its data). Later events of the same account
// are parked behind it; other accounts keep flowing.
type balancesHandler struct {
	table string
	types *aggregate.Registry
}

type balanceDelta struct {
	owner   string // "" when the batch holds no AccountOpened
	delta   int64
	version int64
}

func (h *balancesHandler) ApplyBatch(ctx context.Context, tx pgx.Tx, events []eventstore.Event) error {
	rows := map[string]*balanceDelta{}
	var order []string
	for _, ev := range events {
		e, err := h.types.Decode(ev)
		if err != nil {
			return projection.Permanent(err)
		}
		id := ev.Stream.ID
		r := rows[id]
		if r == nil {
			r = &balanceDelta{}
			rows[id] = r
			order = append(order, id)
		}
		if o, ok := e.(AccountOpened); ok {
			r.owner = o.Owner
		}
		r.delta += balanceChange(e)
		r.version = int64(ev.Version)
	}
	ids := order
	owners := make([]string, len(ids))
	deltas := make([]int64, len(ids))
	versions := make([]int64, len(ids))
	for i, id := range ids {
		r := rows[id]
		owners[i], deltas[i], versions[i] = r.owner, r.delta, r.version
	}
	_, err := tx.Exec(ctx, `INSERT INTO `+h.table+` AS b (account_id, owner, balance, version)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
ON CONFLICT (account_id) DO UPDATE SET
	owner = CASE WHEN EXCLUDED.owner = '' THEN b.owner ELSE EXCLUDED.owner END,
	balance = b.balance + EXCLUDED.balance,
	version = EXCLUDED.version,
	updated_at = now()`, ids, owners, deltas, versions)
	return err
}

// balanceRow is one row of the read model.
type balanceRow struct {
	ID      string
	Owner   string
	Balance int64
	Version int64
}

// readBalances returns the read model, by account ID.
func readBalances(ctx context.Context, pool *pgxpool.Pool, table string) (map[string]balanceRow, error) {
	rows, err := pool.Query(ctx, "SELECT account_id, owner, balance, version FROM "+table+" ORDER BY account_id")
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", table, err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByPos[balanceRow])
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", table, err)
	}
	out := make(map[string]balanceRow, len(list))
	for _, r := range list {
		out[r.ID] = r
	}
	return out, nil
}

// dropOwnSchema drops schema if this program created it (it carries our
// marker); a schema that is not ours is an error, and a missing one is
// fine.
func dropOwnSchema(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	var comment *string
	err := pool.QueryRow(ctx, "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = $1", schema).Scan(&comment)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("PostgreSQL: %w", err)
	}
	if comment == nil || *comment != schemaMarker {
		return fmt.Errorf("schema %s exists and was not created by this program; not dropping it (pick another -namespace or -schema)", ident(schema))
	}
	_, err = pool.Exec(ctx, "DROP SCHEMA "+ident(schema)+" CASCADE")
	return err
}

// isUndefinedTable reports a missing table or schema.
func isUndefinedTable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "42P01" || pe.Code == "3F000")
}
