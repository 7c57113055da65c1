package eventstore_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/redis/rueidis"

	"github.com/redsource/redsource/eventstore"
)

// Append events with an expected version, lose a race, and read the
// aggregate back.
func Example() {
	ctx := context.Background()
	client, err := rueidis.NewClient(redisOption())
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	// A namespace of its own, removed at the end.
	ns := "example-" + rand.Text()[:8]
	defer deleteKeys(ctx, client, ns)
	store, err := eventstore.New(client, eventstore.Config{Namespace: ns})
	if err != nil {
		log.Fatal(err)
	}

	acct := eventstore.StreamID{Category: "account", ID: "acc-1"}
	res, err := store.Append(ctx, acct, eventstore.NoStream,
		eventstore.EventData{Type: "Opened", Data: []byte(`{"owner":"ann"}`)},
		eventstore.EventData{Type: "Deposited", Data: []byte(`{"amount":100}`)},
	)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("appended versions %d..%d\n", res.FirstVersion, res.LastVersion)

	// A writer that decided on version 1 is too late: the stream is at 2.
	withdraw := eventstore.EventData{Type: "Withdrawn", Data: []byte(`{"amount":30}`)}
	_, err = store.Append(ctx, acct, eventstore.Exact(1), withdraw)
	var conflict *eventstore.ConflictError
	if errors.As(err, &conflict) {
		fmt.Println("conflict: the stream is at version", conflict.Actual)
	}
	// It reloads, decides again, and appends at the version it saw.
	if _, err := store.Append(ctx, acct, eventstore.Exact(conflict.Actual), withdraw); err != nil {
		log.Fatal(err)
	}

	for e, err := range store.Read(ctx, acct, 0) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(e.Version, e.Type, string(e.Data))
	}
	// Output:
	// appended versions 1..2
	// conflict: the stream is at version 2
	// 1 Opened {"owner":"ann"}
	// 2 Deposited {"amount":100}
	// 3 Withdrawn {"amount":30}
}

// redisOption reads REDIS_URL, by default the local Redis.
func redisOption() rueidis.ClientOption {
	url := os.Getenv("REDIS_URL")
	if url == "" {
		url = "redis://127.0.0.1:6379/0"
	}
	opt, err := rueidis.ParseURL(url)
	if err != nil {
		log.Fatal(err)
	}
	return opt
}

// deleteKeys removes every key of the namespace. A cluster spreads the
// namespace over all its masters, so every node the client knows is
// scanned (a replica lists its master's keys again, which does no harm),
// and each key is removed by a command of its own: the keys are in many
// slots.
func deleteKeys(ctx context.Context, c rueidis.Client, ns string) {
	for _, node := range c.Nodes() {
		var cursor uint64
		for {
			page, err := node.Do(ctx, node.B().Scan().Cursor(cursor).Match(ns+":*").Count(1000).Build()).AsScanEntry()
			if err != nil {
				log.Fatal(err)
			}
			for _, k := range page.Elements {
				if err := c.Do(ctx, c.B().Unlink().Key(k).Build()).Error(); err != nil {
					log.Fatal(err)
				}
			}
			if cursor = page.Cursor; cursor == 0 {
				break
			}
		}
	}
}
