package redisinfo_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/internal/redisinfo"
	"github.com/redsource/redsource/internal/redisproc"
	"github.com/redsource/redsource/internal/testenv"
)

func TestMain(m *testing.M) { testenv.VerifyTestMain(m) }

func ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestPlainServer(t *testing.T) {
	t.Parallel()
	s := redisproc.Start(t, redisproc.Options{Policy: "allkeys-lru", MaxMemory: "64mb"})
	c := testenv.RedisAt(t, s.URL())
	ctx := ctx(t)

	nodes := redisinfo.Nodes(c)
	require.Len(t, nodes, 1)
	require.Equal(t, s.Addr(), nodes[0].Addr)
	masters, err := redisinfo.Masters(ctx, c)
	require.NoError(t, err)
	require.Equal(t, []string{s.Addr()}, addrs(masters))
	role, err := redisinfo.Role(ctx, c)
	require.NoError(t, err)
	require.Equal(t, "master", role)

	v, err := redisinfo.Config(ctx, c, "maxmemory-policy")
	require.NoError(t, err)
	require.Equal(t, "allkeys-lru", v)
	_, err = redisinfo.Config(ctx, c, "no-such-parameter")
	require.ErrorIs(t, err, redisinfo.ErrNoSuchParameter)

	info, err := redisinfo.Info(ctx, c, "memory", "persistence")
	require.NoError(t, err)
	require.Equal(t, "allkeys-lru", info["maxmemory_policy"])
	require.Equal(t, "67108864", info["maxmemory"])
	require.Equal(t, "0", info["aof_enabled"])
	require.NotContains(t, info, "# Memory", "section headers are dropped")
	require.NotContains(t, info, "txt", "the RESP3 verbatim prefix is dropped")

	pols := redisinfo.EvictionPolicies(ctx, c)
	require.Equal(t, []redisinfo.Policy{{Addr: s.Addr(), Value: "allkeys-lru", Source: "CONFIG GET maxmemory-policy"}}, pols)
	require.True(t, redisinfo.Evicting(pols[0].Value))
}

// A user who may run INFO but not CONFIG gets the policy from INFO; one
// who may run neither gets an error that Refused recognises.
func TestEvictionPolicyRefused(t *testing.T) {
	t.Parallel()
	s := redisproc.Start(t, redisproc.Options{Policy: "volatile-lru"})
	s.Command(t, "ACL", "SETUSER", "noconfig", "on", ">pw", "~*", "+@all", "-config")
	s.Command(t, "ACL", "SETUSER", "app", "on", ">pw", "~ns:*", "-@all", "+@read", "+@write", "+@stream", "+@connection", "+@scripting", "-@dangerous", "+time")
	ctx := ctx(t)

	c := testenv.RedisAt(t, s.UserURL("noconfig", "pw"))
	_, err := redisinfo.Config(ctx, c, "maxmemory-policy")
	require.True(t, redisinfo.NoPerm(err), "%v", err)
	require.True(t, redisinfo.Refused(err))
	require.Equal(t, []redisinfo.Policy{{Addr: s.Addr(), Value: "volatile-lru", Source: "INFO memory"}}, redisinfo.EvictionPolicies(ctx, c))
	require.False(t, redisinfo.Evicting("volatile-lru"))
	require.True(t, redisinfo.EvictsExpiring("volatile-lru"))

	c = testenv.RedisAt(t, s.UserURL("app", "pw"))
	pols := redisinfo.EvictionPolicies(ctx, c)
	require.Len(t, pols, 1)
	require.Empty(t, pols[0].Value)
	require.Error(t, pols[0].Err)
	require.True(t, redisinfo.Refused(pols[0].Err), "%v", pols[0].Err)
	require.Contains(t, pols[0].Err.Error(), "INFO memory")
	_, err = redisinfo.Info(ctx, c, "memory")
	require.True(t, redisinfo.NoPerm(err), "%v", err)
	// Neither ROLE nor INFO: the one node is still what the client reaches.
	_, err = redisinfo.Role(ctx, c)
	require.True(t, redisinfo.Refused(err), "%v", err)
	masters, err := redisinfo.Masters(ctx, c)
	require.NoError(t, err)
	require.Equal(t, []string{s.Addr()}, addrs(masters))
}

// A managed service that disables CONFIG answers "unknown command".
func TestEvictionPolicyConfigDisabled(t *testing.T) {
	t.Parallel()
	s := redisproc.Start(t, redisproc.Options{Args: []string{"--rename-command", "CONFIG", ""}})
	c := testenv.RedisAt(t, s.URL())
	ctx := ctx(t)
	_, err := redisinfo.Config(ctx, c, "maxmemory-policy")
	require.True(t, redisinfo.UnknownCommand(err), "%v", err)
	require.False(t, redisinfo.NoPerm(err))
	require.Equal(t, []redisinfo.Policy{{Addr: s.Addr(), Value: "noeviction", Source: "INFO memory"}}, redisinfo.EvictionPolicies(ctx, c))
}

func TestCluster(t *testing.T) {
	t.Parallel()
	cluster := redisproc.StartCluster(t, redisproc.ClusterOptions{Masters: 3, ReplicasPerMaster: 1, Args: []string{"--maxmemory-policy", "allkeys-lfu"}})
	nodes := cluster.Nodes()
	c := testenv.RedisAt(t, nodes[0].URL())
	ctx := ctx(t)

	var all, wantMasters []string
	for _, n := range nodes {
		all = append(all, n.Addr())
		if role := n.Command(t, "ROLE"); role[:6] == "master" {
			wantMasters = append(wantMasters, n.Addr())
		}
	}
	require.Len(t, wantMasters, 3)
	require.ElementsMatch(t, all, addrs(redisinfo.Nodes(c)), "masters and replicas")
	masters, err := redisinfo.Masters(ctx, c)
	require.NoError(t, err)
	require.ElementsMatch(t, wantMasters, addrs(masters))

	pols := redisinfo.EvictionPolicies(ctx, c)
	require.Len(t, pols, 6)
	for _, p := range pols {
		require.NoError(t, p.Err)
		require.Equal(t, "allkeys-lfu", p.Value, p.Addr)
	}
}

func TestParse(t *testing.T) {
	info := redisinfo.ParseInfo("# Replication\r\nrole:master\r\nconnected_slaves:1\r\nslave0:ip=10.0.0.2,port=6380,state=online,offset=42,lag=0\r\n\r\n# CPU\r\nused_cpu_sys:1.5\r\n")
	require.Equal(t, map[string]string{
		"role": "master", "connected_slaves": "1",
		"slave0": "ip=10.0.0.2,port=6380,state=online,offset=42,lag=0", "used_cpu_sys": "1.5",
	}, info)
	require.Equal(t, map[string]string{"cluster_state": "ok", "cluster_slots_assigned": "16384"},
		redisinfo.ParseInfo("txt:cluster_state:ok\r\ncluster_slots_assigned:16384\r\n"), "RESP3 verbatim string")
	require.Equal(t, map[string]string{"ip": "10.0.0.2", "port": "6380", "state": "online", "offset": "42", "lag": "0"},
		redisinfo.Fields(info["slave0"]))
	for _, p := range []string{"allkeys-lru", "allkeys-lfu", "allkeys-random"} {
		require.True(t, redisinfo.Evicting(p), p)
		require.False(t, redisinfo.EvictsExpiring(p), p)
	}
	for _, p := range []string{"volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl"} {
		require.False(t, redisinfo.Evicting(p), p)
		require.True(t, redisinfo.EvictsExpiring(p), p)
	}
	require.False(t, redisinfo.Evicting("noeviction"))
	require.False(t, redisinfo.EvictsExpiring("noeviction"))
}

func addrs(nodes []redisinfo.Node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.Addr
	}
	return out
}
