package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/keys"
	"github.com/redsource/redsource/internal/testenv"
	"github.com/redsource/redsource/projection"
)

// startRunner runs a projection "ledger" over category "acc" whose handler
// fails on payloads holding "poison" (until healed) and "fatal" (always).
// It returns a function that stops the runner and waits for it.
func (w *world) startRunner(healed *atomic.Bool) (stop func()) {
	w.t.Helper()
	_, err := w.pool.Exec(w.ctx, `CREATE TABLE IF NOT EXISTS ledger (id text PRIMARY KEY, n int NOT NULL)`)
	require.NoError(w.t, err)
	handler := projection.HandlerFunc(func(ctx context.Context, tx pgx.Tx, ev eventstore.Event) error {
		switch {
		case strings.Contains(string(ev.Data), "fatal"):
			return errors.New("cannot apply: fatal payload")
		case strings.Contains(string(ev.Data), "poison") && !healed.Load():
			return errors.New("cannot apply: poison payload")
		}
		_, err := tx.Exec(ctx, `INSERT INTO ledger (id, n) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE SET n = ledger.n + 1`, ev.Stream.ID)
		return err
	})
	r, err := projection.NewRunner(projection.Config{
		Store: w.store, DB: w.pool, Schema: w.schema, WorkerID: "worker-1",
		MaxAttempts: 1, LeaseTTL: time.Second, Block: 50 * time.Millisecond, CheckInterval: 100 * time.Millisecond,
		Backoff: time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, projection.Projection{Name: "ledger", Categories: []string{"acc"}, Handler: handler})
	require.NoError(w.t, err)
	ctx, cancel := context.WithCancel(w.ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once atomic.Bool
	stop = func() {
		if once.Swap(true) {
			return
		}
		cancel()
		require.NoError(w.t, <-done)
	}
	w.t.Cleanup(stop)
	return stop
}

// waitStatus waits until the projection's partitions are settled: nothing
// to deliver or acknowledge, the given applied (-1: any), quarantined and
// parked counts per partition, and an owner (a running worker).
func (w *world) waitStatus(want map[int][3]int) {
	w.t.Helper()
	admin := projection.NewAdmin(w.pool, w.schema)
	var last []projection.PartitionStatus
	require.Eventually(w.t, func() bool {
		st, err := admin.Status(w.ctx, w.store, "ledger")
		if err != nil || len(st) != len(want) {
			return false
		}
		last = st
		for _, s := range st {
			exp := want[s.Partition]
			if s.Lag != 0 || s.Pending != 0 || (exp[0] >= 0 && s.Applied != int64(exp[0])) || s.Quarantined != exp[1] || s.Parked != exp[2] || s.Owner == "" {
				return false
			}
		}
		return true
	}, 30*time.Second, 20*time.Millisecond, "status %+v", &last)
}

func (w *world) ledger(id string) int {
	w.t.Helper()
	var n int
	err := w.pool.QueryRow(w.ctx, `SELECT n FROM ledger WHERE id = $1`, id).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0
	}
	require.NoError(w.t, err)
	return n
}

func TestProjectionsAndQuarantine(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 2)
	w.withPostgres()
	require.Equal(t, 1, keys.Partition("x", 2))
	require.Equal(t, 0, keys.Partition("y", 2))

	// Before any projection ran, the toolkit's tables are not there.
	_, errs, code := w.run("projections")
	require.Equal(t, 1, code)
	require.Contains(t, errs, "no redsource tables in schema")
	require.Contains(t, errs, "no projection has run against it yet, or --schema is wrong")

	w.setID("acc", 2, t0)
	w.append("acc", "x", "Opened", `{"n":1}`)      // t0-1 p1
	w.append("acc", "y", "Opened", `{"n":1}`)      // t0-1 p0
	w.append("acc", "x", "Hit", `{"poison":true}`) // t0-2 p1: quarantined
	w.append("acc", "x", "Deposited", `{"n":2}`)   // t0-3 p1: parked behind it
	w.append("acc", "y", "Deposited", `{"n":2}`)   // t0-2 p0
	var healed atomic.Bool
	stop := w.startRunner(&healed)
	w.waitStatus(map[int][3]int{0: {2, 0, 0}, 1: {1, 1, 1}})

	golden(t, "projections", w.ok("projections"))
	var st []statusJSON
	require.NoError(t, json.Unmarshal([]byte(w.ok("projections", "ledger", "--json")), &st))
	require.Len(t, st, 2)
	require.Equal(t, statusJSON{Projection: "ledger", Category: "acc", Partition: 1, Checkpoint: "4102444800000-3",
		Applied: 1, Lag: 0, Pending: 0, Quarantined: 1, Parked: 1, Owner: "worker-1", UpdatedAt: st[1].UpdatedAt}, st[1])
	// Without --namespace, health comes from the namespace the schema
	// records; a --namespace that differs is warned about.
	var out2, errs2 bytes.Buffer
	require.Equal(t, 0, run(w.ctx, []string{"--redis", testenv.RedisURL(), "--database", testenv.DatabaseURL(), "--schema", w.schema,
		"projections", "--json"}, nil, &out2, &errs2), errs2.String())
	var st2 []statusJSON
	require.NoError(t, json.Unmarshal(out2.Bytes(), &st2))
	for i := range st2 {
		st2[i].UpdatedAt = st[i].UpdatedAt // a worker may touch it meanwhile
	}
	require.Equal(t, st, st2)
	require.Empty(t, errs2.String())
	out, errs, code := w.run("projections", "--namespace", "elsewhere")
	require.Equal(t, 0, code)
	require.Contains(t, errs, `warning: schema "`+w.schema+`" holds the projections of namespace "`+w.ns+`", not "elsewhere"`)
	require.Contains(t, out, "?", "lag unknown in the wrong namespace")

	_, errs, code = w.run("projections", "nosuch")
	require.Equal(t, 1, code)
	require.Contains(t, errs, `no projection "nosuch" in schema`)
	require.Contains(t, errs, "(known: ledger)")

	// quarantine list: the table and the JSON contract.
	golden(t, "quarantine_list", w.ok("quarantine", "list", "ledger"))
	var held []map[string]any
	require.NoError(t, json.Unmarshal([]byte(w.ok("quarantine", "list", "ledger", "--json")), &held))
	require.Len(t, held, 2)
	for k, v := range map[string]any{"position": "4102444800000-2", "partition": 1.0, "category": "acc", "id": "x",
		"version": 2.0, "type": "Hit", "error": "cannot apply: poison payload", "attempts": 1.0, "reason": "quarantined"} {
		require.Equal(t, v, held[0][k], k)
	}
	require.Equal(t, "parked", held[1]["reason"])
	require.Equal(t, "4102444800000-3", held[1]["position"])
	var only []heldJSON
	require.NoError(t, json.Unmarshal([]byte(w.ok("quarantine", "list", "ledger", "--json", "--reason", "parked")), &only))
	require.Len(t, only, 1)

	// A retry that fails again says why, and exits 1.
	out, errs, code = w.run("quarantine", "retry", "ledger", "4102444800000-2")
	require.Equal(t, 1, code, errs)
	require.Equal(t, "4102444800000-2 acc/x v2 (partition 1): still quarantined: cannot apply: poison payload\n", out)
	require.Contains(t, errs, "1 of 1 events still quarantined")

	// A parked event is not retried by itself.
	_, errs, code = w.run("quarantine", "retry", "ledger", "4102444800000-3")
	require.Equal(t, 1, code)
	require.Contains(t, errs, "4102444800000-3 is parked behind the quarantined event 4102444800000-2 of acc/x (partition 1)")

	// Healed, a retry applies it and the parked event behind it.
	healed.Store(true)
	out = w.ok("quarantine", "retry", "ledger")
	require.Equal(t, "4102444800000-2 acc/x v2 (partition 1): retried\n", out)
	require.Equal(t, 3, w.ledger("x"))
	w.waitStatus(map[int][3]int{0: {2, 0, 0}, 1: {-1, 0, 0}})
	_, errs, code = w.run("quarantine", "retry", "ledger")
	require.Equal(t, 1, code)
	require.Contains(t, errs, `projection "ledger" has no quarantined events`)

	// The same position quarantined in both partitions: skip needs
	// --partition.
	w.setID("acc", 2, t1)
	w.append("acc", "x", "Hit", `{"fatal":1}`) // t1-1 p1
	w.append("acc", "y", "Hit", `{"fatal":2}`) // t1-1 p0
	w.append("acc", "y", "Deposited", `{}`)    // t1-2 p0: parked
	w.waitStatus(map[int][3]int{0: {-1, 1, 1}, 1: {-1, 1, 0}})
	out, errs, code = w.run("quarantine", "skip", "ledger", "4102444801000-1")
	require.Equal(t, 2, code)
	require.Empty(t, out)
	require.Contains(t, errs, "position 4102444801000-1 is quarantined in 2 places (acc partition 0, acc partition 1); pick one with --partition P")

	var res requestJSON
	require.NoError(t, json.Unmarshal([]byte(w.ok("quarantine", "skip", "ledger", "4102444801000-1", "--partition", "0", "--json")), &res))
	require.Equal(t, requestJSON{Projection: "ledger", Action: "skip", NowQuarantined: []heldJSON{}, Results: []resultJSON{{
		Position: "4102444801000-1", Partition: 0, Category: "acc", ID: "y", Version: 3, Type: "Hit", Outcome: "skipped"}}}, res)
	require.Equal(t, 3, w.ledger("y"), "the skipped event is left out, the parked one applied")

	// With no projector running, the request is filed and the CLI says
	// nobody picked it up.
	stop()
	out, errs, code = w.run("quarantine", "retry", "ledger", "4102444801000-1", "--wait", "300ms")
	require.Equal(t, 3, code, errs)
	require.Equal(t, "4102444801000-1 acc/x v4 (partition 1): requested; no worker picked it up within 300ms (is the projector running?)\n", out)
	require.Contains(t, w.ok("quarantine", "list", "ledger"), "quarantined (retry requested)")
	out = w.ok("quarantine", "skip", "ledger", "4102444801000-1", "--wait", "0")
	require.Equal(t, "4102444801000-1 acc/x v4 (partition 1): requested skip; the projector carries it out\n", out)

	// Usage errors.
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"quarantine", "skip", "ledger"}, 2, "missing <position>"},
		{[]string{"quarantine", "retry", "ledger", "12-x"}, 2, `<position>: invalid position "12-x": sequence`},
		{[]string{"quarantine", "retry", "ledger", "--wait", "-1s"}, 2, "--wait must not be negative"},
		{[]string{"quarantine", "list", "ledger", "--reason", "odd"}, 2, `--reason "odd": want quarantined, parked or missing`},
		{[]string{"quarantine", "list", "nosuch"}, 1, `no projection "nosuch"`},
		{[]string{"quarantine", "skip", "ledger", "5-5"}, 1, "no quarantined event at position 5-5 in projection \"ledger\""},
		{[]string{"quarantine", "purge", "ledger"}, 2, `unknown command "quarantine purge"`},
		{[]string{"quarantine"}, 2, "missing subcommand (list, retry or skip)"},
		{[]string{"quarantine", "--json", "list", "ledger"}, 2, "the subcommand (list, retry or skip) goes right after 'quarantine', before --json"},
	} {
		out, errs, code := w.run(tc.args...)
		require.Equal(t, tc.code, code, "%v: %s", tc.args, errs)
		require.Empty(t, out, "%v", tc.args)
		require.Contains(t, errs, tc.msg, "%v", tc.args)
	}
}

func TestMissingSchema(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 2)
	w.schema = testenv.Unique("nothere_")
	for _, args := range [][]string{{"projections"}, {"quarantine", "list", "p"}, {"quarantine", "retry", "p"}} {
		_, errs, code := w.run(args...)
		require.Equal(t, 1, code, "%v", args)
		require.Contains(t, errs, `no redsource tables in schema "`+w.schema+`"`, "%v", args)
	}
}

// A partition stopped because Redis lost the events its checkpoint
// remembers makes `projections` fail with exit 4, in the table (STOPPED)
// and in JSON (stopped).
func TestProjectionsStoppedPartitionExits4(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 2)
	w.withPostgres()
	w.append("acc", "a1", "Opened", `{}`)
	w.append("acc", "a2", "Opened", `{}`)
	stop := w.startRunner(new(atomic.Bool))
	w.waitStatus(map[int][3]int{0: {-1, 0, 0}, 1: {-1, 0, 0}})
	stop()

	// Redis loses partition 0's log.
	log := w.store.LogKey("acc", 0)
	require.NoError(t, w.rc.Do(w.ctx, w.rc.B().Del().Key(log).Build()).Error())
	stop = w.startRunner(new(atomic.Bool))
	defer stop()
	admin := projection.NewAdmin(w.pool, w.schema)
	require.Eventually(t, func() bool {
		st, err := admin.Status(w.ctx, w.store, "ledger")
		return err == nil && len(st) == 2 && st[0].Stopped != ""
	}, 30*time.Second, 20*time.Millisecond)

	out, errOut, code := w.run("projections")
	require.Equal(t, exitUnsafe, code, errOut)
	require.Contains(t, out, "STOPPED (log_regressed)")
	require.Contains(t, errOut, "1 partitions stopped because Redis lost events")

	out, _, code = w.run("projections", "--json")
	require.Equal(t, exitUnsafe, code)
	var doc []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &doc))
	require.Len(t, doc, 2)
	require.Equal(t, "log_regressed", doc[0]["stopped"])
	require.Equal(t, "", doc[1]["stopped"])
}
