// Command watermill-bench measures the nearest Go peer of redsource,
// Watermill with watermill-redisstream, on a Redis server, for
// `redsource bench` (docs/cli.md, "bench"), which runs it as a child
// process between its own measurements and reads its result. It lives in a
// module of its own so that redsource's go.mod holds neither Watermill nor
// go-redis.
//
// One invocation is one measurement, printed as one JSON object on stdout:
//
//		REDIS_URL=redis://127.0.0.1:6379/0 watermill-bench -workload publish -callers 16 -batch 1 -duration 2s -prefix rsbench:wm1
//		REDIS_URL=… watermill-bench -workload subscribe -messages 50000 -topics 8 -prefix rsbench:wm2
//
//	  - publish: callers goroutines call Publisher.Publish with batch
//	    messages each (Watermill sends them one XADD after another) for
//	    duration; goroutine i publishes to topic i mod topics.
//	  - subscribe: messages are published first (not timed), spread over
//	    the topics; then one consumer-group subscription per topic receives
//	    and acks every message. Timed from the first Subscribe to the last
//	    XACK.
//
// The server comes from $REDIS_URL (never from the command line, so that a
// password does not show in the process list); -cluster makes it a Redis
// Cluster URL (go-redis ParseClusterURL). Every key it writes starts with
// -prefix + ":" and is deleted, one key per command, before it exits, also
// when interrupted. It never flushes anything.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
)

// Versions of the peer as built by this module (go.mod).
const peerVersion = "watermill v1.5.1, watermill-redisstream v1.4.5, go-redis v9"

// Result is the JSON object printed on stdout. redsource reads it
// (cmd/redsource/bench_peer.go); the field names are a contract.
type Result struct {
	Peer            string   `json:"peer"`
	Version         string   `json:"version"`
	Workload        string   `json:"workload"`
	Callers         int      `json:"callers"`
	MessagesPerCall int      `json:"messages_per_call"`
	Topics          int      `json:"topics"`
	Events          int64    `json:"events"`
	Calls           int64    `json:"calls"`
	Seconds         float64  `json:"seconds"`
	EventsPerSec    float64  `json:"events_per_sec"`
	RedisCPUMicros  *float64 `json:"redis_cpu_us"` // main-thread CPU of every master during the timed part; null when INFO cpu cannot be read
	MemoryBytes     *int64   `json:"memory_bytes"` // MEMORY USAGE summed over the topics written; null for subscribe
	Latency         *Latency `json:"latency_us"`   // per Publish call; null for subscribe
	KeysDeleted     int      `json:"keys_deleted"` // keys of -prefix deleted at the end
	Error           string   `json:"error,omitempty"`
}

// Latency holds percentiles in microseconds.
type Latency struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

type options struct {
	workload string
	callers  int
	batch    int
	duration time.Duration
	messages int
	topics   int
	prefix   string
	payload  string
	cluster  bool
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv("REDIS_URL"), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, url string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("watermill-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.workload, "workload", "publish", "publish or subscribe")
	fs.IntVar(&o.callers, "callers", 16, "publishing goroutines (publish)")
	fs.IntVar(&o.batch, "batch", 1, "messages per Publish call (publish)")
	fs.DurationVar(&o.duration, "duration", 2*time.Second, "how long to publish (publish)")
	fs.IntVar(&o.messages, "messages", 50000, "messages to receive and ack (subscribe)")
	fs.IntVar(&o.topics, "topics", 8, "topics (streams) to spread the messages over")
	fs.StringVar(&o.prefix, "prefix", "", "key prefix; every key written starts with prefix+\":\" (required)")
	fs.StringVar(&o.payload, "payload", defaultPayload(), "message payload")
	fs.BoolVar(&o.cluster, "cluster", false, "$REDIS_URL is a Redis Cluster (go-redis ParseClusterURL)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := o.validate(); err != nil {
		fmt.Fprintf(stderr, "watermill-bench: %v\n", err)
		return 2
	}
	if url == "" {
		url = "redis://127.0.0.1:6379/0"
	}
	res, err := measure(ctx, o, url)
	if err != nil {
		fmt.Fprintf(stderr, "watermill-bench: %v\n", err)
		res.Error = err.Error()
	}
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	if werr := enc.Encode(res); werr != nil {
		fmt.Fprintf(stderr, "watermill-bench: %v\n", werr)
		return 1
	}
	if err != nil {
		return 1
	}
	return 0
}

func (o options) validate() error {
	switch {
	case o.workload != "publish" && o.workload != "subscribe":
		return fmt.Errorf("-workload %q: want publish or subscribe", o.workload)
	case o.prefix == "" || strings.ContainsAny(o.prefix, "*?[]\\"):
		return errors.New("-prefix is required and must not hold glob characters")
	case o.callers < 1, o.batch < 1, o.topics < 1, o.messages < 1:
		return errors.New("-callers, -batch, -topics and -messages must be at least 1")
	case o.duration <= 0:
		return errors.New("-duration must be positive")
	}
	return nil
}

// defaultPayload is the 300-byte JSON body redsource bench appends.
func defaultPayload() string {
	p := `{"account":"acc-00042","amount":12345,"currency":"EUR","reference":"`
	return p + strings.Repeat("x", 300-len(p)-2) + `"}`
}

// newClient returns a go-redis client for url. Watermill closes the
// client it is given, so every publisher and subscriber gets its own.
func newClient(url string, cluster bool) (redis.UniversalClient, error) {
	if cluster {
		opt, err := redis.ParseClusterURL(url)
		if err != nil {
			return nil, errors.New("$REDIS_URL is not a Redis Cluster URL")
		}
		return redis.NewClusterClient(opt), nil
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		// go-redis quotes the URL in some errors: say nothing of it.
		return nil, errors.New("$REDIS_URL is not a Redis URL")
	}
	return redis.NewClient(opt), nil
}

func (o options) topic(i int) string { return o.prefix + ":topic-" + strconv.Itoa(i%o.topics) }

func measure(ctx context.Context, o options, url string) (res Result, err error) {
	res = Result{Peer: "watermill", Version: peerVersion, Workload: o.workload, Callers: o.callers, MessagesPerCall: o.batch, Topics: o.topics}
	admin, err := newClient(url, o.cluster)
	if err != nil {
		return res, err
	}
	defer admin.Close()
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = admin.Ping(pctx).Err()
	cancel()
	if err != nil {
		return res, fmt.Errorf("Redis does not answer: %w", err)
	}
	// Delete what was written whatever happens, with a context of its own
	// so that an interrupt does not leave keys behind.
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		n, derr := deleteKeys(dctx, admin, o.prefix)
		res.KeysDeleted += n
		if derr != nil && err == nil {
			err = fmt.Errorf("delete keys of %s: %w", o.prefix, derr)
		}
	}()
	if o.workload == "publish" {
		err = publish(ctx, o, url, admin, &res)
	} else {
		err = subscribe(ctx, o, url, admin, &res)
	}
	return res, err
}

func publish(ctx context.Context, o options, url string, admin redis.UniversalClient, res *Result) error {
	client, err := newClient(url, o.cluster)
	if err != nil {
		return err
	}
	pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{Client: client}, watermill.NopLogger{})
	if err != nil {
		client.Close()
		return err
	}
	defer pub.Close() // closes client
	payload := []byte(o.payload)

	cpu0, cpuErr := redisCPU(ctx, admin)
	var (
		wg      sync.WaitGroup
		calls   atomic.Int64
		failure atomic.Pointer[error]
		lats    = make([][]time.Duration, o.callers)
	)
	start := time.Now()
	deadline := start.Add(o.duration)
	for g := range o.callers {
		wg.Go(func() {
			topic := o.topic(g)
			msgs := make([]*message.Message, o.batch)
			lat := make([]time.Duration, 0, 4096)
			for ctx.Err() == nil {
				for i := range msgs {
					msgs[i] = message.NewMessage(watermill.NewUUID(), payload)
				}
				t0 := time.Now()
				if t0.After(deadline) {
					break
				}
				if err := pub.Publish(topic, msgs...); err != nil {
					failure.CompareAndSwap(nil, &err)
					break
				}
				lat = append(lat, time.Since(t0))
			}
			lats[g] = lat
			calls.Add(int64(len(lat)))
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu1, cpuErr1 := redisCPU(context.WithoutCancel(ctx), admin)
	if e := failure.Load(); e != nil {
		return *e
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	res.Calls = calls.Load()
	res.Events = res.Calls * int64(o.batch)
	res.Seconds = elapsed.Seconds()
	res.EventsPerSec = float64(res.Events) / res.Seconds
	if cpuErr == nil && cpuErr1 == nil {
		us := float64((cpu1 - cpu0).Microseconds())
		res.RedisCPUMicros = &us
	}
	res.Latency = percentiles(slices.Concat(lats...))
	mem, err := memoryUsage(ctx, admin, o)
	if err != nil {
		return err
	}
	res.MemoryBytes = &mem
	return nil
}

func subscribe(ctx context.Context, o options, url string, admin redis.UniversalClient, res *Result) error {
	if err := fill(ctx, o, url); err != nil {
		return fmt.Errorf("publish the messages to receive: %w", err)
	}
	client, err := newClient(url, o.cluster)
	if err != nil {
		return err
	}
	const group = "bench"
	sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
		Client: client, ConsumerGroup: group, OldestId: "0",
		// Without it the first XREADGROUP blocks for ever and Close
		// cannot stop it (watermill-redisstream's own advice).
		DisableIndefiniteInitialBlock: true,
	}, watermill.NopLogger{})
	if err != nil {
		client.Close()
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		sub.Close() // waits for its goroutines; closes client
		wg.Wait()
	}()

	var received atomic.Int64
	done := make(chan struct{})
	var once sync.Once
	cpu0, cpuErr := redisCPU(ctx, admin)
	start := time.Now()
	for t := range o.topics {
		ch, err := sub.Subscribe(sctx, o.topic(t))
		if err != nil {
			return err
		}
		wg.Go(func() {
			for msg := range ch {
				msg.Ack()
				if received.Add(1) == int64(o.messages) {
					once.Do(func() { close(done) })
				}
			}
		})
	}
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(10 * time.Minute):
		return fmt.Errorf("received %d of %d messages in 10 minutes", received.Load(), o.messages)
	}
	// Ack only signals the subscriber, which then sends XACK: the run ends
	// when nothing is pending.
	if err := waitAcked(ctx, admin, o, group); err != nil {
		return err
	}
	elapsed := time.Since(start)
	cpu1, cpuErr1 := redisCPU(context.WithoutCancel(ctx), admin)
	res.Events = received.Load()
	res.Calls = res.Events
	res.Callers = o.topics
	res.Seconds = elapsed.Seconds()
	res.EventsPerSec = float64(res.Events) / res.Seconds
	if cpuErr == nil && cpuErr1 == nil {
		us := float64((cpu1 - cpu0).Microseconds())
		res.RedisCPUMicros = &us
	}
	return nil
}

// fill publishes o.messages messages over the topics, 64 publishers at a
// time.
func fill(ctx context.Context, o options, url string) error {
	client, err := newClient(url, o.cluster)
	if err != nil {
		return err
	}
	pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{Client: client}, watermill.NopLogger{})
	if err != nil {
		client.Close()
		return err
	}
	defer pub.Close()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failure atomic.Pointer[error]
	for range 64 {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(o.messages) || ctx.Err() != nil {
					return
				}
				if err := pub.Publish(o.topic(int(i)), message.NewMessage(watermill.NewUUID(), []byte(o.payload))); err != nil {
					failure.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	if e := failure.Load(); e != nil {
		return *e
	}
	return ctx.Err()
}

// waitAcked returns once the group has no pending entry on any topic.
func waitAcked(ctx context.Context, c redis.UniversalClient, o options, group string) error {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		pending := int64(0)
		for t := range o.topics {
			p, err := c.XPending(ctx, o.topic(t), group).Result()
			if err != nil {
				return err
			}
			pending += p.Count
		}
		if pending == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// forEachMaster runs fn on every master of a cluster, or on the one
// server.
func forEachMaster(ctx context.Context, c redis.UniversalClient, fn func(ctx context.Context, c *redis.Client) error) error {
	switch cc := c.(type) {
	case *redis.ClusterClient:
		return cc.ForEachMaster(ctx, fn)
	case *redis.Client:
		return fn(ctx, cc)
	}
	return fmt.Errorf("unexpected client type %T", c)
}

// redisCPU is the main-thread CPU time of every master (INFO cpu
// used_cpu_{user,sys}_main_thread, else used_cpu_{user,sys} of the
// process on a Redis that has no per-thread figures).
func redisCPU(ctx context.Context, c redis.UniversalClient) (time.Duration, error) {
	var mu sync.Mutex
	var total time.Duration
	err := forEachMaster(ctx, c, func(ctx context.Context, n *redis.Client) error {
		info, err := n.Info(ctx, "cpu").Result()
		if err != nil {
			return err
		}
		d, err := mainThreadCPU(info)
		if err != nil {
			return err
		}
		mu.Lock()
		total += d
		mu.Unlock()
		return nil
	})
	return total, err
}

func mainThreadCPU(info string) (time.Duration, error) {
	fields := map[string]string{}
	for line := range strings.Lines(info) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			fields[k] = v
		}
	}
	keys := []string{"used_cpu_user_main_thread", "used_cpu_sys_main_thread"}
	if _, ok := fields[keys[0]]; !ok {
		keys = []string{"used_cpu_user", "used_cpu_sys"}
	}
	var total time.Duration
	for _, k := range keys {
		sec, err := strconv.ParseFloat(fields[k], 64)
		if err != nil {
			return 0, fmt.Errorf("INFO cpu %s: %w", k, err)
		}
		total += time.Duration(sec * float64(time.Second))
	}
	return total, nil
}

// memoryUsage sums MEMORY USAGE (every entry counted) over the topics.
func memoryUsage(ctx context.Context, c redis.UniversalClient, o options) (int64, error) {
	var total int64
	for t := range o.topics {
		n, err := c.MemoryUsage(ctx, o.topic(t), 0).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// deleteKeys deletes every key that starts with prefix+":" on every
// master, one UNLINK per key (keys of several slots cannot go in one
// command on a cluster), and returns how many it deleted.
func deleteKeys(ctx context.Context, c redis.UniversalClient, prefix string) (int, error) {
	var n atomic.Int64
	err := forEachMaster(ctx, c, func(ctx context.Context, node *redis.Client) error {
		iter := node.Scan(ctx, 0, prefix+":*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			return err
		}
		for _, k := range keys {
			if err := node.Unlink(ctx, k).Err(); err != nil {
				return err
			}
			n.Add(1)
		}
		return nil
	})
	return int(n.Load()), err
}

// percentiles of per-call latencies, nearest rank.
func percentiles(d []time.Duration) *Latency {
	if len(d) == 0 {
		return nil
	}
	slices.Sort(d)
	at := func(q float64) float64 {
		i := int(q*float64(len(d))+0.5) - 1
		return float64(d[min(max(i, 0), len(d)-1)]) / 1e3
	}
	return &Latency{P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: float64(d[len(d)-1]) / 1e3}
}
