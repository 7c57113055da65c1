package eventstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/redis/rueidis"
)

// A namespace has an identity: a UUIDv7 written to Redis when the
// namespace is first used (its time is the namespace's creation). Every
// partition the namespace writes to carries it (the partition meta key,
// checked by each append), and whatever remembers the log durably (a
// Witness, projection checkpoints, PostgreSQL snapshots) records it. A
// Redis that lost the namespace (restarted empty, flushed, failed over to a
// replica that never had it) then has no identity or another one, and
// everything that remembers the old one refuses it with a *NamespaceError
// instead of starting afresh.

// Witness is durable memory of a namespace outside Redis: given to a Store
// (Config.Witness), it records the namespace's identity on first use and
// makes the store refuse a Redis that lost it, even in a process that has
// never seen the namespace before. projection.NewWitness keeps it in the
// toolkit's PostgreSQL schema.
type Witness interface {
	// Remembered returns the identity recorded for namespace, "" if none.
	Remembered(ctx context.Context, namespace string) (string, error)
	// Remember records identity for namespace if none is recorded yet. It
	// fails if another identity is recorded.
	Remember(ctx context.Context, namespace, identity string) error
	// String names the witness in errors ("PostgreSQL schema \"bank\"").
	String() string
}

// Identity returns the namespace's identity, creating it when the
// namespace is new (no identity and no data in Redis, nothing remembered by
// the Witness). It fails with a *NamespaceError when Redis lost the
// namespace: no identity where this store or its Witness remembers one, or
// another one.
func (s *Store) Identity(ctx context.Context) (string, error) {
	return s.identity(ctx, true)
}

// identity returns the namespace identity this store works with, from its
// cache or from Redis (checked against the Witness). Without create, a
// namespace that has none yet gives "".
func (s *Store) identity(ctx context.Context, create bool) (string, error) {
	s.mu.Lock()
	id := s.ident
	s.mu.Unlock()
	if id != "" {
		return id, nil
	}
	remembered, by := "", ""
	if w := s.cfg.Witness; w != nil {
		var err error
		if remembered, err = w.Remembered(ctx, s.cfg.Namespace); err != nil {
			return "", fmt.Errorf("eventstore: read the namespace identity from %s: %w", w, err)
		}
		by = w.String()
	}
	id, err := s.checkIdentity(ctx, remembered, by, create)
	if err != nil || id == "" {
		return "", err
	}
	if w := s.cfg.Witness; w != nil && remembered == "" {
		if err := w.Remember(ctx, s.cfg.Namespace, id); err != nil {
			return "", fmt.Errorf("eventstore: record the namespace identity in %s: %w", w, err)
		}
	}
	s.mu.Lock()
	s.ident = id
	s.mu.Unlock()
	return id, nil
}

// CheckIdentity compares the namespace's identity in Redis, read now, with
// one remembered elsewhere (by a projection's checkpoints, a snapshot), and
// returns the identity Redis holds. A remembered "" is the first use of
// whatever remembers: the namespace's identity is returned, created if the
// namespace is new. A Redis without the remembered identity is a
// *NamespaceError.
func (s *Store) CheckIdentity(ctx context.Context, remembered, by string) (string, error) {
	return s.checkIdentity(ctx, remembered, by, true)
}

func (s *Store) checkIdentity(ctx context.Context, remembered, by string, create bool) (string, error) {
	if err := s.checkServer(ctx); err != nil {
		return "", err
	}
	c := s.client
	found, err := s.do(ctx, c.B().Get().Key(s.keys.Identity()).Build()).ToString()
	if err != nil && !rueidis.IsRedisNil(err) {
		return "", fmt.Errorf("eventstore: read the namespace identity: %w", classify(err))
	}
	switch {
	case found != "" && (remembered == "" || remembered == found):
		return found, nil
	case remembered != "":
		return "", &NamespaceError{Namespace: s.cfg.Namespace, Remembered: remembered, Found: found, By: by}
	case !create:
		return "", nil
	}
	// A namespace without an identity: new, unless it holds data.
	n, err := s.do(ctx, c.B().Exists().Key(s.keys.Categories()).Build()).AsInt64()
	if err != nil {
		return "", fmt.Errorf("eventstore: look for the namespace's data: %w", classify(err))
	}
	if n > 0 {
		// Categories are only recorded after the identity exists: another
		// process may have created both since the GET above.
		again, err := s.do(ctx, c.B().Get().Key(s.keys.Identity()).Build()).ToString()
		if err == nil {
			return again, nil
		}
		if !rueidis.IsRedisNil(err) {
			return "", fmt.Errorf("eventstore: read the namespace identity: %w", classify(err))
		}
		return "", &NamespaceError{Namespace: s.cfg.Namespace, Detail: fmt.Sprintf(
			"its identity key %s is gone while its categories (%s) remain", s.keys.Identity(), s.keys.Categories())}
	}
	u, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("eventstore: new namespace identity: %w", err)
	}
	// SET NX GET: two processes creating the namespace at once agree on
	// the first one's identity.
	prev, err := s.do(ctx, c.B().Set().Key(s.keys.Identity()).Value(u.String()).Nx().Get().Build()).ToString()
	switch {
	case rueidis.IsRedisNil(err):
		s.cfg.Logger.Info("eventstore: namespace created", "namespace", s.cfg.Namespace, "identity", u.String())
		return u.String(), nil
	case err != nil:
		return "", fmt.Errorf("eventstore: create the namespace identity: %w", classify(err))
	}
	return prev, nil
}

// verifyIdentity reads the namespace's identity and compares it with the
// one this store has worked with, if any: a long-lived store notices that
// Redis lost the namespace under it.
func (s *Store) verifyIdentity(ctx context.Context) error {
	s.mu.Lock()
	id := s.ident
	s.mu.Unlock()
	if id == "" {
		_, err := s.identity(ctx, false)
		return err
	}
	_, err := s.checkIdentity(ctx, id, "this process", false)
	return err
}

// identityTime is the creation time of a UUIDv7 identity, for messages.
func identityTime(id string) string {
	u, err := uuid.Parse(id)
	if err != nil || u.Version() != 7 {
		return "at an unknown time"
	}
	sec, nsec := u.Time().UnixTime()
	return time.Unix(sec, nsec).UTC().Format(time.RFC3339)
}

// partitionMeta is the value of a partition meta key: the namespace
// identity and the category's partition count.
func partitionMeta(identity string, partitions int) string {
	return identity + "/" + strconv.Itoa(partitions)
}

func parsePartitionMeta(v string) (identity string, partitions int, ok bool) {
	identity, n, ok := strings.Cut(v, "/")
	if !ok {
		return "", 0, false
	}
	partitions, err := strconv.Atoi(n)
	return identity, partitions, err == nil && partitions >= 1 && partitions <= MaxPartitions
}
