package faultsuite

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/faultenv"
	"github.com/redsource/redsource/internal/testenv"
	"github.com/redsource/redsource/projection"
)

// The shape of every scenario's load: one category of aggregates spread
// over the default eight partitions, events with 300-byte payloads.
const (
	namespace  = "fs"
	category   = "acc"
	partitions = 8
	aggregates = 256
	payloadLen = 300
	projName   = "ledger"
)

// world is one scenario's PostgreSQL schema (toolkit tables and the ledger
// read model), its history of appends, and the things it started.
type world struct {
	t       *testing.T
	ctx     context.Context
	pool    *pgxpool.Pool
	schema  string
	h       faultenv.History
	ledger  *ledger
	ops     opRecorder
	start   time.Time
	logs    *testenv.Buffer // the runners' log, shown when the test fails
	sc      scenario
	result  *Result  // the figures, once report has them
	defects []string // see defect
}

// newWorld sets up a scenario's world; its figures (see report) are
// written to the report file when the test ends, with its outcome.
func newWorld(t *testing.T, sc scenario) *world {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	pool, schema := testenv.Postgres(t)
	w := &world{t: t, ctx: ctx, pool: pool, schema: schema, start: time.Now(), logs: &testenv.Buffer{}, sc: sc}
	t.Cleanup(w.writeResult) // after the cleanups registered below: they run first
	w.ledger = newLedger(t, ctx, pool)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("runner log (last lines):\n%s", lastLines(w.logs.String(), 40))
		}
	})
	return w
}

// client returns a rueidis client for url, closed when the test ends.
func client(t *testing.T, url string, mutate ...func(*rueidis.ClientOption)) rueidis.Client {
	t.Helper()
	opt := testenv.RedisOption(t, url)
	for _, m := range mutate {
		m(&opt)
	}
	c, err := rueidis.NewClient(opt)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// newStore is the scenario's event store over c; mutate changes the
// configuration (RetryUnavailable, Witness).
func newStore(t *testing.T, c rueidis.Client, mutate ...func(*eventstore.Config)) *eventstore.Store {
	t.Helper()
	cfg := eventstore.Config{Namespace: namespace, Partitions: partitions}
	for _, m := range mutate {
		m(&cfg)
	}
	s, err := eventstore.New(c, cfg)
	require.NoError(t, err)
	return s
}

// aggID is the i-th aggregate's ID.
func aggID(i int) string { return fmt.Sprintf("a%03d", i) }

func stream(id string) eventstore.StreamID {
	return eventstore.StreamID{Category: category, ID: id}
}

// payload is an event body of payloadLen bytes, JSON that the aggregate
// repository's Added type decodes.
func payload(tag string) []byte {
	head := `{"Pad":"` + tag
	return []byte(head + strings.Repeat("x", payloadLen-len(head)-2) + `"}`)
}

// runnerConfig is the runner configuration of the suite: short leases and
// checks, so that takeovers and detection happen within a scenario.
func (w *world) runnerConfig(store *eventstore.Store) projection.Config {
	return projection.Config{
		Store: store, DB: w.pool, Schema: w.schema,
		BatchSize: 200, LeaseTTL: 2 * time.Second, Block: 200 * time.Millisecond,
		Backoff: 5 * time.Millisecond, CheckInterval: 200 * time.Millisecond,
		MaxAttempts: 3,
		Logger:      slog.New(slog.NewTextHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
}

// running is a projection runner in a goroutine of the test.
type running struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// runProjector starts a runner of the ledger projection over store. It
// is stopped when the test ends, if still running.
func (w *world) runProjector(store *eventstore.Store) *running {
	w.t.Helper()
	r, err := projection.NewRunner(w.runnerConfig(store), w.ledger.projection())
	require.NoError(w.t, err)
	ctx, cancel := context.WithCancel(w.ctx)
	run := &running{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(run.done)
		run.err = r.Run(ctx)
	}()
	w.t.Cleanup(func() { _ = run.stop(30 * time.Second) })
	return run
}

// stop cancels the runner and returns Run's error, or an error when it
// did not return within d.
func (r *running) stop(d time.Duration) error {
	r.cancel()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-r.done:
		return r.err
	case <-t.C:
		return fmt.Errorf("the runner did not return within %v of its cancel", d)
	}
}

// wait waits up to d for Run to return by itself and reports whether it
// did, with its error.
func (r *running) wait(d time.Duration) (bool, error) {
	select {
	case <-r.done:
		return true, r.err
	default:
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-r.done:
		return true, r.err
	case <-t.C:
		return false, nil
	}
}

// catchUp runs projection.CatchUp for the ledger (the runners share the
// work) and returns its error.
func (w *world) catchUp(store *eventstore.Store) error {
	ctx, cancel := context.WithTimeout(w.ctx, 45*time.Second)
	defer cancel()
	return projection.CatchUp(ctx, w.runnerConfig(store), w.ledger.projection(), projection.RebuildOptions{})
}

// status returns the ledger's partitions as Admin.Status reports them.
func (w *world) status(store *eventstore.Store) []projection.PartitionStatus {
	w.t.Helper()
	st, err := projection.NewAdmin(w.pool, w.schema).Status(w.ctx, store, projName)
	require.NoError(w.t, err)
	return st
}

// stopped returns the partitions Admin.Status reports stopped for reason.
func (w *world) stopped(store *eventstore.Store, reason string) map[int]bool {
	out := map[int]bool{}
	for _, s := range w.status(store) {
		if s.Stopped == reason {
			out[s.Partition] = true
		}
	}
	return out
}

// checkFold asserts that the ledger equals a fold of the log on every
// partition not in skip: per aggregate, the number of events and the last
// version, and the set of events applied.
func (w *world) checkFold(store *eventstore.Store, skip map[int]bool) {
	w.t.Helper()
	want := map[string]int64{}
	inLog := map[string]bool{}
	for ev, err := range store.ReadCategory(w.ctx, category, eventstore.MinPosition, eventstore.MaxPosition) {
		require.NoError(w.t, err)
		if skip[ev.Partition] {
			continue
		}
		want[ev.Stream.ID]++
		inLog[ev.ID.String()] = true
	}
	got := map[string]int64{}
	rows, err := w.pool.Query(w.ctx, "SELECT agg, n, last_version FROM ledger")
	require.NoError(w.t, err)
	for rows.Next() {
		var agg string
		var n, last int64
		require.NoError(w.t, rows.Scan(&agg, &n, &last))
		if skip[store.Partition(stream(agg))] {
			continue
		}
		require.Equal(w.t, n, last, "aggregate %s: the ledger counts %d events up to version %d", agg, n, last)
		got[agg] = n
	}
	require.NoError(w.t, rows.Err())
	require.NoError(w.t, faultenv.FoldEqual(want, got), "read model = fold(log) outside partitions %v", keys(skip))
	applied := w.ledger.appliedEvents(w.t, w.ctx)
	for id, a := range applied {
		if !skip[a.part] {
			require.True(w.t, inLog[id], "event %s (%s v%d) was applied but the log does not hold it", id, a.agg, a.version)
		}
	}
	require.Zero(w.t, w.ledger.violationCount(), "the ledger refused out-of-order events: %v", w.ledger.violationList())
}

// lossAccount sorts a Report's lost events by what detected them.
type lossAccount struct {
	Lost int
	// Detected: lost events the projector had applied, in partitions
	// Admin.Status reports stopped (log_regressed).
	Detected int
	// Unseen: lost events that nothing durable had seen (no checkpoint
	// passed them): allowed to go undetected.
	Unseen int
	// UnseenInStopped: of Unseen, those in a stopped partition (its loss
	// is reported, if not event by event).
	UnseenInStopped int
	// Missed: lost events the projector had applied in a partition that
	// is not stopped. Must be 0.
	Missed int
	// Stopped are the stopped partitions; LostIn the partitions that lost
	// an applied event.
	Stopped, LostIn map[int]bool
	// FalseStops: partitions stopped without having lost anything.
	FalseStops   []int
	MissedEvents []string
	// NamespaceLost: Admin.Status reports the namespace lost; every lost
	// event counts as detected.
	NamespaceLost bool
}

func (a lossAccount) String() string {
	if a.Lost == 0 {
		return "nothing lost"
	}
	if a.NamespaceLost {
		return fmt.Sprintf("lost %d, all detected: Redis no longer holds the namespace (namespace_lost)", a.Lost)
	}
	return fmt.Sprintf("lost %d: %d applied by the projector and detected (partitions %v stopped log_regressed), %d no durable memory had seen (%d of them in stopped partitions), %d missed",
		a.Lost, a.Detected, keys(a.Stopped), a.Unseen, a.UnseenInStopped, a.Missed)
}

// accountLoss classifies rep's lost events with the ledger's record of
// what it applied and the partitions stopped for a regressed log.
func (w *world) accountLoss(store *eventstore.Store, rep *faultenv.Report, stopped map[int]bool) lossAccount {
	w.t.Helper()
	applied := w.ledger.appliedEvents(w.t, w.ctx)
	appliedOps := map[string]bool{}
	for _, a := range applied {
		if a.op != "" {
			appliedOps[a.op] = true
		}
	}
	acc := lossAccount{Lost: rep.Lost, Stopped: stopped, LostIn: map[int]bool{}}
	if w.namespaceLost(store) {
		// Every runner and store that remembers the namespace refuses
		// this Redis: the loss of all of it is reported.
		acc.Detected, acc.NamespaceLost = rep.Lost, true
		return acc
	}
	lostParts := map[int]bool{}
	for _, ev := range rep.LostEvents {
		p := store.Partition(ev.Stream)
		lostParts[p] = true
		_, seen := applied[ev.ID.String()]
		if op := w.ops.opOf(ev.ID); op != "" && appliedOps[op] {
			seen = true
		}
		switch {
		case seen && stopped[p]:
			acc.Detected++
			acc.LostIn[p] = true
		case seen:
			acc.Missed++
			acc.LostIn[p] = true
			if len(acc.MissedEvents) < 10 {
				acc.MissedEvents = append(acc.MissedEvents, fmt.Sprintf("%s (partition %d)", ev, p))
			}
		default:
			acc.Unseen++
			if stopped[p] {
				acc.UnseenInStopped++
			}
		}
	}
	for p := range stopped {
		if !lostParts[p] {
			acc.FalseStops = append(acc.FalseStops, p)
		}
	}
	sort.Ints(acc.FalseStops)
	return acc
}

// namespaceLost reports whether Admin.Status says Redis lost the
// namespace.
func (w *world) namespaceLost(store *eventstore.Store) bool {
	w.t.Helper()
	st, err := projection.NewAdmin(w.pool, w.schema).Status(w.ctx, store, projName)
	if errors.Is(err, eventstore.ErrNamespaceLost) {
		return true
	}
	require.NoError(w.t, err)
	for _, s := range st {
		if s.Stopped == "namespace_lost" {
			return true
		}
	}
	return false
}

// awaitDetection waits until every partition in which the projector had
// applied an event that the log then lost is reported stopped
// (log_regressed) by Admin.Status, and returns the account. It fails the
// test if one is not within 30s, or a partition stopped without a loss.
func (w *world) awaitDetection(store *eventstore.Store, rep *faultenv.Report) lossAccount {
	w.t.Helper()
	var acc lossAccount
	deadline := time.Now().Add(30 * time.Second)
	for {
		acc = w.accountLoss(store, rep, w.stopped(store, "log_regressed"))
		if acc.Missed == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // poll
	}
	require.Zero(w.t, acc.Missed, "lost events the projector had applied, in partitions not stopped: %v", acc.MissedEvents)
	require.Empty(w.t, acc.FalseStops, "partitions stopped although they lost nothing")
	return acc
}

// requireNothingAppliedAfter asserts that in the stopped partitions the
// ledger holds no event first sent after t: a partition that lost events
// it had applied applies nothing more, so nothing is applied over them.
func (w *world) requireNothingAppliedAfter(store *eventstore.Store, stopped map[int]bool, t time.Time) {
	w.t.Helper()
	first := map[string]time.Time{}
	for _, a := range w.h.Attempts() {
		for _, id := range a.EventIDs {
			if s, ok := first[id.String()]; !ok || a.Start.Before(s) {
				first[id.String()] = a.Start
			}
		}
	}
	var bad []string
	for id, a := range w.ledger.appliedEvents(w.t, w.ctx) {
		if stopped[a.part] && first[id].After(t) {
			bad = append(bad, fmt.Sprintf("%s v%d (partition %d, applied %s)", a.agg, a.version, a.part, a.at.Format(time.StampMicro)))
		}
	}
	require.Empty(w.t, bad, "events appended after the fault were applied in a partition that had lost applied events")
}

// appliedSince reports whether the ledger holds an event acknowledged
// after t.
func (w *world) appliedSince(t time.Time) bool {
	w.t.Helper()
	var ids []string
	for _, a := range w.h.Attempts() {
		if a.Outcome == faultenv.Acked && a.End.After(t) {
			for _, id := range a.EventIDs {
				ids = append(ids, id.String())
			}
		}
	}
	if len(ids) == 0 {
		return false
	}
	var n int
	require.NoError(w.t, w.pool.QueryRow(w.ctx, "SELECT count(*) FROM applied WHERE event_id = ANY($1::text[]::uuid[])", ids).Scan(&n))
	return n > 0
}

// requireClean asserts the parts of a Report that no fault excuses: no
// duplicate, no phantom, no partial append, nothing misplaced, no gap.
func requireClean(t *testing.T, rep *faultenv.Report) {
	t.Helper()
	msg := fmt.Sprintf("%s\n%s", rep, strings.Join(rep.Details, "\n"))
	require.Zero(t, rep.Duplicated, "duplicated: %s", msg)
	require.Zero(t, rep.Phantom, "phantom: %s", msg)
	require.Zero(t, rep.Partial, "partial: %s", msg)
	require.Zero(t, rep.Misplaced, "misplaced: %s", msg)
	require.Zero(t, rep.Gaps, "gaps: %s", msg)
}

// check runs History.Check (repository operations included) against
// store once the writers have stopped.
func (w *world) check(store *eventstore.Store) *faultenv.Report {
	w.t.Helper()
	dups, err := w.ops.resolve(w.ctx, store, &w.h)
	require.NoError(w.t, err)
	rep, err := w.h.Check(w.ctx, store)
	require.NoError(w.t, err)
	rep.Duplicated += dups
	return rep
}

// waitFor polls cond every 20ms until it holds or d has passed.
func (w *world) waitFor(d time.Duration, what string, cond func() bool) {
	w.t.Helper()
	require.Eventually(w.t, cond, d, 20*time.Millisecond, "waiting for %s", what)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func keys[V any](m map[int]V) []int {
	out := make([]int, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}

// errorTally counts errors by a short description, for reports.
type errorTally struct {
	mu       sync.Mutex
	n        map[string]int
	examples map[string]string // the first error of each kind
}

func (e *errorTally) add(err error) {
	if err == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == nil {
		e.n, e.examples = map[string]int{}, map[string]string{}
	}
	kind := describe(err)
	e.n[kind]++
	if _, ok := e.examples[kind]; !ok {
		e.examples[kind] = err.Error()
	}
}

// example returns the first error of a kind.
func (e *errorTally) example(kind string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.examples[kind]
}

// seen describes what writers saw, for notes.
func (e *errorTally) seen() string {
	if s := e.String(); s != "" {
		return s
	}
	return "no error"
}

func (e *errorTally) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	ks := make([]string, 0, len(e.n))
	for k := range e.n {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	parts := make([]string, len(ks))
	for i, k := range ks {
		parts[i] = fmt.Sprintf("%s ×%d", k, e.n[k])
	}
	return strings.Join(parts, ", ")
}

func (e *errorTally) count(what string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n[what]
}

// describe names an append error by what it means.
func describe(err error) string {
	var ce *eventstore.ConflictError
	var ne *eventstore.NamespaceError
	switch {
	case errors.As(err, &ne):
		return "namespace lost"
	case errors.Is(err, eventstore.ErrDataLoss):
		return "data loss"
	case errors.As(err, &ce):
		return "conflict"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	switch eventstore.Classify(err) {
	case eventstore.ErrUnavailable:
		return "unavailable"
	case eventstore.ErrUnknownOutcome:
		return "unknown outcome"
	case eventstore.ErrRefused:
		return "refused"
	}
	return "other"
}

func splitLines(s string) []string {
	return strings.Split(strings.ReplaceAll(s, "\r", ""), "\n")
}
