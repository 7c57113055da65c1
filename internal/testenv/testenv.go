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
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/rueidis"

	"github.com/redsource/redsource/internal/redisinfo"
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
	tb.Cleanup(func() {
		if err := DeleteNamespace(c, ns); err != nil {
			tb.Logf("testenv: keys of namespace %q may be left in Redis: %v", ns, err)
		}
	})
	return ns
}

// DeleteNamespace removes every key that starts with ns + ":", on every
// master of the deployment (a cluster spreads a namespace over all of
// them), with one UNLINK per key: keys of a namespace are in many slots,
// and a multi-key command across slots is refused by a cluster (rueidis
// panics on one).
func DeleteNamespace(c rueidis.Client, ns string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return scanMasters(ctx, c, GlobEscape(ns)+":*", "", func(page []string) error {
		cmds := make(rueidis.Commands, len(page))
		for i, k := range page {
			cmds[i] = c.B().Unlink().Key(k).Build()
		}
		for _, r := range c.DoMulti(ctx, cmds...) {
			if err := r.Error(); err != nil {
				return err
			}
		}
		return nil
	})
}

// ScanKeys returns the keys that match a SCAN MATCH pattern on every
// master, one SCAN cursor per master; typ, if not empty, keeps the keys of
// that type (SCAN TYPE).
func ScanKeys(ctx context.Context, c rueidis.Client, match, typ string) ([]string, error) {
	var keys []string
	err := scanMasters(ctx, c, match, typ, func(page []string) error {
		keys = append(keys, page...)
		return nil
	})
	return keys, err
}

func scanMasters(ctx context.Context, c rueidis.Client, match, typ string, each func(page []string) error) error {
	masters, err := redisinfo.Masters(ctx, c)
	if err != nil {
		return err
	}
	for _, m := range masters {
		var cursor uint64
		for {
			scan := m.Client.B().Scan().Cursor(cursor).Match(match).Count(1000)
			var cmd rueidis.Completed
			if typ != "" {
				cmd = scan.Type(typ).Build()
			} else {
				cmd = scan.Build()
			}
			page, err := m.Client.Do(ctx, cmd).AsScanEntry()
			if err != nil {
				return fmt.Errorf("SCAN on %s: %w", m.Addr, err)
			}
			if len(page.Elements) > 0 {
				if err := each(page.Elements); err != nil {
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

// GlobEscape quotes what SCAN MATCH treats as a pattern, so that a
// namespace such as "a*" matches only itself.
func GlobEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
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
