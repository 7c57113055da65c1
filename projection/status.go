package projection

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/redsource/redsource/eventstore"
)

// PartitionStatus is the health of one projection partition.
type PartitionStatus struct {
	Projection  string              `json:"projection"`
	Category    string              `json:"category"`
	Partition   int                 `json:"partition"`
	Checkpoint  eventstore.Position `json:"checkpoint"`
	Applied     int64               `json:"applied"`
	Owner       string              `json:"owner"` // current lease holder; "" when none
	Lag         int64               `json:"lag"`   // entries not yet delivered (XINFO GROUPS); -1 unknown
	Pending     int64               `json:"pending"`
	Quarantined int                 `json:"quarantined"`
	Parked      int                 `json:"parked"`
	Missing     int                 `json:"missing"`
	// Stopped says why the partition stopped applying events because Redis
	// lost what its checkpoint remembers: "log_regressed" (the log no
	// longer holds the checkpoint's entry) or "namespace_lost" (Redis holds
	// no longer, or another, namespace); "" while it runs.
	Stopped   string    `json:"stopped,omitempty"`
	LastError string    `json:"last_error,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Projections lists the projections that have checkpoints.
func (a *Admin) Projections(ctx context.Context) ([]string, error) {
	var out []string
	err := inTx(ctx, a.db, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, "SELECT DISTINCT projection FROM "+a.table("checkpoints")+" ORDER BY 1")
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		return nil, a.wrap("list projections", err)
	}
	return out, nil
}

// Status reports every partition of a projection: checkpoint and owner
// from PostgreSQL and Redis, lag and pending from the consumer group, and
// held-event counts.
//
// It also checks, itself, what every checkpoint remembers against Redis
// now: the namespace's identity and the log entry at each checkpoint. A
// partition whose log lost that entry, or a namespace Redis no longer
// holds, is reported Stopped even when no runner has looked yet (or none
// runs).
func (a *Admin) Status(ctx context.Context, store *eventstore.Store, projection string) ([]PartitionStatus, error) {
	var out []PartitionStatus
	var cps []checkpointRef
	var ns, identity *string
	err := inTx(ctx, a.db, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, "SELECT namespace, identity FROM "+a.table("projection_namespace")).Scan(&ns, &identity)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		rows, err := tx.Query(ctx, "SELECT c.category, c.partition, c.position, c.event_id, c.applied, c.last_error, c.stopped, c.updated_at,"+
			" count(h.*) FILTER (WHERE h.reason = 'quarantined'), count(h.*) FILTER (WHERE h.reason = 'parked'),"+
			" count(h.*) FILTER (WHERE h.reason = 'missing')"+
			" FROM "+a.table("checkpoints")+" c LEFT JOIN "+a.table("held_events")+" h ON h.projection = c.projection"+
			" AND h.category = c.category AND h.partition = c.partition AND h.resolved_at IS NULL"+
			" WHERE c.projection = $1 GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 ORDER BY 1, 2", projection)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			s := PartitionStatus{Projection: projection}
			var pos string
			var eid *uuid.UUID
			if err := rows.Scan(&s.Category, &s.Partition, &pos, &eid, &s.Applied, &s.LastError, &s.Stopped, &s.UpdatedAt, &s.Quarantined, &s.Parked, &s.Missing); err != nil {
				return err
			}
			if s.Checkpoint, err = eventstore.ParsePosition(pos); err != nil {
				return err
			}
			out = append(out, s)
			cps = append(cps, checkpointRef{s.Category, s.Partition, s.Checkpoint, eid})
		}
		return rows.Err()
	})
	if err != nil {
		return nil, a.wrap(fmt.Sprintf("status of %q", projection), err)
	}
	// Against another namespace than the schema's (a --namespace given on
	// purpose), there is nothing to compare the checkpoints with.
	if len(out) > 0 && ns != nil && *ns == store.Namespace() {
		id := ""
		if identity != nil {
			id = *identity
		}
		if err := a.checkAgainstRedis(ctx, store, id, out, cps); err != nil {
			return nil, err
		}
	}
	c := store.Client()
	layout := layoutOf(store)
	for i := range out {
		s := &out[i]
		s.Lag = -1
		key := store.LogKey(s.Category, s.Partition)
		if gi, err := readGroupInfo(ctx, c, key, projection); err == nil {
			s.Lag, s.Pending = gi.lag, gi.pending
		}
		if owner, err := c.Do(ctx, c.B().Get().Key(layout.Lease(s.Category, s.Partition, projection)).Build()).ToString(); err == nil {
			s.Owner = owner
		}
	}
	return out, nil
}

// checkAgainstRedis marks partitions stopped whose checkpoints Redis no
// longer honours: the whole namespace when its identity is not the one the
// schema remembers, else each partition whose log lost the checkpoint's
// entry.
func (a *Admin) checkAgainstRedis(ctx context.Context, store *eventstore.Store, identity string, out []PartitionStatus, cps []checkpointRef) error {
	if identity != "" {
		_, err := store.CheckIdentity(ctx, identity, fmt.Sprintf("PostgreSQL schema %q", a.schema))
		if errors.Is(err, eventstore.ErrNamespaceLost) {
			for i := range out {
				out[i].Stopped, out[i].LastError = stoppedNamespaceLost, err.Error()
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
	regressed, err := regressions(ctx, store, cps)
	if err != nil {
		return err
	}
	for i, err := range regressed {
		if err != nil && out[i].Stopped == "" {
			out[i].Stopped, out[i].LastError = stoppedLogRegressed, err.Error()
		}
	}
	return nil
}
