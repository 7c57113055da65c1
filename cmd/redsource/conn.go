package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
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
		return nil, usagef("--redis %q is not a Redis URL: %v", redactURL(c.g.redisURL), parseError(c.g.redisURL, err))
	}
	// Client-side caching needs RESP3 tracking and buys a CLI nothing.
	opt.DisableCache = true
	rc, err := rueidis.NewClient(opt)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to Redis at %s: %w", redactURL(c.g.redisURL), err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// Ask the server the URL names: a cluster client sends a PING to any
	// node, and one hung node would then fail every command (doctor
	// among them, which reports such a node).
	ping := rc
	if len(opt.InitAddress) > 0 {
		if n, ok := rc.Nodes()[opt.InitAddress[0]]; ok {
			ping = n
		}
	}
	if err := ping.Do(pctx, ping.B().Ping().Build()).Error(); err != nil {
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
		return nil, usagef("--database %q is not a PostgreSQL URL: %v", redactURL(c.g.databaseURL), parseError(c.g.databaseURL, err))
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

// redactURL hides the passwords of a server address in messages: the
// password of a URL's userinfo, password= and sslpassword= query
// parameters, and the same keys of a PostgreSQL key=value string. A URL
// that does not parse has everything between "://" and its last "@"
// taken as the userinfo (a password may hold a "/" or an "@").
func redactURL(s string) string {
	scheme, rest, isURL := strings.Cut(s, "://")
	if !isURL {
		return dsnPasswordRE.ReplaceAllString(s, "${1}xxxxx")
	}
	if u, err := url.Parse(s); err == nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		if q := u.Query(); q.Has("password") || q.Has("sslpassword") {
			for _, k := range []string{"password", "sslpassword"} {
				if q.Has(k) {
					q.Set(k, "xxxxx")
				}
			}
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		if user, _, hasPassword := strings.Cut(rest[:at], ":"); hasPassword {
			rest = user + ":xxxxx" + rest[at:]
		}
	}
	return scheme + "://" + queryPasswordRE.ReplaceAllString(rest, "${1}xxxxx")
}

var (
	dsnPasswordRE   = regexp.MustCompile(`((?:^|\s)(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)`)
	queryPasswordRE = regexp.MustCompile(`([?&](?:ssl)?password=)[^&#]*`)
)

// parseError is err from parsing the address raw. Parsers quote the
// address in their errors (url.Parse whole; pgconn redacted on a best
// effort that can leave a piece of a password that holds an "@"), and a
// detail such as `invalid port ":pa" after host` can quote part of a
// password, so nothing of the error is kept when raw holds a secret.
func parseError(raw string, err error) error {
	if redactURL(raw) != raw {
		return errors.New("it does not parse, and the parser's message is not shown because it can quote the password (in a URL, characters such as / @ : % in a password must be percent-encoded)")
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// redact replaces the --redis and --database URLs in a message with their
// redacted forms: the last guard against a library that quotes a URL in
// an error.
func (c *cli) redact(msg string) string {
	for _, raw := range []string{c.g.redisURL, c.g.databaseURL} {
		if raw == "" {
			continue
		}
		red := redactURL(raw)
		if red == raw {
			continue
		}
		msg = strings.ReplaceAll(msg, raw, red)
		if q := strconv.Quote(raw); q[1:len(q)-1] != raw {
			msg = strings.ReplaceAll(msg, q[1:len(q)-1], red)
		}
	}
	return msg
}
