package eventstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Concurrent appends to one partition share a script call (group commit):
// an append that finds fewer than maxInFlight calls of its partition in
// flight and none waiting sends its own at once, with its own context,
// exactly as if it were alone; appends that arrive otherwise wait and go
// together in the next call that frees, each with its own expected version, checked and applied or
// refused on its own (append.lua). What a call costs Redis beyond its
// appends (the script call, the partition meta check, the reply) is paid
// once per call instead of once per append, and so is a round trip.
//
// Limits of one shared call: the appends that were waiting, in arrival
// order, up to maxBatchAppends appends, maxBatchEvents events and
// maxBatchBytes bytes (an append larger than that goes alone).
const (
	maxBatchAppends = 64
	maxBatchEvents  = 512
	maxBatchBytes   = 1 << 20
)

// maxInFlight is how many calls of one partition may be in flight at
// once; appends beyond wait and share the next call. With 1, appends of
// 16 callers over 8 partitions waited for each other more than they
// saved (docs/performance.md); 2 keeps those at about what they cost
// alone and still shares calls under heavier load.
const maxInFlight = 2

// pendingAppend is one append waiting for its turn in a shared call.
type pendingAppend struct {
	ctx    context.Context
	index  string   // its aggregate index key
	ctl    string   // its control (append.lua)
	create bool     // it may create the partition meta (it checked the identity)
	args   []string // header and data of each event
	size   int      // bytes of args

	done  chan struct{} // closed when reply or err is set
	reply string        // its line of the script's reply
	err   error
}

// appendGroup is the state of one partition (log key and expected meta).
type appendGroup struct {
	key, log, meta, metaValue string
	inflight                  int // calls in flight (at most maxInFlight)
	queue                     []*pendingAppend
}

// done ends one of g's calls in flight, with a.mu held; an idle group is
// forgotten.
func (g *appendGroup) done(a *appender) {
	if g.inflight--; g.inflight == 0 && len(g.queue) == 0 {
		delete(a.groups, g.key)
	}
}

// appender coalesces a store's concurrent appends per partition.
type appender struct {
	mu     sync.Mutex
	groups map[string]*appendGroup
	calls  atomic.Uint64 // script calls sent
}

// errNotSent: a waiting append whose context ended before its call was
// sent. Nothing of it reached Redis.
type errNotSent struct{ err error }

func (e errNotSent) Error() string {
	return "not sent (it was waiting for the partition's call in flight): " + e.err.Error()
}
func (e errNotSent) Unwrap() error { return e.err }

// appendOnce sends one append, alone or with the appends of the same
// partition that wait with it, and returns its line of the reply ("3 …"
// for a call refused as a whole).
func (s *Store) appendOnce(ctx context.Context, log, meta, metaValue string, p *pendingAppend) (string, error) {
	key := log + "\x00" + metaValue
	a := &s.appends
	a.mu.Lock()
	if a.groups == nil {
		a.groups = map[string]*appendGroup{}
	}
	g := a.groups[key]
	if g == nil {
		g = &appendGroup{key: key, log: log, meta: meta, metaValue: metaValue}
		a.groups[key] = g
	}
	if g.inflight < maxInFlight && len(g.queue) == 0 {
		g.inflight++
		a.mu.Unlock()
		s.sendAppends(ctx, g, []*pendingAppend{p})
		s.releaseGroup(g)
		return p.reply, p.err
	}
	p.ctx, p.done = ctx, make(chan struct{})
	g.queue = append(g.queue, p)
	a.mu.Unlock()
	select {
	case <-p.done:
		return p.reply, p.err
	case <-ctx.Done():
	}
	a.mu.Lock()
	for i, q := range g.queue {
		if q == p {
			g.queue = append(g.queue[:i], g.queue[i+1:]...)
			a.mu.Unlock()
			return "", errNotSent{ctx.Err()}
		}
	}
	a.mu.Unlock()
	select {
	case <-p.done: // answered, or dropped unsent, meanwhile
		return p.reply, p.err
	default:
	}
	// It is in a call in flight: its outcome is unknown to this caller.
	return "", ctx.Err()
}

// releaseGroup ends a call of g: the appends that queued up meanwhile go
// in the next call, sent by a goroutine of its own (their callers wait
// for it, each with its own context), else the partition is idle.
func (s *Store) releaseGroup(g *appendGroup) {
	a := &s.appends
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(g.queue) == 0 {
		g.done(a)
		return
	}
	go s.flushGroup(g)
}

// flushGroup sends the queued appends of g, a call at a time, until none
// is left.
func (s *Store) flushGroup(g *appendGroup) {
	a := &s.appends
	for {
		a.mu.Lock()
		var batch []*pendingAppend
		events, bytes, n := 0, 0, 0
		for _, p := range g.queue {
			if p.ctx.Err() != nil {
				p.err = errNotSent{p.ctx.Err()}
				close(p.done)
				n++
				continue
			}
			k := len(p.args) / 2
			if len(batch) > 0 && (len(batch) == maxBatchAppends || events+k > maxBatchEvents || bytes+p.size > maxBatchBytes) {
				break
			}
			batch = append(batch, p)
			events, bytes, n = events+k, bytes+p.size, n+1
		}
		g.queue = append(g.queue[:0], g.queue[n:]...)
		if len(batch) == 0 {
			g.done(a)
			a.mu.Unlock()
			return
		}
		a.mu.Unlock()
		ctx, cancel := s.batchContext(batch)
		s.sendAppends(ctx, g, batch)
		cancel()
		for _, p := range batch {
			close(p.done)
		}
	}
}

// batchContext is the context of a shared call: it ends at the latest
// deadline of its appends (each caller stops waiting at its own), and
// within the store's budget for a Redis that does not answer.
func (s *Store) batchContext(batch []*pendingAppend) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, p := range batch {
		d, ok := p.ctx.Deadline()
		if !ok {
			latest = time.Time{}
			break
		}
		if d.After(latest) {
			latest = d
		}
	}
	if s.cfg.RetryUnavailable > 0 {
		if budget := time.Now().Add(s.cfg.RetryUnavailable); latest.IsZero() || budget.Before(latest) {
			latest = budget
		}
	}
	if latest.IsZero() {
		return context.WithCancel(context.Background())
	}
	return context.WithDeadline(context.Background(), latest)
}

// sendAppends runs the append script once for batch and gives each append
// its line of the reply, or the call's error.
func (s *Store) sendAppends(ctx context.Context, g *appendGroup, batch []*pendingAppend) {
	keys := make([]string, 2, 2+len(batch))
	keys[0], keys[1] = g.log, g.meta
	n := 2
	for _, p := range batch {
		n += 2 + len(p.args)
	}
	args := make([]string, 2, n)
	args[0], args[1] = g.metaValue, "-"
	for _, p := range batch {
		if p.create {
			args[1] = "C"
		}
		keys = append(keys, p.index)
		args = append(args, p.ctl, strconv.Itoa(len(p.args)/2))
		args = append(args, p.args...)
	}
	s.appends.calls.Add(1)
	reply, err := appendScript.Exec(ctx, s.client, keys, args).ToString()
	if err == nil && !strings.HasPrefix(reply, "3 ") {
		lines := strings.Split(reply, "\n")
		if len(lines) != len(batch) {
			err = fmt.Errorf("unexpected script reply %q: %d lines for %d appends", reply, len(lines), len(batch))
		} else {
			for i, p := range batch {
				p.reply, p.err = lines[i], nil
			}
			return
		}
	}
	for _, p := range batch {
		p.reply, p.err = reply, err
	}
}
