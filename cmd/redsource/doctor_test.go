package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/redisproc"
)

// doctor runs `redsource doctor --json` and decodes the report.
func (w *world) doctor(args ...string) (doctorJSON, string, int) {
	w.t.Helper()
	out, errs, code := w.run(append([]string{"doctor", "--json"}, args...)...)
	var rep doctorJSON
	require.NoError(w.t, json.Unmarshal([]byte(out), &rep), "stdout:\n%s\nstderr:\n%s", out, errs)
	return rep, errs, code
}

// rows returns the report's checks of one name.
func rows(rep doctorJSON, check string) []checkJSON {
	var out []checkJSON
	for _, c := range rep.Checks {
		if c.Check == check {
			out = append(out, c)
		}
	}
	return out
}

// row returns the one check of that name on node.
func row(t *testing.T, rep doctorJSON, check, node string) checkJSON {
	t.Helper()
	for _, c := range rep.Checks {
		if c.Check == check && c.Node == node {
			return c
		}
	}
	t.Fatalf("no %s check on %s in %+v", check, node, rep.Checks)
	return checkJSON{}
}

var singleNodeChecks = []string{
	"node", "maxmemory-policy", "appendonly", "appendfsync", "no-appendfsync-on-rewrite",
	"aof_last_write_status", "rdb_last_bgsave_status", "maxmemory", "used_memory",
	"replicas", "cluster", "permissions", "clock",
}

// A server set up as docs/operations.md says passes every check.
func TestDoctorAllOK(t *testing.T) {
	t.Parallel()
	s := redisproc.Start(t, redisproc.Options{AOF: "always", MaxMemory: "64mb", Policy: "noeviction"})
	w := newWorldAt(t, s.URL(), 4)
	w.append("account", "a1", "Opened", `{}`)

	rep, errs, code := w.doctor()
	require.Equal(t, 0, code, errs)
	var names []string
	for _, c := range rep.Checks {
		require.Equal(t, verdictOK, c.Verdict, "%+v", c)
		require.Equal(t, s.Addr(), c.Node)
		names = append(names, c.Check)
	}
	require.Equal(t, singleNodeChecks, names)
	require.Zero(t, rep.Unsafe)
	require.Zero(t, rep.Warnings)
	require.Zero(t, rep.Unknown)
	require.Contains(t, row(t, rep, "permissions", s.Addr()).Value, "all 40 commands")
	require.Equal(t, "64.0 MiB", row(t, rep, "maxmemory", s.Addr()).Value)
	require.Regexp(t, `^server time \S+; the newest event is \S+ older$`, row(t, rep, "clock", s.Addr()).Value)
	require.Contains(t, errs, "0 unsafe, 0 warnings, 0 unknown")

	// The table: one line per check, and the same verdicts.
	out := w.ok("doctor")
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	require.Len(t, lines, 1+len(singleNodeChecks))
	require.Regexp(t, `^CHECK +NODE +VERDICT +VALUE +FIX$`, lines[0])
	for i, l := range lines[1:] {
		require.Regexp(t, `^`+singleNodeChecks[i]+` +`+s.Addr()+` +ok `, l)
	}
}

func TestDoctorUnsafe(t *testing.T) {
	t.Parallel()
	s := redisproc.Start(t, redisproc.Options{Policy: "allkeys-lru", Args: []string{"--appendfsync", "everysec"}})
	w := newWorldAt(t, s.URL(), 4)

	out, errs, code := w.run("doctor")
	require.Equal(t, exitUnsafe, code, errs)
	require.Regexp(t, `(?m)^maxmemory-policy +\S+ +unsafe +allkeys-lru +set maxmemory-policy noeviction`, out)
	require.Regexp(t, `(?m)^appendonly +\S+ +unsafe +no +set appendonly yes`, out)
	require.Contains(t, errs, "redsource doctor: unsafe: maxmemory-policy on "+s.Addr()+", appendonly on "+s.Addr())

	rep, _, code := w.doctor()
	require.Equal(t, exitUnsafe, code)
	require.Equal(t, 2, rep.Unsafe)
	require.Equal(t, 1, rep.Warnings, "maxmemory 0")
	require.Equal(t, verdictWarn, row(t, rep, "maxmemory", s.Addr()).Verdict)
	require.Empty(t, rows(rep, "appendfsync"), "no AOF: its fsync does not matter")

	// volatile-* warns; with the AOF on, everysec warns.
	s.Command(t, "CONFIG", "SET", "maxmemory-policy", "volatile-lru")
	s.Command(t, "CONFIG", "SET", "appendonly", "yes")
	s.Command(t, "CONFIG", "SET", "no-appendfsync-on-rewrite", "yes")
	rep, errs, code = w.doctor()
	require.Equal(t, 0, code, errs)
	require.Equal(t, verdictWarn, row(t, rep, "maxmemory-policy", s.Addr()).Verdict)
	require.Contains(t, row(t, rep, "maxmemory-policy", s.Addr()).Fix, "leases")
	require.Equal(t, verdictOK, row(t, rep, "appendonly", s.Addr()).Verdict)
	require.Equal(t, checkJSON{Check: "appendfsync", Node: s.Addr(), Value: "everysec", Verdict: verdictWarn,
		Fix: "a power loss or kernel crash loses about the last second of acknowledged appends (a crash of Redis alone loses nothing); appendfsync always closes that window at a throughput cost"},
		row(t, rep, "appendfsync", s.Addr()))
	require.Equal(t, verdictWarn, row(t, rep, "no-appendfsync-on-rewrite", s.Addr()).Verdict)
	require.Equal(t, 4, rep.Warnings)
}

// The least a redsource user needs: every command permitted, and the
// checks that need INFO or CONFIG unknown, which do not fail the run.
func TestDoctorRestrictedUser(t *testing.T) {
	t.Parallel()
	s := redisproc.Start(t, redisproc.Options{Policy: "allkeys-lru"})
	w := newWorldAt(t, s.URL(), 4)
	var err error
	w.store, err = eventstore.New(w.rc, eventstore.Config{Namespace: w.ns, Partitions: 4, AllowEviction: true}) // seeding only
	require.NoError(t, err)
	w.append("account", "a1", "Opened", `{}`) // HSETNX is checked on the categories hash
	s.Command(t, strings.Fields("ACL SETUSER app on >pw ~"+w.ns+":* -@all +@read +@write +@stream +@connection +@scripting -@dangerous +time")...)
	w.redisURL = s.UserURL("app", "pw")

	rep, errs, code := w.doctor()
	require.Equal(t, 0, code, "allkeys-lru is not visible to this user: unknown, not unsafe\n%s", errs)
	require.Equal(t, verdictOK, row(t, rep, "permissions", s.Addr()).Verdict, "%+v", row(t, rep, "permissions", s.Addr()))
	require.Equal(t, verdictOK, row(t, rep, "clock", s.Addr()).Verdict)
	for _, check := range []string{"maxmemory-policy", "appendonly", "maxmemory", "used_memory", "aof_last_write_status", "replicas", "cluster"} {
		c := row(t, rep, check, s.Addr())
		require.Equal(t, verdictUnknown, c.Verdict, check)
		require.Contains(t, c.Fix, "not allowed to look", check)
		require.Contains(t, c.Fix, "refused for this user (NOPERM)", check)
	}
	require.Positive(t, rep.Unknown)
	require.Zero(t, rep.Unsafe)
	require.Contains(t, errs, "unknown checks do not fail the run")

	// A user who may run INFO but not CONFIG: the policy comes from INFO,
	// the settings only CONFIG has are unknown.
	s.Command(t, strings.Fields("ACL SETUSER noconfig on >pw ~* +@all -config")...)
	w.redisURL = s.UserURL("noconfig", "pw")
	rep, errs, code = w.doctor()
	require.Equal(t, exitUnsafe, code, errs)
	require.Equal(t, checkJSON{Check: "maxmemory-policy", Node: s.Addr(), Value: "allkeys-lru (from INFO memory)", Verdict: verdictUnsafe,
		Fix: row(t, rep, "maxmemory-policy", s.Addr()).Fix}, row(t, rep, "maxmemory-policy", s.Addr()))
	require.Equal(t, verdictUnsafe, row(t, rep, "appendonly", s.Addr()).Verdict, "from INFO persistence aof_enabled")
	require.Equal(t, verdictWarn, row(t, rep, "maxmemory", s.Addr()).Verdict, "from INFO memory")

	// Without +@scripting the append script cannot run.
	s.Command(t, strings.Fields("ACL SETUSER noscript on >pw ~"+w.ns+":* -@all +@read +@write +@stream +@connection -@dangerous +time")...)
	w.redisURL = s.UserURL("noscript", "pw")
	rep, errs, code = w.doctor()
	require.Equal(t, exitUnsafe, code, errs)
	p := row(t, rep, "permissions", s.Addr())
	require.Equal(t, verdictUnsafe, p.Verdict)
	require.Equal(t, "not permitted: EVALSHA (eventstore, projection), EVAL (eventstore, projection), EVALSHA_RO (eventstore (reads)), EVAL_RO (eventstore (reads))", p.Value)
	require.Contains(t, p.Fix, "ACL SETUSER noscript +evalsha +eval +evalsha_ro +eval_ro ~"+w.ns+":*")
	require.Contains(t, p.Fix, "~"+w.ns+":* -@all +@read +@write +@stream +@connection +@scripting -@dangerous +time")

	// Keys outside the user's pattern are what the namespace check is for.
	w.redisURL = s.UserURL("app", "pw")
	out, errs, code := w.run("doctor", "--json", "--namespace", "elsewhere")
	require.Equal(t, exitUnsafe, code, errs)
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	p = row(t, rep, "permissions", s.Addr())
	require.Equal(t, verdictUnsafe, p.Verdict)
	require.Contains(t, p.Value, "not permitted: EVALSHA")
	require.Contains(t, p.Value, "XADD (eventstore, projection)")
	require.Contains(t, p.Fix, "~elsewhere:*")
}

// A clock that went back: the newest log ID is ahead of the server time.
func TestDoctorClock(t *testing.T) {
	t.Parallel()
	s := redisproc.Start(t, redisproc.Options{AOF: "always", MaxMemory: "64mb"})
	w := newWorldAt(t, s.URL(), 4)
	w.seedAccounts() // entries at 2100-01-01
	rep, errs, code := w.doctor()
	require.Equal(t, 0, code, "a warning does not fail the run: %s", errs)
	c := row(t, rep, "clock", s.Addr())
	require.Equal(t, verdictWarn, c.Verdict)
	require.Regexp(t, `; the newest event \(4102444801000-2 in `+w.ns+`:\{account:3\}:log\) is \S+ ahead$`, c.Value)
	require.Contains(t, c.Fix, "clock went back")
}

// A replica's offset against the master's: in sync, then behind while it
// hangs.
func TestDoctorReplica(t *testing.T) {
	t.Parallel()
	master := redisproc.Start(t, redisproc.Options{AOF: "always", MaxMemory: "64mb"})
	replica := redisproc.Start(t, redisproc.Options{ReplicaOf: master})
	w := newWorldAt(t, master.URL(), 4)
	waitFor(t, func() bool { return strings.Contains(master.Command(t, "INFO", "replication"), "state=online") })

	rep, errs, code := w.doctor()
	require.Equal(t, 0, code, errs)
	require.Equal(t, "1", row(t, rep, "replicas", master.Addr()).Value)
	r := row(t, rep, "replica", master.Addr())
	require.Equal(t, verdictOK, r.Verdict, "%+v", r)
	require.Regexp(t, `^127\.0\.0\.1:\d+ online, offset \d+, \S+ \S+ behind, last ack \ds ago$`, r.Value)

	// A hung replica acknowledges nothing while the master takes 2 MiB.
	require.NoError(t, replica.Pause())
	for range 2 {
		w.append("account", "a1", "Big", string(bigJSON(1<<20-3)))
	}
	rep, errs, code = w.doctor()
	require.NoError(t, replica.Resume())
	require.Equal(t, 0, code, errs)
	r = row(t, rep, "replica", master.Addr())
	require.Equal(t, verdictWarn, r.Verdict, "%+v", r)
	require.Contains(t, r.Fix, "a failover to it now would lose")
}

// On a cluster every node is checked: masters and replicas.
func TestDoctorCluster(t *testing.T) {
	t.Parallel()
	// A 5 s node timeout: the node paused below is not marked failed
	// while the doctor runs.
	nodes := redisproc.StartCluster(t, redisproc.ClusterOptions{Masters: 3, ReplicasPerMaster: 1, NodeTimeout: 5 * time.Second,
		AOF: "always", Args: []string{"--maxmemory", "64mb"}}).Nodes()
	w := newWorldAt(t, nodes[0].URL(), 8)
	w.append("account", "a1", "Opened", `{}`)
	rep, errs, code := w.doctor()
	require.Equal(t, 0, code, "%s\n%+v", errs, rows(rep, "cluster"))
	require.Zero(t, rep.Unsafe)
	require.Zero(t, rep.Unknown, "%+v", rep.Checks)
	var masters, replicas int
	for _, n := range nodes {
		for _, check := range []string{"node", "maxmemory-policy", "appendonly", "maxmemory", "cluster", "cluster-require-full-coverage", "permissions"} {
			c := row(t, rep, check, n.Addr())
			require.Equal(t, verdictOK, c.Verdict, "%+v", c)
		}
		require.Regexp(t, `^state ok, 16384 of 16384 slots assigned, 0 failing, 6 nodes$`, row(t, rep, "cluster", n.Addr()).Value)
		require.Contains(t, row(t, rep, "permissions", n.Addr()).Value, "all 41 commands")
		if strings.HasPrefix(row(t, rep, "node", n.Addr()).Value, "master") {
			masters++
			require.Equal(t, "1", row(t, rep, "replicas", n.Addr()).Value)
			row(t, rep, "clock", n.Addr())
		} else {
			replicas++
			require.Regexp(t, `^replica of 127\.0\.0\.1:\d+, link up`, row(t, rep, "replication", n.Addr()).Value)
		}
	}
	require.Equal(t, 3, masters)
	require.Equal(t, 3, replicas)
	require.Len(t, rows(rep, "clock"), 3, "one per master")
	var withEvent int
	for _, c := range rows(rep, "clock") {
		if strings.Contains(c.Value, "the newest event is") {
			withEvent++
		}
	}
	require.Equal(t, 1, withEvent, "the one event's log is on one master: %+v", rows(rep, "clock"))

	// ACLs are per node: the suggested line on every node passes; a node
	// where a command is missing is named. Redis checks ACLs before it
	// redirects, so every node answers for its own ACL whichever slots it
	// serves.
	line := strings.Fields(aclLine("app", w.ns, true))
	line = append(line[:3], append([]string{">pw"}, line[3:]...)...)
	for _, n := range nodes {
		n.Command(t, line...)
	}
	nodes[4].Command(t, "ACL", "SETUSER", "app", "-xack")
	w.redisURL = nodes[0].UserURL("app", "pw")
	rep, errs, code = w.doctor()
	require.Equal(t, exitUnsafe, code, errs)
	for i, n := range nodes {
		p := row(t, rep, "permissions", n.Addr())
		if i == 4 {
			require.Equal(t, verdictUnsafe, p.Verdict)
			require.Equal(t, "not permitted: XACK (projection)", p.Value)
			continue
		}
		require.Equal(t, verdictOK, p.Verdict, "%+v", p)
	}

	// A node that hangs is reported, and the others are still checked.
	w.redisURL = nodes[0].URL()
	var hung *redisproc.Server
	for _, n := range nodes[1:] {
		if strings.HasPrefix(n.Command(t, "ROLE"), "slave") {
			hung = n
			break
		}
	}
	require.NoError(t, hung.Pause())
	rep, errs, code = w.doctor()
	require.NoError(t, hung.Resume())
	require.Equal(t, exitUnsafe, code, errs)
	require.Equal(t, 1, rep.Unsafe, "%+v", rep.Checks)
	c := row(t, rep, "node", hung.Addr())
	require.Equal(t, verdictUnsafe, c.Verdict)
	require.Contains(t, c.Value, "does not answer")
	require.Len(t, rows(rep, "permissions"), 5, "the hung node's other checks are left out")
	for _, n := range nodes {
		if n != hung {
			require.Equal(t, verdictOK, row(t, rep, "permissions", n.Addr()).Verdict)
		}
	}
}

// waitFor polls cond until it holds, for up to 30 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30s")
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		}
	}
}
