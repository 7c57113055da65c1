package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/keys"
	"github.com/redsource/redsource/projection"
)

// Exit codes, documented in docs/cli.md.
const (
	exitOK      = 0
	exitFailure = 1 // the command could not do its work
	exitUsage   = 2 // the command line is wrong; nothing was done
	exitPending = 3 // a request was filed but its outcome was not seen within --wait
	// exitUnsafe: the events are at risk or lost: doctor found a Redis
	// setting that can lose them, or Redis lost data something remembers
	// (a stopped partition, a lost namespace).
	exitUnsafe = 4
)

// Defaults of the global flags when the environment names no server.
const (
	defaultRedisURL    = "redis://127.0.0.1:6379/0"
	defaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	defaultSchema      = "redsource"
)

// globals are the flags every command accepts, before or after the
// command name.
type globals struct {
	redisURL      string
	databaseURL   string
	namespace     string
	schema        string
	partitions    int
	json          bool
	partitionsSet bool // --partitions given explicitly
	namespaceSet  bool // --namespace given explicitly
	schemaSet     bool // --schema given explicitly
}

// globalFlagNames lists the global flags; isBool says which take no value.
var globalFlagNames = map[string]bool{
	"redis": false, "database": false, "namespace": false, "schema": false, "partitions": false, "json": true,
}

func registerGlobals(fs *flag.FlagSet, g *globals) {
	fs.StringVar(&g.redisURL, "redis", envOr("REDIS_URL", defaultRedisURL), "Redis `URL` (default $REDIS_URL, else "+defaultRedisURL+")")
	fs.StringVar(&g.databaseURL, "database", envOr("DATABASE_URL", defaultDatabaseURL), "PostgreSQL `URL` (default $DATABASE_URL, else a local server)")
	fs.StringVar(&g.namespace, "namespace", eventstore.DefaultNamespace, "Redis key `prefix` of the event store")
	fs.StringVar(&g.schema, "schema", defaultSchema, "PostgreSQL `schema` of the toolkit's tables")
	fs.IntVar(&g.partitions, "partitions", eventstore.DefaultPartitions, "partition `count` of the category (default: the count recorded for it, else 8)")
	fs.BoolVar(&g.json, "json", false, "machine-readable output: one JSON object per line for events, one JSON document otherwise")
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// command is one subcommand. setup registers the command's own flags on fs
// and returns the function that runs it with the positional arguments.
type command struct {
	name    string   // "replay", "quarantine list"
	args    []string // positional argument names; a "[name]" is optional
	summary string   // one line for the overview
	help    string   // paragraphs after the usage line
	example string   // example lines
	setup   func(fs *flag.FlagSet) runFunc
}

type runFunc func(ctx context.Context, c *cli, args []string) error

// usageLine is "redsource replay <category> [--from X] [--to X]".
func (cmd *command) usageLine() string {
	parts := append([]string{"redsource", cmd.name}, cmd.args...)
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	cmd.setup(fs)
	fs.VisitAll(func(f *flag.Flag) {
		if arg, _ := flag.UnquoteUsage(f); arg != "" {
			parts = append(parts, "[--"+f.Name+" "+arg+"]")
		} else {
			parts = append(parts, "[--"+f.Name+"]")
		}
	})
	return strings.Join(parts, " ")
}

func (cmd *command) required() int {
	n := 0
	for _, a := range cmd.args {
		if !strings.HasPrefix(a, "[") {
			n++
		}
	}
	return n
}

// commands is filled in by init so that the command files can refer to
// the table (help) without an initialisation cycle.
var commands []*command

func init() {
	commands = []*command{
		categoriesCommand, readCommand, replayCommand, tailCommand, appendCommand,
		projectionsCommand, quarantineListCommand, quarantineRetryCommand, quarantineSkipCommand,
		doctorCommand, benchCommand,
	}
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// cli is one invocation: its flags, its input and output and the
// connections it opened (closed by close).
type cli struct {
	g      globals
	stdin  io.Reader // nil: none (commands that read it say so)
	stdout io.Writer
	stderr io.Writer
	conns
}

// usageError is a wrong command line: exit 2, with the command's usage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// exitError ends the command with a given code after its output has been
// written; msg, if any, goes to stderr.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// run is the whole program: it parses args, runs one command and returns
// the exit code. Tests call it in-process.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	lead, rest, name, err := splitCommand(args)
	if err != nil {
		fmt.Fprintf(stderr, "redsource: %v\n", err)
		fmt.Fprintln(stderr, "Run 'redsource help' for usage.")
		return exitUsage
	}
	switch name {
	case "":
		overview(stderr)
		return exitUsage
	case "help":
		return helpCommand(rest, stdout, stderr)
	case "quarantine":
		if len(rest) == 0 || isHelpFlag(rest[0]) {
			if len(rest) == 0 {
				fmt.Fprintln(stderr, "redsource quarantine: missing subcommand (list, retry or skip)")
				quarantineOverview(stderr)
				return exitUsage
			}
			quarantineOverview(stdout)
			return exitOK
		}
		if strings.HasPrefix(rest[0], "-") {
			fmt.Fprintf(stderr, "redsource quarantine: the subcommand (list, retry or skip) goes right after 'quarantine', before %s\n", rest[0])
			return exitUsage
		}
		name, rest = "quarantine "+rest[0], rest[1:]
	}
	cmd := lookup(name)
	if cmd == nil {
		fmt.Fprintf(stderr, "redsource: unknown command %q\n", name)
		if s := suggest(name); s != "" {
			fmt.Fprintf(stderr, "Did you mean '%s'?\n", s)
		}
		fmt.Fprintln(stderr, "Run 'redsource help' for the list of commands.")
		return exitUsage
	}
	return runCommand(ctx, cmd, append(lead, rest...), stdin, stdout, stderr)
}

func runCommand(ctx context.Context, cmd *command, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("redsource "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr}
	registerGlobals(fs, &c.g)
	runFn := cmd.setup(fs)
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		commandHelp(cmd, stdout)
		return exitOK
	}
	if err == nil {
		err = checkArgs(cmd, pos)
	}
	if err != nil {
		return reportUsage(cmd, err, stderr)
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "partitions":
			c.g.partitionsSet = true
		case "namespace":
			c.g.namespaceSet = true
		case "schema":
			c.g.schemaSet = true
		}
	})
	if err := c.checkGlobals(); err != nil {
		return reportUsage(cmd, usagef("%s", c.redact(err.Error())), stderr)
	}
	defer c.close()
	err = runFn(ctx, c, pos)
	if err == nil {
		return exitOK
	}
	var ue *usageError
	var ee *exitError
	switch {
	case errors.As(err, &ue):
		return reportUsage(cmd, usagef("%s", c.redact(err.Error())), stderr)
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintf(stderr, "redsource %s: %s\n", cmd.name, c.redact(ee.msg))
		}
		return ee.code
	case errors.Is(err, eventstore.ErrInvalidName):
		// A name that cannot be used is a wrong command line, found
		// when the store checked it.
		return reportUsage(cmd, usagef("%s", strings.TrimPrefix(err.Error(), "eventstore: invalid name: ")), stderr)
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		fmt.Fprintf(stderr, "redsource %s: interrupted\n", cmd.name)
		return exitFailure
	case errors.Is(err, eventstore.ErrDataLoss), errors.Is(err, eventstore.ErrUnsafeRedis):
		fmt.Fprintf(stderr, "redsource %s: %s\n", cmd.name, c.redact(describe(err, c)))
		return exitUnsafe
	}
	fmt.Fprintf(stderr, "redsource %s: %s\n", cmd.name, c.redact(describe(err, c)))
	return exitFailure
}

func reportUsage(cmd *command, err error, stderr io.Writer) int {
	fmt.Fprintf(stderr, "redsource %s: %v\n", cmd.name, err)
	fmt.Fprintf(stderr, "usage: %s\n", cmd.usageLine())
	fmt.Fprintf(stderr, "Run 'redsource help %s' for details.\n", cmd.name)
	return exitUsage
}

// describe turns well-known failures into a message that says what to do.
func describe(err error, c *cli) string {
	switch {
	case errors.Is(err, projection.ErrNoSchema):
		return fmt.Sprintf("the PostgreSQL database has no redsource tables in schema %q: no projection has run against it yet, or --schema is wrong (%s)",
			c.g.schema, redactURL(c.g.databaseURL))
	case errors.Is(err, eventstore.ErrPartitionMismatch):
		return err.Error() + " (leave --partitions out to use the recorded count)"
	}
	return err.Error()
}

func (c *cli) checkGlobals() error {
	if err := keys.ValidateNamespace(c.g.namespace); err != nil {
		return usagef("--namespace: %v", err)
	}
	if c.g.schema == "" {
		return usagef("--schema must not be empty")
	}
	if c.g.partitions < 1 || c.g.partitions > eventstore.MaxPartitions {
		return usagef("--partitions is %d, want 1..%d", c.g.partitions, eventstore.MaxPartitions)
	}
	return nil
}

func checkArgs(cmd *command, pos []string) error {
	if n := cmd.required(); len(pos) < n {
		return usagef("missing %s", cmd.args[len(pos)])
	}
	if len(pos) > len(cmd.args) {
		return usagef("unexpected argument %q", pos[len(cmd.args)])
	}
	return nil
}

// splitCommand finds the command name: global flags may come before it,
// and are handed to the command with the rest of the line.
func splitCommand(args []string) (lead, rest []string, name string, err error) {
	i := 0
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" || a == "-" || !strings.HasPrefix(a, "-") {
			break
		}
		if isHelpFlag(a) {
			return nil, nil, "help", nil
		}
		fname, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		isBool, ok := globalFlagNames[fname]
		if !ok {
			return nil, nil, "", fmt.Errorf("unknown flag %s before the command (only global flags go there)", a)
		}
		lead = append(lead, a)
		if !isBool && !hasValue {
			if i+1 == len(args) {
				return nil, nil, "", fmt.Errorf("flag %s needs a value", a)
			}
			i++
			lead = append(lead, args[i])
		}
	}
	if i < len(args) && args[i] == "--" {
		i++
	}
	if i == len(args) {
		return lead, nil, "", nil
	}
	return lead, args[i+1:], args[i], nil
}

func isHelpFlag(a string) bool {
	switch a {
	case "-h", "-help", "--help", "--h":
		return true
	}
	return false
}

// parseInterspersed parses flags that may come before, between or after
// the positional arguments; everything after "--" is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			// The flag package names flags with one dash; we document two.
			return nil, usagef("%s", dashRE.ReplaceAllString(err.Error(), "$1--$2"))
		}
		rest := fs.Args()
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

var dashRE = regexp.MustCompile(`(: | flag | for )-(\w)`)

// suggest returns the command closest to a mistyped name, if any is close.
func suggest(name string) string {
	best, bestD := "", 3
	for _, c := range commands {
		for _, cand := range []string{c.name, strings.Fields(c.name)[0]} {
			if d := editDistance(name, cand); d < bestD {
				best, bestD = cand, d
			}
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// helpCommand serves `redsource help [command [subcommand]]`.
func helpCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		overview(stdout)
		return exitOK
	}
	name := strings.Join(args, " ")
	if name == "quarantine" {
		quarantineOverview(stdout)
		return exitOK
	}
	cmd := lookup(name)
	if cmd == nil {
		fmt.Fprintf(stderr, "redsource help: unknown command %q\n", name)
		fmt.Fprintln(stderr, "Run 'redsource help' for the list of commands.")
		return exitUsage
	}
	commandHelp(cmd, stdout)
	return exitOK
}

func overview(w io.Writer) {
	fmt.Fprint(w, `redsource is the operator CLI of a redsource event store: events in Redis
Streams, projections (read models) in PostgreSQL.

Usage:
  redsource <command> [arguments] [flags]

Commands:
`)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range commands {
		fmt.Fprintf(tw, "  %s %s\t%s\n", c.name, strings.Join(c.args, " "), c.summary)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nGlobal flags (before or after the command):")
	printFlags(w, globalFlagSet(), nil)
	fmt.Fprint(w, `
Run 'redsource help <command>' (or 'redsource <command> --help') for one
command. Exit codes: 0 ok, 1 failure, 2 usage error, 3 request filed but not
carried out within --wait, 4 doctor found something unsafe. More in
docs/cli.md.
`)
}

func quarantineOverview(w io.Writer) {
	fmt.Fprint(w, `Quarantined events are events a projection's handler failed on past its
limits; with sequenced quarantine, later events of the same aggregate are
parked behind them. These commands list them and ask the running projector
to retry or skip them.

Usage:
`)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range commands {
		if strings.HasPrefix(c.name, "quarantine ") {
			fmt.Fprintf(tw, "  redsource %s %s\t%s\n", c.name, strings.Join(c.args, " "), c.summary)
		}
	}
	tw.Flush()
	fmt.Fprintln(w, "\nRun 'redsource help quarantine <list|retry|skip>' for details.")
}

func commandHelp(cmd *command, w io.Writer) {
	fmt.Fprintf(w, "usage: %s\n\n%s\n", cmd.usageLine(), strings.TrimSpace(cmd.help))
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	cmd.setup(fs)
	if hasFlags(fs) {
		fmt.Fprintln(w, "\nFlags:")
		printFlags(w, fs, nil)
	}
	fmt.Fprintln(w, "\nGlobal flags:")
	printFlags(w, globalFlagSet(), nil)
	if cmd.example != "" {
		fmt.Fprintf(w, "\nExamples:\n%s\n", strings.TrimRight(cmd.example, "\n"))
	}
}

func globalFlagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("globals", flag.ContinueOnError)
	registerGlobals(fs, &globals{})
	return fs
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// printFlags lists flags GNU style (--name value), unlike flag.PrintDefaults.
func printFlags(w io.Writer, fs *flag.FlagSet, skip []string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fs.VisitAll(func(f *flag.Flag) {
		if slices.Contains(skip, f.Name) {
			return
		}
		arg, usage := flag.UnquoteUsage(f)
		name := "--" + f.Name
		if arg != "" {
			name += " " + arg
		}
		def := ""
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && !strings.Contains(usage, "default") {
			def = " (default " + f.DefValue + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s%s\n", name, usage, def)
	})
	tw.Flush()
}
