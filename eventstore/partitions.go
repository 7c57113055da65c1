package eventstore

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/redis/rueidis"

	"github.com/redsource/redsource/internal/keys"
)

// A category's partition count lives in two places: the namespace's
// categories hash (<ns>:categories, category → count, for listing and for
// readers) and every partition's meta key (<ns>:{<cat>:<p>}:meta, checked
// by each append in the same slot as the log). When the hash lost its
// entry, the count is re-derived from the partitions and recorded again;
// it is never recorded anew over partitions that say otherwise.

// Partitions returns the partition count of a category, recording this
// store's count for a category that has none yet. A category recorded
// with another count gives ErrPartitionMismatch.
func (s *Store) Partitions(ctx context.Context, category string) (int, error) {
	return s.partitionCount(ctx, category, true)
}

// RecordedPartitions returns a category's partition count as recorded in
// Redis, whatever this store's Config.Partitions, or 0 for a category that
// has never been used. A count lost from the categories hash is re-derived
// from the category's partitions (and recorded again).
func (s *Store) RecordedPartitions(ctx context.Context, category string) (int, error) {
	if err := keys.ValidateCategory(category); err != nil {
		return 0, invalidName(err)
	}
	return s.recordedCount(ctx, category, false)
}

// partitionCount returns the category's partition count from the cache or
// Redis: with record, a category never used gets this store's count;
// without, it counts 0. A count other than this store's is
// ErrPartitionMismatch.
func (s *Store) partitionCount(ctx context.Context, category string, record bool) (int, error) {
	if err := keys.ValidateCategory(category); err != nil {
		return 0, invalidName(err)
	}
	s.mu.Lock()
	n, ok := s.partitions[category]
	s.mu.Unlock()
	if ok {
		return n, nil
	}
	n, err := s.recordedCount(ctx, category, record)
	switch {
	case err != nil:
		return 0, err
	case n == 0:
		return 0, nil
	case n != s.cfg.Partitions:
		return 0, fmt.Errorf("%w: category %q has %d partitions in Redis, this store is configured with %d", ErrPartitionMismatch, category, n, s.cfg.Partitions)
	}
	s.mu.Lock()
	s.partitions[category] = n
	s.mu.Unlock()
	return n, nil
}

// recordedCount reads the category's count from the categories hash; when
// the hash has none, it looks at the partitions' meta keys, then records
// what they say (or, with record and no trace of the category, this
// store's count).
func (s *Store) recordedCount(ctx context.Context, category string, record bool) (int, error) {
	c := s.client
	v, err := s.do(ctx, c.B().Hget().Key(s.keys.Categories()).Field(category).Build()).ToString()
	if err == nil {
		return parseCount(category, v)
	}
	if !rueidis.IsRedisNil(err) {
		return 0, fmt.Errorf("eventstore: partition count of %q: %w", category, classify(err))
	}
	derived, err := s.derivePartitions(ctx, category)
	if err != nil {
		return 0, err
	}
	want := derived
	if want == 0 {
		if !record {
			return 0, nil
		}
		want = s.cfg.Partitions
	}
	// The namespace's identity comes first (a categories hash without an
	// identity says the identity was lost), checked afresh: a long-lived
	// store must not record a category in a Redis that lost the namespace.
	if err := s.verifyIdentity(ctx); err != nil {
		return 0, err
	}
	if _, err := s.identity(ctx, true); err != nil {
		return 0, err
	}
	res := c.DoMulti(ctx,
		c.B().Hsetnx().Key(s.keys.Categories()).Field(category).Value(strconv.Itoa(want)).Build(),
		c.B().Hget().Key(s.keys.Categories()).Field(category).Build())
	set, err := res[0].AsInt64()
	if err != nil {
		return 0, fmt.Errorf("eventstore: record category %q: %w", category, classify(err))
	}
	v, err = res[1].ToString()
	if err != nil {
		return 0, fmt.Errorf("eventstore: record category %q: %w", category, classify(err))
	}
	got, err := parseCount(category, v)
	if err != nil {
		return 0, err
	}
	if derived != 0 && set == 1 {
		s.cfg.Logger.Warn("eventstore: a category's partition count was missing from the categories hash; re-derived from its partitions and recorded again",
			"namespace", s.cfg.Namespace, "category", category, "partitions", got)
	}
	if derived != 0 && got != derived {
		return 0, fmt.Errorf("%w: category %q has %d partitions in its partition meta keys but %d in %s",
			ErrPartitionMismatch, category, derived, got, s.keys.Categories())
	}
	return got, nil
}

func parseCount(category, v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > MaxPartitions {
		return 0, fmt.Errorf("%w: category %q has a malformed partition count %q in Redis", ErrCorruptEntry, category, v)
	}
	return n, nil
}

// derivePartitions looks at the meta keys and logs of the first
// Config.Partitions partitions of a category that the categories hash does
// not know: the count the meta keys hold, or 0 when the category has left
// no trace. Partition logs with events but no meta key mean the count is
// lost: refused rather than guessed.
func (s *Store) derivePartitions(ctx context.Context, category string) (int, error) {
	c := s.client
	n := s.cfg.Partitions
	cmds := make(rueidis.Commands, 0, 2*n)
	for p := range n {
		cmds = append(cmds, c.B().Get().Key(s.keys.PartitionMeta(category, p)).Build(),
			c.B().Xlen().Key(s.keys.Log(category, p)).Build())
	}
	res := s.doMulti(ctx, cmds...)
	counts := map[int][]int{}
	var orphans []int
	for p := range n {
		v, err := res[2*p].ToString()
		if err != nil && !rueidis.IsRedisNil(err) {
			return 0, fmt.Errorf("eventstore: partition meta of %q: %w", category, classify(err))
		}
		entries, lerr := res[2*p+1].AsInt64()
		if lerr != nil {
			return 0, fmt.Errorf("eventstore: partition log of %q: %w", category, classify(lerr))
		}
		if err != nil { // no meta key
			if entries > 0 {
				orphans = append(orphans, p)
			}
			continue
		}
		_, count, ok := parsePartitionMeta(v)
		if !ok {
			return 0, fmt.Errorf("%w: %s holds %q", ErrCorruptEntry, s.keys.PartitionMeta(category, p), v)
		}
		counts[count] = append(counts[count], p)
	}
	switch {
	case len(counts) > 1:
		return 0, fmt.Errorf("%w: the partitions of category %q disagree on its partition count: %v", ErrPartitionMismatch, category, counts)
	case len(orphans) > 0:
		return 0, fmt.Errorf("%w: category %q: partitions %v hold events but neither %s nor their meta keys record the partition count",
			ErrDataLoss, category, orphans, s.keys.Categories())
	}
	for count := range counts {
		return count, nil
	}
	return 0, nil
}

// Categories lists every category that has been used in this namespace,
// sorted.
func (s *Store) Categories(ctx context.Context) ([]string, error) {
	cats, err := s.do(ctx, s.client.B().Hkeys().Key(s.keys.Categories()).Build()).AsStrSlice()
	if err != nil {
		return nil, fmt.Errorf("eventstore: list categories: %w", classify(err))
	}
	slices.Sort(cats)
	return cats, nil
}
