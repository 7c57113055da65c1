package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/redsource/redsource/internal/redisinfo"
)

// globEscape quotes what SCAN MATCH treats as a pattern, so that a
// namespace such as "a*" matches only itself.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// scanNamespace calls each with pages of the keys under ns + ":" on every
// master, one SCAN cursor per master; each gets the master's client.
func scanNamespace(ctx context.Context, rc rueidis.Client, ns string, each func(node rueidis.Client, page []string) (stop bool, err error)) error {
	masters, err := redisinfo.Masters(ctx, rc)
	if err != nil {
		return err
	}
	match := globEscape(ns) + ":*"
	for _, m := range masters {
		var cursor uint64
		for {
			page, err := m.Client.Do(ctx, m.Client.B().Scan().Cursor(cursor).Match(match).Count(1000).Build()).AsScanEntry()
			if err != nil {
				return fmt.Errorf("SCAN on %s: %w", m.Addr, err)
			}
			if len(page.Elements) > 0 {
				stop, err := each(m.Client, page.Elements)
				if err != nil || stop {
					return err
				}
			}
			if cursor = page.Cursor; cursor == 0 {
				break
			}
		}
	}
	return nil
}

// scanKeys returns up to limit keys of the namespace (0: all).
func scanKeys(ctx context.Context, rc rueidis.Client, ns string, limit int) ([]string, error) {
	var keys []string
	err := scanNamespace(ctx, rc, ns, func(_ rueidis.Client, page []string) (bool, error) {
		keys = append(keys, page...)
		if limit > 0 && len(keys) >= limit {
			keys = keys[:limit]
			return true, nil
		}
		return false, nil
	})
	return keys, err
}

// deleteKeys deletes every key of the namespace, one UNLINK per key (a
// namespace's keys are in many cluster slots), and returns how many.
func deleteKeys(ctx context.Context, rc rueidis.Client, ns string) (int, error) {
	n := 0
	// SCAN may return a key twice, and deleting while scanning is allowed:
	// keys there from start to end are returned at least once.
	err := scanNamespace(ctx, rc, ns, func(node rueidis.Client, page []string) (bool, error) {
		cmds := make(rueidis.Commands, len(page))
		for i, k := range page {
			cmds[i] = node.B().Unlink().Key(k).Build()
		}
		for _, r := range node.DoMulti(ctx, cmds...) {
			d, err := r.AsInt64()
			if err != nil {
				return true, err
			}
			n += int(d)
		}
		return false, nil
	})
	return n, err
}

// memoryOf sums MEMORY USAGE (SAMPLES 0: every element counted) over the
// keys of the namespace, on every master.
func memoryOf(ctx context.Context, rc rueidis.Client, ns string) (int64, error) {
	var total int64
	err := scanNamespace(ctx, rc, ns, func(node rueidis.Client, page []string) (bool, error) {
		cmds := make(rueidis.Commands, len(page))
		for i, k := range page {
			cmds[i] = node.B().MemoryUsage().Key(k).Samples(0).Build()
		}
		for _, r := range node.DoMulti(ctx, cmds...) {
			v, err := r.AsInt64()
			if rueidis.IsRedisNil(err) {
				continue
			}
			if err != nil {
				return true, err
			}
			total += v
		}
		return false, nil
	})
	return total, err
}

// measureAndDelete returns the namespace's memory and deletes its keys.
func (b *bench) measureAndDelete(ctx context.Context, ns string) (int64, error) {
	mem, err := memoryOf(ctx, b.rc, ns)
	if err != nil {
		return 0, fmt.Errorf("MEMORY USAGE: %w", err)
	}
	_, err = deleteKeys(ctx, b.rc, ns)
	return mem, err
}

// redisCPU is the CPU time the masters' main threads have used (INFO cpu
// used_cpu_{user,sys}_main_thread; a Redis without per-thread figures,
// before 7.0, gives the process's used_cpu_{user,sys}). ok is false when
// INFO cannot be read (an ACL user without it).
func (b *bench) redisCPU(ctx context.Context) (time.Duration, bool) {
	masters, err := redisinfo.Masters(ctx, b.rc)
	if err != nil {
		return 0, false
	}
	var total time.Duration
	for _, m := range masters {
		info, err := redisinfo.Info(ctx, m.Client, "cpu")
		if err != nil {
			return 0, false
		}
		keys := []string{"used_cpu_user_main_thread", "used_cpu_sys_main_thread"}
		if _, ok := info[keys[0]]; !ok {
			keys = []string{"used_cpu_user", "used_cpu_sys"}
		}
		for _, k := range keys {
			sec, err := strconv.ParseFloat(info[k], 64)
			if err != nil {
				return 0, false
			}
			total += time.Duration(sec * float64(time.Second))
		}
	}
	return total, true
}

// benchEnv describes where the run was made. Field names are a contract
// (docs/cli.md, "bench").
type benchEnv struct {
	StartedAt       time.Time    `json:"started_at"`
	Commit          string       `json:"commit"`
	Go              string       `json:"go"`
	OS              string       `json:"os"`
	Arch            string       `json:"arch"`
	NumCPU          int          `json:"num_cpu"`
	GOMAXPROCS      int          `json:"gomaxprocs"`
	LoadAverage     []float64    `json:"load_average"` // 1, 5, 15 minutes at the start (Linux); null elsewhere
	LoadAverageEnd  []float64    `json:"load_average_end"`
	Redis           benchRedis   `json:"redis"`
	PostgreSQL      string       `json:"postgresql"` // server version; "" when no section needed it
	Peer            string       `json:"peer"`       // the peer's version, "" without --peer
	MeasuredSeconds float64      `json:"measured_seconds"`
	Settings        benchSetting `json:"settings"`
}

type benchRedis struct {
	Version string `json:"version"`
	Mode    string `json:"mode"` // "standalone" or "cluster"
	Masters int    `json:"masters"`
	// CPUSource names the INFO cpu fields read.
	CPUSource string `json:"cpu_source"`
	// OtherClients counts the clients in CLIENT LIST (summed over
	// masters) that are not this run's, at the start and the end;
	// OthersCommandsPerSec the commands other than PING and INFO per
	// second Redis processed in a second when this run sent nothing, at
	// the start and the end. -1: unknown.
	OtherClients         [2]int     `json:"other_clients"`
	OthersCommandsPerSec [2]float64 `json:"others_commands_per_sec"`
	Others               string     `json:"-"`
}

type benchSetting struct {
	Duration      string   `json:"duration"`
	Rounds        int      `json:"rounds"`
	Callers       []int    `json:"callers"`
	LoadCallers   int      `json:"load_callers"`
	LoadEvents    []int    `json:"load_events"`
	Events        int      `json:"events"`
	RebuildEvents int      `json:"rebuild_events"`
	Sections      []string `json:"sections"`
	PayloadBytes  int      `json:"payload_bytes"`
	Partitions    int      `json:"partitions"`
	Aggregates    int      `json:"aggregates"`
	Namespace     string   `json:"namespace"`
	Schema        string   `json:"schema"`
}

// buildCommit is set by make bench (-ldflags -X main.buildCommit=…).
var buildCommit string

func (b *bench) environment(ctx context.Context) error {
	o := b.o
	b.env = benchEnv{
		StartedAt: time.Now().UTC().Truncate(time.Second), Commit: buildCommit,
		Go: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH, NumCPU: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0),
		LoadAverage: loadAverage(),
		Settings: benchSetting{
			Duration: o.duration.String(), Rounds: o.rounds, Callers: o.callers, LoadCallers: o.loadCallers, LoadEvents: o.loadEvents,
			Events: o.events, RebuildEvents: o.rebuildEvents, Sections: o.sections, PayloadBytes: len(b.payload),
			Partitions: benchPartitions, Aggregates: benchAggregates, Namespace: b.ns, Schema: b.schema,
		},
	}
	masters, err := redisinfo.Masters(ctx, b.rc)
	if err != nil {
		return err
	}
	r := &b.env.Redis
	r.Masters, r.Mode = len(masters), "standalone"
	if info, err := redisinfo.Info(ctx, masters[0].Client, "server", "cluster", "cpu"); err == nil {
		r.Version = info["redis_version"]
		if info["cluster_enabled"] == "1" {
			r.Mode = "cluster"
		}
		r.CPUSource = "used_cpu_{user,sys}_main_thread"
		if _, ok := info["used_cpu_user_main_thread"]; !ok {
			r.CPUSource = "used_cpu_{user,sys} (this Redis has no per-thread figures)"
		}
	} else {
		r.Version, r.CPUSource = "?", "none: INFO refused"
	}
	r.OtherClients[0], r.OthersCommandsPerSec[0] = b.others(ctx)
	r.Others = othersText(r.OtherClients[0], r.OthersCommandsPerSec[0])
	if b.pool != nil {
		b.env.PostgreSQL = pgVersion(ctx, b.pool)
	}
	return nil
}

func (b *bench) othersAfter(ctx context.Context) error {
	r := &b.env.Redis
	r.OtherClients[1], r.OthersCommandsPerSec[1] = b.others(ctx)
	b.env.LoadAverageEnd = loadAverage()
	return ctx.Err()
}

func othersText(clients int, ops float64) string {
	c := "other clients unknown (CLIENT LIST refused)"
	if clients >= 0 {
		c = fmt.Sprintf("%d other client(s)", clients)
	}
	o := "commands of others unknown (INFO refused)"
	if ops >= 0 {
		o = formatRate(ops) + " commands/s while the bench was idle"
	}
	return c + ", " + o
}

// others tells what else uses Redis, summed over the masters: the clients
// in CLIENT LIST that are not this run's (its connections are named
// benchClientName; replication links are not counted), and the commands
// per second Redis processed in one second while this run sent nothing
// but INFO and its clients' keep-alive PINGs, which are counted out with
// everyone's PING and INFO (INFO commandstats). -1: not allowed to look.
func (b *bench) others(ctx context.Context) (int, float64) {
	masters, err := redisinfo.Masters(ctx, b.rc)
	if err != nil {
		return -1, -1
	}
	clients := 0
	for _, m := range masters {
		list, err := m.Client.Do(ctx, m.Client.B().ClientList().Build()).ToString()
		if err != nil {
			clients = -1
			break
		}
		clients += countOthers(list)
	}
	read := func() (int64, bool) {
		var total int64
		for _, m := range masters {
			info, err := redisinfo.Info(ctx, m.Client, "stats", "commandstats")
			if err != nil {
				return 0, false
			}
			n, _ := strconv.ParseInt(info["total_commands_processed"], 10, 64)
			total += n - commandCalls(info["cmdstat_ping"]) - commandCalls(info["cmdstat_info"])
		}
		return total, true
	}
	c0, ok := read()
	if !ok {
		return clients, -1
	}
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return clients, -1
	case <-time.After(time.Second):
	}
	c1, ok := read()
	if !ok {
		return clients, -1
	}
	return clients, max(float64(c1-c0)/time.Since(t0).Seconds(), 0)
}

// countOthers counts the lines of a CLIENT LIST reply that are neither
// this run's connections nor replication links.
func countOthers(list string) int {
	n := 0
	for line := range strings.Lines(strings.TrimPrefix(list, "txt:")) {
		f := redisinfo.Fields(strings.ReplaceAll(strings.TrimSpace(line), " ", ","))
		if len(f) == 0 || f["id"] == "" || f["name"] == benchClientName || strings.ContainsAny(f["flags"], "SM") {
			continue
		}
		n++
	}
	return n
}

// commandCalls reads calls= of an INFO commandstats value
// ("calls=12,usec=30,…"); 0 when absent.
func commandCalls(v string) int64 {
	n, _ := strconv.ParseInt(redisinfo.Fields(v)["calls"], 10, 64)
	return n
}

// loadAverage reads /proc/loadavg (Linux); nil elsewhere.
func loadAverage() []float64 {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return nil
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return nil
	}
	out := make([]float64, 3)
	for i := range out {
		out[i], _ = strconv.ParseFloat(f[i], 64)
	}
	return out
}
