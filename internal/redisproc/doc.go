// Package redisproc starts private redis-server processes for tests: a
// server or a whole Redis Cluster that one test owns, for what must not
// be done to the shared server (eviction policies, persistence, ACL
// users, cluster mode) and for faults (crashes, pauses, lost AOF tails,
// failovers). It imports only the standard library, so any test can use
// it, those of eventstore's dependencies included; package faultenv
// builds the fault scenarios on it and names the same types.
//
// # Servers
//
// [Start] runs a private redis-server (Redis 7.0+; $REDSOURCE_REDIS_SERVER,
// else /usr/bin/redis-server, else from PATH) on a free loopback port in
// the test's temp directory, with every setting the harness relies on
// given explicitly ([Options]: AOF fsync policy, maxmemory and policy, no
// RDB snapshots, no automatic AOF rewrite, replicas that sync at once),
// and kills it when the test ends. The process dies with the test binary
// too ([DieWithParent]), should that be killed before its cleanups run.
//
//	srv := redisproc.Start(t, redisproc.Options{AOF: "everysec"})
//	client := testenv.RedisAt(t, srv.URL())
//
// [Options.Args] passes any other redis-server argument, after the
// harness's own; [Options.ReplicaOf] starts a replica and returns once it
// is linked.
//
// Faults act on that process by its PID: [Server.Kill] (SIGKILL),
// [Server.Stop] (SIGTERM), [Server.Pause] and [Server.Resume]
// (SIGSTOP/SIGCONT; a server left paused is resumed when the test ends,
// before the cleanups registered earlier run), [Server.Restart] on the
// same port and directory, [Server.Wipe] (a restart without persistence).
// Each returns once the change is done: after a restart the server has
// loaded its data.
//
// Losing the end of the AOF: [Server.CutAOF] tears the last n bytes off
// (a torn write), [Server.CutAOFBack] truncates it to its size of d ago (a
// power loss with appendfsync everysec), and [Server.SnapshotAOF] with
// [Server.RestoreAOF] put back an earlier copy. Each kills the server
// first and restarts it after; Redis loads the valid prefix and leaves out
// a script cut in half (on that load: see aof.go for what Redis 7.0.15
// then leaves in the file).
//
// [Server.Do] sends one command on its own connection, in RESP2 as the
// default user, for the test's own checks (INFO, CONFIG SET, DEBUG
// SLEEP); [Server.Command] is the same for set-up, failing the test on an
// error and returning the reply as text:
//
//	srv.Command(t, "ACL", "SETUSER", "app", "on", ">pw", "~ns:*", "+@all")
//	client := testenv.RedisAt(t, srv.UserURL("app", "pw"))
//
// [Server.LogTail] is for failure messages, and is logged by itself when
// a test fails.
//
// # Clusters
//
// [StartCluster] starts Masters×(1+ReplicasPerMaster) nodes, creates the
// cluster with redis-cli and returns once every node agrees that all
// slots are served, every replica is linked and CLUSTER SLOTS lists every
// node. [Cluster.URL] names every node:
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
package redisproc
