// Package faultenv injects real faults into real Redis servers for
// redsource's scenario tests: crashes, pauses, lost AOF tails, failovers,
// replies lost on the way back, and worker processes killed mid-flight.
// Then it checks what the event log kept against what the writers were
// told. It is a normal package, imported only by tests; it starts its own
// redis-server processes (Redis 7.0+) and never touches a server it did
// not start.
//
// # Servers
//
// [Start] runs a private redis-server on a free loopback port in the
// test's temp directory, with every setting the harness relies on given
// explicitly ([Options]: AOF fsync policy, maxmemory and policy, no RDB
// snapshots, no automatic AOF rewrite), and stops it when the test ends:
//
//	srv := faultenv.Start(t, faultenv.Options{AOF: "everysec"})
//	client := testenv.RedisAt(t, srv.URL())
//
// Faults act on that process by its PID: [Server.Kill] (SIGKILL),
// [Server.Stop] (SIGTERM), [Server.Pause] and [Server.Resume]
// (SIGSTOP/SIGCONT), [Server.Restart] on the same port and directory,
// [Server.Wipe] (a restart without persistence). Each returns once the
// change is done: after a restart the server has loaded its data.
//
// Losing the end of the AOF: [Server.CutAOF] tears the last n bytes off
// (a torn write), [Server.CutAOFBack] truncates it to its size of d ago (a
// power loss with appendfsync everysec), and [Server.SnapshotAOF] with
// [Server.RestoreAOF] put back an earlier copy. Each kills the server
// first and restarts it after; Redis loads the valid prefix and reverts a
// script cut in half as a whole.
//
// [Server.Do] sends one command on its own connection, for the test's own
// checks (INFO, CONFIG SET, DEBUG SLEEP); [Server.LogTail] is for failure
// messages, and is logged by itself when a test fails.
//
// # Clusters
//
// [StartCluster] starts Masters×(1+ReplicasPerMaster) nodes, creates the
// cluster with redis-cli and returns once every node agrees that all
// slots are served. [Cluster.URL] names every node:
// redis://127.0.0.1:P1?addr=127.0.0.1:P2&addr=..., which rueidis.ParseURL
// turns into InitAddress; rueidis then finds the cluster by itself.
// [Cluster.MasterOf] says which master serves a key (through [KeySlot],
// so a partition's hash tag finds its node); kill it and
// [Cluster.WaitFailover] returns the promoted replica once every running
// node reports cluster_state:ok again:
//
//	m, _ := c.MasterOf(ctx, store.LogKey("acc", 3))
//	_ = m.Kill()
//	promoted, err := c.WaitFailover(ctx, m)
//
// With a 2s node timeout, appends to the dead master's slots fail (connection
// refused) for about 4s; appends elsewhere get CLUSTERDOWN for about 1s
// while the failover completes (cluster-require-full-coverage).
//
// # Lost replies
//
// A [Dropper] goes into rueidis.ClientOption.DialCtxFn and loses replies
// on the client side: the chosen request runs on the server and the
// caller gets an error wrapping [ErrReplyDropped], an outcome it cannot
// know ([Dropper] documents exactly what is dropped, and what else fails
// with it under pipelining). [Dropper.DropNext],
// [Dropper.SetRate] (seeded), [Dropper.Only] choose what; [Dropper.Refuse]
// makes the server look down; [Dropper.Reset] cuts every connection.
//
//	d := faultenv.NewDropper(1)
//	opt := testenv.RedisOption(t, srv.URL())
//	opt.DialCtxFn = d.Dial
//	d.Only("EVALSHA")
//	d.DropNext(1) // the next append runs, its caller sees an error
//
// # Worker processes
//
// [Spawn] starts the test binary again as a named helper, which
// [RunHelper] runs from TestMain, so a test can SIGKILL or SIGSTOP a real
// worker process ([Process]):
//
//	var helpers = faultenv.Helpers{"projector": projectorMain}
//
//	func TestMain(m *testing.M) {
//		faultenv.RunHelper(helpers)
//		goleak.VerifyTestMain(faultenv.Settled(m, 5*time.Second))
//	}
//
//	p := faultenv.Spawn(t, "projector", "RS_NS="+ns)
//	_ = p.Kill()
//
// [Settled] lets goroutines that rueidis leaves for up to a second after
// Close end before goleak looks.
//
// # Checking the outcome
//
// Writers record each append in a [History] ([History.Append] does it for
// them, naming every event with a UUID first, so that even an unknown
// outcome can be traced and retried). [History.Check] then reads the log
// back through eventstore's public API and returns a [Report]: events
// acknowledged but lost, stored twice, stored although refused, appends
// stored in part, versions with gaps. A scenario that expects losses to be
// detected (by ErrLogRegressed, say) marks them with [Report.MarkDetected];
// [Report.Err] fails on anything else:
//
//	rep, err := h.Check(ctx, store)
//	require.NoError(t, err)
//	t.Log(rep) // ops=… acked=… lost=… duplicated=… detected=…
//	rep.MarkDetected(regressions)
//	require.NoError(t, rep.Err())
//
// [FoldEqual] compares a read model with a fold of the log.
//
// faultenv imports eventstore, so only external test packages
// (package eventstore_test) of eventstore can use it.
package faultenv
