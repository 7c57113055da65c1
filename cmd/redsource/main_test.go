package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/keys"
	"github.com/redsource/redsource/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestMain(m *testing.M) { testenv.VerifyTestMain(m) }

// T0 and T1 are the milliseconds seeded events get: the logs' last IDs
// are set there (XSETID), so Redis hands out T0-1, T0-2, … and the
// output is the same on every run.
const (
	t0     = uint64(4102444800000) // 2100-01-01T00:00:00Z
	t1     = t0 + 1000             // 2100-01-01T00:00:01Z
	t0Time = "2100-01-01T00:00:00Z"
	t1Time = "2100-01-01T00:00:01Z"
)

// world is one test's servers: its own namespace (and, when asked, its
// own PostgreSQL schema).
type world struct {
	t        *testing.T
	ctx      context.Context
	redisURL string
	rc       rueidis.Client
	ns       string
	store    *eventstore.Store
	pool     *pgxpool.Pool
	schema   string
}

func newWorld(t *testing.T, partitions int) *world {
	t.Helper()
	return newWorldAt(t, testenv.RedisURL(), partitions)
}

// newWorldAt is newWorld on the Redis server at redisURL.
func newWorldAt(t *testing.T, redisURL string, partitions int) *world {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	rc := testenv.RedisAt(t, redisURL)
	w := &world{t: t, ctx: ctx, redisURL: redisURL, rc: rc, ns: testenv.Namespace(t, rc), schema: "unused"}
	s, err := eventstore.New(rc, eventstore.Config{Namespace: w.ns, Partitions: partitions})
	require.NoError(t, err)
	w.store = s
	return w
}

// withPostgres gives the world its own schema.
func (w *world) withPostgres() {
	w.pool, w.schema = testenv.Postgres(w.t)
}

// run runs the CLI in-process against the world's servers.
func (w *world) run(args ...string) (stdout, stderr string, code int) {
	return w.runCtx(w.ctx, args...)
}

func (w *world) runCtx(ctx context.Context, args ...string) (string, string, int) {
	return w.runStdin(ctx, nil, args...)
}

// runStdin runs the CLI with stdin as its standard input.
func (w *world) runStdin(ctx context.Context, stdin io.Reader, args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	code := run(ctx, append(w.globals(), args...), stdin, &out, &errb)
	return out.String(), errb.String(), code
}

func (w *world) globals() []string {
	return []string{"--redis", w.redisURL, "--database", testenv.DatabaseURL(), "--namespace", w.ns, "--schema", w.schema}
}

// ok runs the CLI and requires exit 0.
func (w *world) ok(args ...string) string {
	w.t.Helper()
	out, errs, code := w.run(args...)
	require.Equal(w.t, 0, code, "redsource %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), out, errs)
	return out
}

// setID moves the last ID of every partition log of a category to ms-0,
// creating the logs empty if need be, so that the next appends get
// ms-1, ms-2, ….
func (w *world) setID(category string, partitions int, ms uint64) {
	w.t.Helper()
	for p := range partitions {
		key := w.store.LogKey(category, p)
		n, err := w.rc.Do(w.ctx, w.rc.B().Exists().Key(key).Build()).AsInt64()
		require.NoError(w.t, err)
		if n == 0 {
			require.NoError(w.t, w.rc.Do(w.ctx, w.rc.B().Xadd().Key(key).Maxlen().Threshold("0").Id("*").FieldValue().FieldValue("_", "_").Build()).Error())
		}
		require.NoError(w.t, w.rc.Do(w.ctx, w.rc.B().Xsetid().Key(key).LastId(eventstore.Position{Ms: ms}.String()).Build()).Error())
	}
}

func (w *world) append(category, id, typ, data string) eventstore.AppendResult {
	w.t.Helper()
	res, err := w.store.Append(w.ctx, eventstore.StreamID{Category: category, ID: id}, eventstore.Any,
		eventstore.EventData{Type: typ, Data: []byte(data)})
	require.NoError(w.t, err)
	return res
}

// seedAccounts writes a fixed history to category "account" (4
// partitions: a1 → 3, a2 → 2, a3 → 1, a4 → 0).
func (w *world) seedAccounts() {
	w.t.Helper()
	for id, p := range map[string]int{"a1": 3, "a2": 2, "a3": 1, "a4": 0} {
		require.Equal(w.t, p, keys.Partition(id, 4), id)
	}
	w.setID("account", 4, t0)
	w.append("account", "a1", "Opened", `{"owner": "ann"}`)
	w.append("account", "a2", "Opened", `{"owner":"bob"}`)
	w.append("account", "a4", "Opened", `{"owner":"dan"}`)
	w.append("account", "a1", "Deposited", `{"amount":10}`)
	w.append("account", "a3", "Note", "plain text, not JSON")
	w.setID("account", 4, t1)
	w.append("account", "a1", "Withdrawn", `{"amount":3}`)
	w.append("account", "a2", "Deposited", `{"amount":5,"memo":"a memo long enough to be cut in the table, well past sixty characters"}`)
	w.append("account", "a1", "Tagged", "")
}

var (
	timeRE   = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z`)
	memoryRE = regexp.MustCompile(`(?m)\d+(\.\d+)? (B|KiB|MiB|GiB)$`)
)

// normalize replaces what differs between runs (server times, memory
// sizes) with placeholders of the same width.
func normalize(s string) string {
	s = timeRE.ReplaceAllString(s, "YYYY-MM-DDTHH:MM:SS.sssZ")
	return memoryRE.ReplaceAllString(s, "<memory>")
}

// golden compares got with testdata/<name>.golden (-update rewrites it).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	got = normalize(got)
	if *update {
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to create %s", path)
	require.Equal(t, string(want), got, "output differs from %s (go test -update rewrites it)", path)
}

// jsonLines decodes one JSON object per line.
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), "line %q", l)
		lines = append(lines, m)
	}
	return lines
}
