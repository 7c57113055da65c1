package testenv

import (
	"runtime"
	"strings"
	"testing"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { VerifyTestMain(m) }

// A failed connection leaves rueidis's delayed cluster refresh running for
// up to a second after NewClient returns; FindLeaks waits it out.
func TestFindLeaksOutlastsDelayedRefresh(t *testing.T) {
	before := goleak.IgnoreCurrent()
	for range 8 {
		c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{"127.0.0.1:1"}, DisableCache: true})
		require.Error(t, err)
		if c != nil {
			c.Close()
		}
	}
	require.Contains(t, allStacks(), "(*call).DelayDo",
		"rueidis no longer leaves its delayed refresh behind a failed dial: LeakWait may be unnecessary")
	require.NoError(t, FindLeaks(LeakWait, before))
	require.NotContains(t, allStacks(), "(*call).DelayDo")
}

func allStacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

func TestFindLeaksReportsWhatStays(t *testing.T) {
	before := goleak.IgnoreCurrent()
	stop := make(chan struct{})
	go func() { <-stop }()
	err := FindLeaks(0, before)
	close(stop)
	require.Error(t, err)
	require.True(t, strings.Contains(err.Error(), "TestFindLeaksReportsWhatStays"), err.Error())
}
