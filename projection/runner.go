package projection

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/rueidis"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/keys"
	"github.com/redsource/redsource/internal/pgschema"
)

var (
	//go:embed lease.lua
	leaseLua    string
	leaseScript = rueidis.NewLuaScript(leaseLua)
	//go:embed heartbeat.lua
	heartbeatLua    string
	heartbeatScript = rueidis.NewLuaScript(heartbeatLua)
)

// Runner runs projections: it shares their partitions with the other
// live workers through leases in Redis and keeps one partition worker per
// owned partition.
type Runner struct {
	cfg   Config
	projs []Projection
	keys  keys.Layout

	mu       sync.Mutex
	identity string // the namespace identity the schema remembers, from prepare
	owned    map[unit]*ownedUnit
	wg       sync.WaitGroup
}

// unit is one (projection, category, partition): the thing a lease owns.
type unit struct {
	proj      int
	category  string
	partition int
}

type ownedUnit struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// NewRunner validates cfg and the projections. Nothing is contacted until
// Run.
func NewRunner(cfg Config, projections ...Projection) (*Runner, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if len(projections) == 0 {
		return nil, errors.New("projection: no projections to run")
	}
	names := map[string]bool{}
	for _, p := range projections {
		if err := p.validate(); err != nil {
			return nil, fmt.Errorf("projection: %w", err)
		}
		if names[p.ID()] {
			return nil, fmt.Errorf("projection: %q given twice", p.ID())
		}
		names[p.ID()] = true
	}
	return &Runner{cfg: cfg, projs: projections, keys: keys.Layout{NS: cfg.Store.Namespace()}, owned: map[unit]*ownedUnit{}}, nil
}

// WorkerID returns the worker's name in leases and status.
func (r *Runner) WorkerID() string { return r.cfg.WorkerID }

// Run blocks until ctx is done: it prepares the schema and checkpoints
// (failing when PostgreSQL does not answer, or Redis does not within the
// store's Config.RetryUnavailable), then keeps a
// fair share of the partitions and projects them. On return every
// partition worker has stopped and every lease is released.
//
// Run returns an error matching eventstore.ErrNamespaceLost (and
// eventstore.ErrDataLoss) as soon as Redis no longer holds the namespace
// the schema remembers — at start or while running: a Redis that restarted
// empty is never taken for a fresh start. A partition whose log lost
// entries the checkpoint remembers stops (ErrLogRegressed, shown by
// Admin.Status) while the others go on.
func (r *Runner) Run(ctx context.Context) error {
	units, err := r.prepare(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting: not a failure
		}
		return err
	}
	tick := time.NewTicker(r.cfg.LeaseTTL / 3)
	defer tick.Stop()
	defer r.shutdown()
	for {
		if err := r.checkIdentity(ctx); err != nil && ctx.Err() == nil {
			if errors.Is(err, eventstore.ErrNamespaceLost) {
				r.cfg.Logger.Error("projection: Redis lost the namespace; every partition stops", "worker", r.cfg.WorkerID, "err", err)
				r.stopAll(ctx, units, err)
				return err
			}
			r.cfg.Logger.Warn("projection: checking the namespace identity failed", "worker", r.cfg.WorkerID, "err", err)
		}
		if err := r.balance(ctx, units); err != nil && ctx.Err() == nil {
			r.cfg.Logger.Warn("projection: balancing partitions failed", "worker", r.cfg.WorkerID, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// prepare migrates the schema and makes sure every unit has a checkpoint.
func (r *Runner) prepare(ctx context.Context) ([][]unit, error) {
	// Redis is first asked for the namespace identity below: a key of its
	// own, so in a cluster it goes to a node that serves it (a PING could
	// go to any known node, a dead master included), and the store bounds
	// the wait for a Redis that does not answer (Config.RetryUnavailable).
	if err := pgschema.Migrate(ctx, r.cfg.DB, r.cfg.Schema); err != nil {
		return nil, fmt.Errorf("projection: %w", err)
	}
	// The schema remembers the namespace's identity: a Redis that lost the
	// namespace (or holds another incarnation of it) is refused before a
	// checkpoint is trusted. Its own transaction, committed before the
	// store is asked anything else: a store with a Witness in this schema
	// reads and writes the same row.
	ns := r.cfg.Store.Namespace()
	err := inTx(ctx, r.cfg.DB, func(tx pgx.Tx) error {
		table := r.table("projection_namespace")
		remembered, err := recordedIdentity(ctx, tx, table, r.cfg.Schema, ns)
		if err != nil {
			return err
		}
		id, err := r.cfg.Store.CheckIdentity(ctx, remembered, r.witnessName())
		if err != nil {
			return fmt.Errorf("projection: %w", err)
		}
		if remembered == "" {
			if err := recordIdentity(ctx, tx, table, r.cfg.Schema, ns, id); err != nil {
				return err
			}
		}
		r.mu.Lock()
		r.identity = id
		r.mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, err
	}
	units := make([][]unit, len(r.projs))
	for i, p := range r.projs {
		for _, cat := range p.Categories {
			n, err := r.cfg.Store.Partitions(ctx, cat)
			if err != nil {
				return nil, fmt.Errorf("projection %q: %w", p.Name, err)
			}
			for part := 0; part < n; part++ {
				units[i] = append(units[i], unit{proj: i, category: cat, partition: part})
			}
		}
	}
	err = inTx(ctx, r.cfg.DB, func(tx pgx.Tx) error {
		for _, us := range units {
			for _, u := range us {
				if _, err := tx.Exec(ctx, "INSERT INTO "+r.table("checkpoints")+
					" (projection, category, partition) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", r.projs[u.proj].ID(), u.category, u.partition); err != nil {
					return fmt.Errorf("projection %q: create checkpoint: %w", r.projs[u.proj].Name, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("projection: create checkpoints: %w", err)
	}
	return units, nil
}

func (r *Runner) table(name string) string { return pgschema.Quote(r.cfg.Schema) + "." + name }

func (r *Runner) witnessName() string { return fmt.Sprintf("PostgreSQL schema %q", r.cfg.Schema) }

// checkIdentity reads the namespace's identity from Redis and compares it
// with the one the schema remembers.
func (r *Runner) checkIdentity(ctx context.Context) error {
	r.mu.Lock()
	id := r.identity
	r.mu.Unlock()
	_, err := r.cfg.Store.CheckIdentity(ctx, id, r.witnessName())
	return err
}

// stopAll stops every partition worker of this runner and marks the
// partitions stopped in their checkpoints (for status and catch-ups in
// other processes).
func (r *Runner) stopAll(ctx context.Context, units [][]unit, cause error) {
	r.mu.Lock()
	us := make([]unit, 0, len(r.owned))
	for u := range r.owned {
		us = append(us, u)
	}
	r.mu.Unlock()
	for _, u := range us {
		r.stopUnit(u, true)
	}
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	for _, pu := range units {
		for _, u := range pu {
			r.markStopped(mctx, u, cause)
		}
	}
}

// Reasons a partition stopped (checkpoints.stopped).
const (
	stoppedLogRegressed  = "log_regressed"
	stoppedNamespaceLost = "namespace_lost"
)

// markStopped records in the partition's checkpoint that it stopped because
// Redis lost what the checkpoint remembers, with the error.
func (r *Runner) markStopped(ctx context.Context, u unit, cause error) {
	why := stoppedLogRegressed
	if errors.Is(cause, eventstore.ErrNamespaceLost) {
		why = stoppedNamespaceLost
	}
	err := inTx(ctx, r.cfg.DB, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "UPDATE "+r.table("checkpoints")+" SET stopped = $4, last_error = $5, updated_at = now()"+
			" WHERE projection = $1 AND category = $2 AND partition = $3", r.projs[u.proj].ID(), u.category, u.partition, why, cause.Error())
		return err
	})
	if err != nil {
		r.cfg.Logger.Warn("projection: could not record a stopped partition", "projection", r.projs[u.proj].ID(), "category", u.category, "partition", u.partition, "err", err)
	}
}

// balance renews held leases, then takes or gives back partitions so that
// each live worker of a projection owns about the same number.
func (r *Runner) balance(ctx context.Context, units [][]unit) error {
	c := r.cfg.Store.Client()
	ttl := strconv.FormatInt(r.cfg.LeaseTTL.Milliseconds(), 10)
	var errs []error
	for i, p := range r.projs {
		// While another process rebuilds the projection, let go of it.
		rebuilder, err := c.Do(ctx, c.B().Get().Key(r.keys.Projection(p.ID(), "rebuild")).Build()).ToString()
		rebuilding := err == nil
		if err != nil && !rueidis.IsRedisNil(err) {
			errs = append(errs, err)
			continue
		}
		if rebuilding && rebuilder != r.cfg.WorkerID {
			for _, u := range units[i] {
				if r.isOwned(u) {
					r.cfg.Logger.Info("projection: letting go for a rebuild", "projection", p.ID(), "category", u.category, "partition", u.partition, "rebuilder", rebuilder)
					r.stopUnit(u, true)
				}
			}
			heartbeatScript.Exec(ctx, c, []string{r.keys.Projection(p.ID(), "workers")}, []string{r.cfg.WorkerID, ttl, "leave"})
			continue
		}
		live, err := heartbeatScript.Exec(ctx, c, []string{r.keys.Projection(p.ID(), "workers")},
			[]string{r.cfg.WorkerID, ttl, "beat"}).AsInt64()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		target := (len(units[i]) + int(max(live, 1)) - 1) / int(max(live, 1))
		if rebuilding { // this is the rebuilder: it takes every partition
			target = len(units[i])
		}
		held := 0
		for _, u := range units[i] {
			if !r.isOwned(u) {
				continue
			}
			ok, err := leaseScript.Exec(ctx, c, []string{r.leaseKey(u)}, []string{r.cfg.WorkerID, ttl, "renew"}).AsInt64()
			switch {
			case err != nil:
				errs = append(errs, err)
				held++ // keep it: the lease may still be ours
			case ok == 0:
				r.cfg.Logger.Warn("projection: lease lost", "projection", p.ID(), "category", u.category, "partition", u.partition, "worker", r.cfg.WorkerID)
				r.stopUnit(u, false)
			default:
				held++
			}
		}
		// Start at a worker-specific offset so that workers do not all
		// race for the same partitions.
		h := fnv.New32a()
		h.Write([]byte(r.cfg.WorkerID))
		off := int(h.Sum32() % uint32(len(units[i])))
		for k := 0; k < len(units[i]) && held < target; k++ {
			u := units[i][(off+k)%len(units[i])]
			if r.isOwned(u) {
				continue
			}
			ok, err := leaseScript.Exec(ctx, c, []string{r.leaseKey(u)}, []string{r.cfg.WorkerID, ttl, "acquire"}).AsInt64()
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if ok == 1 {
				r.startUnit(ctx, u)
				held++
			}
		}
		for k := len(units[i]) - 1; k >= 0 && held > target; k-- {
			u := units[i][(off+k)%len(units[i])]
			if r.isOwned(u) {
				r.stopUnit(u, true)
				held--
			}
		}
	}
	return errors.Join(errs...)
}

func (r *Runner) leaseKey(u unit) string {
	return r.keys.Lease(u.category, u.partition, r.projs[u.proj].ID())
}

func (r *Runner) isOwned(u unit) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.owned[u]
	return ok
}

func (r *Runner) startUnit(ctx context.Context, u unit) {
	wctx, cancel := context.WithCancel(ctx)
	ou := &ownedUnit{cancel: cancel, done: make(chan struct{})}
	r.mu.Lock()
	r.owned[u] = ou
	r.mu.Unlock()
	r.cfg.Logger.Info("projection: partition taken", "projection", r.projs[u.proj].ID(), "category", u.category, "partition", u.partition, "worker", r.cfg.WorkerID)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(ou.done)
		w := &worker{r: r, u: u, p: r.projs[u.proj]}
		w.run(wctx)
		// A worker that ends on its own (ownership lost) gives the
		// partition back so that balance can take it again later.
		if wctx.Err() == nil {
			r.mu.Lock()
			if r.owned[u] == ou {
				delete(r.owned, u)
			}
			r.mu.Unlock()
			r.release(u)
		}
	}()
}

// stopUnit stops a partition worker and waits for it; with release, the
// lease is given back for another worker to take.
func (r *Runner) stopUnit(u unit, release bool) {
	r.mu.Lock()
	ou, ok := r.owned[u]
	delete(r.owned, u)
	r.mu.Unlock()
	if !ok {
		return
	}
	ou.cancel()
	<-ou.done
	if release {
		r.release(u)
	}
}

func (r *Runner) release(u unit) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := r.cfg.Store.Client()
	if err := leaseScript.Exec(ctx, c, []string{r.leaseKey(u)}, []string{r.cfg.WorkerID, "0", "release"}).Error(); err != nil {
		r.cfg.Logger.Warn("projection: release lease", "err", err)
	}
}

func (r *Runner) shutdown() {
	r.mu.Lock()
	us := make([]unit, 0, len(r.owned))
	for u := range r.owned {
		us = append(us, u)
	}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, u := range us {
		wg.Add(1)
		go func() { defer wg.Done(); r.stopUnit(u, true) }()
	}
	wg.Wait()
	r.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := r.cfg.Store.Client()
	for _, p := range r.projs {
		heartbeatScript.Exec(ctx, c, []string{r.keys.Projection(p.ID(), "workers")},
			[]string{r.cfg.WorkerID, "0", "leave"})
	}
}

// idleTimeout is how long a worker's transaction may sit idle holding the
// checkpoint lock before PostgreSQL ends it: twice the lease TTL, by which
// time the partition has another owner anyway.
func (r *Runner) idleTimeout() string {
	return strconv.FormatInt((2 * r.cfg.LeaseTTL).Milliseconds(), 10)
}

// lockTimeout bounds a takeover's wait for the previous owner's lock.
func (r *Runner) lockTimeout() string {
	return strconv.FormatInt((3 * r.cfg.LeaseTTL).Milliseconds(), 10)
}

func layoutOf(s *eventstore.Store) keys.Layout { return keys.Layout{NS: s.Namespace()} }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
