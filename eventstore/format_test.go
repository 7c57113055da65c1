package eventstore_test

import (
	"encoding/json"
	"errors"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/keys"
)

// -update-golden rewrites testdata/entry_v1.golden from what Append writes.
// Do that only for a deliberate format change, with a new FormatVersion.
var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/entry_v1.golden")

// rawEntry is one stream entry as Redis returns it, fields in stored order.
type rawEntry struct {
	ID     string
	Fields []string
}

// xrange reads a whole stream with a plain XRANGE, bypassing the store.
func xrange(t testing.TB, c rueidis.Client, key string) []rawEntry {
	t.Helper()
	rows, err := c.Do(ctxT(t), c.B().Xrange().Key(key).Start("-").End("+").Build()).ToArray()
	require.NoError(t, err)
	out := make([]rawEntry, len(rows))
	for i, row := range rows {
		parts, err := row.ToArray()
		require.NoError(t, err)
		require.Len(t, parts, 2)
		out[i].ID, err = parts[0].ToString()
		require.NoError(t, err)
		out[i].Fields, err = parts[1].AsStrSlice()
		require.NoError(t, err)
	}
	return out
}

// TestEntryFormatGolden pins wire format v1: the keys, field names, field
// order and encodings of what Append writes. A diff here means data already
// in Redis may no longer be read as before; see docs/format.md.
func TestEntryFormatGolden(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{})
	st := eventstore.StreamID{Category: "account", ID: "acc-42"}
	e := eventstore.EventData{
		ID:       uuid.MustParse("0190a5d2-7c4e-7b3a-9f1e-2d3c4b5a6978"),
		Type:     "AccountOpened",
		Data:     []byte(`{"owner":"ann","currency":"EUR"}`),
		Metadata: map[string]string{"correlation_id": "c-1", "causation_id": "k-9", "note": "<ü & \"q\">"},
	}
	before := time.Now()
	res, err := s.Append(ctx, st, eventstore.NoStream, e, eventstore.EventData{
		ID: uuid.MustParse("0190a5d2-7c4e-7b3a-9f1e-2d3c4b5a6979"), Type: "Deposited", Data: []byte{0, 1, 0xff, '\n'},
	})
	require.NoError(t, err)

	p := s.Partition(st)
	layout := keys.Layout{NS: s.Namespace()}
	logKey, aggKey, metaKey := s.LogKey(st.Category, p), layout.Aggregate(st.Category, p, st.ID), layout.PartitionMeta(st.Category, p)
	logEntries, aggEntries := xrange(t, s.Client(), logKey), xrange(t, s.Client(), aggKey)
	require.Len(t, logEntries, 2)
	require.Len(t, aggEntries, 2)

	var b strings.Builder
	b.WriteString("# Wire format v1, as Append writes it (docs/format.md). Stream IDs and\n")
	b.WriteString("# the recorded time differ per run and are normalized; values are Go-quoted.\n")
	b.WriteString("# Regenerate only for a deliberate format change: go test ./eventstore -run TestEntryFormatGolden -update-golden\n")
	ns := func(k string) string { return "<ns>" + strings.TrimPrefix(k, s.Namespace()) }
	for i, le := range logEntries {
		ae := aggEntries[i]
		// The same ID in both streams (I1), and it is the position returned.
		require.Equal(t, res.Positions[i].String(), le.ID)
		require.Equal(t, le.ID, ae.ID)
		fields := append([]string(nil), le.Fields...)
		for j := 0; j+1 < len(fields); j += 2 {
			if fields[j] == "ts" {
				us, err := strconv.ParseInt(fields[j+1], 10, 64)
				require.NoError(t, err, "ts is decimal microseconds")
				at := time.UnixMicro(us)
				require.WithinDuration(t, before, at, time.Minute, "ts is the server's time at append")
				require.Equal(t, res.RecordedAt, at.UTC())
				fields[j+1] = "<TS>"
			}
		}
		b.WriteString("\nXADD " + ns(logKey) + " <ID-" + strconv.Itoa(i+1) + ">\n")
		writeFields(&b, fields)
		b.WriteString("XADD " + ns(aggKey) + " <ID-" + strconv.Itoa(i+1) + ">\n")
		writeFields(&b, ae.Fields)
	}
	c := s.Client()
	ident, err := c.Do(ctx, c.B().Get().Key(layout.Identity()).Build()).ToString()
	require.NoError(t, err)
	u, err := uuid.Parse(ident)
	require.NoError(t, err)
	require.Equal(t, uuid.Version(7), u.Version(), "the identity is a UUIDv7")
	meta, err := c.Do(ctx, c.B().Get().Key(metaKey).Build()).ToString()
	require.NoError(t, err)
	require.Equal(t, ident+"/8", meta)
	b.WriteString("\nSET " + ns(metaKey) + " " + strconv.Quote(strings.ReplaceAll(meta, ident, "<IDENTITY>")) + "\n")
	cats, err := c.Do(ctx, c.B().Hgetall().Key(layout.Categories()).Build()).AsStrMap()
	require.NoError(t, err)
	for _, k := range slices.Sorted(maps.Keys(cats)) {
		b.WriteString("HSET " + ns(layout.Categories()) + " " + k + " " + strconv.Quote(cats[k]) + "\n")
	}
	b.WriteString("SET " + ns(layout.Identity()) + " <IDENTITY>\n")

	golden := filepath.Join("testdata", "entry_v1.golden")
	if *updateGolden {
		require.NoError(t, os.WriteFile(golden, []byte(b.String()), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	require.Equal(t, string(want), b.String(), "the v1 wire format changed; see docs/format.md before updating the golden file")

	// What the test encoder below produces is what Append writes, so the
	// fuzz round trip checks the real format.
	got := collect(t, s.Read(ctx, st, 0))
	for i, ev := range got {
		require.Equal(t, logEntries[i].Fields, encodeV1(ev))
	}
}

func writeFields(b *strings.Builder, fields []string) {
	for j := 0; j+1 < len(fields); j += 2 {
		b.WriteString("  " + fields[j] + " " + strconv.Quote(fields[j+1]) + "\n")
	}
}

// encodeV1 builds the v1 field list of an event, as docs/format.md specifies.
func encodeV1(ev eventstore.Event) []string {
	meta := ""
	if len(ev.Metadata) > 0 {
		b, err := json.Marshal(ev.Metadata)
		if err != nil {
			panic(err)
		}
		meta = string(b)
	}
	return []string{
		"v", "1",
		"agg", ev.Stream.ID,
		"ver", strconv.FormatUint(ev.Version, 10),
		"eid", ev.ID.String(),
		"type", ev.Type,
		"data", string(ev.Data),
		"meta", meta,
		"ts", strconv.FormatInt(ev.RecordedAt.UnixMicro(), 10),
	}
}

// decodeCase is one hand-built entry of testdata/decode_v1.json: field lists
// as v1 writers put them in Redis, frozen, with what they must decode to.
type decodeCase struct {
	Name      string   `json:"name"`
	Category  string   `json:"category"`
	Partition int      `json:"partition"`
	ID        string   `json:"id"`
	Fields    []string `json:"fields"`
	Want      *struct {
		Aggregate  string            `json:"aggregate"`
		Version    uint64            `json:"version"`
		EventID    string            `json:"event_id"`
		Type       string            `json:"type"`
		Data       string            `json:"data"`
		Metadata   map[string]string `json:"metadata"`
		RecordedAt string            `json:"recorded_at"`
	} `json:"want"`
	WantError string `json:"want_error"`
}

// TestDecodeStoredV1 decodes v1 entries kept in testdata: data written with
// format v1 must stay readable by every later build.
func TestDecodeStoredV1(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join("testdata", "decode_v1.json"))
	require.NoError(t, err)
	var cases []decodeCase
	require.NoError(t, json.Unmarshal(raw, &cases))
	require.NotEmpty(t, cases)
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			got, err := eventstore.DecodeEntry(tc.Category, tc.Partition, tc.ID, tc.Fields)
			if tc.WantError != "" {
				require.ErrorIs(t, err, eventstore.ErrCorruptEntry)
				require.ErrorContains(t, err, tc.WantError)
				return
			}
			require.NoError(t, err)
			require.NotNil(t, tc.Want, "a case wants an event or an error")
			pos, err := eventstore.ParsePosition(tc.ID)
			require.NoError(t, err)
			w := tc.Want
			require.Equal(t, eventstore.StreamID{Category: tc.Category, ID: w.Aggregate}, got.Stream)
			require.Equal(t, tc.Partition, got.Partition)
			require.Equal(t, pos, got.Position)
			require.Equal(t, w.Version, got.Version)
			require.Equal(t, uuid.MustParse(w.EventID), got.ID)
			require.Equal(t, w.Type, got.Type)
			require.Equal(t, w.Data, string(got.Data))
			require.Equal(t, w.Metadata, got.Metadata)
			if w.RecordedAt == "" {
				require.True(t, got.RecordedAt.IsZero())
			} else {
				at, err := time.Parse(time.RFC3339Nano, w.RecordedAt)
				require.NoError(t, err)
				require.True(t, at.Equal(got.RecordedAt), "recorded at %s, want %s", got.RecordedAt, at)
				require.Equal(t, time.UTC, got.RecordedAt.Location())
			}
		})
	}
}

func TestDecodeUnknownFormatVersion(t *testing.T) {
	t.Parallel()
	fields := []string{"v", "2", "agg", "a", "ver", "1", "eid", "0190a5d2-7c4e-7b3a-9f1e-2d3c4b5a6978", "type", "T", "data", "", "meta", "", "ts", "1"}
	_, err := eventstore.DecodeEntry("account", 3, "1700000000000-0", fields)
	require.ErrorIs(t, err, eventstore.ErrCorruptEntry)
	require.ErrorContains(t, err, `unsupported format version "2"`)
	require.ErrorContains(t, err, `account partition 3 entry 1700000000000-0`, "the error says where")
	require.False(t, errors.Is(err, eventstore.ErrMissingEntry))
}

// FuzzDecodeEntry: DecodeEntry never panics, every error matches
// ErrCorruptEntry, and whatever it accepts survives a round trip through
// the v1 encoding unchanged. Fields are joined by NUL in the fuzz input.
func FuzzDecodeEntry(f *testing.F) {
	full := []string{"v", "1", "agg", "acc-42", "ver", "7", "eid", "0190a5d2-7c4e-7b3a-9f1e-2d3c4b5a6978",
		"type", "AccountOpened", "data", `{"owner":"ann"}`, "meta", `{"k":"v"}`, "ts", "1700000000000123"}
	f.Add("1700000000000-3", strings.Join(full, "\x00"))
	f.Add("1-0", strings.Join(full[:12], "\x00"))
	f.Add("1-0", strings.Join(append(full, "future", "x"), "\x00"))
	f.Add("1-0", strings.Join(append([]string{"v", "2"}, full[2:]...), "\x00"))
	f.Add("0-1", "v\x001\x00agg\x00\x00ver\x001\x00eid\x00{0190a5d2-7c4e-7b3a-9f1e-2d3c4b5a6978}\x00type\x00\x00data\x00\x00meta\x00null\x00ts\x00-5")
	f.Add("1-0", "")
	f.Fuzz(func(t *testing.T, id, joined string) {
		var fields []string
		if joined != "" {
			fields = strings.Split(joined, "\x00")
		}
		ev, err := eventstore.DecodeEntry("cat", 2, id, fields)
		if err != nil {
			if !errors.Is(err, eventstore.ErrCorruptEntry) {
				t.Fatalf("error %v does not match ErrCorruptEntry", err)
			}
			return
		}
		if ev.Stream.Category != "cat" || ev.Partition != 2 || ev.Version == 0 {
			t.Fatalf("decoded %+v", ev)
		}
		enc := encodeV1(ev)
		again, err := eventstore.DecodeEntry("cat", 2, ev.Position.String(), enc)
		if err != nil {
			t.Fatalf("re-encoded entry %q does not decode: %v", enc, err)
		}
		if !sameEvent(ev, again) {
			t.Fatalf("round trip changed the event:\n%+v\n%+v", ev, again)
		}
		if enc2 := encodeV1(again); strings.Join(enc2, "\x00") != strings.Join(enc, "\x00") {
			t.Fatalf("encoding is not a fixed point:\n%q\n%q", enc, enc2)
		}
	})
}

// sameEvent compares events as a reader sees them: an empty metadata map
// is no metadata, and times compare as instants.
func sameEvent(a, b eventstore.Event) bool {
	if a.Stream != b.Stream || a.Partition != b.Partition || a.Version != b.Version || a.Position != b.Position ||
		a.ID != b.ID || a.Type != b.Type || string(a.Data) != string(b.Data) || !a.RecordedAt.Equal(b.RecordedAt) ||
		len(a.Metadata) != len(b.Metadata) {
		return false
	}
	for k, v := range a.Metadata {
		if w, ok := b.Metadata[k]; !ok || w != v {
			return false
		}
	}
	return true
}
