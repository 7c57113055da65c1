package aggregate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/aggregate"
	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/testenv"
)

// counter: the smallest aggregate.
type counter struct {
	aggregate.Root
	n int
}

type incremented struct {
	By int `json:"by"`
}

func (c *counter) Apply(event any) {
	if e, ok := event.(incremented); ok {
		c.n += e.By
	}
}

func (c *counter) Increment() error {
	c.Record(incremented{By: 1})
	return nil
}

func counterConfig() aggregate.Config[*counter] {
	return aggregate.Config[*counter]{
		Category: "counter",
		New:      func() *counter { return new(counter) },
		Events:   []aggregate.EventType{aggregate.Event[incremented]("incremented")},
	}
}

func counterSnapshots(c *counter) ([]byte, error) { return json.Marshal(c.n) }
func counterRestore(c *counter, b []byte) error   { return json.Unmarshal(b, &c.n) }

// account: an aggregate with rules.
type account struct {
	aggregate.Root
	owner   string
	open    bool
	balance int64
}

type opened struct {
	Owner string `json:"owner"`
}
type deposited struct {
	Amount int64 `json:"amount"`
}
type withdrawn struct {
	Amount int64 `json:"amount"`
}

var (
	errAlreadyOpen       = errors.New("account already open")
	errNotOpen           = errors.New("account not open")
	errInsufficientFunds = errors.New("insufficient funds")
	errBadAmount         = errors.New("amount must be positive")
)

func (a *account) Apply(event any) {
	switch e := event.(type) {
	case opened:
		a.open, a.owner = true, e.Owner
	case deposited:
		a.balance += e.Amount
	case withdrawn:
		a.balance -= e.Amount
	}
}

func (a *account) Open(owner string) error {
	if a.open {
		return errAlreadyOpen
	}
	a.Record(opened{Owner: owner})
	return nil
}

func (a *account) Deposit(n int64) error {
	switch {
	case !a.open:
		return errNotOpen
	case n <= 0:
		return errBadAmount
	}
	a.Record(deposited{Amount: n})
	return nil
}

func (a *account) Withdraw(n int64) error {
	switch {
	case !a.open:
		return errNotOpen
	case n <= 0:
		return errBadAmount
	case n > a.balance:
		return errInsufficientFunds
	}
	a.Record(withdrawn{Amount: n})
	return nil
}

type accountState struct {
	Owner   string `json:"owner"`
	Open    bool   `json:"open"`
	Balance int64  `json:"balance"`
}

func accountConfig() aggregate.Config[*account] {
	return aggregate.Config[*account]{
		Category: "account",
		New:      func() *account { return new(account) },
		Events: []aggregate.EventType{
			aggregate.Event[opened]("opened"),
			aggregate.Event[deposited]("deposited"),
			aggregate.Event[withdrawn]("withdrawn"),
		},
	}
}

func accountSnapshots(a *account) ([]byte, error) {
	return json.Marshal(accountState{Owner: a.owner, Open: a.open, Balance: a.balance})
}

func accountRestore(a *account, b []byte) error {
	var s accountState
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	a.owner, a.open, a.balance = s.Owner, s.Open, s.Balance
	return nil
}

// helpers

func newStore(t testing.TB) *eventstore.Store {
	t.Helper()
	c := testenv.Redis(t)
	s, err := eventstore.New(c, eventstore.Config{Namespace: testenv.Namespace(t, c)})
	require.NoError(t, err)
	return s
}

func newRepo[A aggregate.Interface](t testing.TB, store *eventstore.Store, cfg aggregate.Config[A]) *aggregate.Repository[A] {
	t.Helper()
	r, err := aggregate.NewRepository(store, cfg)
	require.NoError(t, err)
	return r
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func streamEvents(t testing.TB, ctx context.Context, s *eventstore.Store, stream eventstore.StreamID) []eventstore.Event {
	t.Helper()
	var out []eventstore.Event
	for ev, err := range s.Read(ctx, stream, 0) {
		require.NoError(t, err)
		out = append(out, ev)
	}
	return out
}

// logBuffer collects a logger's output for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newLogger() (*slog.Logger, *logBuffer) {
	b := &logBuffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}
