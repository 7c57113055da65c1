package aggregatetest_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/aggregate"
	"github.com/redsource/redsource/aggregate/aggregatetest"
)

type account struct {
	aggregate.Root
	open    bool
	balance int64
}

type opened struct{}
type deposited struct{ Amount int64 }
type withdrawn struct{ Amount int64 }
type noted struct{ text string } // unexported: JSON drops it
type unregistered struct{}

var errInsufficientFunds = errors.New("insufficient funds")

func (a *account) Apply(e any) {
	switch e := e.(type) {
	case opened:
		a.open = true
	case deposited:
		a.balance += e.Amount
	case withdrawn:
		a.balance -= e.Amount
	}
}

func (a *account) Withdraw(n int64) error {
	if n > a.balance {
		return errInsufficientFunds
	}
	a.Record(withdrawn{n})
	return nil
}

var accounts = aggregate.Config[*account]{
	Category: "account",
	New:      func() *account { return new(account) },
	Events: []aggregate.EventType{
		aggregate.Event[opened]("opened"),
		aggregate.Event[deposited]("deposited"),
		aggregate.Event[withdrawn]("withdrawn"),
		aggregate.Event[noted]("noted"),
	},
}

func TestScenarios(t *testing.T) {
	t.Parallel()
	a := aggregatetest.For(t, accounts).
		Given(opened{}, deposited{100}).
		When(func(a *account) error { return a.Withdraw(30) }).
		Then(withdrawn{30})
	require.Equal(t, int64(70), a.balance)
	require.Equal(t, uint64(2), a.Version(), "given events are the stored history")
	require.Equal(t, aggregatetest.DefaultID, a.ID())

	aggregatetest.For(t, accounts).
		Given(opened{}, deposited{10}).
		When(func(a *account) error { return a.Withdraw(30) }).
		ThenError(errInsufficientFunds)

	aggregatetest.For(t, accounts).ID("acc-9").
		When(func(a *account) error {
			require.Equal(t, "acc-9", a.ID())
			return nil
		}).
		Then()
}

// recorder stands in for testing.T to catch what a scenario reports.
type recorder struct {
	testing.TB
	errors []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func TestScenarioFailuresAreReported(t *testing.T) {
	t.Parallel()
	withdraw := func(n int64) func(*account) error { return func(a *account) error { return a.Withdraw(n) } }
	cases := map[string]struct {
		run  func(tb testing.TB)
		want string
	}{
		"other events": {func(tb testing.TB) {
			aggregatetest.For(tb, accounts).Given(deposited{100}).When(withdraw(30)).Then(withdrawn{31})
		}, "recorded events differ"},
		"error, want events": {func(tb testing.TB) {
			aggregatetest.For(tb, accounts).When(withdraw(30)).Then(withdrawn{30})
		}, "When returned error insufficient funds"},
		"success, want error": {func(tb testing.TB) {
			aggregatetest.For(tb, accounts).Given(deposited{100}).When(withdraw(30)).ThenError(errInsufficientFunds)
		}, "When succeeded, want error"},
		"other error": {func(tb testing.TB) {
			aggregatetest.For(tb, accounts).When(withdraw(30)).ThenError(errors.New("x"))
		}, "want x"},
		"error after recording": {func(tb testing.TB) {
			aggregatetest.For(tb, accounts).Given(deposited{100}).When(func(a *account) error {
				_ = a.Withdraw(30)
				return errInsufficientFunds
			}).ThenError(errInsufficientFunds)
		}, "but recorded events"},
		"lossy codec": {func(tb testing.TB) {
			aggregatetest.For(tb, accounts).When(func(a *account) error { a.Record(noted{"hi"}); return nil }).Then(noted{"hi"})
		}, "does not survive its codec"},
		"unregistered recorded": {func(tb testing.TB) {
			aggregatetest.For(tb, accounts).When(func(a *account) error { a.Record(unregistered{}); return nil }).Then(unregistered{})
		}, "unregistered event type"},
		"unregistered given": {func(tb testing.TB) {
			aggregatetest.For(tb, accounts).Given(unregistered{}).When(withdraw(1)).Then()
		}, "Given:"},
		"no when": {func(tb testing.TB) {
			aggregatetest.For(tb, accounts).Then()
		}, "no When"},
	}
	for name, c := range cases {
		r := &recorder{TB: t}
		c.run(r)
		require.NotEmpty(t, r.errors, name)
		require.Contains(t, strings.Join(r.errors, "\n"), c.want, name)
	}
}
