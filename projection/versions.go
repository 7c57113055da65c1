package projection

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/keys"
)

// ActiveVersion returns the version of a projection that readers see: the
// one last switched to, or 1.
func (a *Admin) ActiveVersion(ctx context.Context, name string) (int, error) {
	v := 1
	err := inTx(ctx, a.db, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, "SELECT active FROM "+a.table("projection_versions")+" WHERE name = $1", name).Scan(&v)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	})
	if err != nil {
		return 0, a.wrap("active version of "+name, err)
	}
	return v, nil
}

// Switch makes version the one readers see, in one transaction: the
// pointer in projection_versions and whatever hook does (typically
// CREATE OR REPLACE VIEW <name> AS SELECT … FROM <name>_v<version>) commit
// together, so readers see the old version or the new one, never a mix.
func (a *Admin) Switch(ctx context.Context, name string, version int, hook func(ctx context.Context, tx pgx.Tx) error) error {
	if err := keys.ValidateProjection(name); err != nil {
		return err
	}
	if version < 1 {
		return fmt.Errorf("projection: cannot switch %q to version %d", name, version)
	}
	err := inTx(ctx, a.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO "+a.table("projection_versions")+" (name, active) VALUES ($1, $2)"+
			" ON CONFLICT (name) DO UPDATE SET active = EXCLUDED.active, switched_at = now()", name, version); err != nil {
			return err
		}
		if hook != nil {
			return hook(ctx, tx)
		}
		return nil
	})
	if err != nil {
		return a.wrap(fmt.Sprintf("switch %q to version %d", name, version), err)
	}
	return nil
}

// DropVersion removes an inactive version's state: its checkpoints and
// held events, its consumer groups, leases and dead letters in Redis, and,
// through hook in the same transaction, its tables.
func (a *Admin) DropVersion(ctx context.Context, store *eventstore.Store, name string, version int, hook func(ctx context.Context, tx pgx.Tx) error) error {
	active, err := a.ActiveVersion(ctx, name)
	if err != nil {
		return err
	}
	if active == version || (version <= 1 && active <= 1) {
		return fmt.Errorf("projection: version %d of %q is the active one; switch first", version, name)
	}
	id := VersionID(name, version)
	type part struct {
		category  string
		partition int
	}
	var parts []part
	err = inTx(ctx, a.db, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, "DELETE FROM "+a.table("checkpoints")+" WHERE projection = $1 RETURNING category, partition", id)
		if err != nil {
			return err
		}
		for rows.Next() {
			var p part
			if err := rows.Scan(&p.category, &p.partition); err != nil {
				return err
			}
			parts = append(parts, p)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "DELETE FROM "+a.table("held_events")+" WHERE projection = $1", id); err != nil {
			return err
		}
		if hook != nil {
			return hook(ctx, tx)
		}
		return nil
	})
	if err != nil {
		return a.wrap("drop "+id, err)
	}
	c := store.Client()
	l := layoutOf(store)
	for _, p := range parts {
		log := store.LogKey(p.category, p.partition)
		if err := c.Do(ctx, c.B().Del().Key(l.DLQ(p.category, p.partition, id), l.DLQIndex(p.category, p.partition, id),
			l.Lease(p.category, p.partition, id)).Build()).Error(); err != nil {
			return fmt.Errorf("projection: drop %s: %w", id, err)
		}
		if n, err := c.Do(ctx, c.B().Exists().Key(log).Build()).AsInt64(); err == nil && n == 1 {
			if err := c.Do(ctx, c.B().XgroupDestroy().Key(log).Group(id).Build()).Error(); err != nil {
				return fmt.Errorf("projection: drop consumer group %s on %s: %w", id, log, err)
			}
		}
	}
	return c.Do(ctx, c.B().Del().Key(l.Projection(id, "workers"), l.Projection(id, "rebuild")).Build()).Error()
}
