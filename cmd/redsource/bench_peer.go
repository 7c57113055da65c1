package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// peerResult is what the Watermill peer (bench/watermill) prints: one
// JSON object per invocation. Its field names are the peer's contract.
type peerResult struct {
	Peer            string        `json:"peer"`
	Version         string        `json:"version"`
	Workload        string        `json:"workload"`
	Callers         int           `json:"callers"`
	MessagesPerCall int           `json:"messages_per_call"`
	Topics          int           `json:"topics"`
	Events          int64         `json:"events"`
	Calls           int64         `json:"calls"`
	Seconds         float64       `json:"seconds"`
	EventsPerSec    float64       `json:"events_per_sec"`
	RedisCPUMicros  *float64      `json:"redis_cpu_us"`
	MemoryBytes     *int64        `json:"memory_bytes"`
	Latency         *benchLatency `json:"latency_us"`
	KeysDeleted     int           `json:"keys_deleted"`
	Error           string        `json:"error"`
}

// parsePeerResult reads the peer's output and checks that it is a result
// of the workload asked for.
func parsePeerResult(out []byte, workload string) (peerResult, error) {
	var r peerResult
	dec := json.NewDecoder(bytes.NewReader(out))
	if err := dec.Decode(&r); err != nil {
		return r, fmt.Errorf("the peer's output is not its JSON result: %w", err)
	}
	switch {
	case r.Error != "":
		return r, fmt.Errorf("the peer failed: %s", r.Error)
	case r.Peer == "" || r.Workload != workload:
		return r, fmt.Errorf("the peer's output is not a %s result (peer %q, workload %q)", workload, r.Peer, r.Workload)
	case r.Events <= 0 || r.Seconds <= 0:
		return r, fmt.Errorf("the peer moved no events (%d in %gs)", r.Events, r.Seconds)
	}
	return r, nil
}

// sample converts the peer's result into a sample of this run.
func (r peerResult) sample() benchSample {
	s := benchSample{Events: r.Events, Calls: r.Calls, Seconds: r.Seconds, EventsPerSec: r.EventsPerSec, Latency: r.Latency}
	if r.RedisCPUMicros != nil {
		v := *r.RedisCPUMicros / float64(r.Events)
		s.RedisCPUMicrosPerEvent = &v
	}
	if r.MemoryBytes != nil {
		v := float64(*r.MemoryBytes) / float64(r.Events)
		s.MemoryBytesPerEvent = &v
	}
	return s
}

func checkPeer(path string) error {
	st, err := os.Stat(path)
	switch {
	case err != nil:
		return fmt.Errorf("%v (build it with: go build -C bench/watermill -o %s)", err, path)
	case st.IsDir() || st.Mode()&0o111 == 0:
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}

func (b *bench) peerPublish(ctx context.Context, k, callers int) (benchSample, error) {
	return b.runPeer(ctx, "publish", "-callers", strconv.Itoa(callers), "-batch", strconv.Itoa(k), "-duration", b.o.duration.String(),
		"-topics", strconv.Itoa(benchPartitions))
}

func (b *bench) peerSubscribe(ctx context.Context) (benchSample, error) {
	return b.runPeer(ctx, "subscribe", "-messages", strconv.Itoa(b.o.events), "-topics", strconv.Itoa(benchPartitions))
}

// runPeer runs the peer binary for one measurement in a sub-namespace of
// the bench's own (which it deletes itself; what it leaves is deleted
// here). The Redis URL goes in its environment, never on its command
// line. An interrupt reaches it as SIGINT, so that it deletes its keys.
func (b *bench) runPeer(ctx context.Context, workload string, args ...string) (benchSample, error) {
	prefix := b.sub("wm")
	args = append([]string{"-workload", workload, "-prefix", prefix, "-payload", string(b.payload)}, args...)
	if b.env.Redis.Mode == "cluster" {
		args = append(args, "-cluster")
	}
	cmd := exec.CommandContext(ctx, b.o.peer, args...)
	cmd.Env = append(os.Environ(), "REDIS_URL="+b.c.g.redisURL)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 30 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	if _, err := deleteKeys(context.WithoutCancel(ctx), b.rc, prefix); err != nil {
		return benchSample{}, fmt.Errorf("delete the peer's keys: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return benchSample{}, err
	}
	r, err := parsePeerResult(stdout.Bytes(), workload)
	if runErr != nil || err != nil {
		errs := []error{runErr, err}
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			errs = append(errs, errors.New(b.c.redact(msg)))
		}
		return benchSample{}, fmt.Errorf("peer %s: %w", b.o.peer, errors.Join(errs...))
	}
	if b.env.Peer == "" {
		b.env.Peer = r.Version
	}
	return r.sample(), nil
}
