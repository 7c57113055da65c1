package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/rueidis"

	"github.com/redsource/redsource/internal/pgschema"
)

var benchCommand = &command{
	name:    "bench",
	summary: "measure redsource against raw Redis and PostgreSQL ceilings (and Watermill) on your servers",
	help: `Measures, in one process and one run, what redsource does on these servers
next to what Redis and PostgreSQL do with nothing in the way (the
ceilings), round after round in a fixed order, so that every figure has
its ceiling from the same minute:

  append      raw XADD, one per call and 10 pipelined (ceilings); Append of
              1 and 10 events at each --callers count
  load        raw XRANGE of an aggregate's events (ceiling); Repository.Load
              of --load-events events, without and with a Redis snapshot
  projection  raw XREADGROUP COUNT 500 + XACK and a raw pgx unnest upsert
              (ceilings); a Runner end to end over --events events with a
              per-event and a batch (unnest) handler
  rebuild     the same two ceilings over --rebuild-events events, and
              projection.Rebuild of them
  peer        Watermill (watermill-redisstream) publish and subscribe+ack,
              same payload, same goroutine counts, same Redis; only with
              --peer, a binary built from bench/watermill (make bench does)

Each figure is events/s, its ratio to its ceiling in the same round, the
Redis main thread's CPU per event (INFO cpu; meaningful only on a Redis
that nothing else uses: the run says what else it saw), Redis memory per
event (MEMORY USAGE over the keys written) and, for appends and loads,
latency percentiles per call. With --rounds N each figure is the median of
the N rounds, with their range.

It is safe against your own servers: it works only in a namespace
(default "rsbench") and a PostgreSQL schema (default "rsbench") of its own,
refuses to start when either exists already, never flushes anything, and
deletes exactly its own keys (every master, one key per command) and drops
its schema at the end, also on Ctrl-C. It writes up to about 1 KiB of
Redis memory per event it holds at a time (the rebuild log and one
measurement's appends). Against a cluster it works too.

The default run (3 rounds of every section, 2 s per timed measurement,
the Watermill peer included) took under 3 minutes on a 2-core machine
that also runs Redis and PostgreSQL (docs/performance.md); --rounds 1
about a minute. The issue's 1,000,000-event rebuild is
--rebuild-events 1000000.`,
	example: `  make bench                                  # builds the Watermill peer and runs this with --peer
  redsource bench --rounds 1 --duration 1s
  redsource bench --peer ./bin/watermill-bench --callers 1,4,16,64,128 --svg bench.svg
  redsource bench --sections append,load --json > bench.json
  redsource bench --rebuild-events 1000000 --sections rebuild`,
	setup: func(fs *flag.FlagSet) runFunc {
		o := &benchOptions{
			callers:    intList{16, 128},
			loadEvents: intList{10, 100, 1000},
			sections:   stringList(benchSections),
		}
		fs.DurationVar(&o.duration, "duration", 2*time.Second, "how long each timed measurement (appends, loads, publishes) runs, a Go `duration`")
		fs.IntVar(&o.rounds, "rounds", 3, "`N` rounds: every measurement once per round, in a fixed order; figures are medians")
		fs.Var(&o.callers, "callers", "concurrent callers of the append measurements, a comma-separated `list` (default 16,128)")
		fs.IntVar(&o.loadCallers, "load-callers", 16, "`N` concurrent callers of the load measurements")
		fs.Var(&o.loadEvents, "load-events", "aggregate sizes of the load measurements, a comma-separated `list`, each at least 2 (default 10,100,1000)")
		fs.IntVar(&o.events, "events", 50000, "`N` events of the projection workload (over 10,000 aggregates, 8 partitions)")
		fs.IntVar(&o.rebuildEvents, "rebuild-events", 200000, "`N` events of the rebuild workload, 10 per aggregate (the issue's figure: 1000000)")
		fs.StringVar(&o.peer, "peer", "", "the Watermill peer: a `binary` built from bench/watermill (go build -C bench/watermill)")
		fs.StringVar(&o.svg, "svg", "", "write a plot of append events/s against callers to `FILE` (SVG)")
		fs.Var(&o.sections, "sections", "sections to run, a comma-separated `list` (default append,load,projection,rebuild)")
		return func(ctx context.Context, c *cli, _ []string) error { return runBench(ctx, c, o) }
	},
}

// benchSections are the sections in the order they run in a round.
var benchSections = []string{"append", "load", "projection", "rebuild"}

// Fixed shapes of the workloads (docs/cli.md, "bench").
const (
	benchAggregates  = 10000 // append and projection workloads
	benchPartitions  = 8
	benchPayloadSize = 300
	benchReadBatch   = 500  // XREADGROUP COUNT, projection BatchSize
	benchRebuildRows = 1000 // rebuild BatchSize, write-ceiling fold
	maxBenchCallers  = 4096
)

type benchOptions struct {
	duration      time.Duration
	rounds        int
	callers       intList
	loadCallers   int
	loadEvents    intList
	events        int
	rebuildEvents int
	peer          string
	svg           string
	sections      stringList
}

func (o *benchOptions) validate() error {
	switch {
	case o.duration <= 0:
		return usagef("--duration must be positive")
	case o.rounds < 1:
		return usagef("--rounds is %d, want at least 1", o.rounds)
	case len(o.callers) == 0:
		return usagef("--callers needs at least one count")
	case o.loadCallers < 1 || o.loadCallers > maxBenchCallers:
		return usagef("--load-callers is %d, want 1..%d", o.loadCallers, maxBenchCallers)
	case o.events < benchPartitions:
		return usagef("--events is %d, want at least %d", o.events, benchPartitions)
	case o.rebuildEvents < 10*benchPartitions:
		return usagef("--rebuild-events is %d, want at least %d", o.rebuildEvents, 10*benchPartitions)
	}
	for _, n := range o.callers {
		if n < 1 || n > maxBenchCallers {
			return usagef("--callers: %d, want 1..%d", n, maxBenchCallers)
		}
	}
	for _, n := range o.loadEvents {
		if n < 2 || n > 100000 {
			return usagef("--load-events: %d, want 2..100000", n)
		}
	}
	for _, s := range o.sections {
		if !slices.Contains(benchSections, s) {
			return usagef("--sections: unknown section %q (want some of %s)", s, strings.Join(benchSections, ","))
		}
	}
	if len(o.sections) == 0 {
		return usagef("--sections needs at least one section")
	}
	slices.Sort(o.callers)
	o.callers = slices.Compact(o.callers)
	slices.Sort(o.loadEvents)
	o.loadEvents = slices.Compact(o.loadEvents)
	return nil
}

func (o *benchOptions) has(section string) bool { return slices.Contains(o.sections, section) }

// intList is a comma-separated flag of positive integers.
type intList []int

func (l *intList) String() string {
	parts := make([]string, len(*l))
	for i, n := range *l {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ",")
}

func (l *intList) Set(s string) error {
	var out intList
	for part := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil {
			return fmt.Errorf("%q is not a number", part)
		}
		out = append(out, n)
	}
	*l = out
	return nil
}

// stringList is a comma-separated flag of names.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(s string) error {
	var out stringList
	for part := range strings.SplitSeq(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	*l = out
	return nil
}

// Defaults of the namespace and schema the bench works in, when --namespace
// and --schema are not given: never the global defaults, which name the
// user's own data.
const (
	benchNamespace = "rsbench"
	benchSchema    = "rsbench"
)

// bench is one run: its servers, what it created (to remove it) and what
// it measured.
type bench struct {
	c *cli
	o *benchOptions
	// rc looks (INFO, SCAN, MEMORY USAGE, cleanup); wc is what the
	// measurements use, a client of its own, closed before the last look
	// at what else uses Redis so that its connections are not counted.
	rc, wc rueidis.Client
	pool   *pgxpool.Pool // nil unless a section needs PostgreSQL
	ns     string
	schema string
	// claimed: the namespace's marker key is ours, so every key under
	// the namespace is too; created: the schema is ours.
	claimed, created bool
	seq              int // sub-namespaces handed out
	payload          []byte

	env     benchEnv
	results []*benchResult
	byID    map[string]*benchResult
	notes   []string
}

func runBench(ctx context.Context, c *cli, o *benchOptions) (err error) {
	if err := o.validate(); err != nil {
		return err
	}
	b := &bench{c: c, o: o, ns: benchNamespace, schema: benchSchema, byID: map[string]*benchResult{}, payload: benchBody(12345)}
	if c.g.namespaceSet {
		b.ns = c.g.namespace
	}
	if c.g.schemaSet {
		b.schema = c.g.schema
	}
	if o.peer != "" {
		if err := checkPeer(o.peer); err != nil {
			return usagef("--peer: %v", err)
		}
	}
	if b.rc, err = c.benchClient(ctx); err != nil {
		return err
	}
	defer b.rc.Close()
	defer func() {
		if cerr := b.cleanup(context.WithoutCancel(ctx)); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	if err := b.claimNamespace(ctx); err != nil {
		return err
	}
	if o.has("projection") || o.has("rebuild") {
		if err := b.createSchema(ctx); err != nil {
			return err
		}
	}
	if err := b.environment(ctx); err != nil {
		return err
	}
	if b.wc, err = c.benchClient(ctx); err != nil {
		return err
	}
	defer func() {
		if b.wc != nil {
			b.wc.Close()
		}
	}()
	b.progressf("bench: namespace %q, schema %q, %d round(s), %s per timed measurement; Redis %s (%s), %s",
		b.ns, b.schema, o.rounds, o.duration, b.env.Redis.Version, b.env.Redis.Mode, b.env.Redis.Others)
	if o.peer == "" {
		b.note("no --peer: Watermill was not measured (make bench builds bench/watermill and passes it)")
	}
	plan, err := b.prepare(ctx)
	if err != nil {
		return err
	}
	start := time.Now()
	for round := range o.rounds {
		for _, m := range plan {
			if err := ctx.Err(); err != nil {
				return err
			}
			s, err := m.run(ctx)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", round+1, m.res.Label, err)
			}
			m.res.Rounds = append(m.res.Rounds, s)
			b.progressf("round %d/%d  %-64s %s events/s", round+1, o.rounds, m.res.Label+callersSuffix(m.res), formatRate(s.EventsPerSec))
		}
	}
	b.env.MeasuredSeconds = time.Since(start).Seconds()
	b.summarize()
	b.wc.Close()
	b.wc = nil
	if err := b.othersAfter(ctx); err != nil {
		return err
	}
	if o.svg != "" {
		if err := writeBenchSVG(o.svg, b); err != nil {
			return fmt.Errorf("--svg: %w", err)
		}
	}
	if c.g.json {
		return writeJSON(c.stdout, b.report())
	}
	return b.printTables()
}

func (b *bench) progressf(format string, args ...any) {
	fmt.Fprintf(b.c.stderr, format+"\n", args...)
}

func (b *bench) note(s string) { b.notes = append(b.notes, s) }

// sub returns a fresh namespace under the bench's for one measurement, so
// that its keys can be counted and deleted alone.
func (b *bench) sub(name string) string {
	b.seq++
	return fmt.Sprintf("%s:%s%d", b.ns, name, b.seq)
}

// claimNamespace refuses a namespace that holds any key on any master,
// then takes it with a marker key (SET NX), so that two runs cannot share
// it.
func (b *bench) claimNamespace(ctx context.Context) error {
	keys, err := scanKeys(ctx, b.rc, b.ns, 1)
	if err != nil {
		return err
	}
	if len(keys) > 0 {
		return &exitError{code: exitFailure, msg: fmt.Sprintf(
			"namespace %q already has keys in Redis (%s): bench works only in a namespace of its own and deletes it afterwards; give another --namespace (a bench that was killed leaves its keys: delete them yourself if they are its)",
			b.ns, keys[0])}
	}
	marker := b.ns + ":bench"
	ok, err := b.rc.Do(ctx, b.rc.B().Set().Key(marker).Value("redsource bench, started "+time.Now().UTC().Format(time.RFC3339)).Nx().Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return &exitError{code: exitFailure, msg: fmt.Sprintf("namespace %q was taken by another bench just now; give another --namespace", b.ns)}
	}
	if err != nil {
		return fmt.Errorf("claim namespace %q: %w", b.ns, err)
	}
	_ = ok
	b.claimed = true
	return nil
}

// createSchema creates the bench's schema, refusing one that exists, and
// opens a pool whose connections work in it.
func (b *bench) createSchema(ctx context.Context) error {
	cfg, err := pgxpool.ParseConfig(b.c.g.databaseURL)
	if err != nil {
		return usagef("--database %q is not a PostgreSQL URL: %v", redactURL(b.c.g.databaseURL), parseError(b.c.g.databaseURL, err))
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = b.schema
	cfg.MaxConns = 2*benchPartitions + 4
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(cctx, cfg)
	if err == nil {
		err = pool.Ping(cctx)
	}
	if err != nil {
		if pool != nil {
			pool.Close()
		}
		return fmt.Errorf("cannot connect to PostgreSQL at %s: %w", redactURL(b.c.g.databaseURL), err)
	}
	b.pool = pool
	_, err = pool.Exec(ctx, "CREATE SCHEMA "+pgschema.Quote(b.schema))
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P06" { // duplicate_schema
		return &exitError{code: exitFailure, msg: fmt.Sprintf(
			"schema %q already exists in PostgreSQL: bench works only in a schema of its own and drops it afterwards; give another --schema", b.schema)}
	}
	if err != nil {
		return fmt.Errorf("create schema %q: %w", b.schema, err)
	}
	b.created = true
	return pgschema.Migrate(ctx, pool, b.schema)
}

// cleanup deletes every key of the namespace (if it was claimed) and drops
// the schema (if it was created), then checks that nothing is left.
func (b *bench) cleanup(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var errs []error
	if b.claimed {
		n, err := deleteKeys(ctx, b.rc, b.ns)
		if err == nil {
			var left []string
			if left, err = scanKeys(ctx, b.rc, b.ns, 1); err == nil && len(left) > 0 {
				err = fmt.Errorf("key %s is still there", left[0])
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("delete the keys of namespace %q: %w", b.ns, err))
		} else {
			b.progressf("bench: deleted the %s last keys of namespace %q", formatCount(int64(n)), b.ns)
		}
	}
	if b.pool != nil {
		if b.created {
			if _, err := b.pool.Exec(ctx, "DROP SCHEMA "+pgschema.Quote(b.schema)+" CASCADE"); err != nil {
				errs = append(errs, fmt.Errorf("drop schema %q: %w", b.schema, err))
			} else {
				b.progressf("bench: dropped schema %q", b.schema)
			}
		}
		b.pool.Close()
	}
	return errors.Join(errs...)
}

// benchClientName names the bench's connections (CLIENT SETNAME), so
// that what else uses Redis can be told from them in CLIENT LIST.
const benchClientName = "redsource-bench"

// benchClient opens a client of the bench's own on --redis, its
// connections named benchClientName, and checks that the server answers.
func (c *cli) benchClient(ctx context.Context) (rueidis.Client, error) {
	opt, err := rueidis.ParseURL(c.g.redisURL)
	if err != nil {
		return nil, usagef("--redis %q is not a Redis URL: %v", redactURL(c.g.redisURL), parseError(c.g.redisURL, err))
	}
	opt.DisableCache = true
	opt.ClientName = benchClientName
	rc, err := rueidis.NewClient(opt)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to Redis at %s: %w", redactURL(c.g.redisURL), err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := rc.Do(pctx, rc.B().Ping().Build()).Error(); err != nil {
		rc.Close()
		return nil, fmt.Errorf("Redis at %s does not answer: %w", redactURL(c.g.redisURL), err)
	}
	return rc, nil
}

func secondsDuration(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// pgVersion returns the PostgreSQL server's version.
func pgVersion(ctx context.Context, pool *pgxpool.Pool) string {
	var v string
	if err := pool.QueryRow(ctx, "SHOW server_version").Scan(&v); err != nil {
		return "?"
	}
	return v
}

// inTx runs fn in a transaction of pool.
func inTx(ctx context.Context, pool *pgxpool.Pool, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, pool, fn)
}
