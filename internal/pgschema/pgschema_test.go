package pgschema_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/internal/pgschema"
	"github.com/redsource/redsource/internal/testenv"
)

func TestMigrateConcurrentlyAppliesEachOnce(t *testing.T) {
	t.Parallel()
	pool, schema := testenv.Postgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	target := schema + "_rs"
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgschema.Quote(target)+" CASCADE")
	})

	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = pgschema.Migrate(ctx, pool, target) }()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	ms, err := pgschema.Migrations()
	require.NoError(t, err)
	var n, max int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*), max(version) FROM "+pgschema.Quote(target)+".schema_migrations").Scan(&n, &max))
	require.Equal(t, len(ms), n)
	require.Equal(t, ms[len(ms)-1].Version, max)
	require.NoError(t, pgschema.Migrate(ctx, pool, target), "again: nothing to do")
}
