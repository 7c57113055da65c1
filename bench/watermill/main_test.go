package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

func redisURL() string {
	if u := os.Getenv("REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

func uniquePrefix(t *testing.T) string {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "twm" + hex.EncodeToString(b[:])
}

// runPeer runs the program in-process and decodes its result.
func runPeer(t *testing.T, args ...string) (Result, int, string) {
	t.Helper()
	var out, errs bytes.Buffer
	code := run(context.Background(), args, redisURL(), &out, &errs)
	var res Result
	if code != 2 {
		if err := json.Unmarshal(out.Bytes(), &res); err != nil {
			t.Fatalf("output %q is not a result: %v (stderr %s)", out.String(), err, errs.String())
		}
	}
	return res, code, errs.String()
}

// leftKeys lists the keys of prefix still in Redis.
func leftKeys(t *testing.T, prefix string) []string {
	t.Helper()
	c, err := newClient(redisURL(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	keys, err := c.Keys(context.Background(), prefix+":*").Result()
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestPublishAndSubscribe(t *testing.T) {
	prefix := uniquePrefix(t)
	res, code, errs := runPeer(t, "-workload", "publish", "-callers", "3", "-batch", "2", "-duration", "100ms", "-topics", "2", "-prefix", prefix)
	if code != 0 {
		t.Fatalf("publish: exit %d: %s", code, errs)
	}
	if res.Workload != "publish" || res.Events == 0 || res.Events != 2*res.Calls || res.EventsPerSec <= 0 || res.Latency == nil ||
		res.MemoryBytes == nil || *res.MemoryBytes < res.Events*300 || res.KeysDeleted != 2 {
		t.Fatalf("publish result %+v", res)
	}
	if left := leftKeys(t, prefix); len(left) > 0 {
		t.Fatalf("keys left: %v", left)
	}

	prefix = uniquePrefix(t)
	res, code, errs = runPeer(t, "-workload", "subscribe", "-messages", "50", "-topics", "3", "-prefix", prefix)
	if code != 0 {
		t.Fatalf("subscribe: exit %d: %s", code, errs)
	}
	if res.Workload != "subscribe" || res.Events != 50 || res.Callers != 3 || res.Latency != nil || res.MemoryBytes != nil || res.KeysDeleted != 3 {
		t.Fatalf("subscribe result %+v", res)
	}
	if left := leftKeys(t, prefix); len(left) > 0 {
		t.Fatalf("keys left: %v", left)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{"-workload", "x", "-prefix", "p"},
		{"-workload", "publish"},
		{"-prefix", "a*"},
		{"-prefix", "p", "-callers", "0"},
		{"-nope"},
	} {
		if _, code, _ := runPeer(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}

func TestUnreachable(t *testing.T) {
	var out, errs bytes.Buffer
	code := run(context.Background(), []string{"-prefix", "p"}, "redis://u:s3cret@127.0.0.1:1/0", &out, &errs)
	if code != 1 || !strings.Contains(out.String(), `"error":"Redis does not answer`) {
		t.Fatalf("exit %d, stdout %s", code, out.String())
	}
	if strings.Contains(out.String()+errs.String(), "s3cret") {
		t.Fatalf("the password is shown: %s %s", out.String(), errs.String())
	}
}

func TestHelpers(t *testing.T) {
	d, err := mainThreadCPU("# CPU\r\nused_cpu_sys:9.0\r\nused_cpu_user:9.0\r\nused_cpu_sys_main_thread:1.5\r\nused_cpu_user_main_thread:0.25\r\n")
	if err != nil || d != 1750*time.Millisecond {
		t.Fatalf("main thread: %v %v", d, err)
	}
	d, err = mainThreadCPU("used_cpu_sys:1\nused_cpu_user:2\n")
	if err != nil || d != 3*time.Second {
		t.Fatalf("process: %v %v", d, err)
	}
	l := percentiles([]time.Duration{4 * time.Microsecond, time.Microsecond, 3 * time.Microsecond, 2 * time.Microsecond})
	if *l != (Latency{P50: 2, P90: 4, P99: 4, Max: 4}) {
		t.Fatalf("percentiles %+v", *l)
	}
	if len(defaultPayload()) != 300 || !json.Valid([]byte(defaultPayload())) {
		t.Fatalf("payload %q", defaultPayload())
	}
}
