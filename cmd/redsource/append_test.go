package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
)

// bigJSON is a JSON document of exactly n bytes.
func bigJSON(n int) []byte {
	const head, tail = `{"blob":"`, `"}`
	return []byte(head + strings.Repeat("x", n-len(head)-len(tail)) + tail)
}

// An event of the largest size the store takes (1 MiB of type + data),
// far over what a command-line argument can hold, comes from a file or
// from standard input.
func TestAppendLargeFromFileAndStdin(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 8)
	data := bigJSON(eventstore.DefaultMaxEventBytes - len("Big"))
	path := filepath.Join(t.TempDir(), "event.json")
	require.NoError(t, os.WriteFile(path, data, 0o600))

	w.ok("append", "account", "a1", "Big", "@"+path)
	out, errs, code := w.runStdin(w.ctx, bytes.NewReader(data), "append", "account", "a2", "Big", "-", "--json")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, `"version": 1`)
	for _, id := range []string{"a1", "a2"} {
		var got [][]byte
		for ev, err := range w.store.Read(w.ctx, eventstore.StreamID{Category: "account", ID: id}, 0) {
			require.NoError(t, err)
			got = append(got, ev.Data)
		}
		require.Len(t, got, 1, id)
		require.True(t, bytes.Equal(data, got[0]), "%s: stored byte for byte", id)
	}
}

func TestAppendDataErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, b, 0o600))
		return p
	}
	tooBig := write("big.json", bigJSON(eventstore.DefaultMaxEventBytes+1))
	notJSON := write("bad.json", []byte(`{"amount":`))

	// Refused before anything is connected to: the servers do not exist.
	for _, tc := range []struct {
		arg   string
		stdin []byte
		msg   string
	}{
		{"@" + tooBig, nil, tooBig + " is 1,048,577 bytes; an event (type + data + metadata) may be at most 1,048,576 bytes (1.00 MiB)"},
		{"-", bigJSON(eventstore.DefaultMaxEventBytes + 1), "standard input holds more than 1,048,576 bytes"},
		{"@" + filepath.Join(dir, "missing.json"), nil, "cannot read <json-data> from " + filepath.Join(dir, "missing.json") + ": no such file or directory"},
		{"@" + dir, nil, "cannot read <json-data> from " + dir + ": is a directory"},
		{"@", nil, "<json-data> is @ without a file name"},
		{"@" + notJSON, nil, "<json-data> is not valid JSON"},
		{"-", []byte("nope"), "<json-data> is not valid JSON"},
		{"-", nil, "<json-data> is -, but there is no standard input"},
	} {
		var stdin io.Reader
		if tc.stdin != nil {
			stdin = bytes.NewReader(tc.stdin)
		}
		var out, errs bytes.Buffer
		code := run(context.Background(), []string{"--redis", "redis://127.0.0.1:1/0", "append", "account", "a1", "Big", tc.arg}, stdin, &out, &errs)
		require.Equal(t, 2, code, "%s: %s", tc.arg, errs.String())
		require.Empty(t, out.String())
		require.Contains(t, errs.String(), tc.msg, tc.arg)
		require.NotContains(t, errs.String(), "connect", tc.arg)
	}
}

// Data under the limit whose type and metadata take the event over it is
// refused by the store; the message says by how much, nothing is written.
func TestAppendOverLimitWithType(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 4)
	data := bigJSON(eventstore.DefaultMaxEventBytes)
	out, errs, code := w.runStdin(w.ctx, bytes.NewReader(data), "append", "account", "a1", "Big", "-", "--meta", "k=v")
	require.Equal(t, 2, code, errs)
	require.Empty(t, out)
	require.Contains(t, errs, "the event is 1,048,588 bytes (type 3, data 1,048,576, metadata 9), over the limit of 1,048,576 bytes (1.00 MiB): nothing was written")
	v, err := w.store.Version(w.ctx, eventstore.StreamID{Category: "account", ID: "a1"})
	require.NoError(t, err)
	require.Zero(t, v)
}
