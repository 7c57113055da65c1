package eventstore_test

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
)

func TestParsePosition(t *testing.T) {
	t.Parallel()
	good := []struct {
		in   string
		want eventstore.Position
	}{
		{"0-0", eventstore.Position{}},
		{"1-0", eventstore.Position{Ms: 1}},
		{"1700000000000-42", eventstore.Position{Ms: 1700000000000, Seq: 42}},
		{"18446744073709551615-18446744073709551615", eventstore.MaxPosition},
		{"007-01", eventstore.Position{Ms: 7, Seq: 1}}, // Redis reads leading zeros too
	}
	for _, tc := range good {
		p, err := eventstore.ParsePosition(tc.in)
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, p, tc.in)
	}

	bad := []string{
		"", "1", "1-", "-1", "-", "+1-0", "1-+0", " 1-0", "1-0 ", "1 -0", "1- 0",
		"18446744073709551616-0", "0-18446744073709551616", "99999999999999999999999-0",
		"1-2-3", "1--2", "0x10-0", "1.5-0", "1e3-0", "*", "1-*", "$", "+", "(1-0", "١-٠",
	}
	for _, in := range bad {
		_, err := eventstore.ParsePosition(in)
		require.Error(t, err, "%q must be refused", in)
		require.Contains(t, err.Error(), strconv.Quote(in), "the error names the input")
	}
}

func TestPositionStringRoundTrip(t *testing.T) {
	t.Parallel()
	for _, p := range []eventstore.Position{
		eventstore.MinPosition, {Ms: 1}, {Seq: 1}, {Ms: 1700000000123, Seq: 7},
		{Ms: math.MaxUint64}, {Seq: math.MaxUint64}, eventstore.MaxPosition,
	} {
		q, err := eventstore.ParsePosition(p.String())
		require.NoError(t, err)
		require.Equal(t, p, q)
	}
	require.Equal(t, "1700000000123-7", eventstore.Position{Ms: 1700000000123, Seq: 7}.String())
	require.Equal(t, "18446744073709551615-18446744073709551615", eventstore.MaxPosition.String())
	require.True(t, eventstore.MinPosition.IsZero())
	require.False(t, eventstore.Position{Seq: 1}.IsZero())
}

func TestPositionCompare(t *testing.T) {
	t.Parallel()
	// Strictly increasing: sequence before millisecond wrap-around, and the
	// millisecond dominates the sequence.
	ordered := []eventstore.Position{
		eventstore.MinPosition,
		{Ms: 0, Seq: 1},
		{Ms: 0, Seq: math.MaxUint64},
		{Ms: 1, Seq: 0},
		{Ms: 1, Seq: 1},
		{Ms: 2, Seq: 0},
		{Ms: math.MaxUint64, Seq: 0},
		eventstore.MaxPosition,
	}
	for i, p := range ordered {
		for j, q := range ordered {
			want := 0
			switch {
			case i < j:
				want = -1
			case i > j:
				want = 1
			}
			require.Equal(t, want, p.Compare(q), "%s vs %s", p, q)
		}
	}
}

func TestPositionNext(t *testing.T) {
	t.Parallel()
	cases := []struct{ in, want eventstore.Position }{
		{eventstore.MinPosition, eventstore.Position{Seq: 1}},
		{eventstore.Position{Ms: 5, Seq: 9}, eventstore.Position{Ms: 5, Seq: 10}},
		{eventstore.Position{Ms: 5, Seq: math.MaxUint64}, eventstore.Position{Ms: 6}},
		{eventstore.MaxPosition, eventstore.MaxPosition}, // saturates, never wraps to 0-0
	}
	for _, tc := range cases {
		require.Equal(t, tc.want, tc.in.Next(), tc.in.String())
		if tc.in != eventstore.MaxPosition {
			require.Equal(t, 1, tc.in.Next().Compare(tc.in))
		}
	}
}

func TestPositionAt(t *testing.T) {
	t.Parallel()
	at := time.Date(2025, 3, 1, 12, 0, 0, 123_456_789, time.UTC)
	ms := uint64(at.UnixMilli())

	require.Equal(t, eventstore.Position{Ms: ms, Seq: 0}, eventstore.PositionAt(at))
	require.Equal(t, eventstore.Position{Ms: ms, Seq: math.MaxUint64}, eventstore.LastPositionAt(at))
	// The whole millisecond is covered, whatever the sub-millisecond part.
	require.Equal(t, eventstore.PositionAt(at), eventstore.PositionAt(at.Truncate(time.Millisecond)))
	require.Equal(t, eventstore.LastPositionAt(at), eventstore.LastPositionAt(at.Truncate(time.Millisecond).Add(999_999)))
	// The next millisecond starts right after the last position of this one.
	require.Equal(t, eventstore.PositionAt(at.Add(time.Millisecond)), eventstore.LastPositionAt(at).Next())
	// Zones do not matter: a position is an instant.
	require.Equal(t, eventstore.PositionAt(at), eventstore.PositionAt(at.In(time.FixedZone("x", 5*3600))))
	// Position.Time is the millisecond of the position.
	require.True(t, eventstore.PositionAt(at).Time().Equal(at.Truncate(time.Millisecond)))

	before := time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC)
	require.Equal(t, eventstore.MinPosition, eventstore.PositionAt(before))
	require.Equal(t, eventstore.MinPosition, eventstore.LastPositionAt(before))
	require.Equal(t, eventstore.MinPosition, eventstore.PositionAt(time.Unix(0, 0)))
}

func TestPositionText(t *testing.T) {
	t.Parallel()
	p := eventstore.Position{Ms: 1700000000000, Seq: 3}
	b, err := p.MarshalText()
	require.NoError(t, err)
	require.Equal(t, "1700000000000-3", string(b))

	var q eventstore.Position
	require.NoError(t, q.UnmarshalText(b))
	require.Equal(t, p, q)

	// Through encoding/json, as a checkpoint file or an API would carry it.
	type doc struct {
		From eventstore.Position `json:"from"`
	}
	j, err := json.Marshal(doc{From: p})
	require.NoError(t, err)
	require.JSONEq(t, `{"from":"1700000000000-3"}`, string(j))
	var d doc
	require.NoError(t, json.Unmarshal(j, &d))
	require.Equal(t, p, d.From)

	// A bad value is refused and leaves the target as it was.
	q = eventstore.Position{Ms: 9, Seq: 9}
	require.Error(t, q.UnmarshalText([]byte("9")))
	require.Equal(t, eventstore.Position{Ms: 9, Seq: 9}, q)
	require.Error(t, json.Unmarshal([]byte(`{"from":"1-0 "}`), &d))
}

// FuzzParsePosition: ParsePosition never panics; whatever it accepts is two
// runs of ASCII digits around one '-', and String gives back the canonical
// form, which parses to the same value.
func FuzzParsePosition(f *testing.F) {
	for _, s := range []string{"0-0", "1-0", "1700000000000-42", "18446744073709551615-18446744073709551615",
		"18446744073709551616-0", "007-01", "1-2-3", "-1", "1-", " 1-0", "+1-0", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := eventstore.ParsePosition(s)
		if err != nil {
			return
		}
		ms, seq, ok := strings.Cut(s, "-")
		if !ok || !allDigits(ms) || !allDigits(seq) {
			t.Fatalf("accepted %q, which is not digits-digits", s)
		}
		str := p.String()
		cms, cseq, _ := strings.Cut(str, "-")
		if cms != strconv.FormatUint(p.Ms, 10) || cseq != strconv.FormatUint(p.Seq, 10) {
			t.Fatalf("String() of %q is %q, not canonical decimal", s, str)
		}
		q, err := eventstore.ParsePosition(str)
		if err != nil {
			t.Fatalf("String() of %q is %q, which does not parse: %v", s, str, err)
		}
		if q != p {
			t.Fatalf("%q parsed to %v, its String %q to %v", s, p, str, q)
		}
		if strings.TrimLeft(ms, "0") == strings.TrimLeft(cms, "0") && strings.TrimLeft(seq, "0") == strings.TrimLeft(cseq, "0") {
			return
		}
		t.Fatalf("%q and its String %q differ beyond leading zeros", s, str)
	})
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
