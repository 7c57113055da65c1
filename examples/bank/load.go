package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redsource/redsource/eventstore"
)

// accountID names account i (1-based): acc-0001, acc-0002, … The same N
// gives the same accounts, so a second load works on the first one's.
func accountID(i int) string { return fmt.Sprintf("acc-%04d", i) }

func accountIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = accountID(i + 1)
	}
	return ids
}

var firstNames = []string{"Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken",
	"Radia", "Dennis", "Frances", "John", "Hedy", "Tony", "Sophie", "Niklaus"}

func ownerOf(i int) string {
	name := firstNames[(i-1)%len(firstNames)]
	if i > len(firstNames) {
		name += fmt.Sprintf(" %d", (i-1)/len(firstNames)+1)
	}
	return name
}

// loadResult counts what a workload did.
type loadResult struct {
	mu        sync.Mutex
	commands  map[string]int            // by kind: deposit, withdraw, transfer
	refused   map[string]map[string]int // kind → reason → count
	failed    int                       // failed on one aggregate (its stored events)
	failures  []string                  // the first few of those
	gaveUp    int                       // too many conflicts in a row
	opened    int
	existing  int
	took      time.Duration
	completed int // transfers in flight completed before the run
}

func newLoadResult() *loadResult {
	return &loadResult{commands: map[string]int{}, refused: map[string]map[string]int{}}
}

// count files the outcome of one command; it returns err when it is fatal
// (Redis or PostgreSQL failing), nil otherwise.
func (r *loadResult) count(kind string, err error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.commands[kind]++
	switch {
	case err == nil:
	case isRefusal(err):
		if r.refused[kind] == nil {
			r.refused[kind] = map[string]int{}
		}
		r.refused[kind][refusalReason(err)]++
	case isAggregateFailure(err):
		r.failed++
		if len(r.failures) < 5 {
			r.failures = append(r.failures, err.Error())
		}
	case errors.Is(err, eventstore.ErrConflict):
		r.gaveUp++
	default:
		return err
	}
	return nil
}

func refusalReason(err error) string {
	for _, r := range []error{ErrInsufficientFunds, ErrNotOpen, ErrAlreadyOpen, ErrInvalidAmount, ErrNoOwner, ErrSameAccount, ErrUnknownTarget} {
		if errors.Is(err, r) {
			return r.Error()
		}
	}
	return err.Error()
}

func (r *loadResult) refusedTotal() int {
	n := 0
	for _, m := range r.refused {
		for _, c := range m {
			n += c
		}
	}
	return n
}

// openAccounts opens the accounts that are not open yet, with writers
// goroutines.
func openAccounts(ctx context.Context, b *Bank, ids []string, writers int, res *loadResult) error {
	return parallel(ctx, len(ids), writers, func(ctx context.Context, i int) error {
		opened, err := b.Open(ctx, ids[i], ownerOf(i+1))
		if err == nil {
			res.mu.Lock()
			if opened {
				res.opened++
			} else {
				res.existing++
			}
			res.mu.Unlock()
			return nil
		}
		return res.count("open", err)
	})
}

// runCommands runs ops random commands (deposits, withdrawals, transfers)
// on the accounts from writers goroutines.
func runCommands(ctx context.Context, b *Bank, ids []string, ops, writers int, res *loadResult) error {
	return parallel(ctx, ops, writers, func(ctx context.Context, _ int) error {
		kind, err := randomCommand(ctx, b, ids)
		return res.count(kind, err)
	})
}

func randomCommand(ctx context.Context, b *Bank, ids []string) (string, error) {
	acc := ids[rand.IntN(len(ids))]
	switch n := rand.IntN(10); {
	case n < 4:
		return "deposit", b.Deposit(ctx, acc, 100+rand.Int64N(20000))
	case n < 7 || len(ids) < 2:
		return "withdraw", b.Withdraw(ctx, acc, 100+rand.Int64N(15000))
	default:
		to := ids[rand.IntN(len(ids))]
		for to == acc {
			to = ids[rand.IntN(len(ids))]
		}
		return "transfer", b.Transfer(ctx, NewTransferID(), acc, to, 100+rand.Int64N(10000))
	}
}

// parallel runs fn(i) for i in [0, n) on workers goroutines. The first
// error cancels the rest and is returned.
func parallel(ctx context.Context, n, workers int, fn func(context.Context, int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range max(1, min(workers, n)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(ctx, i); err != nil {
					cancel(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return context.Cause(ctx)
}

func cmdLoad(ctx context.Context, e *env, args []string) int {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(e.errOut)
	accounts := fs.Int("accounts", 20, "number of accounts (acc-0001 …)")
	ops := fs.Int("ops", 1000, "number of random commands")
	writers := fs.Int("writers", 8, "concurrent writers")
	if err := fs.Parse(args); err != nil {
		return exitError
	}
	if *accounts < 1 || *ops < 0 || *writers < 1 {
		fmt.Fprintln(e.errOut, "bank load: want -accounts >= 1, -ops >= 0, -writers >= 1")
		return exitError
	}
	res, err := load(ctx, e, accountIDs(*accounts), *ops, *writers)
	if err != nil {
		return e.fail(err)
	}
	printLoad(e, res, *ops, *writers)
	return exitOK
}

// load finishes transfers a crashed run left in flight, opens the missing
// accounts, then runs ops random commands.
func load(ctx context.Context, e *env, ids []string, ops, writers int) (*loadResult, error) {
	res := newLoadResult()
	done, failed, err := e.bank.CompleteTransfers(ctx)
	if err != nil {
		return nil, fmt.Errorf("complete transfers in flight: %w", err)
	}
	res.completed, res.failed = done, failed
	if err := openAccounts(ctx, e.bank, ids, writers, res); err != nil {
		return nil, err
	}
	start := time.Now()
	if err := runCommands(ctx, e.bank, ids, ops, writers, res); err != nil {
		return nil, err
	}
	res.took = time.Since(start)
	return res, nil
}

func printLoad(e *env, res *loadResult, ops, writers int) {
	e.printf("accounts: %d opened now, %d open already\n", res.opened, res.existing)
	if res.completed > 0 {
		e.printf("transfers left in flight by an earlier run, completed: %d\n", res.completed)
	}
	rate := 0.0
	if res.took > 0 {
		rate = float64(ops) / res.took.Seconds()
	}
	e.printf("commands: %d by %d writers in %s (%.0f/s)\n", ops, writers, res.took.Round(time.Millisecond), rate)
	for _, kind := range []string{"deposit", "withdraw", "transfer"} {
		line := fmt.Sprintf("  %-9s %6d", kind, res.commands[kind])
		var reasons []string
		for reason, n := range res.refused[kind] {
			reasons = append(reasons, fmt.Sprintf("%d %s", n, reason))
		}
		sort.Strings(reasons)
		if len(reasons) > 0 {
			line += "  refused: " + strings.Join(reasons, ", ")
		}
		e.printf("%s\n", line)
	}
	e.printf("events appended: %d, conflicts retried: %d, refused: %d, failed on one account: %d, gave up after conflicts: %d\n",
		e.bank.stats.events.Load(), e.bank.stats.conflicts.Load(), res.refusedTotal(), res.failed, res.gaveUp)
	e.printf("snapshots: %d written, %d loads started from one\n", e.bank.snaps.puts.Load(), e.bank.snaps.hits.Load())
	for _, f := range res.failures {
		e.printf("  failed: %s\n", f)
	}
}
