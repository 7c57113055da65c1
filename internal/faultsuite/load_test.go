package faultsuite

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/aggregate"
	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/faultenv"
)

// load is a set of writer goroutines started by startWriters or
// startRepoWriters; halt stops them and waits for them.
type load struct {
	w       *world
	opts    loadOptions
	stop    chan struct{}
	stopped atomic.Bool
	wg      sync.WaitGroup
	errs    errorTally
	acked   atomic.Int64 // acknowledged appends (or updates)
	lastAck atomic.Int64 // UnixNano of the last acknowledgement
	began   time.Time
	gaveUp  atomic.Int64 // repository updates that returned an error
	store   atomic.Pointer[eventstore.Store]
	repo    atomic.Pointer[aggregate.Repository[*account]]
	vers    []map[string]uint64 // per raw writer, its aggregates' versions when it stopped
	gate    sync.RWMutex        // held for reading by each repository update; quiesce takes it
}

// quiesce waits for the repository updates in flight and holds the next
// ones until resume.
func (l *load) quiesce() { l.gate.Lock() }

func (l *load) resume() { l.gate.Unlock() }

type loadOptions struct {
	// Writers is the number of goroutines. Zero: 8.
	Writers int
	// Timeout bounds each append (a context deadline), so that callers
	// see timeouts. Zero: none beyond the test's.
	Timeout time.Duration
	// Pace is the pause between one goroutine's appends. Zero: 2ms.
	Pace time.Duration
	// Seed makes the choice of aggregates and batch sizes repeatable.
	Seed uint64
	// After, a halted load of as many raw writers, hands its writers'
	// versions on, so that the new ones do not start with conflicts.
	After *load
}

func (o loadOptions) withDefaults() loadOptions {
	if o.Writers == 0 {
		o.Writers = 8
	}
	if o.Pace == 0 {
		o.Pace = 2 * time.Millisecond
	}
	return o
}

// pendingAppend is an append a writer sends until it knows its outcome.
type pendingAppend struct {
	agg      string
	expected eventstore.Expected
	events   []eventstore.EventData
	unknown  bool // an earlier try had an unknown outcome
}

// startWriters starts goroutines appending through History.Append. Each
// owns every Writers-th aggregate, so it knows their versions and appends
// 1–3 events with Exact (NoStream for a new aggregate). An append whose
// outcome is unknown is sent again with the same event IDs and expected
// version until it is acknowledged or refused (a conflict then means it
// did not land at that version, or Redis lost it).
func (w *world) startWriters(store *eventstore.Store, opts loadOptions) *load {
	l := &load{w: w, opts: opts.withDefaults(), stop: make(chan struct{}), began: time.Now()}
	l.store.Store(store)
	l.vers = make([]map[string]uint64, l.opts.Writers)
	for i := range l.vers {
		l.vers[i] = map[string]uint64{}
		if a := l.opts.After; a != nil && i < len(a.vers) {
			a.halt()
			maps.Copy(l.vers[i], a.vers[i])
		}
	}
	for i := range l.opts.Writers {
		l.wg.Go(func() { l.rawWriter(i) })
	}
	w.t.Cleanup(l.halt)
	return l
}

func (l *load) rawWriter(i int) {
	rng := rand.New(rand.NewPCG(l.opts.Seed, uint64(i)))
	var own []string
	for a := i; a < aggregates; a += l.opts.Writers {
		own = append(own, aggID(a))
	}
	ver := l.vers[i] // this goroutine's alone until halt returns
	var pend *pendingAppend
	try := func(p *pendingAppend) (resolved bool) {
		ctx, cancel := l.opCtx()
		res, err := l.w.h.Append(ctx, l.store.Load(), stream(p.agg), p.expected, p.events...)
		cancel()
		l.errs.add(err)
		var ce *eventstore.ConflictError
		switch {
		case err == nil:
			ver[p.agg] = res.LastVersion
			l.acked.Add(1)
			l.lastAck.Store(time.Now().UnixNano())
			return true
		case errors.As(err, &ce):
			ver[p.agg] = ce.Actual
			return true
		case errors.Is(err, eventstore.ErrDataLoss):
			return true
		case faultenv.Classify(err) == faultenv.Unknown:
			p.unknown = true
			return false
		}
		// Refused or unavailable: nothing written by this try; an earlier
		// one may still have landed.
		return !p.unknown
	}
	for {
		select {
		case <-l.stop:
			// Learn the outcome of what is still open.
			deadline := time.Now().Add(10 * time.Second)
			for pend != nil && time.Now().Before(deadline) && l.w.ctx.Err() == nil {
				if try(pend) {
					pend = nil
				} else {
					time.Sleep(20 * time.Millisecond) // pace the retries
				}
			}
			return
		default:
		}
		if pend == nil {
			agg := own[rng.IntN(len(own))]
			events := make([]eventstore.EventData, 1+rng.IntN(3))
			for j := range events {
				events[j] = eventstore.EventData{ID: uuid.Must(uuid.NewV7()), Type: "Added", Data: payload(fmt.Sprintf("w%d", i))}
			}
			pend = &pendingAppend{agg: agg, expected: eventstore.Exact(ver[agg]), events: events}
		}
		if try(pend) {
			pend = nil
		}
		l.pace()
	}
}

// opCtx is the context of one append.
func (l *load) opCtx() (context.Context, context.CancelFunc) {
	if l.opts.Timeout > 0 {
		return context.WithTimeout(l.w.ctx, l.opts.Timeout)
	}
	return context.WithCancel(l.w.ctx)
}

// pace waits between two appends of one goroutine, or until halt.
func (l *load) pace() {
	t := time.NewTimer(l.opts.Pace)
	defer t.Stop()
	select {
	case <-l.stop:
	case <-t.C:
	}
}

// halt stops the writers and waits for them. It may be called again.
func (l *load) halt() {
	if !l.stopped.Swap(true) {
		close(l.stop)
	}
	l.wg.Wait()
}

// sinceLastAck is how long ago the last append was acknowledged.
func (l *load) sinceLastAck() time.Duration {
	n := l.lastAck.Load()
	if n == 0 {
		return time.Hour
	}
	return time.Since(time.Unix(0, n))
}

// waitAcked waits until n more appends than now are acknowledged.
func (l *load) waitAcked(n int64, d time.Duration) {
	l.w.t.Helper()
	target := l.acked.Load() + n
	l.w.waitFor(d, fmt.Sprintf("%d acknowledged appends", n), func() bool { return l.acked.Load() >= target })
}

// runFor waits until the load has run for at least d.
func (l *load) runFor(d time.Duration) {
	l.w.t.Helper()
	l.w.waitFor(d+30*time.Second, fmt.Sprintf("the load to run for %v", d), func() bool { return time.Since(l.began) >= d })
}

// account is the aggregate the repository writers update: it counts its
// events.
type account struct {
	aggregate.Root
	events int
}

// added is the one event type (stored as "Added", the raw writers' type).
type added struct{ Pad string }

func (a *account) Apply(e any) {
	if _, ok := e.(added); ok {
		a.events++
	}
}

func newRepo(store *eventstore.Store) *aggregate.Repository[*account] {
	repo, err := aggregate.NewRepository(store, aggregate.Config[*account]{
		Category: category,
		New:      func() *account { return new(account) },
		Events:   []aggregate.EventType{aggregate.Event[added]("Added")},
	})
	if err != nil {
		panic(err) // a static configuration
	}
	return repo
}

// startRepoWriters starts goroutines that run aggregate.Repository.Update
// on random aggregates r000…r255 (shared between them: conflicts are
// Update's to retry), each recording one event. Each update carries an operation ID
// in its events' metadata ("op"), by which the opRecorder finds them in
// the log.
func (w *world) startRepoWriters(store *eventstore.Store, opts loadOptions) *load {
	l := &load{w: w, opts: opts.withDefaults(), stop: make(chan struct{}), began: time.Now()}
	l.store.Store(store)
	l.repo.Store(newRepo(store))
	for i := range l.opts.Writers {
		l.wg.Go(func() { l.repoWriter(i) })
	}
	w.t.Cleanup(l.halt)
	return l
}

func (l *load) repoWriter(i int) {
	rng := rand.New(rand.NewPCG(l.opts.Seed, uint64(i)))
	pad := payload(fmt.Sprintf("r%d", i))
	ev := added{Pad: string(pad[8 : len(pad)-2])}
	for {
		select {
		case <-l.stop:
			return
		default:
		}
		agg := fmt.Sprintf("r%03d", rng.IntN(aggregates)) // not the raw writers' aggregates
		l.gate.RLock()
		id := uuid.Must(uuid.NewV7()).String()
		ctx, cancel := l.opCtx()
		ctx = aggregate.WithMetadata(ctx, "op", id)
		o := op{id: id, agg: agg, start: time.Now()}
		a, err := l.repo.Load().Update(ctx, agg, func(a *account) error {
			a.Record(ev)
			return nil
		})
		cancel()
		o.end, o.err, o.outcome = time.Now(), err, faultenv.Classify(err)
		if err == nil {
			o.version = a.Version()
			l.acked.Add(1)
			l.lastAck.Store(o.end.UnixNano())
		} else {
			l.gaveUp.Add(1)
			l.errs.add(err)
		}
		l.w.ops.record(o)
		l.gate.RUnlock()
		l.pace()
	}
}

// op is one repository update as its writer saw it.
type op struct {
	id         string
	agg        string
	outcome    faultenv.Outcome
	version    uint64 // the aggregate's version after the update, when acknowledged
	err        error
	start, end time.Time
}

// opRecorder keeps the repository updates of a scenario. Repository
// assigns event IDs itself, so the updates are traced by the operation
// ID in their metadata, and resolve turns them into faultenv.Attempts.
type opRecorder struct {
	mu       sync.Mutex
	ops      []op
	standIns map[uuid.UUID]string // event ID standing in for an operation the log does not hold
	resolved bool
}

func (r *opRecorder) record(o op) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, o)
}

func (r *opRecorder) snapshot() []op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]op(nil), r.ops...)
}

// opOf returns the operation a stand-in event ID names, or "".
func (r *opRecorder) opOf(id uuid.UUID) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.standIns[id]
}

// resolve finds every recorded update's event in the log (by its
// operation ID) and records it in h as an Attempt: acknowledged ones with
// the version Update returned, so that History.Check compares it with
// where the log holds it. An update the log does not hold gets a fresh
// event ID standing in for its event (lost, if it was acknowledged).
// It returns the updates the log holds more than one event of (a decision
// applied twice), which History.Check cannot see. Run it once, after the
// writers stopped.
func (r *opRecorder) resolve(ctx context.Context, store *eventstore.Store, h *faultenv.History) (int, error) {
	ops := r.snapshot()
	if len(ops) == 0 {
		return 0, nil
	}
	r.mu.Lock()
	if r.resolved {
		r.mu.Unlock()
		return 0, errors.New("opRecorder: resolved twice")
	}
	r.resolved = true
	r.standIns = map[uuid.UUID]string{}
	r.mu.Unlock()
	byOp := map[string][]eventstore.Event{}
	for ev, err := range store.ReadCategory(ctx, category, eventstore.MinPosition, eventstore.MaxPosition) {
		if err != nil {
			return 0, err
		}
		if o := ev.Metadata["op"]; o != "" {
			byOp[o] = append(byOp[o], ev)
		}
	}
	dups := 0
	for _, o := range ops {
		evs := byOp[o.id]
		distinct := map[uuid.UUID]bool{}
		for _, ev := range evs {
			distinct[ev.ID] = true
		}
		dups += max(0, len(distinct)-1)
		a := faultenv.Attempt{Stream: stream(o.agg), Outcome: o.outcome, Err: o.err, Start: o.start, End: o.end}
		var pos eventstore.Position
		if len(evs) > 0 {
			a.EventIDs, pos = []uuid.UUID{evs[0].ID}, evs[0].Position
		} else {
			id := uuid.New()
			a.EventIDs = []uuid.UUID{id}
			r.mu.Lock()
			r.standIns[id] = o.id
			r.mu.Unlock()
		}
		if o.outcome == faultenv.Acked {
			a.Expected = eventstore.Exact(o.version - 1)
			a.Result = eventstore.AppendResult{FirstVersion: o.version, LastVersion: o.version,
				Positions: []eventstore.Position{pos}, EventIDs: a.EventIDs, Partition: store.Partition(a.Stream)}
		}
		h.Record(a)
	}
	return dups, nil
}

// requireNoGiveUps asserts that no repository update returned an error.
func (l *load) requireNoGiveUps() {
	l.w.t.Helper()
	require.Zero(l.w.t, l.gaveUp.Load(), "repository updates gave up: %s", &l.errs)
}
