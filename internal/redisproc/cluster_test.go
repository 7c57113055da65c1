package redisproc_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/internal/redisproc"
	"github.com/redsource/redsource/internal/testenv"
)

func TestKeySlot(t *testing.T) {
	t.Parallel()
	// Values from CLUSTER KEYSLOT and the Redis Cluster specification.
	require.Equal(t, 12182, redisproc.KeySlot("foo"))
	require.Equal(t, 12739, redisproc.KeySlot("123456789"))
	require.Equal(t, redisproc.KeySlot("user1000"), redisproc.KeySlot("{user1000}.following"))
	require.Equal(t, redisproc.KeySlot("{}x"), redisproc.KeySlot("{}x"))
	require.NotEqual(t, redisproc.KeySlot(""), redisproc.KeySlot("{}x"), "an empty tag hashes the whole key")
	require.Equal(t, redisproc.KeySlot("bar"), redisproc.KeySlot("foo{bar}{zap}"))
}

// Three masters come up; a key written through rueidis lives on the
// master MasterOf names, and the harness's slot function agrees with the
// server's.
func TestClusterUp(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	start := time.Now()
	c := redisproc.StartCluster(t, redisproc.ClusterOptions{Masters: 3})
	t.Logf("3-master cluster up in %v", time.Since(start).Round(time.Millisecond))
	require.Len(t, c.Nodes(), 3)
	masters, err := c.Masters(ctx)
	require.NoError(t, err)
	require.Len(t, masters, 3)

	client := testenv.RedisAt(t, c.URL())
	require.Len(t, client.Nodes(), 3, "rueidis runs in cluster mode")
	seen := map[*redisproc.Server]bool{}
	for i := range 30 {
		key := fmt.Sprintf("k%d", i)
		require.NoError(t, client.Do(ctx, client.B().Set().Key(key).Value(key).Build()).Error())
		m, err := c.MasterOf(ctx, key)
		require.NoError(t, err)
		seen[m] = true
		v, err := m.Do(ctx, "GET", key)
		require.NoError(t, err, "the key is on the master MasterOf names")
		require.Equal(t, key, v)
		slot, err := m.Do(ctx, "CLUSTER", "KEYSLOT", key)
		require.NoError(t, err)
		require.Equal(t, int64(redisproc.KeySlot(key)), slot)
	}
	require.Len(t, seen, 3, "30 keys spread over every master")
	r, err := c.ReplicaOf(ctx, masters[0])
	require.NoError(t, err)
	require.Nil(t, r)
}
