package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/internal/redisproc"
	"github.com/redsource/redsource/internal/testenv"
)

func TestMain(m *testing.M) { testenv.VerifyTestMain(m) }

func TestQuickstart(t *testing.T) {
	t.Parallel()
	ns := testenv.Unique("t")
	require.NoError(t, run(testenv.RedisURL(), ns, false))
	keys, err := testenv.ScanKeys(context.Background(), testenv.Redis(t), ns+":*", "")
	require.NoError(t, err)
	require.Empty(t, keys, "the program removes its keys")
}

// On a cluster the namespace spreads over every master; the program works
// and removes its keys from all of them.
func TestQuickstartCluster(t *testing.T) {
	t.Parallel()
	seed := redisproc.StartCluster(t, redisproc.ClusterOptions{Masters: 3}).Nodes()[0]
	ns := testenv.Unique("t")
	require.NoError(t, run(seed.URL(), ns, false))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	keys, err := testenv.ScanKeys(ctx, testenv.RedisAt(t, seed.URL()), ns+":*", "")
	require.NoError(t, err)
	require.Empty(t, keys)
}

func TestNoPasswordInErrors(t *testing.T) {
	t.Parallel()
	for _, url := range []string{
		"redis://u:s3cret@127.0.0.1:1/0",
		"redis://u:s3cret@127.0.0.1:x/0",
		"redis://u:s3cr/et@pw@127.0.0.1:1/0",
	} {
		err := run(url, testenv.Unique("t"), false)
		require.Error(t, err, url)
		for _, secret := range []string{"s3cret", "s3cr", "et@pw"} {
			require.NotContains(t, err.Error(), secret, url)
		}
	}
}
