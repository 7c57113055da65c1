package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/aggregate"
	"github.com/redsource/redsource/aggregate/aggregatetest"
	"github.com/redsource/redsource/eventstore"
)

// accountConfig is the production configuration without a store.
var accountConfig = aggregate.Config[*Account]{
	Category: Category,
	New:      func() *Account { return new(Account) },
	Events:   eventTypes(),
}

func TestAccountRules(t *testing.T) {
	t.Parallel()
	opened := AccountOpened{Owner: "Ada"}

	aggregatetest.For(t, accountConfig).
		When(func(a *Account) error { return a.Open("Ada") }).
		Then(opened)
	aggregatetest.For(t, accountConfig).Given(opened).
		When(func(a *Account) error { return a.Open("Ada") }).
		ThenError(ErrAlreadyOpen)
	aggregatetest.For(t, accountConfig).
		When(func(a *Account) error { return a.Deposit(100) }).
		ThenError(ErrNotOpen)
	aggregatetest.For(t, accountConfig).Given(opened).
		When(func(a *Account) error { return a.Deposit(0) }).
		ThenError(ErrInvalidAmount)

	aggregatetest.For(t, accountConfig).Given(opened, Deposited{Amount: 100}).
		When(func(a *Account) error { return a.Withdraw(100) }).
		Then(Withdrawn{Amount: 100})
	aggregatetest.For(t, accountConfig).Given(opened, Deposited{Amount: 100}).
		When(func(a *Account) error { return a.Withdraw(101) }).
		ThenError(ErrInsufficientFunds)
	aggregatetest.For(t, accountConfig).Given(opened, Deposited{Amount: 100}, TransferSent{Amount: 60, To: "b", Transfer: "t1"}).
		When(func(a *Account) error { return a.SendTransfer("t2", "b", 50) }).
		ThenError(ErrInsufficientFunds)
	aggregatetest.For(t, accountConfig).ID("a").Given(opened, Deposited{Amount: 100}).
		When(func(a *Account) error { return a.SendTransfer("t1", "a", 50) }).
		ThenError(ErrSameAccount)
}

func TestTransferStepsAreIdempotent(t *testing.T) {
	t.Parallel()
	opened := AccountOpened{Owner: "Ada"}
	// The debit of a transfer already sent is not taken again, even when
	// the balance would refuse it now.
	aggregatetest.For(t, accountConfig).ID("a").Given(opened, Deposited{Amount: 100}, TransferSent{Amount: 100, To: "b", Transfer: "t1"}).
		When(func(a *Account) error { return a.SendTransfer("t1", "b", 100) }).
		Then()
	aggregatetest.For(t, accountConfig).ID("b").Given(opened).
		When(func(a *Account) error { return a.ReceiveTransfer("t1", "a", 100) }).
		Then(TransferReceived{Amount: 100, From: "a", Transfer: "t1"})
	aggregatetest.For(t, accountConfig).ID("b").Given(opened, TransferReceived{Amount: 100, From: "a", Transfer: "t1"}).
		When(func(a *Account) error { return a.ReceiveTransfer("t1", "a", 100) }).
		Then()
}

func TestSnapshotPayloadRoundTrip(t *testing.T) {
	t.Parallel()
	a, err := accountConfig.Build("a", AccountOpened{Owner: "Ada"}, Deposited{Amount: 500},
		TransferSent{Amount: 100, To: "b", Transfer: "t1"}, TransferReceived{Amount: 7, From: "c", Transfer: "t2"})
	require.NoError(t, err)
	payload, err := marshalAccount(a)
	require.NoError(t, err)
	b, err := accountConfig.Build("a")
	require.NoError(t, err)
	require.NoError(t, unmarshalAccount(b, payload))
	require.Equal(t, a.owner, b.owner)
	require.Equal(t, a.balance, b.balance)
	require.Equal(t, a.sent, b.sent)
	require.Equal(t, a.received, b.received)
	require.NoError(t, b.SendTransfer("t1", "b", 10_000), "a restored account still knows the transfers it sent")
	require.Empty(t, b.Changes())
}

func TestUndecodableEvents(t *testing.T) {
	t.Parallel()
	types, err := aggregate.NewRegistry(eventTypes()...)
	require.NoError(t, err)
	for _, data := range []string{`{"amount":"12.50"}`, `{"amount":12.5}`, `{"amount":-3}`, `{}`, `not json`} {
		_, err := types.Decode(eventstore.Event{Stream: eventstore.StreamID{Category: Category, ID: "a"}, Version: 2, Type: "Deposited", Data: []byte(data)})
		require.ErrorIs(t, err, ErrBadEventData, data)
		require.True(t, isAggregateFailure(err), data)
	}
	e, err := types.Decode(eventstore.Event{Stream: eventstore.StreamID{Category: Category, ID: "a"}, Version: 2, Type: "Deposited", Data: []byte(`{"amount":1250}`)})
	require.NoError(t, err)
	require.Equal(t, Deposited{Amount: 1250}, e)
}
