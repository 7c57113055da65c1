package faultsuite

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/faultenv"
	"github.com/redsource/redsource/projection"
)

var scWipe = scenario{
	Name:     "6. Restart without persistence",
	Injected: "redis-server without AOF restarted empty (Wipe) under load, with writers and a runner",
	Property: "all of it lost and all of it detected: the long-lived store's appends fail with ErrNamespaceLost and write nothing, Run returns ErrNamespaceLost, a new store with a Witness refuses; a new store without one creates the namespace again and every runner still refuses it (read model untouched)",
}

func TestFaultRestartWithoutPersistence(t *testing.T) {
	t.Parallel()
	w := newWorld(t, scWipe)
	srv := faultenv.Start(t, faultenv.Options{})
	c := client(t, srv.URL())
	store := newStore(t, c)
	run := w.runProjector(store)
	ld := w.startWriters(store, loadOptions{Seed: 6})
	ld.waitAcked(600, 30*time.Second)
	w.waitFor(20*time.Second, "the projector to apply something", func() bool { return w.ledger.count(t, w.ctx) > 0 })

	require.NoError(t, srv.Wipe())
	w.waitFor(20*time.Second, "the writers to see the namespace lost", func() bool {
		return ld.errs.count("namespace lost") >= 50
	})
	ld.halt()
	returned, err := run.wait(30 * time.Second)
	require.True(t, returned, "the runner goes on after Redis lost the namespace")
	require.ErrorIs(t, err, eventstore.ErrNamespaceLost)
	require.ErrorIs(t, err, eventstore.ErrDataLoss)
	applied := w.ledger.count(t, w.ctx)
	for _, s := range w.status(store) {
		require.Equal(t, "namespace_lost", s.Stopped, "partition %d", s.Partition)
	}

	// Nothing was written into the empty Redis: no event, no identity.
	left := serverKeys(t, w, srv)
	for k, typ := range left {
		require.NotEqual(t, "stream", typ, "%s was written into the empty Redis", k)
	}
	require.NotContains(t, left, namespace+":identity")

	// A process that never saw the namespace, with a witness, refuses it.
	witness := newStore(t, c, func(cfg *eventstore.Config) { cfg.Witness = projection.NewWitness(w.pool, w.schema) })
	_, err = witness.Append(w.ctx, stream(aggID(0)), eventstore.NoStream, eventstore.EventData{Type: "Added", Data: payload("witness")})
	var ne *eventstore.NamespaceError
	require.ErrorAs(t, err, &ne)
	require.Contains(t, ne.By, "PostgreSQL schema")

	// Every acknowledged event is lost, and the loss of all of it was
	// reported (the namespace's).
	fresh := newStore(t, c)
	rep := w.check(fresh)
	requireClean(t, rep)
	require.Equal(t, rep.Acknowledged, rep.Lost)
	require.Zero(t, rep.Unknown)
	rep.MarkDetected(rep.Lost)

	// Without a witness a new process cannot tell; it creates the
	// namespace again. Every runner of the schema still refuses it.
	_, err = fresh.Append(w.ctx, stream(aggID(0)), eventstore.NoStream, eventstore.EventData{Type: "Added", Data: payload("again")})
	require.NoError(t, err)
	again := w.runProjector(fresh)
	returned, err = again.wait(30 * time.Second)
	require.True(t, returned, "a runner took the new incarnation")
	require.ErrorAs(t, err, &ne)
	require.NotEmpty(t, ne.Found, "Redis holds another identity")
	require.ErrorIs(t, w.catchUp(fresh), eventstore.ErrNamespaceLost)
	require.Equal(t, applied, w.ledger.count(t, w.ctx), "nothing of the new incarnation applied")

	names := make([]string, 0, len(left))
	for k := range left {
		names = append(names, strings.TrimPrefix(k, namespace+":"))
	}
	sort.Strings(names)
	w.report(scWipe, rep, 0, fmt.Sprintf("writers refused %d times (%s); Run returned ErrNamespaceLost; the ledger kept its %d events; keys the runner wrote before it noticed: %v",
		ld.errs.count("namespace lost"), &ld.errs, applied, names))
}

// serverKeys returns every key of the server with its type.
func serverKeys(t *testing.T, w *world, srv *faultenv.Server) map[string]string {
	t.Helper()
	r, err := srv.Do(w.ctx, "KEYS", "*")
	require.NoError(t, err)
	out := map[string]string{}
	for _, k := range r.([]any) {
		typ, err := srv.Do(w.ctx, "TYPE", k.(string))
		require.NoError(t, err)
		out[k.(string)] = typ.(string)
	}
	return out
}
