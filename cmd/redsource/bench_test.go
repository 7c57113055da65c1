package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/internal/redisproc"
	"github.com/redsource/redsource/internal/testenv"
)

// tinyBench are sizes that make a whole run take seconds.
var tinyBench = []string{"--duration", "50ms", "--rounds", "1", "--callers", "2", "--load-callers", "2", "--load-events", "10",
	"--events", "200", "--rebuild-events", "400"}

// benchWorld is a namespace and schema that no one uses yet, for a bench
// to create and remove; whatever a failing test leaves is removed too.
func benchWorld(t *testing.T) (ns, schema string) {
	t.Helper()
	ns, schema = testenv.Unique("tb"), testenv.Unique("tb_")
	rc := testenv.Redis(t)
	t.Cleanup(func() {
		_ = testenv.DeleteNamespace(rc, ns)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, testenv.DatabaseURL()); err == nil {
			_, _ = c.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
			c.Close(ctx)
		}
	})
	return ns, schema
}

func runBenchCLI(ctx context.Context, stderr *bytes.Buffer, ns, schema string, args ...string) (string, int) {
	var out bytes.Buffer
	all := append([]string{"bench", "--redis", testenv.RedisURL(), "--database", testenv.DatabaseURL(), "--namespace", ns, "--schema", schema}, args...)
	code := run(ctx, all, nil, &out, stderr)
	return out.String(), code
}

// requireGone checks that nothing of the namespace and schema is left.
func requireGone(t *testing.T, ns, schema string) {
	t.Helper()
	ctx := context.Background()
	rc := testenv.Redis(t)
	keys, err := testenv.ScanKeys(ctx, rc, testenv.GlobEscape(ns)+":*", "")
	require.NoError(t, err)
	require.Empty(t, keys, "keys left in namespace %s", ns)
	c, err := pgx.Connect(ctx, testenv.DatabaseURL())
	require.NoError(t, err)
	defer c.Close(ctx)
	var n int
	require.NoError(t, c.QueryRow(ctx, "SELECT count(*) FROM pg_namespace WHERE nspname = $1", schema).Scan(&n))
	require.Zero(t, n, "schema %s left", schema)
}

// buildPeer builds the Watermill peer (bench/watermill, a module of its
// own) into the test's temporary directory; the go build cache makes the
// second build a link.
func buildPeer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "watermill-bench")
	// go test puts its own GOROOT/bin first on PATH.
	out, err := exec.Command("go", "build", "-C", filepath.Join("..", "..", "bench", "watermill"), "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "build bench/watermill: %s", out)
	return bin
}

func TestBenchUsage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"bench", "--rounds", "0"}, "--rounds is 0, want at least 1"},
		{[]string{"bench", "--duration", "0s"}, "--duration must be positive"},
		{[]string{"bench", "--callers", "0"}, "--callers: 0, want 1..4096"},
		{[]string{"bench", "--callers", "a,b"}, `invalid value "a,b" for flag --callers`},
		{[]string{"bench", "--load-events", "1"}, "--load-events: 1, want 2..100000"},
		{[]string{"bench", "--sections", "append,nope"}, `--sections: unknown section "nope"`},
		{[]string{"bench", "--events", "3"}, "--events is 3, want at least 8"},
		{[]string{"bench", "--peer", "/nonexistent/watermill-bench"}, "--peer: stat /nonexistent/watermill-bench"},
		{[]string{"bench", "extra"}, `unexpected argument "extra"`},
	} {
		out, errs, code := runNoServer(tc.args...)
		require.Equal(t, exitUsage, code, "%v: %s", tc.args, errs)
		require.Empty(t, out)
		require.Contains(t, errs, tc.msg, "%v", tc.args)
	}
	out, _, code := runNoServer("bench", "--help")
	require.Equal(t, exitOK, code)
	require.Contains(t, out, "refuses to start when either exists already")
	require.Contains(t, out, "--rebuild-events")
}

// A namespace that has keys is refused, and nothing of it is touched.
func TestBenchRefusesExistingNamespace(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 8)
	w.append("account", "a1", "Opened", `{}`)
	before, err := testenv.ScanKeys(w.ctx, w.rc, testenv.GlobEscape(w.ns)+":*", "")
	require.NoError(t, err)

	var errs bytes.Buffer
	out, code := runBenchCLI(w.ctx, &errs, w.ns, testenv.Unique("tb_"), "--sections", "append")
	require.Equal(t, exitFailure, code, errs.String())
	require.Empty(t, out)
	require.Contains(t, errs.String(), `namespace "`+w.ns+`" already has keys in Redis`)
	after, err := testenv.ScanKeys(w.ctx, w.rc, testenv.GlobEscape(w.ns)+":*", "")
	require.NoError(t, err)
	require.ElementsMatch(t, before, after)
}

// A schema that exists is refused and kept, and the namespace the bench
// had claimed is given back empty.
func TestBenchRefusesExistingSchema(t *testing.T) {
	t.Parallel()
	pool, schema := testenv.Postgres(t)
	_, err := pool.Exec(context.Background(), "CREATE TABLE keep (x int)")
	require.NoError(t, err)
	ns, _ := benchWorld(t)

	var errs bytes.Buffer
	out, code := runBenchCLI(context.Background(), &errs, ns, schema, "--sections", "projection")
	require.Equal(t, exitFailure, code, errs.String())
	require.Empty(t, out)
	require.Contains(t, errs.String(), `schema "`+schema+`" already exists in PostgreSQL`)
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT count(*) FROM keep").Scan(&n), "the schema's table is still there")
	requireGone(t, ns, testenv.Unique("none_"))
}

// A whole run with tiny sizes, the Watermill peer included: every section
// measured, the JSON document's shape, the SVG, and nothing left behind.
func TestBenchRun(t *testing.T) {
	t.Parallel()
	peer := buildPeer(t)
	ns, schema := benchWorld(t)
	svg := filepath.Join(t.TempDir(), "bench.svg")

	var errs bytes.Buffer
	out, code := runBenchCLI(context.Background(), &errs, ns, schema, append(tinyBench, "--json", "--peer", peer, "--svg", svg)...)
	require.Equal(t, exitOK, code, errs.String())
	requireGone(t, ns, schema)
	require.Contains(t, errs.String(), `bench: dropped schema "`+schema+`"`)

	var rep benchReport
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&rep), out)
	require.Equal(t, 1, rep.SchemaVersion)
	require.Equal(t, ns, rep.Environment.Settings.Namespace)
	require.NotEmpty(t, rep.Environment.Redis.Version)
	require.NotEmpty(t, rep.Environment.PostgreSQL)
	require.Contains(t, rep.Environment.Peer, "watermill v1.5.1")
	var ids []string
	for _, r := range rep.Results {
		ids = append(ids, r.ID)
		require.Len(t, r.Rounds, 1, r.ID)
		s := r.Rounds[0]
		require.Positive(t, s.Events, r.ID)
		require.Positive(t, s.EventsPerSec, r.ID)
		require.Equal(t, s.EventsPerSec, r.Summary.EventsPerSec.Median, r.ID)
		if r.Kind == kindCeiling {
			require.Empty(t, r.Ceilings, r.ID)
			require.Nil(t, r.Summary.Ratio, r.ID)
		} else {
			require.NotEmpty(t, r.Ceilings, r.ID)
			require.NotNil(t, r.Summary.Ratio, r.ID)
			require.InDelta(t, s.EventsPerSec/r.Summary.CeilingEventsPerSec.Median, r.Summary.Ratio.Median, 1e-9, r.ID)
		}
		switch r.Section {
		case "append", "load":
			require.NotNil(t, r.Summary.Latency, r.ID)
			require.LessOrEqual(t, r.Summary.Latency.P50.Median, r.Summary.Latency.Max.Median, r.ID)
		}
		if r.Section == "append" || r.Path == "watermill-publish" {
			require.NotNil(t, r.Summary.MemoryBytesPerEvent, r.ID)
			require.Greater(t, r.Summary.MemoryBytesPerEvent.Median, float64(benchPayloadSize), r.ID)
		}
		if r.Path != "pgx-unnest" && r.Path != "rebuild-write" {
			require.NotNil(t, r.Summary.RedisCPUMicrosPerEvent, r.ID)
		}
	}
	require.Equal(t, []string{
		"xadd/events=1/callers=2", "append/events=1/callers=2",
		"xadd-pipelined/events=10/callers=2", "append/events=10/callers=2",
		"xrange/aggregate=10/callers=2", "load/aggregate=10/callers=2", "load-snapshot/aggregate=10/callers=2",
		"xreadgroup-xack/events=500/callers=8", "pgx-unnest/events=500/callers=8",
		"runner-batch/events=500/callers=8", "runner-event/events=500/callers=8",
		"rebuild-read/events=500/callers=8", "rebuild-write/events=1000/callers=8", "rebuild/events=1000/callers=8",
		"watermill-publish/events=1/callers=2", "watermill-subscribe/events=1/callers=8", "watermill-publish/events=10/callers=2",
	}, ids)
	for _, r := range rep.Results {
		switch r.Path {
		case "watermill-subscribe":
			require.Equal(t, int64(200), r.Rounds[0].Events)
			require.Equal(t, []string{"xreadgroup-xack/events=500/callers=8"}, r.Ceilings)
		case "runner-batch", "runner-event":
			require.Equal(t, int64(200), r.Rounds[0].Events)
		case "rebuild":
			require.Equal(t, int64(400), r.Rounds[0].Events)
		}
	}

	raw, err := os.ReadFile(svg)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(raw), "<svg "), "%.80s", raw)
	for _, s := range []string{"raw XADD, 1 per call (ceiling)", "redsource Append, 1 event", "Watermill Publish, 1 message", "</svg>"} {
		require.Contains(t, string(raw), s)
	}
}

// The table output: one table per section, with the ceiling and ratio
// columns; without a peer, the run says so.
func TestBenchTables(t *testing.T) {
	t.Parallel()
	ns, schema := benchWorld(t)
	var errs bytes.Buffer
	out, code := runBenchCLI(context.Background(), &errs, ns, schema, append(tinyBench, "--sections", "append,load")...)
	require.Equal(t, exitOK, code, errs.String())
	requireGone(t, ns, schema)
	require.Contains(t, out, "note: no --peer: Watermill was not measured")
	require.Contains(t, out, "meaningful only on a Redis nothing else uses")
	require.Regexp(t, `(?m)^== append: `, out)
	require.Regexp(t, `(?m)^== load: `, out)
	require.NotContains(t, out, "== projection")
	require.Regexp(t, `(?m)^PATH +CALLERS +EVENTS/S +CEILING +RATIO +REDIS µs/EVENT +B/EVENT +P50 +P90 +P99 +MAX$`, out)
	require.Regexp(t, `(?m)^raw XADD, 1 per call \(ceiling\) +2 +\S+ +- +- +\d`, out)
	require.Regexp(t, `(?m)^Append, 1 event +2 +\S+ +\S+ +\d+\.\d\d +\d`, out)
	require.Regexp(t, `(?m)^Load of 10 events, Redis snapshot +2 +`, out)
	require.Contains(t, errs.String(), "bench: deleted the")
}

// cancelOn cancels a context when a line it is written holds a string.
type cancelOn struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	s      string
	cancel context.CancelFunc
}

func (c *cancelOn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(p)
	if strings.Contains(c.buf.String(), c.s) {
		c.cancel()
	}
	return len(p), nil
}

// Interrupted (Ctrl-C) in the middle of the rounds, the bench still
// deletes its keys and drops its schema.
func TestBenchInterrupted(t *testing.T) {
	t.Parallel()
	ns, schema := benchWorld(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &cancelOn{s: "round 1/2  Append, 1 event", cancel: cancel}
	var out bytes.Buffer
	args := append([]string{"bench", "--redis", testenv.RedisURL(), "--database", testenv.DatabaseURL(), "--namespace", ns, "--schema", schema},
		append(tinyBench, "--rounds", "2", "--sections", "append,projection")...)
	code := run(ctx, args, nil, &out, stderr)
	require.Equal(t, exitFailure, code, stderr.buf.String())
	require.Contains(t, stderr.buf.String(), "redsource bench: interrupted")
	require.Contains(t, stderr.buf.String(), `bench: dropped schema "`+schema+`"`)
	requireGone(t, ns, schema)
}

func TestParsePeerResult(t *testing.T) {
	good := `{"peer":"watermill","version":"v","workload":"publish","callers":2,"messages_per_call":1,"topics":8,"events":100,"calls":100,` +
		`"seconds":0.5,"events_per_sec":200,"redis_cpu_us":1000,"memory_bytes":50000,"latency_us":{"p50":1,"p90":2,"p99":3,"max":4},"keys_deleted":8}` + "\n"
	r, err := parsePeerResult([]byte(good), "publish")
	require.NoError(t, err)
	s := r.sample()
	require.Equal(t, 200.0, s.EventsPerSec)
	require.Equal(t, 10.0, *s.RedisCPUMicrosPerEvent)
	require.Equal(t, 500.0, *s.MemoryBytesPerEvent)
	require.Equal(t, benchLatency{P50: 1, P90: 2, P99: 3, Max: 4}, *s.Latency)

	sub := `{"peer":"watermill","workload":"subscribe","events":10,"calls":10,"seconds":1,"events_per_sec":10,"redis_cpu_us":null,"memory_bytes":null,"latency_us":null}`
	r, err = parsePeerResult([]byte(sub), "subscribe")
	require.NoError(t, err)
	s = r.sample()
	require.Nil(t, s.RedisCPUMicrosPerEvent)
	require.Nil(t, s.MemoryBytesPerEvent)
	require.Nil(t, s.Latency)

	for in, msg := range map[string]string{
		"":                     "not its JSON result",
		"oops":                 "not its JSON result",
		good:                   "not a subscribe result",
		`{"error":"no Redis"}`: "the peer failed: no Redis",
		`{"peer":"watermill","workload":"subscribe","events":0,"seconds":1}`: "moved no events",
	} {
		_, err := parsePeerResult([]byte(in), "subscribe")
		require.ErrorContains(t, err, msg, in)
	}
}

func TestBenchStats(t *testing.T) {
	require.Equal(t, benchStat{Median: 2, Min: 1, Max: 3}, statOf([]float64{3, 1, 2}))
	require.Equal(t, benchStat{Median: 2.5, Min: 1, Max: 4}, statOf([]float64{4, 1, 3, 2}))
	l := percentiles([]time.Duration{5 * time.Microsecond, time.Microsecond, 3 * time.Microsecond, 2 * time.Microsecond, 4 * time.Microsecond})
	require.Equal(t, benchLatency{P50: 3, P90: 5, P99: 5, Max: 5}, *l)
	require.Nil(t, percentiles(nil))
	require.Equal(t, "812", formatRate(812))
	require.Equal(t, "4.50k", formatRate(4500))
	require.Equal(t, "45.1k", formatRate(45100))
	require.Equal(t, "1.23M", formatRate(1.23e6))
	require.Equal(t, "850µs", formatMicros(850))
	require.Equal(t, "1.23ms", formatMicros(1234))
	list := "id=3 addr=127.0.0.1:1 laddr=127.0.0.1:6379 fd=8 name=redsource-bench age=1 idle=0 flags=N db=0 cmd=client|list\n" +
		"id=4 addr=127.0.0.1:2 laddr=127.0.0.1:6379 fd=9 name= age=9 idle=9 flags=N db=0 cmd=xadd\n" +
		"id=5 addr=127.0.0.1:3 laddr=127.0.0.1:6379 fd=10 name= age=9 idle=0 flags=S db=0 cmd=replconf\n"
	require.Equal(t, 1, countOthers(list))
	require.Equal(t, int64(12), commandCalls("calls=12,usec=30,usec_per_call=2.50,rejected_calls=0,failed_calls=0"))
	require.Equal(t, 5.0, niceStep(4.2))
	require.Equal(t, 20000.0, niceStep(12000))
}

// Against a Redis Cluster: every section, the peer with -cluster, and
// nothing left on any master.
func TestBenchCluster(t *testing.T) {
	t.Parallel()
	peer := buildPeer(t)
	cluster := redisproc.StartCluster(t, redisproc.ClusterOptions{Masters: 3})
	ns, schema := benchWorld(t)
	var errs, out bytes.Buffer
	args := append([]string{"bench", "--redis", cluster.URL(), "--database", testenv.DatabaseURL(), "--namespace", ns, "--schema", schema, "--json", "--peer", peer},
		tinyBench...)
	code := run(context.Background(), args, nil, &out, &errs)
	require.Equal(t, exitOK, code, errs.String())
	var rep benchReport
	require.NoError(t, json.Unmarshal(out.Bytes(), &rep))
	require.Equal(t, "cluster", rep.Environment.Redis.Mode)
	require.Equal(t, 3, rep.Environment.Redis.Masters)
	require.Len(t, rep.Results, 17)

	rc := testenv.RedisAt(t, cluster.URL())
	keys, err := testenv.ScanKeys(context.Background(), rc, testenv.GlobEscape(ns)+":*", "")
	require.NoError(t, err)
	require.Empty(t, keys)
	requireGone(t, ns, schema)
}
