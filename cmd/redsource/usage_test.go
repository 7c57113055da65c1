package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
)

// runNoServer runs the CLI with servers that do not exist: usage errors
// must be found before anything is contacted.
func runNoServer(args ...string) (string, string, int) {
	var out, errs bytes.Buffer
	code := run(context.Background(), append([]string{"--redis", "redis://127.0.0.1:1/0", "--database", "postgres://nobody@127.0.0.1:1/x"}, args...), nil, &out, &errs)
	return out.String(), errs.String(), code
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		msg  []string
	}{
		{[]string{"frobnicate"}, []string{`unknown command "frobnicate"`, "redsource help"}},
		{[]string{"replya", "account"}, []string{`unknown command "replya"`, "Did you mean 'replay'?"}},
		{[]string{"read", "account"}, []string{"redsource read: missing <id>", "usage: redsource read <category> <id> [--from-version N]"}},
		{[]string{"replay"}, []string{"missing <category>"}},
		{[]string{"tail", "a", "b"}, []string{`unexpected argument "b"`}},
		{[]string{"replay", "account", "--from", "12-x"}, []string{`--from: invalid position "12-x": sequence: "x" is not a decimal number`}},
		{[]string{"replay", "account", "--to", "99999999999999999999-0"}, []string{"--to: invalid position", "overflows 64 bits"}},
		{[]string{"replay", "account", "--from", "2024-13-01T00:00:00Z"}, []string{`--from "2024-13-01T00:00:00Z" is not an RFC 3339 time`}},
		{[]string{"replay", "account", "--from", "2024-05-01"}, []string{`--from "2024-05-01" is not an RFC 3339 time`}},
		{[]string{"replay", "account", "--from", "yesterday"}, []string{`--from "yesterday" is neither a position (ms-seq, e.g. 1714564800000-0) nor an RFC 3339 time`}},
		{[]string{"replay", "account", "--from", "5-0", "--to", "4-0"}, []string{"--from 5-0 is after --to 4-0"}},
		{[]string{"replay", "account", "--nope"}, []string{"flag provided but not defined: --nope"}},
		{[]string{"replay", "account", "--from"}, []string{"flag needs an argument: --from"}},
		{[]string{"read", "account", "a1", "--from-version", "x"}, []string{`invalid value "x" for flag --from-version`}},
		{[]string{"--bogus", "categories"}, []string{"unknown flag --bogus before the command"}},
		{[]string{"--namespace"}, []string{"flag --namespace needs a value"}},
		{[]string{"--namespace", "a{b", "categories"}, []string{`--namespace: invalid namespace "a{b"`}},
		{[]string{"--partitions", "0", "categories"}, []string{"--partitions is 0, want 1..1024"}},
		{[]string{"help", "nope"}, []string{`redsource help: unknown command "nope"`}},
		{[]string{"--redis", "http://x", "categories"}, []string{"--redis \"http://x\" is not a Redis URL"}},
	} {
		out, errs, code := runNoServer(tc.args...)
		require.Equal(t, 2, code, "%v: %s", tc.args, errs)
		require.Empty(t, out, "%v", tc.args)
		for _, m := range tc.msg {
			require.Contains(t, errs, m, "%v", tc.args)
		}
	}
	// No arguments at all: the overview, on stderr.
	out, errs, code := runNoServer()
	require.Equal(t, 2, code)
	require.Empty(t, out)
	require.Contains(t, errs, "Commands:")
}

func TestHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}} {
		out, errs, code := runNoServer(args...)
		require.Equal(t, 0, code, errs)
		for _, c := range commands {
			require.Contains(t, out, "  "+c.name+" ", "overview lists %s", c.name)
		}
		require.Contains(t, out, "--namespace prefix")
	}
	for _, c := range commands {
		for _, args := range [][]string{append([]string{"help"}, strings.Fields(c.name)...), append(strings.Fields(c.name), "--help"), append(strings.Fields(c.name), "x", "-h")} {
			out, errs, code := runNoServer(args...)
			require.Equal(t, 0, code, "%v: %s", args, errs)
			require.True(t, strings.HasPrefix(out, "usage: redsource "+c.name), "%v: %s", args, out)
			require.Contains(t, out, "Global flags:")
			require.Contains(t, out, "Examples:")
		}
	}
	out, _, code := runNoServer("help", "quarantine")
	require.Equal(t, 0, code)
	require.Contains(t, out, "redsource quarantine retry <projection> [<position>]")
}

func TestUnreachableServer(t *testing.T) {
	t.Parallel()
	out, errs, code := runNoServer("categories")
	require.Equal(t, 1, code)
	require.Empty(t, out)
	require.Contains(t, errs, "redsource categories: cannot connect to Redis at redis://127.0.0.1:1/0")
	out, errs, code = runNoServer("projections")
	require.Equal(t, 1, code)
	require.Empty(t, out)
	require.Contains(t, errs, "cannot connect to PostgreSQL at postgres://nobody@127.0.0.1:1/x")
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"redis://:secret@h:6379/0":                 "redis://:xxxxx@h:6379/0",
		"postgres://u:pw@h/db":                     "postgres://u:xxxxx@h/db",
		"postgres://u@h/db":                        "postgres://u@h/db",
		"redis://h:6379/0":                         "redis://h:6379/0",
		"postgres://u@h/db?password=pw&sslmode=no": "postgres://u@h/db?password=xxxxx&sslmode=no",
		"postgres://u@h/db?sslpassword=pw":         "postgres://u@h/db?sslpassword=xxxxx",
		// URLs that do not parse.
		"redis://:secret@h:x/0":             "redis://:xxxxx@h:x/0",
		"redis://u:se/cr@t@h:x/0":           "redis://u:xxxxx@h:x/0",
		"postgres://u@h:x/db?password=pw&a": "postgres://u@h:x/db?password=xxxxx&a",
		// PostgreSQL key=value strings.
		"host=h user=u password=pw dbname=d": "host=h user=u password=xxxxx dbname=d",
		"host=h password='p w\\'x' dbname=d": "host=h password=xxxxx dbname=d",
		"password = pw host=h":               "password = xxxxx host=h",
	} {
		require.Equal(t, want, redactURL(in), in)
	}
}

// No message shows a password from --redis or --database, whatever fails.
func TestNoPasswordInMessages(t *testing.T) {
	t.Parallel()
	const pw = "s3cr/et@pw"
	for _, args := range [][]string{
		{"--redis", "redis://u:" + pw + "@127.0.0.1:x/0", "categories"},
		{"--redis", "redis://u:s3cret@127.0.0.1:x/0", "categories"},
		{"--redis", "redis://u:s3cret@127.0.0.1:1/0", "categories"},
		{"--redis", "redis://u:s3cret@127.0.0.1:1/0", "doctor"},
		{"--redis", "redis://u:s3cret@127.0.0.1:1/0?dial_timeout=x", "categories"},
		{"--database", "postgres://u:" + pw + "@127.0.0.1:x/db", "projections"},
		{"--database", "postgres://u:s3cret@127.0.0.1:1/db", "projections"},
		{"--database", "postgres://u@127.0.0.1:1/db?password=s3cret", "projections"},
		{"--database", "host=127.0.0.1 port=1 user=u password=s3cret", "projections"},
		{"--database", "host=127.0.0.1 port=x user=u password=s3cret", "projections"},
	} {
		var out, errs bytes.Buffer
		code := run(context.Background(), args, nil, &out, &errs)
		require.NotEqual(t, 0, code, "%v", args)
		for _, secret := range []string{"s3cret", "s3cr", "et@pw"} {
			require.NotContains(t, out.String()+errs.String(), secret, "%v", args)
		}
		require.NotEmpty(t, errs.String())
	}
}

func TestParseBound(t *testing.T) {
	p, err := parseBound("from", "2024-05-01T12:00:00.5+02:00", false)
	require.NoError(t, err)
	ms := uint64(time.Date(2024, 5, 1, 10, 0, 0, 500e6, time.UTC).UnixMilli())
	require.Equal(t, eventstore.Position{Ms: ms}, p)
	p, err = parseBound("to", "2024-05-01T12:00:00.5+02:00", true)
	require.NoError(t, err)
	require.Equal(t, eventstore.LastPositionAt(time.UnixMilli(int64(ms))), p)
	p, err = parseBound("to", "17-3", true)
	require.NoError(t, err)
	require.Equal(t, eventstore.Position{Ms: 17, Seq: 3}, p)
}

func TestFormatting(t *testing.T) {
	require.Equal(t, "0", formatCount(0))
	require.Equal(t, "999", formatCount(999))
	require.Equal(t, "1,000", formatCount(1000))
	require.Equal(t, "-1,234,567", formatCount(-1234567))
	require.Equal(t, "512 B", formatBytes(512))
	require.Equal(t, "1.50 KiB", formatBytes(1536))
	require.Equal(t, "12.0 MiB", formatBytes(12<<20))
	require.Equal(t, "850ms", formatDuration(850*time.Millisecond))
	require.Equal(t, "12s", formatDuration(12*time.Second))
	require.Equal(t, "3m12s", formatDuration(3*time.Minute+12*time.Second))
	require.Equal(t, "2h05m", formatDuration(2*time.Hour+5*time.Minute))
	require.Equal(t, "3d04h", formatDuration(76*time.Hour))
	require.Equal(t, "ab…", truncate("abcd", 3))
	require.Equal(t, `a\nb`, oneLine("a\nb"))
	require.Equal(t, `{"a":1}`, dataCell([]byte("{\n  \"a\": 1\n}"), 60))

	p := &progress{label: "replay account"}
	require.Equal(t, "replay account [###############---------------]  50%  1,000 events  500/s  eta 2s",
		p.render(0.5, 1000, "events", 2*time.Second))
	require.Equal(t, "replay account  10 events", p.render(-1, 10, "events", 0))
}

func TestStreamTable(t *testing.T) {
	var b bytes.Buffer
	tb := newStreamTable(&b, 2, "A", "BB", "C")
	require.NoError(t, tb.add("1", "2", "last"))
	require.Empty(t, b.String(), "buffered until two rows")
	require.NoError(t, tb.add("333", "4", "x"))
	require.NoError(t, tb.add("5", "666666", "y"))
	require.NoError(t, tb.flush())
	require.Equal(t, "A    BB  C\n1    2   last\n333  4   x\n5    666666  y\n", b.String(), "widths only grow")
}
