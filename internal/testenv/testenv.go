// Package testenv gives tests real Redis and PostgreSQL connections, each
// test isolated in its own Redis namespace and PostgreSQL schema.
//
// Servers come from REDIS_URL and DATABASE_URL (defaults: the local ones).
// An unreachable server fails the test: redsource's tests never skip for a
// missing server. `make test` starts servers when none answer.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/rueidis"
)

// Default server addresses, used when the environment names none.
const (
	DefaultRedisURL    = "redis://127.0.0.1:6379/0"
	DefaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
)

// RedisURL returns REDIS_URL or the default.
func RedisURL() string { return envOr("REDIS_URL", DefaultRedisURL) }

// DatabaseURL returns DATABASE_URL or the default.
func DatabaseURL() string { return envOr("DATABASE_URL", DefaultDatabaseURL) }

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// Unique returns prefix + 12 random hex characters.
func Unique(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// RedisOption returns the rueidis options for REDIS_URL.
func RedisOption(tb testing.TB, url string) rueidis.ClientOption {
	tb.Helper()
	opt, err := rueidis.ParseURL(url)
	if err != nil {
		tb.Fatalf("testenv: bad Redis URL %q: %v", url, err)
	}
	opt.DisableCache = true
	return opt
}

// Redis returns a client for REDIS_URL, closed when the test ends. It fails
// the test when Redis does not answer.
func Redis(tb testing.TB) rueidis.Client {
	tb.Helper()
	return RedisAt(tb, RedisURL())
}

// RedisAt is Redis for an explicit URL (fault tests start their own server).
func RedisAt(tb testing.TB, url string) rueidis.Client {
	tb.Helper()
	c, err := rueidis.NewClient(RedisOption(tb, url))
	if err != nil {
		tb.Fatalf("testenv: Redis at %s is unreachable (run `make test`, which starts one): %v", url, err)
	}
	tb.Cleanup(c.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Do(ctx, c.B().Ping().Build()).Error(); err != nil {
		tb.Fatalf("testenv: Redis at %s does not answer PING (run `make test`, which starts one): %v", url, err)
	}
	return c
}

// Namespace returns a fresh namespace and deletes every key under it when
// the test ends. Nothing outside the namespace is touched.
func Namespace(tb testing.TB, c rueidis.Client) string {
	tb.Helper()
	ns := Unique("t")
	tb.Cleanup(func() { DeleteNamespace(c, ns) })
	return ns
}

// DeleteNamespace removes every key that starts with ns + ":".
func DeleteNamespace(c rueidis.Client, ns string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var cursor uint64
	for {
		e, err := c.Do(ctx, c.B().Scan().Cursor(cursor).Match(ns+":*").Count(1000).Build()).AsScanEntry()
		if err != nil {
			return
		}
		for _, k := range e.Elements {
			c.Do(ctx, c.B().Unlink().Key(k).Build())
		}
		if e.Cursor == 0 {
			return
		}
		cursor = e.Cursor
	}
}

// Postgres returns a pool whose connections use a fresh schema as their
// search_path, and the schema's name. The schema is dropped when the test
// ends. It fails the test when PostgreSQL does not answer.
func Postgres(tb testing.TB) (*pgxpool.Pool, string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := DatabaseURL()
	schema := Unique("t_")
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		tb.Fatalf("testenv: PostgreSQL at %s is unreachable (run `make test`, which starts one): %v", redactURL(url), err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		tb.Fatalf("testenv: create schema: %v", err)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		tb.Fatalf("testenv: bad DATABASE_URL: %v", err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		tb.Fatalf("testenv: pool: %v", err)
	}
	tb.Cleanup(func() {
		pool.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, url); err == nil {
			_, _ = c.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
			c.Close(ctx)
		}
	})
	return pool, schema
}

func redactURL(u string) string {
	if i := strings.Index(u, "@"); i > 0 {
		if j := strings.Index(u, "://"); j > 0 && j < i {
			return u[:j+3] + "…" + u[i:]
		}
	}
	return u
}
