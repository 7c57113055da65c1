// Package faultenv injects real faults into real Redis servers for
// redsource's scenario tests: crashes, pauses, lost AOF tails, failovers,
// replies lost on the way back, and worker processes killed mid-flight.
// Then it checks what the event log kept against what the writers were
// told. It is a normal package, imported only by tests; it starts its own
// redis-server processes (Redis 7.0+) and never touches a server it did
// not start.
//
// # Servers and clusters
//
// The private servers are package redisproc's, named here too: [Start]
// runs a redis-server that the test owns ([Options], [Server]) and
// [StartCluster] a Redis Cluster of them ([ClusterOptions], [Cluster]).
// Faults act on those processes by their PID: [redisproc.Server.Kill],
// [redisproc.Server.Pause], [redisproc.Server.CutAOFBack] (a power
// loss), [redisproc.Cluster.WaitFailover] after a master is killed; the
// package documentation of [redisproc] has them all.
//
//	srv := faultenv.Start(t, faultenv.Options{AOF: "everysec"})
//	client := testenv.RedisAt(t, srv.URL())
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
//		testenv.VerifyTestMain(m)
//	}
//
//	p := faultenv.Spawn(t, "projector", "RS_NS="+ns)
//	_ = p.Kill()
//
// testenv.VerifyTestMain lets goroutines that rueidis leaves behind a
// closed client end before goleak looks; [Settled] does the same for a
// TestMain that calls goleak.VerifyTestMain itself.
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
