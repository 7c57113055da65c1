package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"
)

// benchSample is one measurement of one round. Field names are a contract
// (docs/cli.md, "bench"); a null is a figure that does not apply or could
// not be read.
type benchSample struct {
	Events       int64   `json:"events"`
	Calls        int64   `json:"calls"`
	Seconds      float64 `json:"seconds"`
	EventsPerSec float64 `json:"events_per_sec"`
	// Ratio is EventsPerSec over the ceiling's in the same round (the
	// lower one's where there are two).
	Ratio                  *float64      `json:"ratio"`
	RedisCPUMicrosPerEvent *float64      `json:"redis_cpu_us_per_event"`
	MemoryBytesPerEvent    *float64      `json:"memory_bytes_per_event"`
	Latency                *benchLatency `json:"latency_us"`
}

// benchLatency holds per-call latency percentiles in microseconds.
type benchLatency struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// Kinds of result.
const (
	kindCeiling   = "ceiling"
	kindRedsource = "redsource"
	kindPeer      = "peer"
)

// benchResult is one measured path at one shape, over the rounds.
type benchResult struct {
	ID              string   `json:"id"`
	Section         string   `json:"section"`
	Path            string   `json:"path"`
	Kind            string   `json:"kind"`
	Label           string   `json:"label"`
	EventsPerCall   int      `json:"events_per_call"`
	Callers         int      `json:"callers"`
	AggregateEvents int      `json:"aggregate_events,omitempty"`
	Ceilings        []string `json:"ceilings"` // IDs; per round the lowest one counts

	Summary benchSummary  `json:"summary"`
	Rounds  []benchSample `json:"rounds"`
	// ceilingEPS is the ceiling's events/s per round (its lowest).
	ceilingEPS []float64
}

// benchStat is a figure over the rounds.
type benchStat struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

type benchSummary struct {
	EventsPerSec           benchStat          `json:"events_per_sec"`
	CeilingEventsPerSec    *benchStat         `json:"ceiling_events_per_sec"`
	Ratio                  *benchStat         `json:"ratio"`
	RedisCPUMicrosPerEvent *benchStat         `json:"redis_cpu_us_per_event"`
	MemoryBytesPerEvent    *benchStat         `json:"memory_bytes_per_event"`
	Latency                *benchLatencyStats `json:"latency_us"`
}

type benchLatencyStats struct {
	P50 benchStat `json:"p50"`
	P90 benchStat `json:"p90"`
	P99 benchStat `json:"p99"`
	Max benchStat `json:"max"`
}

func statOf(v []float64) benchStat {
	s := slices.Clone(v)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return benchStat{Median: med, Min: s[0], Max: s[len(s)-1]}
}

// optStat is statOf over the rounds that have the figure; nil when none
// has.
func optStat(rounds []benchSample, f func(benchSample) *float64) *benchStat {
	var v []float64
	for _, r := range rounds {
		if p := f(r); p != nil {
			v = append(v, *p)
		}
	}
	if len(v) == 0 {
		return nil
	}
	s := statOf(v)
	return &s
}

// result registers a result; id is path + its shape.
func (b *bench) result(section, path, kind, label string, k, callers, aggEvents int, ceilings ...string) *benchResult {
	id := path + "/events=" + strconv.Itoa(k) + "/callers=" + strconv.Itoa(callers)
	if aggEvents > 0 {
		id = path + "/aggregate=" + strconv.Itoa(aggEvents) + "/callers=" + strconv.Itoa(callers)
	}
	if r, ok := b.byID[id]; ok {
		return r
	}
	r := &benchResult{ID: id, Section: section, Path: path, Kind: kind, Label: label, EventsPerCall: k, Callers: callers,
		AggregateEvents: aggEvents, Ceilings: ceilings}
	if r.Ceilings == nil {
		r.Ceilings = []string{}
	}
	b.results = append(b.results, r)
	b.byID[id] = r
	return r
}

// summarize pairs every result with its ceilings round by round and
// computes medians and ranges.
func (b *bench) summarize() {
	for _, r := range b.results {
		if len(r.Rounds) == 0 {
			continue
		}
		if len(r.Ceilings) > 0 {
			r.ceilingEPS = make([]float64, len(r.Rounds))
			for i := range r.Rounds {
				lowest := 0.0
				for j, id := range r.Ceilings {
					c := b.byID[id]
					if c == nil || i >= len(c.Rounds) {
						continue
					}
					if eps := c.Rounds[i].EventsPerSec; j == 0 || eps < lowest {
						lowest = eps
					}
				}
				r.ceilingEPS[i] = lowest
				if lowest > 0 {
					ratio := r.Rounds[i].EventsPerSec / lowest
					r.Rounds[i].Ratio = &ratio
				}
			}
			c := statOf(r.ceilingEPS)
			r.Summary.CeilingEventsPerSec = &c
		}
		eps := make([]float64, len(r.Rounds))
		for i, s := range r.Rounds {
			eps[i] = s.EventsPerSec
		}
		r.Summary.EventsPerSec = statOf(eps)
		r.Summary.Ratio = optStat(r.Rounds, func(s benchSample) *float64 { return s.Ratio })
		r.Summary.RedisCPUMicrosPerEvent = optStat(r.Rounds, func(s benchSample) *float64 { return s.RedisCPUMicrosPerEvent })
		r.Summary.MemoryBytesPerEvent = optStat(r.Rounds, func(s benchSample) *float64 { return s.MemoryBytesPerEvent })
		lat := func(f func(*benchLatency) float64) *benchStat {
			return optStat(r.Rounds, func(s benchSample) *float64 {
				if s.Latency == nil {
					return nil
				}
				v := f(s.Latency)
				return &v
			})
		}
		if p50 := lat(func(l *benchLatency) float64 { return l.P50 }); p50 != nil {
			r.Summary.Latency = &benchLatencyStats{P50: *p50,
				P90: *lat(func(l *benchLatency) float64 { return l.P90 }),
				P99: *lat(func(l *benchLatency) float64 { return l.P99 }),
				Max: *lat(func(l *benchLatency) float64 { return l.Max })}
		}
	}
}

// timed runs op from callers goroutines for --duration, each call
// timed, and returns the sample with the Redis CPU spent meanwhile. op
// returns how many events its call moved. The first error stops every
// caller and is returned.
func (b *bench) timed(ctx context.Context, callers int, op func(ctx context.Context, caller, call int) (int, error)) (benchSample, error) {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
		lats     = make([][]time.Duration, callers)
		events   = make([]int64, callers)
	)
	cpu0, cpuOK := b.redisCPU(ctx)
	start := time.Now()
	deadline := start.Add(b.o.duration)
	for g := range callers {
		wg.Go(func() {
			lat := make([]time.Duration, 0, 1024)
			for i := 0; cctx.Err() == nil; i++ {
				t0 := time.Now()
				if !t0.Before(deadline) {
					break
				}
				n, err := op(cctx, g, i)
				if err != nil {
					if cctx.Err() == nil {
						once.Do(func() { firstErr = err; cancel() })
					}
					break
				}
				lat = append(lat, time.Since(t0))
				events[g] += int64(n)
			}
			lats[g] = lat
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		return benchSample{}, err
	}
	if firstErr != nil {
		return benchSample{}, firstErr
	}
	all := slices.Concat(lats...)
	var total int64
	for _, n := range events {
		total += n
	}
	s := benchSample{Events: total, Calls: int64(len(all)), Seconds: elapsed.Seconds(), EventsPerSec: float64(total) / elapsed.Seconds(),
		Latency: percentiles(all)}
	b.addCPU(ctx, &s, cpu0, cpuOK)
	return s, nil
}

// once runs work (a fixed amount of it, not a duration) and returns its
// sample with the Redis CPU spent meanwhile. work returns the events it
// moved.
func (b *bench) once(ctx context.Context, work func(ctx context.Context) (int64, error)) (benchSample, error) {
	cpu0, cpuOK := b.redisCPU(ctx)
	start := time.Now()
	n, err := work(ctx)
	elapsed := time.Since(start)
	if err != nil {
		return benchSample{}, err
	}
	s := benchSample{Events: n, Calls: 1, Seconds: elapsed.Seconds(), EventsPerSec: float64(n) / elapsed.Seconds()}
	b.addCPU(ctx, &s, cpu0, cpuOK)
	return s, nil
}

func (b *bench) addCPU(ctx context.Context, s *benchSample, cpu0 time.Duration, ok bool) {
	if !ok || s.Events == 0 {
		return
	}
	if cpu1, ok := b.redisCPU(ctx); ok {
		us := float64((cpu1 - cpu0).Nanoseconds()) / 1e3 / float64(s.Events)
		s.RedisCPUMicrosPerEvent = &us
	}
}

// percentiles of per-call latencies (nearest rank), in microseconds.
func percentiles(d []time.Duration) *benchLatency {
	if len(d) == 0 {
		return nil
	}
	slices.Sort(d)
	at := func(q float64) float64 {
		i := int(q*float64(len(d))+0.5) - 1
		return float64(d[min(max(i, 0), len(d)-1)]) / 1e3
	}
	return &benchLatency{P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: float64(d[len(d)-1]) / 1e3}
}

// formatRate is an events/s figure to three digits: 812, 45.1k, 1.23M.
func formatRate(v float64) string {
	switch {
	case v < 0:
		return "?"
	case v < 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v < 10e3:
		return strconv.FormatFloat(v/1e3, 'f', 2, 64) + "k"
	case v < 1e6:
		return strconv.FormatFloat(v/1e3, 'f', 1, 64) + "k"
	}
	return strconv.FormatFloat(v/1e6, 'f', 2, 64) + "M"
}

// formatMicros is a latency in µs as a person reads it: 850µs, 1.23ms,
// 45.6ms, 1.20s.
func formatMicros(us float64) string {
	switch {
	case us < 1000:
		return strconv.FormatFloat(us, 'f', 0, 64) + "µs"
	case us < 10e3:
		return strconv.FormatFloat(us/1e3, 'f', 2, 64) + "ms"
	case us < 1e6:
		return strconv.FormatFloat(us/1e3, 'f', 1, 64) + "ms"
	}
	return strconv.FormatFloat(us/1e6, 'f', 2, 64) + "s"
}

// errShort says a workload moved fewer events than it should have.
func errShort(what string, got, want int64) error {
	return fmt.Errorf("%s: %d events, want %d", what, got, want)
}

func callersSuffix(r *benchResult) string {
	if r.Callers == 0 {
		return ""
	}
	return ", " + strconv.Itoa(r.Callers) + " callers"
}
