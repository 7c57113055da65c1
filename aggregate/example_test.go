package aggregate_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/redis/rueidis"

	"github.com/redsource/redsource/aggregate"
	"github.com/redsource/redsource/eventstore"
)

// BankAccount is an aggregate: a plain Go type that embeds aggregate.Root.
type BankAccount struct {
	aggregate.Root
	balance int64
}

// Its events are plain Go values.
type (
	Deposited struct {
		Amount int64 `json:"amount"`
	}
	Withdrawn struct {
		Amount int64 `json:"amount"`
	}
)

var ErrInsufficientFunds = errors.New("insufficient funds")

// Apply is the one place where events change the state.
func (a *BankAccount) Apply(event any) {
	switch e := event.(type) {
	case Deposited:
		a.balance += e.Amount
	case Withdrawn:
		a.balance -= e.Amount
	}
}

// Deposit and Withdraw decide: check the rules, then record.
func (a *BankAccount) Deposit(amount int64) error {
	if amount <= 0 {
		return errors.New("amount must be positive")
	}
	a.Record(Deposited{Amount: amount})
	return nil
}

func (a *BankAccount) Withdraw(amount int64) error {
	if amount > a.balance {
		return ErrInsufficientFunds
	}
	a.Record(Withdrawn{Amount: amount})
	return nil
}

func Example() {
	ctx := context.Background()
	client, namespace := connect()
	defer client.Close()
	defer deleteNamespace(client, namespace)

	store, err := eventstore.New(client, eventstore.Config{Namespace: namespace})
	if err != nil {
		log.Fatal(err)
	}
	accounts, err := aggregate.NewRepository(store, aggregate.Config[*BankAccount]{
		Category: "account",
		New:      func() *BankAccount { return new(BankAccount) },
		Events: []aggregate.EventType{
			aggregate.Event[Deposited]("deposited"),
			aggregate.Event[Withdrawn]("withdrawn"),
		},
	})
	if err != nil {
		log.Fatal(err)
	}

	// Every event saved under this context carries the request's ID.
	ctx = aggregate.WithCorrelation(ctx, "request-42")

	// Update loads, decides, saves, and retries on a concurrent write.
	acc, err := accounts.Update(ctx, "acc-1", func(a *BankAccount) error { return a.Deposit(100) })
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("balance", acc.balance, "at version", acc.Version())

	// A refused command comes back as is, and nothing is appended.
	_, err = accounts.Update(ctx, "acc-1", func(a *BankAccount) error { return a.Withdraw(500) })
	fmt.Println("refused:", errors.Is(err, ErrInsufficientFunds))

	// Load, decide and Save by hand.
	acc, err = accounts.Load(ctx, "acc-1")
	if err != nil {
		log.Fatal(err)
	}
	if err := acc.Withdraw(30); err != nil {
		log.Fatal(err)
	}
	if err := acc.Deposit(5); err != nil {
		log.Fatal(err)
	}
	if err := accounts.Save(ctx, acc); err != nil {
		log.Fatal(err)
	}
	fmt.Println("balance", acc.balance, "at version", acc.Version())

	// The stream, decoded as a projection would decode it.
	for ev, err := range store.Read(ctx, accounts.Stream("acc-1"), 0) {
		if err != nil {
			log.Fatal(err)
		}
		e, err := accounts.Registry().Decode(ev)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%d %T%+v correlation=%s\n", ev.Version, e, e, aggregate.CorrelationID(ev))
	}
	// Output:
	// balance 100 at version 1
	// refused: true
	// balance 75 at version 3
	// 1 aggregate_test.Deposited{Amount:100} correlation=request-42
	// 2 aggregate_test.Withdrawn{Amount:30} correlation=request-42
	// 3 aggregate_test.Deposited{Amount:5} correlation=request-42
}

// connect returns a client for REDIS_URL (default the local server) and a
// namespace of its own, so that the example touches no other key.
func connect() (rueidis.Client, string) {
	url := os.Getenv("REDIS_URL")
	if url == "" {
		url = "redis://127.0.0.1:6379/0"
	}
	opt, err := rueidis.ParseURL(url)
	if err != nil {
		log.Fatal(err)
	}
	opt.DisableCache = true
	client, err := rueidis.NewClient(opt)
	if err != nil {
		log.Fatal(err)
	}
	return client, "example-" + rand.Text()[:12]
}

// deleteNamespace removes the example's keys. A cluster spreads the
// namespace over all its masters, so every node the client knows is
// scanned (a replica lists its master's keys again, which does no harm),
// and each key is removed by a command of its own: the keys are in many
// slots.
func deleteNamespace(client rueidis.Client, namespace string) {
	ctx := context.Background()
	for _, node := range client.Nodes() {
		var cursor uint64
		for {
			e, err := node.Do(ctx, node.B().Scan().Cursor(cursor).Match(namespace+":*").Count(1000).Build()).AsScanEntry()
			if err != nil {
				return
			}
			for _, k := range e.Elements {
				client.Do(ctx, client.B().Unlink().Key(k).Build())
			}
			if cursor = e.Cursor; cursor == 0 {
				break
			}
		}
	}
}
