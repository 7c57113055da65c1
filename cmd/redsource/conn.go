package main

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/rueidis"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/keys"
	"github.com/redsource/redsource/projection"
)

// conns holds the connections a command opened; commands open only what
// they use.
type conns struct {
	rc rueidis.Client
	pg *pgx.Conn
}

func (c *cli) close() {
	if c.rc != nil {
		c.rc.Close()
	}
	if c.pg != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.pg.Close(ctx)
	}
}

// redis connects to --redis and checks that the server answers.
func (c *cli) redis(ctx context.Context) (rueidis.Client, error) {
	if c.rc != nil {
		return c.rc, nil
	}
	opt, err := rueidis.ParseURL(c.g.redisURL)
	if err != nil {
		return nil, usagef("--redis %q is not a Redis URL: %v", redactURL(c.g.redisURL), err)
	}
	// Client-side caching needs RESP3 tracking and buys a CLI nothing.
	opt.DisableCache = true
	rc, err := rueidis.NewClient(opt)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to Redis at %s: %w", redactURL(c.g.redisURL), err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := rc.Do(pctx, rc.B().Ping().Build()).Error(); err != nil {
		rc.Close()
		return nil, fmt.Errorf("Redis at %s does not answer: %w", redactURL(c.g.redisURL), err)
	}
	c.rc = rc
	return rc, nil
}

// postgres connects to --database.
func (c *cli) postgres(ctx context.Context) (*pgx.Conn, error) {
	if c.pg != nil {
		return c.pg, nil
	}
	cfg, err := pgx.ParseConfig(c.g.databaseURL)
	if err != nil {
		return nil, usagef("--database %q is not a PostgreSQL URL: %v", redactURL(c.g.databaseURL), err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	pg, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to PostgreSQL at %s: %w", redactURL(c.g.databaseURL), err)
	}
	c.pg = pg
	return pg, nil
}

// admin returns the projection admin over --database and --schema.
func (c *cli) admin(ctx context.Context) (*projection.Admin, error) {
	pg, err := c.postgres(ctx)
	if err != nil {
		return nil, err
	}
	return projection.NewAdmin(pg, c.g.schema), nil
}

// recordedPartitions returns a category's partition count as recorded in
// Redis, or 0 when the category has never been used.
func (c *cli) recordedPartitions(ctx context.Context, category string) (int, error) {
	rc, err := c.redis(ctx)
	if err != nil {
		return 0, err
	}
	s, err := eventstore.New(rc, eventstore.Config{Namespace: c.g.namespace})
	if err != nil {
		return 0, err
	}
	return s.RecordedPartitions(ctx, category)
}

// store opens the event store for one category. Without --partitions the
// category's recorded count is used, so that an operator need not know
// it; with --partitions it must match (the store checks).
func (c *cli) store(ctx context.Context, category string) (*eventstore.Store, error) {
	if err := keys.ValidateCategory(category); err != nil {
		return nil, usagef("%v", err)
	}
	rc, err := c.redis(ctx)
	if err != nil {
		return nil, err
	}
	n := c.g.partitions
	if !c.g.partitionsSet {
		got, err := c.recordedPartitions(ctx, category)
		if err != nil {
			return nil, err
		}
		if got > 0 {
			n = got
		}
	}
	return eventstore.New(rc, eventstore.Config{Namespace: c.g.namespace, Partitions: n})
}

// existingStore is store for a category that must have events.
func (c *cli) existingStore(ctx context.Context, category string) (*eventstore.Store, error) {
	s, err := c.store(ctx, category)
	if err != nil {
		return nil, err
	}
	n, err := c.recordedPartitions(ctx, category)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, fmt.Errorf("category %q has no events in namespace %q (see 'redsource categories')", category, c.g.namespace)
	}
	return s, nil
}

// redactURL hides the password of a URL in messages.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}
