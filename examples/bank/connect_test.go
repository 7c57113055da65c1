package main

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/internal/redisproc"
	"github.com/redsource/redsource/internal/testenv"
)

// No message shows a password of -redis or -database, whatever fails.
func TestNoPasswordInOutput(t *testing.T) {
	t.Parallel()
	const pw = "s3cr/et@pw"
	for _, args := range [][]string{
		{"-redis", "redis://u:s3cret@127.0.0.1:1/0"},
		{"-redis", "redis://u:" + pw + "@127.0.0.1:1/0"},
		{"-redis", "redis://u:s3cret@127.0.0.1:x/0"},
		{"-redis", "redis://u:s3cret@127.0.0.1:1/0?dial_timeout=x"},
		{"-redis", testenv.RedisURL(), "-database", "postgres://u:s3cret@127.0.0.1:1/db"},
		{"-redis", testenv.RedisURL(), "-database", "postgres://u:" + pw + "@127.0.0.1:x/db"},
		{"-redis", testenv.RedisURL(), "-database", "postgres://u@127.0.0.1:1/db?password=s3cret"},
		{"-redis", testenv.RedisURL(), "-database", "host=127.0.0.1 port=x user=u password=s3cret"},
		{"-redis", testenv.RedisURL(), "-database", "host=127.0.0.1 port=1 user=u password=s3cret"},
	} {
		var out, errs bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		code := run(ctx, append(args, "-namespace", testenv.Unique("t"), "verify"), &out, &errs)
		cancel()
		require.Equal(t, exitError, code, "%v: %s", args, errs.String())
		require.Contains(t, errs.String(), "bank: ", "%v", args)
		for _, secret := range []string{"s3cret", "s3cr", "et@pw"} {
			require.NotContains(t, out.String()+errs.String(), secret, "%v", args)
		}
	}
}

// The demo's wipe removes the namespace from every master of a cluster.
func TestDeleteKeysCluster(t *testing.T) {
	t.Parallel()
	cluster := redisproc.StartCluster(t, redisproc.ClusterOptions{Masters: 3})
	c := testenv.RedisAt(t, cluster.Nodes()[0].URL())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := testenv.Unique("t")
	var cmds rueidis.Commands
	for i := range 200 {
		cmds = append(cmds, c.B().Set().Key(fmt.Sprintf("%s:{%d}", ns, i)).Value("v").Build())
	}
	cmds = append(cmds, c.B().Set().Key(ns+"x").Value("v").Build())
	for _, r := range c.DoMulti(ctx, cmds...) {
		require.NoError(t, r.Error())
	}
	n, err := deleteKeys(ctx, c, ns)
	require.NoError(t, err)
	require.Equal(t, 200, n)
	left, err := testenv.ScanKeys(ctx, c, ns+"*", "")
	require.NoError(t, err)
	require.Equal(t, []string{ns + "x"}, left)
}
