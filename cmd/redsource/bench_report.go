package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// benchReportVersion is the version of the --json document's shape; it
// changes only when a field is renamed or removed.
const benchReportVersion = 1

// benchReport is the --json document (docs/cli.md, "bench").
type benchReport struct {
	SchemaVersion int            `json:"schema_version"`
	Environment   benchEnv       `json:"environment"`
	Results       []*benchResult `json:"results"`
	Notes         []string       `json:"notes"`
}

func (b *bench) report() benchReport {
	notes := b.notes
	if notes == nil {
		notes = []string{}
	}
	results := b.sortedResults()
	if results == nil {
		results = []*benchResult{}
	}
	return benchReport{SchemaVersion: benchReportVersion, Environment: b.env, Results: results, Notes: notes}
}

var (
	benchSectionOrder = []string{"append", "load", "projection", "rebuild", "peer"}
	benchKindOrder    = []string{kindCeiling, kindRedsource, kindPeer}
)

// sortedResults orders results by section, then shape (events per call,
// aggregate size), then kind (ceilings first), then path (in the order
// paths were first measured), then callers.
func (b *bench) sortedResults() []*benchResult {
	pathRank := map[string]int{}
	for _, r := range b.results {
		if _, ok := pathRank[r.Path]; !ok {
			pathRank[r.Path] = len(pathRank)
		}
	}
	out := slices.Clone(b.results)
	slices.SortStableFunc(out, func(x, y *benchResult) int {
		return cmp.Or(
			cmp.Compare(slices.Index(benchSectionOrder, x.Section), slices.Index(benchSectionOrder, y.Section)),
			cmp.Compare(x.EventsPerCall, y.EventsPerCall),
			cmp.Compare(x.AggregateEvents, y.AggregateEvents),
			cmp.Compare(slices.Index(benchKindOrder, x.Kind), slices.Index(benchKindOrder, y.Kind)),
			cmp.Compare(pathRank[x.Path], pathRank[y.Path]),
			cmp.Compare(x.Callers, y.Callers))
	})
	return out
}

// benchSectionNotes say what each section's rows measure.
var benchSectionNotes = map[string]string{
	"append": "300-byte events to 10,000 aggregates over 8 partitions, each caller appending to its own aggregates; latency per call; " +
		"B/EVENT counts the aggregate indexes too",
	"load": "whole aggregates of 300-byte events, loaded and decoded (events/s = aggregate size × loads/s); the snapshot is at the last version; latency per load",
	"projection": "a log of --events 300-byte events over 10,000 aggregates, 8 partitions, applied once per round by a new projection; " +
		"the Runner's ceiling is the lower of the two raw ones",
	"rebuild": "a log of --rebuild-events events, 10 per aggregate, rebuilt by a new projection once per round; ceiling: the lower of the two raw ones",
	"peer": "Watermill with watermill-redisstream on the same Redis, same payload and goroutines, run between redsource's measurements; " +
		"Publish's ceiling is raw XADD, subscribe's raw XREADGROUP + XACK, both measured with rueidis: go-redis's pooled connections " +
		"answer a lone caller sooner than rueidis's auto-pipelining, so Publish can pass 1.0 at few callers",
}

func (b *bench) printTables() error {
	w := b.c.stdout
	e := b.env
	fmt.Fprintf(w, "redsource bench, %s, commit %s\n", e.StartedAt.Format("2006-01-02 15:04 UTC"), cmp.Or(e.Commit, "unknown"))
	fmt.Fprintf(w, "machine: %s/%s, %d CPUs, GOMAXPROCS %d, %s; load average %s at the start, %s at the end\n",
		e.OS, e.Arch, e.NumCPU, e.GOMAXPROCS, e.Go, formatLoad(e.LoadAverage), formatLoad(e.LoadAverageEnd))
	fmt.Fprintf(w, "Redis %s, %s (%d master(s)); PostgreSQL %s; peer: %s\n", e.Redis.Version, e.Redis.Mode, e.Redis.Masters,
		cmp.Or(e.PostgreSQL, "not used"), cmp.Or(e.Peer, "none"))
	fmt.Fprintf(w, "others on Redis: %s at the start, %s at the end\n",
		othersText(e.Redis.OtherClients[0], e.Redis.OthersCommandsPerSec[0]), othersText(e.Redis.OtherClients[1], e.Redis.OthersCommandsPerSec[1]))
	fmt.Fprintf(w, "%d round(s), %s per timed measurement, %s measuring. Figures: events/s; ratio to the ceiling in the same round;\n",
		e.Settings.Rounds, e.Settings.Duration, formatDuration(secondsDuration(e.MeasuredSeconds)))
	fmt.Fprintf(w, "Redis main-thread CPU µs per event (%s; meaningful only on a Redis nothing else uses); Redis bytes per event\n", e.Redis.CPUSource)
	fmt.Fprintln(w, "(MEMORY USAGE of the keys written); latency per call. Medians of the rounds, range in brackets.")
	for _, n := range b.notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	results := b.sortedResults()
	for _, section := range benchSectionOrder {
		var rows []*benchResult
		for _, r := range results {
			if r.Section == section && len(r.Rounds) > 0 {
				rows = append(rows, r)
			}
		}
		if len(rows) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n== %s: %s\n", section, benchSectionNotes[section])
		if err := b.printSection(w, rows); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) printSection(w io.Writer, rows []*benchResult) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "PATH\tCALLERS\tEVENTS/S\tCEILING\tRATIO\tREDIS µs/EVENT\tB/EVENT\tP50\tP90\tP99\tMAX")
	for _, r := range rows {
		s := r.Summary
		label := r.Label
		if r.Kind == kindCeiling {
			label += " (ceiling)"
		}
		ceiling, ratio := "-", "-"
		if s.CeilingEventsPerSec != nil {
			ceiling = formatRate(s.CeilingEventsPerSec.Median)
		}
		if s.Ratio != nil {
			ratio = b.statCell(*s.Ratio, func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) })
		}
		lat := []string{"-", "-", "-", "-"}
		if s.Latency != nil {
			for i, st := range []benchStat{s.Latency.P50, s.Latency.P90, s.Latency.P99, s.Latency.Max} {
				lat[i] = formatMicros(st.Median)
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", label, r.Callers, b.statCell(s.EventsPerSec, formatRate), ceiling, ratio,
			optCell(s.RedisCPUMicrosPerEvent, 1), optCell(s.MemoryBytesPerEvent, 0), strings.Join(lat, "\t"))
	}
	return tw.Flush()
}

// statCell is "median (min–max)", or the median alone after one round.
func (b *bench) statCell(s benchStat, f func(float64) string) string {
	if b.o.rounds == 1 {
		return f(s.Median)
	}
	return f(s.Median) + " (" + f(s.Min) + "–" + f(s.Max) + ")"
}

func optCell(s *benchStat, prec int) string {
	if s == nil {
		return "-"
	}
	return strconv.FormatFloat(s.Median, 'f', prec, 64)
}

func formatLoad(l []float64) string {
	if l == nil {
		return "unknown"
	}
	return fmt.Sprintf("%.2f %.2f %.2f", l[0], l[1], l[2])
}
