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

// -update-golden rewrites testdata/entry_v2.golden from what Append writes.
// Do that only for a deliberate format change, with a new FormatVersion.
var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/entry_v2.golden")

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

// TestEntryFormatGolden pins wire format 2: the keys, field names, field
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
	require.WithinDuration(t, before, res.RecordedAt, time.Minute, "the position's millisecond is the server's clock")
	require.Equal(t, res.Positions[0].Time(), res.RecordedAt)

	p := s.Partition(st)
	layout := keys.Layout{NS: s.Namespace()}
	c := s.Client()
	logKey, aggKey, metaKey := s.LogKey(st.Category, p), layout.Aggregate(st.Category, p, st.ID), layout.PartitionMeta(st.Category, p)
	logEntries := xrange(t, c, logKey)
	require.Len(t, logEntries, 2)
	index, err := c.Do(ctx, c.B().Lrange().Key(aggKey).Start(0).Stop(-1).Build()).AsStrSlice()
	require.NoError(t, err)
	require.Len(t, index, 2)

	var b strings.Builder
	b.WriteString("# Wire format 2, as Append writes it (docs/format.md). Stream IDs and\n")
	b.WriteString("# the namespace identity differ per run and are normalized; values are Go-quoted.\n")
	b.WriteString("# Regenerate only for a deliberate format change: go test ./eventstore -run TestEntryFormatGolden -update-golden\n")
	ns := func(k string) string { return "<ns>" + strings.TrimPrefix(k, s.Namespace()) }
	for i, le := range logEntries {
		// The index holds the log IDs, and they are the positions returned.
		require.Equal(t, res.Positions[i].String(), le.ID)
		b.WriteString("\nXADD " + ns(logKey) + " <ID-" + strconv.Itoa(i+1) + ">\n")
		writeFields(&b, le.Fields)
	}
	for i, el := range index {
		// An index element is the log ID and the event UUID's last two
		// bytes.
		require.Equal(t, logEntries[i].ID+string(res.EventIDs[i][14:]), el)
	}
	b.WriteString("RPUSH " + ns(aggKey) + " <ID-1>" + strconv.Quote(index[0][len(logEntries[0].ID):]) + " <ID-2>" + strconv.Quote(index[1][len(logEntries[1].ID):]) + "\n")
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

	golden := filepath.Join("testdata", "entry_v2.golden")
	if *updateGolden {
		require.NoError(t, os.WriteFile(golden, []byte(b.String()), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	require.Equal(t, string(want), b.String(), "wire format 2 changed; see docs/format.md before updating the golden file")

	// What the test encoder below produces is what Append writes, so the
	// fuzz round trip checks the real format.
	got := collect(t, s.Read(ctx, st, 0))
	for i, ev := range got {
		require.Equal(t, logEntries[i].Fields, encodeV2(ev))
	}
}

func writeFields(b *strings.Builder, fields []string) {
	for j := 0; j+1 < len(fields); j += 2 {
		b.WriteString("  " + fields[j] + " " + strconv.Quote(fields[j+1]) + "\n")
	}
}

// encodeV2 builds the field list of an event, as docs/format.md specifies.
func encodeV2(ev eventstore.Event) []string {
	meta := ""
	if len(ev.Metadata) > 0 {
		b, err := json.Marshal(ev.Metadata)
		if err != nil {
			panic(err)
		}
		meta = string(b)
	}
	h := string(ev.ID[:]) + strconv.FormatUint(ev.Version, 10) + " " + ev.Type + "\x00" + ev.Stream.ID + "\x00" + meta
	return []string{"h2", h, "d", string(ev.Data)}
}

// decodeCase is one hand-built entry of testdata/decode_v2.json: field lists
// (Go-quoted strings) as format 2 writers put them in Redis, frozen, with
// what they must decode to.
type decodeCase struct {
	Name      string   `json:"name"`
	Category  string   `json:"category"`
	Partition int      `json:"partition"`
	ID        string   `json:"id"`
	Fields    []string `json:"fields"`
	Want      *struct {
		Aggregate string            `json:"aggregate"`
		Version   uint64            `json:"version"`
		EventID   string            `json:"event_id"`
		Type      string            `json:"type"`
		Data      string            `json:"data"`
		Metadata  map[string]string `json:"metadata"`
	} `json:"want"`
	WantError string `json:"want_error"`
}

// TestDecodeStored decodes format 2 entries kept in testdata: data written
// with format 2 must stay readable by every later build.
func TestDecodeStored(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join("testdata", "decode_v2.json"))
	require.NoError(t, err)
	var cases []decodeCase
	require.NoError(t, json.Unmarshal(raw, &cases))
	require.NotEmpty(t, cases)
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			fields := make([]string, len(tc.Fields))
			for i, f := range tc.Fields {
				var err error
				fields[i], err = strconv.Unquote(f)
				require.NoError(t, err, "field %d of the case is a Go-quoted string", i)
			}
			got, err := eventstore.DecodeEntry(tc.Category, tc.Partition, tc.ID, fields)
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
			require.Equal(t, pos.Time(), got.RecordedAt)
			require.Equal(t, time.UTC, got.RecordedAt.Location())
		})
	}
}

// An entry of another format (the pre-release field-per-value format, or
// a later one) is refused by name, never misread.
func TestDecodeOtherFormat(t *testing.T) {
	t.Parallel()
	fields := []string{"v", "1", "agg", "a", "ver", "1", "eid", "0190a5d2-7c4e-7b3a-9f1e-2d3c4b5a6978", "type", "T", "data", "", "meta", "", "ts", "1"}
	_, err := eventstore.DecodeEntry("account", 3, "1700000000000-0", fields)
	require.ErrorIs(t, err, eventstore.ErrCorruptEntry)
	require.ErrorContains(t, err, `no h2 header: an entry of another format`)
	require.ErrorContains(t, err, `this build reads format 2`)
	require.ErrorContains(t, err, `account partition 3 entry 1700000000000-0`, "the error says where")
	require.False(t, errors.Is(err, eventstore.ErrMissingEntry))
	_, err = eventstore.DecodeEntry("account", 3, "1700000000000-0", []string{"h3", "whatever", "d", ""})
	require.ErrorContains(t, err, `no h2 header`)
}

// FuzzDecodeEntry: DecodeEntry never panics, every error matches
// ErrCorruptEntry, and whatever it accepts survives a round trip through
// the format 2 encoding unchanged. extra is further field/value pairs,
// joined by NUL.
func FuzzDecodeEntry(f *testing.F) {
	id := uuid.MustParse("0190a5d2-7c4e-7b3a-9f1e-2d3c4b5a6978")
	h := string(id[:]) + "7 AccountOpened\x00acc-42\x00" + `{"k":"v"}`
	f.Add("1700000000000-3", h, `{"owner":"ann"}`, "")
	f.Add("1-0", string(id[:])+"1 T\x00a\x00", "", "")
	f.Add("1-0", h, "x", "future\x00x")
	f.Add("1-0", string(id[:])+"07 T\x00a\x00", "", "")
	f.Add("0-1", "short", "", "")
	f.Add("1-0", "", "", "v\x001")
	f.Fuzz(func(t *testing.T, id, header, data, extra string) {
		fields := []string{"h2", header, "d", data}
		if extra != "" {
			fields = append(fields, strings.Split(extra, "\x00")...)
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
		enc := encodeV2(ev)
		again, err := eventstore.DecodeEntry("cat", 2, ev.Position.String(), enc)
		if err != nil {
			t.Fatalf("re-encoded entry %q does not decode: %v", enc, err)
		}
		if !sameEvent(ev, again) {
			t.Fatalf("round trip changed the event:\n%+v\n%+v", ev, again)
		}
		if enc2 := encodeV2(again); strings.Join(enc2, "\x00") != strings.Join(enc, "\x00") {
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
