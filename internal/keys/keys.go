// Package keys is the single place that knows redsource's Redis key layout.
//
// Every key of one partition carries the hash tag {<category>:<p>}, so every
// multi-key script touches one Redis Cluster slot. The event store, snapshots
// and projections all build their keys here and can never disagree.
package keys

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"unicode"
	"unicode/utf8"
)

// Name length limits, in bytes. They are part of the documented contract.
const (
	MaxNamespaceLen   = 64
	MaxCategoryLen    = 64
	MaxAggregateIDLen = 256
	MaxProjectionLen  = 64
	MaxEventTypeLen   = 256
)

// NameError reports a name that cannot be used, naming the field.
type NameError struct {
	Field  string // "category", "aggregate ID", "namespace", ...
	Value  string
	Reason string
}

func (e *NameError) Error() string {
	v := e.Value
	if len(v) > 80 {
		v = v[:80] + "…"
	}
	return fmt.Sprintf("invalid %s %q: %s", e.Field, v, e.Reason)
}

// Validate checks a name used in a key: not empty, valid UTF-8, at most max
// bytes, no '{' or '}' (they would break the hash tag), no control or space
// characters. extra lists further forbidden runes.
func Validate(field, value string, max int, extra ...rune) error {
	switch {
	case value == "":
		return &NameError{field, value, "must not be empty"}
	case len(value) > max:
		return &NameError{field, value, fmt.Sprintf("is %d bytes, the limit is %d", len(value), max)}
	case !utf8.ValidString(value):
		return &NameError{field, value, "is not valid UTF-8"}
	}
	for _, r := range value {
		switch {
		case r == '{' || r == '}':
			return &NameError{field, value, fmt.Sprintf("must not contain %q", r)}
		case unicode.IsControl(r) || unicode.IsSpace(r):
			return &NameError{field, value, fmt.Sprintf("must not contain control or space characters (found %U)", r)}
		}
		for _, x := range extra {
			if r == x {
				return &NameError{field, value, fmt.Sprintf("must not contain %q", r)}
			}
		}
	}
	return nil
}

// ValidateNamespace, ValidateCategory, ValidateAggregateID and
// ValidateProjection apply the documented rules for each kind of name.
func ValidateNamespace(ns string) error { return Validate("namespace", ns, MaxNamespaceLen) }

// ValidateCategory also forbids ':' so that a partition tag {cat:p} is
// unambiguous.
func ValidateCategory(c string) error { return Validate("category", c, MaxCategoryLen, ':') }

func ValidateAggregateID(id string) error { return Validate("aggregate ID", id, MaxAggregateIDLen) }

func ValidateProjection(p string) error {
	return Validate("projection name", p, MaxProjectionLen, ':')
}

// Partition returns the partition of an aggregate: fnv1a32(id) mod n. This
// function is stable forever: changing it would move existing aggregates.
func Partition(aggregateID string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(aggregateID))
	return int(h.Sum32() % uint32(n))
}

// Layout builds keys under one namespace.
type Layout struct{ NS string }

func (l Layout) tag(category string, p int) string {
	return l.NS + ":{" + category + ":" + strconv.Itoa(p) + "}"
}

// Log is the partition log: every event of the partition, full entry.
func (l Layout) Log(category string, p int) string { return l.tag(category, p) + ":log" }

// Aggregate is the aggregate stream: one index entry per event, same IDs as
// in the log.
func (l Layout) Aggregate(category string, p int, id string) string {
	return l.tag(category, p) + ":agg:" + id
}

// DLQ is the quarantine stream of one projection in one partition.
func (l Layout) DLQ(category string, p int, projection string) string {
	return l.tag(category, p) + ":dlq:" + projection
}

// DLQIndex maps a quarantined entry's log ID to its dead-letter entry ID,
// so that mirroring into the DLQ is idempotent.
func (l Layout) DLQIndex(category string, p int, projection string) string {
	return l.DLQ(category, p, projection) + ":idx"
}

// Snapshot is the Redis snapshot of one aggregate.
func (l Layout) Snapshot(category string, p int, id string) string {
	return l.tag(category, p) + ":snap:" + id
}

// Lease is the ownership lease of (projection, partition).
func (l Layout) Lease(category string, p int, projection string) string {
	return l.tag(category, p) + ":lease:" + projection
}

// PartitionMeta marks a partition as part of one namespace incarnation: it
// holds "<namespace identity>/<partition count>", written by the first
// append to the partition and checked by every append after it (in the
// append script, same slot as the log).
func (l Layout) PartitionMeta(category string, p int) string { return l.tag(category, p) + ":meta" }

// Categories is a hash of every category that has had an append to its
// partition count, so that operators can list them without SCAN.
func (l Layout) Categories() string { return l.NS + ":categories" }

// Identity holds the namespace's identity (a UUIDv7 whose time is the
// namespace's creation), written once when the namespace is first used.
func (l Layout) Identity() string { return l.NS + ":identity" }

// Projection returns a key for projection-wide coordination (rebuild
// generation, membership); it lives outside any partition slot.
func (l Layout) Projection(projection, suffix string) string {
	return l.NS + ":{proj:" + projection + "}:" + suffix
}
