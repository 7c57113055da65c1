package faultenv_test

import (
	"errors"
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/internal/faultenv"
	"github.com/redsource/redsource/internal/testenv"
)

func dropClient(t *testing.T, url string, d *faultenv.Dropper) rueidis.Client {
	t.Helper()
	opt := testenv.RedisOption(t, url)
	opt.DialCtxFn = d.Dial
	c, err := rueidis.NewClient(opt)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// A dropped reply: the INCR ran on the server, the caller gets an error
// (ErrReplyDropped inside a *net.OpError), and the client carries on over
// a new connection.
func TestDropperDropsReply(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := faultenv.Start(t, faultenv.Options{})
	d := faultenv.NewDropper(1)
	c := dropClient(t, s.URL(), d)
	incrC := func() (int64, error) { return c.Do(ctx, c.B().Incr().Key("n").Build()).AsInt64() }

	n, err := incrC()
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	base := d.Stats()

	d.DropNext(1)
	_, err = incrC()
	require.ErrorIs(t, err, faultenv.ErrReplyDropped)
	var oe *net.OpError
	require.ErrorAs(t, err, &oe)
	require.Equal(t, "read", oe.Op)
	var re *rueidis.RedisError
	require.False(t, errors.As(err, &re), "not a Redis error reply")
	require.Equal(t, faultenv.Unknown, faultenv.Classify(err))
	require.Equal(t, "2", s.Command(t, "GET", "n"), "the command ran")

	n, err = incrC()
	require.NoError(t, err)
	require.Equal(t, int64(3), n)
	st := d.Stats()
	require.Equal(t, base.Dropped+1, st.Dropped)
	require.Equal(t, base.Requests+2, st.Requests, "the handshake of the new connection does not count")

	// rueidis retries a read-only command after a network error: the drop
	// does not surface.
	d.DropNext(1)
	v, err := c.Do(ctx, c.B().Get().Key("n").Build()).ToString()
	require.NoError(t, err)
	require.Equal(t, "3", v)
	require.Equal(t, st.Dropped+1, d.Stats().Dropped)

	// Only: the next drop waits for an EVAL.
	d.Only("eval")
	d.DropNext(1)
	_, err = incrC()
	require.NoError(t, err)
	err = c.Do(ctx, c.B().Eval().Script("return redis.call('INCR', KEYS[1])").Numkeys(1).Key("n").Build()).Error()
	require.ErrorIs(t, err, faultenv.ErrReplyDropped)
	require.Equal(t, "5", s.Command(t, "GET", "n"))
	d.Only()

	// Every write dropped: each INCR fails and each ran.
	d.SetRate(1)
	for range 5 {
		_, err = incrC()
		require.ErrorIs(t, err, faultenv.ErrReplyDropped)
	}
	d.SetRate(0)
	require.Equal(t, "10", s.Command(t, "GET", "n"))

	// Refused dials look like a server that is down; nothing is sent.
	d.Refuse(true)
	d.Reset()
	_, err = incrC()
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
	require.Equal(t, faultenv.Failed, faultenv.Classify(err))
	require.Equal(t, "10", s.Command(t, "GET", "n"))
	require.Positive(t, d.Stats().Refused)
	d.Refuse(false)
	n, err = incrC()
	require.NoError(t, err)
	require.Equal(t, int64(11), n)
}

// Under concurrent, pipelined use, a drop fails every command in flight on
// that connection, including ones rueidis had queued and never sent: an
// error means unknown, never "it ran". Successes always ran.
func TestDropperPipelined(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := faultenv.Start(t, faultenv.Options{})
	d := faultenv.NewDropper(7)
	c := dropClient(t, s.URL(), d)
	d.SetRate(0.05)
	var mu sync.Mutex
	var ok, failed int64
	var other []error
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				err := c.Do(ctx, c.B().Incr().Key("n").Build()).Error()
				mu.Lock()
				switch {
				case err == nil:
					ok++
				case errors.Is(err, faultenv.ErrReplyDropped):
					failed++
				default:
					other = append(other, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.Empty(t, other)
	d.SetRate(0)
	n, err := strconv.ParseInt(s.Command(t, "GET", "n"), 10, 64)
	require.NoError(t, err)
	st := d.Stats()
	t.Logf("800 INCRs: %d ok, %d failed, %d ran; %d of %d writes dropped", ok, failed, n, st.Dropped, st.Requests)
	require.Positive(t, failed)
	require.GreaterOrEqual(t, n, ok)
	require.LessOrEqual(t, n, ok+failed)
}

// A Dropper sees every connection of a cluster client.
func TestDropperCluster(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	c := faultenv.StartCluster(t, faultenv.ClusterOptions{Masters: 3})
	d := faultenv.NewDropper(3)
	dc := dropClient(t, c.URL(), d)
	for _, key := range []string{"k1", "k2", "k3"} {
		d.DropNext(1)
		err := dc.Do(ctx, dc.B().Incr().Key(key).Build()).Error()
		require.ErrorIs(t, err, faultenv.ErrReplyDropped)
		m, err := c.MasterOf(ctx, key)
		require.NoError(t, err)
		require.Equal(t, "1", m.Command(t, "GET", key), "it ran on %s", m.Addr())
	}
	require.Equal(t, 3, d.Stats().Dropped)
	require.GreaterOrEqual(t, d.Stats().Dials, 3, "a connection per master at least")
}
