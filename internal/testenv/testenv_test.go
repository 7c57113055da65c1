package testenv

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/internal/redisinfo"
	"github.com/redsource/redsource/internal/redisproc"
)

// The keys of a namespace are spread over every master of a cluster;
// DeleteNamespace removes them from all, and nothing else.
func TestDeleteNamespaceCluster(t *testing.T) {
	t.Parallel()
	cluster := redisproc.StartCluster(t, redisproc.ClusterOptions{Masters: 3})
	c := RedisAt(t, cluster.Nodes()[0].URL())
	testDeleteNamespace(t, c, "t*x")
	masters, err := redisinfo.Masters(context.Background(), c)
	require.NoError(t, err)
	require.Len(t, masters, 3)
}

func TestDeleteNamespacePlain(t *testing.T) {
	t.Parallel()
	testDeleteNamespace(t, Redis(t), Unique("t"))
}

func testDeleteNamespace(t *testing.T, c rueidis.Client, ns string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Hash tags put the keys in 300 slots; the other keys share a prefix
	// (or, with a glob character in ns, a pattern) with the namespace.
	other := []string{ns + "x:{0}", ns + "-other:{1}", "t" + ns[len(ns)-1:] + "yx:{2}"}
	var cmds rueidis.Commands
	for i := range 300 {
		cmds = append(cmds, c.B().Set().Key(fmt.Sprintf("%s:{%d}:k", ns, i)).Value("v").Build())
	}
	for _, k := range other {
		cmds = append(cmds, c.B().Set().Key(k).Value("v").Build())
	}
	for _, r := range c.DoMulti(ctx, cmds...) {
		require.NoError(t, r.Error())
	}
	t.Cleanup(func() {
		for _, k := range other {
			c.Do(context.Background(), c.B().Del().Key(k).Build())
		}
	})
	perNode := map[string]int{}
	for _, m := range redisinfo.Nodes(c) {
		keys, err := ScanKeys(ctx, m.Client, GlobEscape(ns)+":*", "")
		require.NoError(t, err)
		perNode[m.Addr] = len(keys)
	}
	total := 0
	for addr, n := range perNode {
		if len(perNode) > 1 {
			require.Positive(t, n, "keys on %s", addr)
		}
		total += n
	}
	require.Equal(t, 300, total)
	keys, err := ScanKeys(ctx, c, GlobEscape(ns)+":*", "string")
	require.NoError(t, err)
	require.Len(t, keys, 300, "ScanKeys walks every master")

	require.NoError(t, DeleteNamespace(c, ns))
	for _, m := range redisinfo.Nodes(c) {
		keys, err := ScanKeys(ctx, m.Client, GlobEscape(ns)+":*", "")
		require.NoError(t, err)
		require.Empty(t, keys, "keys left on %s", m.Addr)
	}
	for _, k := range other {
		n, err := c.Do(ctx, c.B().Exists().Key(k).Build()).AsInt64()
		require.NoError(t, err)
		require.EqualValues(t, 1, n, "%s is not in the namespace", k)
	}
}
