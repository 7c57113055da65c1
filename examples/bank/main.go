// Command bank is a small bank service built on redsource's public API:
// account aggregates with a balance rule, concurrent writers that retry on
// conflict, snapshots, a PostgreSQL read model fed by a projection,
// quarantine of poison events, verification and rebuild.
//
//	go run ./examples/bank [flags] <command> [command flags]
//
//	demo                                    everything end to end, in namespace <namespace>_demo
//	load    [-accounts N] [-ops M] [-writers W]   open missing accounts, run M random commands
//	project [-workers K] [-until-caught-up]       run the balances projection
//	verify                                  compare the read model with the log
//	rebuild [-blue-green]                   rebuild the read model from the start of the log
//
// Flags: -redis URL (default $REDIS_URL), -database URL (default
// $DATABASE_URL), -namespace NAME (default "bank"), -schema NAME (default:
// the namespace), -v (info logs). See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/rueidis"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/projection"
)

// Defaults when the environment names no server.
const (
	defaultRedisURL    = "redis://127.0.0.1:6379/0"
	defaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
)

// Exit statuses.
const (
	exitOK       = 0
	exitMismatch = 1 // verify (or demo) found differences
	exitError    = 2 // bad usage, or Redis or PostgreSQL failed
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage: bank [flags] <command> [command flags]

commands:
  demo                                        everything end to end (in namespace <namespace>_demo, wiped first)
  load    [-accounts N] [-ops M] [-writers W]  open the missing accounts, then M random commands from W writers
  project [-workers K] [-until-caught-up]     run the balances projection
  verify                                      compare the read model with the log; exit 1 on a difference
  rebuild [-blue-green]                       rebuild the read model from the start of the log

flags:
`

// env is what every command works with.
type env struct {
	out, errOut io.Writer
	log         *slog.Logger
	namespace   string
	schema      string
	redis       rueidis.Client
	pool        *pgxpool.Pool
	store       *eventstore.Store
	bank        *Bank
	leaseTTL    time.Duration // of projection partitions; 0: the library's default
}

// run is the program: it parses args, connects, runs one command and
// returns the exit status. Tests call it in-process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bank", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	redisURL := fs.String("redis", envOr("REDIS_URL", defaultRedisURL), "Redis URL (default $REDIS_URL)")
	dbURL := fs.String("database", envOr("DATABASE_URL", defaultDatabaseURL), "PostgreSQL URL (default $DATABASE_URL)")
	namespace := fs.String("namespace", "bank", "Redis key prefix of the event store")
	schema := fs.String("schema", "", "PostgreSQL schema of the read model and the projection's tables (default: the namespace)")
	verbose := fs.Bool("v", false, "log at info level (default: warnings only)")
	if err := fs.Parse(args); err != nil {
		return exitError
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitError
	}
	cmd, cmdArgs := fs.Arg(0), fs.Args()[1:]
	commands := map[string]func(context.Context, *env, []string) int{
		"demo": cmdDemo, "load": cmdLoad, "project": cmdProject, "verify": cmdVerify, "rebuild": cmdRebuild,
	}
	fn, ok := commands[cmd]
	if !ok {
		fmt.Fprintf(stderr, "bank: unknown command %q\n", cmd)
		fs.Usage()
		return exitError
	}
	if *schema == "" {
		*schema = *namespace
	}
	if cmd == "demo" {
		// The demo wipes its namespace first: never the user's own.
		*namespace += "_demo"
		*schema += "_demo"
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	e := &env{out: stdout, errOut: stderr, namespace: *namespace, schema: *schema,
		log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))}
	defer e.close() // also what connect opened before it failed
	if err := e.connect(ctx, *redisURL, *dbURL); err != nil {
		fmt.Fprintln(stderr, "bank:", err)
		return exitError
	}
	return fn(ctx, e, cmdArgs)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func (e *env) connect(ctx context.Context, redisURL, dbURL string) error {
	if len(e.schema) > 63 {
		return fmt.Errorf("schema name %q is longer than PostgreSQL's 63 bytes; use -schema", e.schema)
	}
	opt, err := rueidis.ParseURL(redisURL)
	if err != nil {
		return fmt.Errorf("bad -redis URL %s: %w", redactURL(redisURL), parseError(redisURL, err))
	}
	opt.DisableCache = true
	if e.redis, err = rueidis.NewClient(opt); err != nil {
		return fmt.Errorf("Redis at %s: %w", redactURL(redisURL), err)
	}
	pcfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return fmt.Errorf("bad -database URL %s: %w", redactURL(dbURL), parseError(dbURL, err))
	}
	if !strings.Contains(dbURL, "pool_max_conns") {
		pcfg.MaxConns = 16 // one per partition worker, and some for the rest
	}
	if e.pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		return fmt.Errorf("PostgreSQL: %w", err)
	}
	if err := e.pool.Ping(ctx); err != nil {
		return fmt.Errorf("PostgreSQL at %s does not answer: %w", redactURL(dbURL), err)
	}
	// The schema that holds the read model and the checkpoints also
	// remembers the namespace: a Redis that lost it (restarted without
	// persistence) is refused by every command, not taken for a new bank.
	if e.store, err = eventstore.New(e.redis, eventstore.Config{Namespace: e.namespace, Logger: e.log,
		Witness: projection.NewWitness(e.pool, e.schema)}); err != nil {
		return err
	}
	if e.bank, err = newBank(e.store, e.log); err != nil {
		return err
	}
	return nil
}

// redactURL is a server URL for messages: its password hidden
// (url.URL.Redacted), or nothing of it when it does not parse as a URL
// (a PostgreSQL key=value string, or a URL with a bad port) and may hold
// a password.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Query().Has("password") {
		if hasSecret(s) {
			return "(not shown: it holds a password)"
		}
		return s
	}
	return u.Redacted()
}

// parseError is why a server URL did not parse. The parsers quote the URL
// in their errors (url.Parse whole, pgx partly redacted) and details such
// as an "invalid port" can quote part of a password: nothing of the error
// is kept when the URL may hold one.
func parseError(s string, err error) error {
	if hasSecret(s) {
		return errors.New("it does not parse (in a password, characters such as / @ : % must be percent-encoded)")
	}
	return err
}

func hasSecret(s string) bool { return strings.Contains(s, "@") || strings.Contains(s, "password") }

func (e *env) close() {
	if e.pool != nil {
		e.pool.Close()
	}
	if e.redis != nil {
		e.redis.Close()
	}
}

// projectionConfig is the runner configuration every command uses. The
// toolkit's tables (checkpoints, held events) live in the same schema as
// the read model: one schema per namespace, so two namespaces never share
// checkpoints.
func (e *env) projectionConfig() projection.Config {
	return projection.Config{
		Store:    e.store,
		DB:       e.pool,
		Schema:   e.schema,
		Block:    200 * time.Millisecond, // a stop or an operator request waits at most this long
		LeaseTTL: e.leaseTTL,
		Logger:   e.log,
	}
}

func (e *env) admin() *projection.Admin { return projection.NewAdmin(e.pool, e.schema) }

func (e *env) printf(format string, args ...any) { fmt.Fprintf(e.out, format, args...) }

// fail reports err and returns the error status.
func (e *env) fail(err error) int {
	if errors.Is(err, context.Canceled) {
		fmt.Fprintln(e.errOut, "bank: interrupted")
	} else {
		fmt.Fprintln(e.errOut, "bank:", err)
	}
	return exitError
}
