// Command redsource is the operator CLI of redsource: it lists categories,
// reads, replays, follows and appends events in the Redis event store,
// shows and repairs projections (status, quarantined events) kept in
// PostgreSQL, checks that Redis is set up to keep events safe, and
// measures redsource on the user's servers next to raw ceilings and the
// Watermill peer.
//
//	redsource categories
//	redsource read account a1 --from-version 3
//	redsource replay account --from 2024-05-01T00:00:00Z --json > may.jsonl
//	redsource tail account
//	redsource append account a1 Deposited '{"amount":10}' --expected 3
//	redsource append account a1 Imported @event.json
//	redsource projections
//	redsource quarantine list balances
//	redsource quarantine retry balances 1714564800000-0
//	redsource doctor --namespace bank
//	redsource bench --rounds 1 --peer bin/watermill-bench
//
// Run `redsource help <command>` for one command; docs/cli.md describes
// every command, the JSON output and the exit codes.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
