package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/testenv"
)

func TestCategories(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 4)
	_, errs, code := w.run("categories")
	require.Equal(t, 0, code)
	require.Contains(t, errs, "no categories")

	w.seedAccounts()
	w2, err := eventstore.New(w.rc, eventstore.Config{Namespace: w.ns, Partitions: 2})
	require.NoError(t, err)
	_, err = w2.Append(w.ctx, eventstore.StreamID{Category: "order", ID: "o1"}, eventstore.NoStream,
		eventstore.EventData{Type: "Placed", Data: []byte(`{}`)})
	require.NoError(t, err)

	golden(t, "categories", w.ok("categories"))

	var got []categoryJSON
	require.NoError(t, json.Unmarshal([]byte(w.ok("categories", "--json")), &got))
	require.Len(t, got, 2)
	require.Equal(t, "account", got[0].Category)
	require.Equal(t, 4, got[0].Partitions)
	require.Equal(t, int64(8), got[0].Events)
	require.Positive(t, got[0].MemoryBytes)
	require.Equal(t, categoryJSON{Category: "order", Partitions: 2, Events: 1, MemoryBytes: got[1].MemoryBytes}, got[1])
}

func TestRead(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 4)
	w.seedAccounts()

	golden(t, "read", w.ok("read", "account", "a1"))
	// Flags before, between and after the positional arguments.
	for _, args := range [][]string{
		{"read", "account", "a1", "--from-version", "3"},
		{"read", "--from-version", "3", "account", "a1"},
		{"read", "account", "--from-version=3", "a1"},
		{"--json", "read", "account", "a1", "--from-version", "3"},
	} {
		out := w.ok(args...)
		if args[0] == "--json" {
			lines := jsonLines(t, out)
			require.Len(t, lines, 2)
			require.EqualValues(t, 3, lines[0]["version"])
			require.EqualValues(t, 4, lines[1]["version"])
			continue
		}
		golden(t, "read_from_version", out)
	}

	out, errs, code := w.run("read", "account", "nobody")
	require.Equal(t, 0, code)
	require.Empty(t, out)
	require.Contains(t, errs, "account/nobody: no events")

	_, errs, code = w.run("read", "acount", "a1")
	require.Equal(t, 1, code)
	require.Contains(t, errs, `category "acount" has no events`)
}

func TestReplay(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 4)
	w.seedAccounts()

	golden(t, "replay", w.ok("replay", "account"))

	pos := func(ms, seq uint64) string { return eventstore.Position{Ms: ms, Seq: seq}.String() }
	type ev struct {
		pos  string
		part int
	}
	replay := func(args ...string) []ev {
		t.Helper()
		var got []ev
		for _, l := range jsonLines(t, w.ok(append([]string{"replay", "account", "--json"}, args...)...)) {
			got = append(got, ev{l["position"].(string), int(l["partition"].(float64))})
		}
		return got
	}
	all := []ev{{pos(t0, 1), 0}, {pos(t0, 1), 1}, {pos(t0, 1), 2}, {pos(t0, 1), 3}, {pos(t0, 2), 3},
		{pos(t1, 1), 2}, {pos(t1, 1), 3}, {pos(t1, 2), 3}}
	require.Equal(t, all, replay(), "(position, partition) order")

	// Position bounds are inclusive.
	require.Equal(t, all[4:7], replay("--from", pos(t0, 2), "--to", pos(t1, 1)))
	// A time bound covers its whole millisecond.
	require.Equal(t, all[:5], replay("--to", t0Time))
	require.Equal(t, all[:5], replay("--to", "2100-01-01T00:00:00.999Z"))
	require.Equal(t, all[5:], replay("--from", t1Time))
	require.Equal(t, all[5:], replay("--from", "2100-01-01T00:00:00.001Z", "--to", "2100-01-01T01:00:01+01:00"))
	require.Empty(t, replay("--from", "2100-01-01T00:00:00.001Z", "--to", "2100-01-01T00:00:00.999Z"))

	golden(t, "replay_from_time", w.ok("replay", "account", "--from", t1Time))

	// The JSON contract.
	lines := jsonLines(t, w.ok("replay", "account", "--json"))
	require.Len(t, lines, 8)
	for _, l := range lines {
		for _, k := range []string{"position", "partition", "category", "id", "version", "type", "event_id", "data", "metadata", "recorded_at"} {
			require.Contains(t, l, k)
		}
		require.Equal(t, "account", l["category"])
		_, err := time.Parse(time.RFC3339Nano, l["recorded_at"].(string))
		require.NoError(t, err)
		require.Len(t, l["event_id"], 36)
		require.Equal(t, map[string]any{}, l["metadata"])
	}
	require.Equal(t, "a1", lines[3]["id"])
	require.Equal(t, map[string]any{"owner": "ann"}, lines[3]["data"], "JSON data is the value itself")
	require.Equal(t, "plain text, not JSON", lines[1]["data"], "other data is a string")
	require.Equal(t, "", lines[7]["data"])
	require.NotContains(t, lines[1], "data_encoding")

	// Binary data is base64, flagged.
	w.append("account", "a9", "Blob", "\xff\x00\x01")
	lines = jsonLines(t, w.ok("replay", "account", "--json", "--from", pos(t1, 3)))
	require.Len(t, lines, 1)
	require.Equal(t, "/wAB", lines[0]["data"])
	require.Equal(t, "base64", lines[0]["data_encoding"])
	require.Contains(t, w.ok("replay", "account", "--from", pos(t1, 3)), "<3 B of binary data>")

	_, errs, code := w.run("replay", "account", "--from", t1Time, "--to", t0Time)
	require.Equal(t, 2, code)
	require.Contains(t, errs, "is after --to")
	_, errs, code = w.run("replay", "nothing")
	require.Equal(t, 1, code)
	require.Contains(t, errs, `category "nothing" has no events`)
	_, errs, code = w.run("replay", "account", "--partitions", "8")
	require.Equal(t, 1, code)
	require.Contains(t, errs, "has 4 partitions in Redis")
}

func TestTail(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 4)
	w.seedAccounts()

	for _, mode := range []string{"table", "json"} {
		t.Run(mode, func(t *testing.T) {
			args := []string{"tail", "account"}
			if mode == "json" {
				args = append(args, "--json")
			}
			ctx, cancel := context.WithCancel(w.ctx)
			defer cancel()
			var out, errs testenv.Buffer
			done := make(chan int, 1)
			go func() { done <- run(ctx, append(w.globals(), args...), nil, &out, &errs) }()
			require.Eventually(t, func() bool { return strings.Contains(errs.String(), "following account (4 partitions)") },
				10*time.Second, 10*time.Millisecond, "tail is ready")
			require.Empty(t, out.String(), "old events are not shown")

			r1 := w.append("account", "a2", "Tailed", fmt.Sprintf(`{"mode":%q}`, mode))
			r2 := w.append("account", "a4", "Tailed", `{"n":2}`)
			r3 := w.append("account", "a2", "Tailed", `{"n":3}`)
			require.Eventually(t, func() bool { return strings.Count(out.String(), "Tailed") == 3 },
				10*time.Second, 10*time.Millisecond, "tail shows the new events; got %q", out.String())
			cancel()
			select {
			case code := <-done:
				require.Equal(t, 0, code, errs.String())
			case <-time.After(10 * time.Second):
				t.Fatal("tail did not stop when its context was canceled")
			}

			if mode == "table" {
				lines := strings.Split(strings.TrimSpace(out.String()), "\n")
				require.True(t, strings.HasPrefix(lines[0], "POSITION"), out.String())
				require.Contains(t, out.String(), r1.Positions[0].String()+"  2  a2")
				require.Contains(t, out.String(), r2.Positions[0].String()+"  0  a4")
				return
			}
			lines := jsonLines(t, out.String())
			require.Len(t, lines, 3)
			seen := map[string]bool{}
			for _, l := range lines {
				seen[fmt.Sprintf("%s/%v/%s", l["position"], l["partition"], l["id"])] = true
				require.Equal(t, "Tailed", l["type"])
			}
			for _, r := range []struct {
				res eventstore.AppendResult
				id  string
			}{{r1, "a2"}, {r2, "a4"}, {r3, "a2"}} {
				require.True(t, seen[fmt.Sprintf("%s/%d/%s", r.res.Positions[0], r.res.Partition, r.id)], "%v in %v", r.res, seen)
			}
			require.Contains(t, out.String(), `"data":{"mode":"json"}`)
		})
	}
}

func TestAppend(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 4)
	stream := eventstore.StreamID{Category: "account", ID: "a1"}
	version := func() uint64 {
		v, err := w.store.Version(w.ctx, stream)
		require.NoError(t, err)
		return v
	}

	// A new category gets --partitions (default 8).
	out := w.ok("append", "account", "a1", "Opened", `{"owner":"ann"}`, "--expected", "0", "--partitions", "4")
	require.Regexp(t, `^appended account/a1 version 1 at position \d+-\d+ \(partition 3\), event [0-9a-f-]{36}\n$`, out)
	require.Equal(t, uint64(1), version())

	var res appendJSON
	require.NoError(t, json.Unmarshal([]byte(w.ok("--json", "append", "--meta", "reason=repair", "account", "a1", "Deposited", `{"amount": 10}`)), &res))
	require.Equal(t, "account", res.Category)
	require.Equal(t, "a1", res.ID)
	require.Equal(t, uint64(2), res.Version)
	require.Equal(t, 3, res.Partition)
	require.False(t, res.Duplicate)
	var stored []eventstore.Event
	for ev, err := range w.store.Read(w.ctx, stream, 2) {
		require.NoError(t, err)
		stored = append(stored, ev)
	}
	require.Len(t, stored, 1)
	require.Equal(t, res.Position, stored[0].Position.String())
	require.Equal(t, `{"amount": 10}`, string(stored[0].Data), "stored as given")
	require.Equal(t, map[string]string{"reason": "repair"}, stored[0].Metadata)

	// A wrong --expected fails and writes nothing.
	xlen := func() int64 {
		n, err := w.rc.Do(w.ctx, w.rc.B().Xlen().Key(w.store.LogKey("account", 3)).Build()).AsInt64()
		require.NoError(t, err)
		return n
	}
	before := xlen()
	for _, exp := range []string{"0", "1", "5"} {
		out, errs, code := w.run("append", "account", "a1", "Deposited", `{"amount":1}`, "--expected", exp)
		require.Equal(t, 1, code)
		require.Empty(t, out)
		require.Contains(t, errs, "account/a1 is at version 2, --expected "+exp+": nothing was written")
	}
	require.Equal(t, uint64(2), version())
	require.Equal(t, before, xlen())
	w.ok("append", "account", "a1", "Deposited", `{"amount":1}`, "--expected", "2")
	require.Equal(t, uint64(3), version())

	// The same --event-id twice appends once.
	id := "0190b5a4-7c3e-7000-8000-000000000001"
	first := w.ok("append", "account", "a2", "Opened", `{}`, "--event-id", id, "--expected", "0")
	again := w.ok("append", "account", "a2", "Opened", `{}`, "--event-id", id, "--expected", "0")
	require.Contains(t, again, "already appended")
	require.Equal(t, strings.TrimPrefix(first, "appended"), strings.TrimPrefix(again, "already appended (same event ID), nothing written:"))

	// Data that starts with '-' goes after "--".
	require.Contains(t, w.ok("append", "account", "a3", "Adjusted", "--", "-5"), "version 1")

	// Bad input is refused before anything is written.
	before = xlen()
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"account", "a1", "Deposited", `{"amount":`}, "<json-data> is not valid JSON"},
		{[]string{"account", "a1", "Deposited", `{}`, "--expected", "two"}, `invalid value "two" for flag --expected: want a version number`},
		{[]string{"account", "a1", "Deposited"}, "missing <json-data>"},
		{[]string{"account", "a1", "Deposited", `{}`, "extra"}, `unexpected argument "extra"`},
		{[]string{"acc{ount", "a1", "Deposited", `{}`}, `invalid category "acc{ount": must not contain '{'`},
		{[]string{"account", "a 1", "Deposited", `{}`}, `invalid aggregate ID "a 1"`},
		{[]string{"account", "a1", "Deposited", `{}`, "--meta", "novalue"}, "want key=value"},
		{[]string{"account", "a1", "Deposited", `{}`, "--event-id", "nope"}, `--event-id "nope" is not a UUID`},
	} {
		out, errs, code := w.run(append([]string{"append"}, tc.args...)...)
		require.Equal(t, 2, code, "%v: %s", tc.args, errs)
		require.Empty(t, out)
		require.Contains(t, errs, tc.msg)
		require.Contains(t, errs, "usage: redsource append <category> <id> <type> <json-data>")
	}
	require.Equal(t, before, xlen())
	require.Equal(t, uint64(3), version())
}
