package faultenv

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/redsource/redsource/eventstore"
)

// Outcome is what a writer learned from an append.
type Outcome int

const (
	// Acked: the append's result came back; its events must be in the log.
	Acked Outcome = iota + 1
	// Failed: refused for certain, nothing written: a conflict, bad input,
	// or an error reply from Redis (the script did not run, or undid its
	// writes before it returned).
	Failed
	// Unknown: no answer (a timeout, a lost connection, a dropped reply):
	// the events may or may not be in the log.
	Unknown
)

func (o Outcome) String() string {
	switch o {
	case Acked:
		return "acked"
	case Failed:
		return "failed"
	case Unknown:
		return "unknown"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Classify returns the outcome an append's error means: nil is Acked; an
// error eventstore classifies as an unknown outcome (a timeout, a reset or
// dropped connection: ErrReplyDropped) is Unknown; anything else (a
// refusal, bad input, a conflict, Redis unavailable, a data loss) is
// Failed: nothing was written.
func Classify(err error) Outcome {
	switch {
	case err == nil:
		return Acked
	case errors.Is(eventstore.Classify(err), eventstore.ErrUnknownOutcome):
		return Unknown
	}
	return Failed
}

// Attempt is one append as its writer saw it.
type Attempt struct {
	Stream   eventstore.StreamID
	Expected eventstore.Expected
	EventIDs []uuid.UUID // the events sent, in order
	Outcome  Outcome
	Result   eventstore.AppendResult // when Acked
	Err      error
	Start    time.Time
	End      time.Time
}

// History collects the append attempts of a scenario's writers, for Check.
// It is safe for concurrent use; the zero value is empty and ready.
type History struct {
	mu       sync.Mutex
	attempts []Attempt
}

// Record adds an attempt.
func (h *History) Record(a Attempt) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.attempts = append(h.attempts, a)
}

// Append appends through store and records the attempt, its outcome from
// Classify. Events without an ID get a UUIDv7 first (the caller's slice is
// not changed), so even an append whose outcome is unknown names its
// events; to retry one, send the same IDs again (Attempt.EventIDs).
func (h *History) Append(ctx context.Context, store *eventstore.Store, stream eventstore.StreamID, expected eventstore.Expected, events ...eventstore.EventData) (eventstore.AppendResult, error) {
	events = slices.Clone(events)
	ids := make([]uuid.UUID, len(events))
	for i := range events {
		if events[i].ID == uuid.Nil {
			events[i].ID = uuid.Must(uuid.NewV7())
		}
		ids[i] = events[i].ID
	}
	a := Attempt{Stream: stream, Expected: expected, EventIDs: ids, Start: time.Now()}
	res, err := store.Append(ctx, stream, expected, events...)
	a.End, a.Err, a.Outcome = time.Now(), err, Classify(err)
	if err == nil {
		a.Result = res
	}
	h.Record(a)
	return res, err
}

// Attempts returns a copy of what was recorded so far.
func (h *History) Attempts() []Attempt {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.attempts)
}

// EventRef names one event in the log.
type EventRef struct {
	Stream   eventstore.StreamID
	Version  uint64
	Position eventstore.Position
	ID       uuid.UUID
}

func (e EventRef) String() string {
	return fmt.Sprintf("%s v%d at %s (event %s)", e.Stream, e.Version, e.Position, e.ID)
}

// Report is what Check found. Operations counts append attempts; the
// other counts are events unless said otherwise.
type Report struct {
	Operations    int // append attempts recorded
	Acknowledged  int // distinct events acknowledged (by any attempt)
	Failed        int // events of appends refused for certain (and never acknowledged)
	Unknown       int // events of appends with an unknown outcome, never acknowledged
	UnknownStored int // of the Unknown ones, those the log holds
	Lost          int // acknowledged events the log does not hold
	Duplicated    int // extra copies: an event the log holds n times counts n-1
	Phantom       int // events of refused appends that the log holds
	Partial       int // attempts the log holds some, but not all, events of
	Misplaced     int // acknowledged events held at another version or position than acknowledged
	Gaps          int // aggregates whose versions are not 1..n, or that Store.Read cannot read back in full
	Detected      int // lost events a typed error reported (see MarkDetected)
	LostEvents    []EventRef
	Details       []string // one line per finding, the first 50
}

const maxDetails = 50

func (r *Report) detail(format string, args ...any) {
	if len(r.Details) < maxDetails {
		r.Details = append(r.Details, fmt.Sprintf(format, args...))
	} else if len(r.Details) == maxDetails {
		r.Details = append(r.Details, "...")
	}
}

// MarkDetected records that n of the lost events were reported by a typed
// error (ErrLogRegressed, say); Detected never exceeds Lost.
func (r *Report) MarkDetected(n int) {
	r.Detected = min(r.Lost, r.Detected+n)
}

// String sums the report up in one line.
func (r *Report) String() string {
	return fmt.Sprintf("ops=%d acked=%d lost=%d duplicated=%d detected=%d unknown=%d (stored %d) failed=%d phantom=%d partial=%d misplaced=%d gaps=%d",
		r.Operations, r.Acknowledged, r.Lost, r.Duplicated, r.Detected, r.Unknown, r.UnknownStored, r.Failed,
		r.Phantom, r.Partial, r.Misplaced, r.Gaps)
}

// Err is nil when the log kept every promise: no undetected loss, no
// duplicate, no phantom or partial append, nothing misplaced, no gap.
// Otherwise it says what, with the first findings.
func (r *Report) Err() error {
	if r.Lost <= r.Detected && r.Duplicated == 0 && r.Phantom == 0 && r.Partial == 0 && r.Misplaced == 0 && r.Gaps == 0 {
		return nil
	}
	d := r.Details
	if len(d) > 10 {
		d = append(d[:10:10], "...")
	}
	return fmt.Errorf("faultenv: history check: %s\n%s", r, strings.Join(d, "\n"))
}

// Check compares the recorded attempts with what store's log holds, read
// through the public API: Store.ReadCategory for every category the
// attempts touched (copies of each event, versions per aggregate in log
// order) and Store.Read for every aggregate they touched (the index must
// give the same events). Findings go into the Report; an error means the
// log could not be read (a corrupt entry included: the read stops there).
// Run it once the writers have stopped and the servers are up.
func (h *History) Check(ctx context.Context, store *eventstore.Store) (*Report, error) {
	attempts := h.Attempts()
	r := &Report{Operations: len(attempts)}

	acked := map[uuid.UUID]EventRef{}
	streams := map[eventstore.StreamID]bool{}
	categories := map[string]bool{}
	for _, a := range attempts {
		streams[a.Stream] = true
		categories[a.Stream.Category] = true
		if a.Outcome != Acked {
			continue
		}
		for i, id := range a.Result.EventIDs {
			ref := EventRef{Stream: a.Stream, Version: a.Result.FirstVersion + uint64(i), ID: id}
			if i < len(a.Result.Positions) {
				ref.Position = a.Result.Positions[i]
			}
			if prev, ok := acked[id]; ok && (prev.Version != ref.Version || prev.Position != ref.Position) {
				r.detail("acknowledged twice at different places: %s and %s", prev, ref)
				r.Misplaced++
			}
			acked[id] = ref
		}
	}
	r.Acknowledged = len(acked)

	// The log, category by category.
	copies := map[uuid.UUID]int{}
	stored := map[uuid.UUID]EventRef{}
	versions := map[eventstore.StreamID][]uint64{}
	inLog := map[eventstore.StreamID][]uuid.UUID{}
	for _, cat := range sortedKeys(categories) {
		for ev, err := range store.ReadCategory(ctx, cat, eventstore.MinPosition, eventstore.MaxPosition) {
			if err != nil {
				return nil, fmt.Errorf("faultenv: history check: read category %s: %w", cat, err)
			}
			copies[ev.ID]++
			if copies[ev.ID] == 1 {
				stored[ev.ID] = EventRef{Stream: ev.Stream, Version: ev.Version, Position: ev.Position, ID: ev.ID}
			}
			versions[ev.Stream] = append(versions[ev.Stream], ev.Version)
			inLog[ev.Stream] = append(inLog[ev.Stream], ev.ID)
		}
	}
	gappy := map[eventstore.StreamID]bool{}
	for _, st := range sortedKeys(versions) {
		for i, v := range versions[st] {
			if v != uint64(i+1) {
				gappy[st] = true
				r.detail("gap: %s holds versions %v (position %d is version %d)", st, head(versions[st], 10), i+1, v)
				break
			}
		}
	}
	// The index, aggregate by aggregate.
	for _, st := range sortedKeys(streams) {
		var ids []uuid.UUID
		var readErr error
		for ev, err := range store.Read(ctx, st, 0) {
			if err != nil {
				readErr = err
				break
			}
			ids = append(ids, ev.ID)
		}
		switch {
		case readErr != nil && (errors.Is(readErr, eventstore.ErrCorruptEntry) || errors.Is(readErr, eventstore.ErrMissingEntry)):
			gappy[st] = true
			r.detail("gap: reading %s back stops after %d events: %v", st, len(ids), readErr)
		case readErr != nil:
			return nil, fmt.Errorf("faultenv: history check: read %s: %w", st, readErr)
		case !slices.Equal(ids, inLog[st]):
			gappy[st] = true
			r.detail("gap: %s reads back %d events, its partition log holds %d of it (or others)", st, len(ids), len(inLog[st]))
		}
	}
	r.Gaps = len(gappy)

	for _, id := range sortedKeys(acked) {
		ref := acked[id]
		got, ok := stored[id]
		switch {
		case !ok:
			r.Lost++
			r.LostEvents = append(r.LostEvents, ref)
			r.detail("lost: %s", ref)
		case got.Stream != ref.Stream || got.Version != ref.Version || got.Position != ref.Position:
			r.Misplaced++
			r.detail("misplaced: acknowledged as %s, stored as %s", ref, got)
		}
	}
	slices.SortFunc(r.LostEvents, func(a, b EventRef) int {
		return cmp.Or(cmp.Compare(a.Stream.String(), b.Stream.String()), cmp.Compare(a.Version, b.Version))
	})
	for _, id := range sortedKeys(copies) {
		if n := copies[id]; n > 1 {
			r.Duplicated += n - 1
			r.detail("duplicated: %s stored %d times", stored[id], n)
		}
	}

	failed, unknown := map[uuid.UUID]bool{}, map[uuid.UUID]bool{}
	for _, a := range attempts {
		present := 0
		for _, id := range a.EventIDs {
			if copies[id] > 0 {
				present++
			}
			if _, ok := acked[id]; ok {
				continue
			}
			switch a.Outcome {
			case Failed:
				failed[id] = true
			case Unknown:
				unknown[id] = true
			}
		}
		if present > 0 && present < len(a.EventIDs) {
			r.Partial++
			r.detail("partial: an append of %d events to %s (%s) has %d in the log", len(a.EventIDs), a.Stream, a.Outcome, present)
		}
	}
	for id := range unknown {
		delete(failed, id) // refused once, sent again with an unknown outcome
		r.Unknown++
		if copies[id] > 0 {
			r.UnknownStored++
		}
	}
	for _, id := range sortedKeys(failed) {
		r.Failed++
		if copies[id] > 0 {
			r.Phantom++
			r.detail("phantom: %s was refused for certain, but is stored", stored[id])
		}
	}
	return r, nil
}

func head[T any](s []T, n int) []T { return s[:min(n, len(s))] }

// sortedKeys returns m's keys in a fixed order, so reports read the same
// every run.
func sortedKeys[K comparable, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b K) int { return cmp.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	return keys
}

// FoldEqual compares a read model (got) with what a fold of the log says
// it should hold (want): nil when equal, else an error listing the first
// mismatches, keys in order.
func FoldEqual(want, got map[string]int64) error {
	keys := map[string]bool{}
	for k := range want {
		keys[k] = true
	}
	for k := range got {
		keys[k] = true
	}
	var diffs []string
	n := 0
	for _, k := range sortedKeys(keys) {
		w, inWant := want[k]
		g, inGot := got[k]
		if inWant == inGot && w == g {
			continue
		}
		n++
		if len(diffs) == 10 {
			continue
		}
		switch {
		case !inGot:
			diffs = append(diffs, fmt.Sprintf("%s: want %d, missing", k, w))
		case !inWant:
			diffs = append(diffs, fmt.Sprintf("%s: want nothing, got %d", k, g))
		default:
			diffs = append(diffs, fmt.Sprintf("%s: want %d, got %d", k, w, g))
		}
	}
	if n == 0 {
		return nil
	}
	return fmt.Errorf("faultenv: fold differs on %d of %d keys:\n%s", n, len(keys), strings.Join(diffs, "\n"))
}
