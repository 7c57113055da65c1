package projection_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/faultenv"
	"github.com/redsource/redsource/internal/keys"
	"github.com/redsource/redsource/internal/testenv"
	"github.com/redsource/redsource/projection"
)

// The ACL line of docs/operations.md is enough for everything a service
// does: appends, reads, a runner (leases, heartbeats, consumer groups,
// quarantine mirror), a catch-up and Status.
func TestRunnerUnderTheDocumentedACL(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	srv := faultenv.Start(t, faultenv.Options{})
	const ns = "aclp"
	line := "~" + ns + ":* -@all +@read +@write +@stream +@connection +@scripting -@dangerous +time"
	_, err := srv.Do(ctx, append([]string{"ACL", "SETUSER", "svc", "on", ">svc-secret", "resetkeys"}, strings.Fields(line)...)...)
	require.NoError(t, err)
	c := testenv.RedisAt(t, strings.Replace(srv.URL(), "redis://", "redis://svc:svc-secret@", 1))
	store, err := eventstore.New(c, eventstore.Config{Namespace: ns, Partitions: 2})
	require.NoError(t, err)
	pool, schema := testenv.Postgres(t)
	e := &env{ctx: ctx, store: store, pool: pool, schema: schema}
	e.appendEvents(t, 6, 3, "a")
	poison := eventstore.StreamID{Category: "acc", ID: "bad"}
	_, err = store.Append(ctx, poison, eventstore.NoStream, eventstore.EventData{Type: "Add", Data: []byte("+1")})
	require.NoError(t, err)
	p := e.ledger(t, "acl", "acl", func(ev eventstore.Event) error {
		if ev.Stream.ID == "bad" {
			return projection.Permanent(errors.New("bad payload"))
		}
		return nil
	})
	require.NoError(t, projection.CatchUp(ctx, e.config(), p, projection.RebuildOptions{}))
	require.Equal(t, int64(18), e.count(t, "acl"))
	st, err := projection.NewAdmin(pool, schema).Status(ctx, store, "acl")
	require.NoError(t, err)
	quarantined := 0
	for _, s := range st {
		require.Empty(t, s.Stopped)
		quarantined += s.Quarantined
	}
	require.Equal(t, 1, quarantined, "quarantined under the ACL")
	dlq := keys.Layout{NS: ns}.DLQ("acc", store.Partition(poison), "acl")
	require.Eventually(t, func() bool {
		n, err := c.Do(ctx, c.B().Xlen().Key(dlq).Build()).AsInt64()
		return err == nil && n == 1
	}, 10*time.Second, 20*time.Millisecond, "and mirrored into the dead-letter stream")
}
