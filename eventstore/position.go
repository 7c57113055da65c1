package eventstore

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Position is a Redis stream ID, "ms-seq": the place of an event in its
// partition log. Positions are unique within one partition log, not across a
// category: two partitions can both issue the same position. A category is
// ordered by (Position, partition).
type Position struct{ Ms, Seq uint64 }

// MinPosition and MaxPosition bound every position.
var (
	MinPosition = Position{}
	MaxPosition = Position{Ms: math.MaxUint64, Seq: math.MaxUint64}
)

// ParsePosition parses a strict "ms-seq" stream ID. Both parts are required,
// decimal, without sign or spaces, and must fit in 64 bits.
func ParsePosition(s string) (Position, error) {
	ms, seq, ok := strings.Cut(s, "-")
	if !ok {
		return Position{}, fmt.Errorf("eventstore: invalid position %q: want \"ms-seq\"", s)
	}
	m, err := parseUint(ms)
	if err != nil {
		return Position{}, fmt.Errorf("eventstore: invalid position %q: milliseconds: %w", s, err)
	}
	q, err := parseUint(seq)
	if err != nil {
		return Position{}, fmt.Errorf("eventstore: invalid position %q: sequence: %w", s, err)
	}
	return Position{Ms: m, Seq: q}, nil
}

func parseUint(s string) (uint64, error) {
	if s == "" {
		return 0, fmt.Errorf("empty")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%q is not a decimal number", s)
		}
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q overflows 64 bits", s)
	}
	return v, nil
}

// PositionAt returns the first possible position at time t (its
// millisecond, sequence 0). Times before the Unix epoch give MinPosition.
func PositionAt(t time.Time) Position {
	ms := t.UnixMilli()
	if ms < 0 {
		return MinPosition
	}
	return Position{Ms: uint64(ms)}
}

// LastPositionAt returns the last possible position in t's millisecond, so
// that an inclusive range [PositionAt(a), LastPositionAt(b)] covers every
// event recorded from a to b, both milliseconds whole.
func LastPositionAt(t time.Time) Position {
	ms := t.UnixMilli()
	if ms < 0 {
		return MinPosition
	}
	return Position{Ms: uint64(ms), Seq: math.MaxUint64}
}

// String formats the position as a Redis stream ID.
func (p Position) String() string {
	return strconv.FormatUint(p.Ms, 10) + "-" + strconv.FormatUint(p.Seq, 10)
}

// Time is the millisecond of the position as a time, in UTC: the Redis
// server's clock when the entry was appended, or, after the clock went
// back, the millisecond of the last entry before it (positions never go
// back). It is the event's RecordedAt.
func (p Position) Time() time.Time { return time.UnixMilli(int64(min(p.Ms, 1<<62))).UTC() }

// Compare returns -1, 0 or +1.
func (p Position) Compare(q Position) int {
	switch {
	case p.Ms < q.Ms:
		return -1
	case p.Ms > q.Ms:
		return 1
	case p.Seq < q.Seq:
		return -1
	case p.Seq > q.Seq:
		return 1
	}
	return 0
}

// Next returns the smallest position after p (p itself at MaxPosition).
func (p Position) Next() Position {
	switch {
	case p.Seq < math.MaxUint64:
		return Position{p.Ms, p.Seq + 1}
	case p.Ms < math.MaxUint64:
		return Position{p.Ms + 1, 0}
	}
	return p
}

// IsZero reports whether p is 0-0, which no event has.
func (p Position) IsZero() bool { return p == Position{} }

// MarshalText and UnmarshalText make positions "ms-seq" in JSON and flags.
func (p Position) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

func (p *Position) UnmarshalText(b []byte) error {
	q, err := ParsePosition(string(b))
	if err != nil {
		return err
	}
	*p = q
	return nil
}
