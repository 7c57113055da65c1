// Command quickstart walks through the event store: appends with expected
// versions, a conflict, an idempotent retry, reading one aggregate and
// reading a category by time window.
//
//	go run ./examples/quickstart [-redis URL] [-namespace NAME] [-keep]
//
// It removes its keys (everything under "<namespace>:") when it ends,
// unless -keep is given.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/redis/rueidis"

	"github.com/redsource/redsource/eventstore"
)

func main() {
	defaultURL := os.Getenv("REDIS_URL")
	if defaultURL == "" {
		defaultURL = "redis://127.0.0.1:6379/0"
	}
	redisURL := flag.String("redis", defaultURL, "Redis URL (default $REDIS_URL, else the local Redis)")
	namespace := flag.String("namespace", "quickstart", "key prefix; every key under it is removed at the end")
	keep := flag.Bool("keep", false, "keep the keys, to look at them with redis-cli")
	flag.Parse()
	log.SetFlags(0)

	if err := run(*redisURL, *namespace, *keep); err != nil {
		log.Fatal("quickstart: ", err)
	}
}

func run(redisURL, namespace string, keep bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	opt, err := rueidis.ParseURL(redisURL)
	if err != nil {
		// url.Parse quotes the URL, password included, in its error.
		return fmt.Errorf("bad -redis URL %s: it does not parse (in a password, characters such as / @ : %% must be percent-encoded)", redactURL(redisURL))
	}
	client, err := rueidis.NewClient(opt)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", redactURL(redisURL), err)
	}
	defer client.Close()

	store, err := eventstore.New(client, eventstore.Config{Namespace: namespace})
	if err != nil {
		return err
	}
	if key, err := anyKey(ctx, client, namespace); err != nil {
		return err
	} else if key != "" {
		return fmt.Errorf("namespace %q already holds keys (%s, …); pick another with -namespace", namespace, key)
	}
	if keep {
		defer fmt.Printf("\nkeys kept: redis-cli --scan --pattern '%s:*'\n", namespace)
	} else {
		defer func() {
			n, err := deleteKeys(context.Background(), client, namespace)
			if err != nil {
				log.Printf("quickstart: removing keys: %v", err)
				return
			}
			fmt.Printf("\nremoved %d keys under %q (use -keep to keep them)\n", n, namespace+":")
		}()
	}

	ann := eventstore.StreamID{Category: "account", ID: "acc-ann"}
	bob := eventstore.StreamID{Category: "account", ID: "acc-bob"}

	fmt.Println("== appending with expected versions")
	res, err := store.Append(ctx, ann, eventstore.NoStream,
		event("Opened", `{"owner":"Ann"}`),
		event("Deposited", `{"amount":100}`))
	if err != nil {
		return err
	}
	show(ann, res)
	// The time window read at the end starts here, on the server's clock
	// (RecordedAt), which is also the clock of positions.
	windowStart := res.RecordedAt
	if res, err = store.Append(ctx, bob, eventstore.NoStream, event("Opened", `{"owner":"Bob"}`)); err != nil {
		return err
	}
	show(bob, res)
	if res, err = store.Append(ctx, ann, eventstore.Exact(2), event("Withdrawn", `{"amount":30}`)); err != nil {
		return err
	}
	show(ann, res)

	fmt.Println("\n== a writer that decided on an old version")
	_, err = store.Append(ctx, ann, eventstore.Exact(2), event("Withdrawn", `{"amount":90}`))
	var conflict *eventstore.ConflictError
	if !errors.As(err, &conflict) {
		return fmt.Errorf("expected a conflict, got %v", err)
	}
	fmt.Printf("refused: %v\n", err)
	fmt.Printf("nothing was written; reload %s (version %d), decide again\n", ann, conflict.Actual)

	fmt.Println("\n== retrying an append whose reply was lost")
	transfer := []eventstore.EventData{
		{ID: uuid.Must(uuid.NewV7()), Type: "Deposited", Data: []byte(`{"amount":25}`)},
		{ID: uuid.Must(uuid.NewV7()), Type: "Deposited", Data: []byte(`{"amount":5}`)},
	}
	first, err := store.Append(ctx, bob, eventstore.Exact(1), transfer...)
	if err != nil {
		return err
	}
	show(bob, first)
	// Say the reply never arrived: the caller sends the same events, same IDs.
	again, err := store.Append(ctx, bob, eventstore.Exact(1), transfer...)
	if err != nil {
		return err
	}
	fmt.Printf("retry: duplicate=%v, same versions %d..%d and positions %v, nothing written twice\n",
		again.Duplicate, again.FirstVersion, again.LastVersion, again.Positions)

	fmt.Printf("\n== reading %s\n", ann)
	for e, err := range store.Read(ctx, ann, 0) {
		if err != nil {
			return err
		}
		fmt.Printf("  v%d  %-9s %-16s at %s\n", e.Version, e.Type, e.Data, e.RecordedAt.Format(time.RFC3339Nano))
	}

	windowEnd := first.RecordedAt
	fmt.Printf("\n== the account category from %s to %s\n", windowStart.Format("15:04:05.000"), windowEnd.Format("15:04:05.000"))
	from, to := eventstore.PositionAt(windowStart), eventstore.LastPositionAt(windowEnd)
	for e, err := range store.ReadCategory(ctx, "account", from, to) {
		if err != nil {
			return err
		}
		// A position is unique only within its partition: show both.
		fmt.Printf("  partition %d  %-16s %-8s v%d  %-9s %s\n", e.Partition, e.Position, e.Stream.ID, e.Version, e.Type, e.Data)
	}
	return nil
}

// redactURL is a URL for messages, its password hidden; a URL that does
// not parse is not shown when it may hold a password.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		if strings.Contains(s, "@") {
			return "(not shown: it holds a password)"
		}
		return s
	}
	return u.Redacted()
}

func event(typ, data string) eventstore.EventData {
	return eventstore.EventData{Type: typ, Data: []byte(data)}
}

func show(st eventstore.StreamID, r eventstore.AppendResult) {
	pos := make([]string, len(r.Positions))
	for i, p := range r.Positions {
		pos[i] = p.String()
	}
	fmt.Printf("%s: versions %d..%d, partition %d, positions %s\n", st, r.FirstVersion, r.LastVersion, r.Partition, strings.Join(pos, " "))
}

// anyKey returns a key under the namespace, or "" when it has none, so
// that the program never mixes its events with (or deletes) someone
// else's.
func anyKey(ctx context.Context, c rueidis.Client, ns string) (string, error) {
	found := ""
	err := scanKeys(ctx, c, ns, func(key string) error {
		found = key
		return errFound
	})
	if errors.Is(err, errFound) {
		err = nil
	}
	return found, err
}

var errFound = errors.New("found")

// deleteKeys removes every key under the namespace and returns how many it
// removed. Each key is removed by a command of its own: the keys are in
// many slots of a cluster. A replica lists its master's keys again;
// UNLINK's reply counts each key once.
func deleteKeys(ctx context.Context, c rueidis.Client, ns string) (int, error) {
	n := 0
	err := scanKeys(ctx, c, ns, func(key string) error {
		removed, err := c.Do(ctx, c.B().Unlink().Key(key).Build()).AsInt64()
		n += int(removed)
		return err
	})
	return n, err
}

// scanKeys calls each for every key under the namespace. A cluster spreads
// a namespace over all its masters, so every node the client knows is
// scanned, with a SCAN cursor of its own.
func scanKeys(ctx context.Context, c rueidis.Client, ns string, each func(key string) error) error {
	for _, node := range c.Nodes() {
		var cursor uint64
		for {
			page, err := node.Do(ctx, node.B().Scan().Cursor(cursor).Match(globEscape(ns)+":*").Count(1000).Build()).AsScanEntry()
			if err != nil {
				return err
			}
			for _, k := range page.Elements {
				if err := each(k); err != nil {
					return err
				}
			}
			if cursor = page.Cursor; cursor == 0 {
				break
			}
		}
	}
	return nil
}

// globEscape quotes the characters SCAN MATCH treats as a pattern, so that
// a namespace such as "a*" matches only itself.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
