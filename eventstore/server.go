package eventstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/redsource/redsource/internal/redisinfo"
)

// ErrUnsafeRedis: a Redis server is configured to lose events without an
// error. Errors that match it are *SettingError.
var ErrUnsafeRedis = errors.New("eventstore: Redis is configured to lose events silently")

// SettingError names a Redis setting that the store refuses to work with,
// and the fix. errors.Is(err, ErrUnsafeRedis) is true.
type SettingError struct {
	Addr    string // the node
	Setting string // "maxmemory-policy"
	Value   string // "allkeys-lru"
	Fix     string
}

func (e *SettingError) Error() string {
	return fmt.Sprintf("eventstore: Redis at %s has %s %s: %s Nothing was written", e.Addr, e.Setting, e.Value, e.Fix)
}

func (e *SettingError) Is(target error) bool { return target == ErrUnsafeRedis }

// checkServer reads, once per store, the settings of every Redis node
// that make losing events silent, and refuses an evicting
// maxmemory-policy (allkeys-*: Redis then deletes keys, events included,
// with no error) unless Config.AllowEviction. Where the settings may not
// be read (CONFIG and INFO refused, as on some managed services), it says
// so once at WARN and goes on. A node that does not answer is an error,
// and the check runs again on the next call.
func (s *Store) checkServer(ctx context.Context) error {
	s.mu.Lock()
	done := s.serverChecked
	s.mu.Unlock()
	if done {
		return nil
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	for _, p := range redisinfo.EvictionPolicies(ctx, s.client) {
		switch {
		case p.Err != nil && redisinfo.Refused(p.Err):
			s.cfg.Logger.Warn("eventstore: cannot read the Redis maxmemory-policy (CONFIG and INFO are refused); make sure it is noeviction: an evicting policy deletes events without an error",
				"namespace", s.cfg.Namespace, "node", p.Addr, "err", p.Err)
		case p.Err != nil:
			return fmt.Errorf("eventstore: read the settings of Redis at %s: %w", p.Addr, classify(p.Err))
		case redisinfo.Evicting(p.Value) && !s.cfg.AllowEviction:
			return &SettingError{Addr: p.Addr, Setting: "maxmemory-policy", Value: p.Value,
				Fix: "it deletes keys, events included, without an error when memory is full. Set maxmemory-policy noeviction" +
					" (CONFIG SET maxmemory-policy noeviction, and in redis.conf), or eventstore.Config.AllowEviction for throwaway data."}
		case redisinfo.Evicting(p.Value):
			s.cfg.Logger.Warn("eventstore: Redis evicts keys when full and Config.AllowEviction accepts it: events can vanish without an error",
				"namespace", s.cfg.Namespace, "node", p.Addr, "maxmemory-policy", p.Value)
		case redisinfo.EvictsExpiring(p.Value):
			s.cfg.Logger.Warn("eventstore: Redis evicts keys with a TTL when full: events are safe, projection leases may move early; noeviction is the safe policy",
				"namespace", s.cfg.Namespace, "node", p.Addr, "maxmemory-policy", p.Value)
		}
	}
	s.mu.Lock()
	s.serverChecked = true
	s.mu.Unlock()
	return nil
}
