// Package pgschema creates and upgrades redsource's own PostgreSQL tables
// (checkpoints, quarantine, parked events, projection versions, snapshots)
// in one schema, default "redsource".
//
// Migrations are embedded SQL files named NNNN_name.sql, applied in order,
// each once, inside one transaction that holds an advisory lock: several
// processes that start at once apply each migration exactly once and all
// see the result. "{{schema}}" in a file is replaced by the quoted schema
// name.
package pgschema

import (
	"context"
	"embed"
	"fmt"
	"hash/fnv"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// DefaultSchema is the schema of the toolkit's tables.
const DefaultSchema = "redsource"

//go:embed migrations/*.sql
var files embed.FS

// DB is what Migrate needs: a pgx pool, connection or transaction.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Migration is one embedded SQL file.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations returns the embedded migrations in order.
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(files, "migrations")
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, e := range entries {
		num, name, ok := strings.Cut(strings.TrimSuffix(e.Name(), ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("pgschema: migration file %q is not named NNNN_name.sql", e.Name())
		}
		b, err := files.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: v, Name: name, SQL: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i := 1; i < len(out); i++ {
		if out[i].Version == out[i-1].Version {
			return nil, fmt.Errorf("pgschema: two migrations numbered %d", out[i].Version)
		}
	}
	return out, nil
}

// Quote returns schema as a quoted SQL identifier.
func Quote(schema string) string { return pgx.Identifier{schema}.Sanitize() }

// Migrate brings schema up to the newest embedded migration. It is safe to
// call from many processes at once, and cheap when nothing is to do.
func Migrate(ctx context.Context, db DB, schema string) error {
	if schema == "" {
		schema = DefaultSchema
	}
	ms, err := Migrations()
	if err != nil {
		return err
	}
	h := fnv.New64a()
	h.Write([]byte("redsource-migrate:" + schema))
	lock := int64(h.Sum64())
	q := Quote(schema)

	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("pgschema: begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lock); err != nil {
		return fmt.Errorf("pgschema: lock: %w", err)
	}
	if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+q); err != nil {
		return fmt.Errorf("pgschema: create schema %s: %w", schema, err)
	}
	if _, err := tx.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+q+`.schema_migrations (
		version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("pgschema: migrations table: %w", err)
	}
	var current int
	if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+q+".schema_migrations").Scan(&current); err != nil {
		return fmt.Errorf("pgschema: read version: %w", err)
	}
	for _, m := range ms {
		if m.Version <= current {
			continue
		}
		sql := strings.ReplaceAll(m.SQL, "{{schema}}", q)
		if _, err := tx.Exec(ctx, sql); err != nil {
			return fmt.Errorf("pgschema: migration %04d_%s: %w", m.Version, m.Name, err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO "+q+".schema_migrations (version, name) VALUES ($1, $2)", m.Version, m.Name); err != nil {
			return fmt.Errorf("pgschema: record migration %d: %w", m.Version, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("pgschema: commit: %w", err)
	}
	return nil
}
