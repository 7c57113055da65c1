package projection

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/internal/testenv"
)

// The classification table of failure.go, code by code, for errors the
// handler returned and errors of the runner's own statements. The
// integration tests (failure_test.go) raise these codes in real
// PostgreSQL transactions.
func TestClassify(t *testing.T) {
	t.Parallel()
	pg := func(code string) error { return &pgconn.PgError{Severity: "ERROR", Code: code, Message: "m"} }
	ctx := context.Background()
	dial, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, connectErr := pgconn.Connect(dial, "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=2")
	var ce *pgconn.ConnectError
	require.ErrorAs(t, connectErr, &ce)
	// A query cut by a deadline: pgconn's timeout error (and a closed
	// connection).
	conn, err := pgconn.Connect(dial, testenv.DatabaseURL())
	require.NoError(t, err)
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	timeoutErr := conn.Exec(short, "SELECT pg_sleep(5)").Close()
	require.True(t, pgconn.Timeout(timeoutErr), "%v", timeoutErr)
	_ = conn.Close(ctx)

	for _, tc := range []struct {
		name               string
		err                error
		inHandler, ownStmt failureClass
	}{
		{"serialization_failure", pg("40001"), failTransient, failTransient},
		{"deadlock_detected", pg("40P01"), failTransient, failTransient},
		{"lock_not_available", pg("55P03"), failTransient, failTransient},
		{"statement_timeout", pg("57014"), failHandler, failTransient},
		{"undefined_table", pg("42P01"), failInfra, failInfra},
		{"undefined_column", pg("42703"), failInfra, failInfra},
		{"undefined_object", pg("42704"), failInfra, failInfra},
		{"undefined_function", pg("42883"), failInfra, failInfra},
		{"invalid_schema_name", pg("3F000"), failInfra, failInfra},
		{"invalid_catalog_name", pg("3D000"), failInfra, failInfra},
		{"insufficient_privilege", pg("42501"), failInfra, failInfra},
		{"read_only_sql_transaction", pg("25006"), failInfra, failInfra},
		{"idle_in_transaction_session_timeout", pg("25P03"), failInfra, failInfra},
		{"connection_failure", pg("08006"), failInfra, failInfra},
		{"invalid_password", pg("28P01"), failInfra, failInfra},
		{"too_many_connections", pg("53300"), failInfra, failInfra},
		{"disk_full", pg("53100"), failInfra, failInfra},
		{"admin_shutdown", pg("57P01"), failInfra, failInfra},
		{"crash_shutdown", pg("57P02"), failInfra, failInfra},
		{"cannot_connect_now", pg("57P03"), failInfra, failInfra},
		{"database_dropped", pg("57P04"), failInfra, failInfra},
		{"idle_session_timeout", pg("57P05"), failInfra, failInfra},
		{"io_error", pg("58030"), failInfra, failInfra},
		{"internal_error", pg("XX000"), failInfra, failInfra},
		{"data_corrupted", pg("XX001"), failInfra, failInfra},
		{"unique_violation", pg("23505"), failHandler, failInfra},
		{"check_violation", pg("23514"), failHandler, failInfra},
		{"invalid_text_representation", pg("22P02"), failHandler, failInfra},
		{"in_failed_sql_transaction", pg("25P02"), failHandler, failHandler},
		{"raise_exception", pg("P0001"), failHandler, failInfra},
		{"wrapped", fmt.Errorf("apply: %w", pg("40001")), failTransient, failTransient},
		{"permanent undefined_table", Permanent(fmt.Errorf("x: %w", pg("42P01"))), failInfra, failInfra},
		{"connect error", connectErr, failInfra, failInfra},
		{"timeout", fmt.Errorf("read: %w", timeoutErr), failInfra, failInfra},
		{"plain handler error", errors.New("cannot handle 13"), failHandler, failOther},
		{"lost ownership", ErrLostOwnership, failHandler, failOther},
	} {
		require.Equal(t, tc.inHandler, classify(ctx, nil, tc.err, true), "%s in the handler", tc.name)
		require.Equal(t, tc.ownStmt, classify(ctx, nil, tc.err, false), "%s in the runner's statements", tc.name)
	}

	// A worker that is stopping blames nobody and retries nothing.
	stopped, stop := context.WithCancel(ctx)
	stop()
	require.Equal(t, failOther, classify(stopped, nil, pg("57014"), true))
	require.Equal(t, failOther, classify(stopped, nil, pg("42P01"), false))
}
