package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/redsource/redsource/eventstore"
)

// eventJSON is one line of --json event output (read, replay, tail). The
// field names are a contract (docs/cli.md).
type eventJSON struct {
	Position  string `json:"position"`
	Partition int    `json:"partition"`
	Category  string `json:"category"`
	ID        string `json:"id"`
	Version   uint64 `json:"version"`
	Type      string `json:"type"`
	EventID   string `json:"event_id"`
	// Data is the payload itself when it is valid JSON, else a string:
	// the text when it is valid UTF-8, else base64 with DataEncoding set.
	Data         json.RawMessage   `json:"data"`
	DataEncoding string            `json:"data_encoding,omitempty"`
	Metadata     map[string]string `json:"metadata"`
	RecordedAt   time.Time         `json:"recorded_at"`
}

func toEventJSON(ev eventstore.Event) eventJSON {
	out := eventJSON{
		Position: ev.Position.String(), Partition: ev.Partition, Category: ev.Stream.Category,
		ID: ev.Stream.ID, Version: ev.Version, Type: ev.Type, EventID: ev.ID.String(),
		Metadata: ev.Metadata, RecordedAt: ev.RecordedAt.UTC(),
	}
	if out.Metadata == nil {
		out.Metadata = map[string]string{}
	}
	switch {
	case json.Valid(ev.Data):
		out.Data = ev.Data // compacted onto one line by the encoder
	case utf8.Valid(ev.Data):
		out.Data, _ = json.Marshal(string(ev.Data))
	default:
		out.Data, _ = json.Marshal(base64.StdEncoding.EncodeToString(ev.Data))
		out.DataEncoding = "base64"
	}
	return out
}

// eventPrinter writes events as JSON lines or as a table.
type eventPrinter interface {
	print(ev eventstore.Event) error
	// flush writes what is buffered (the table buffers rows to size its
	// columns).
	flush() error
}

func (c *cli) eventPrinter() eventPrinter {
	if c.g.json {
		w := bufio.NewWriterSize(c.stdout, 64<<10)
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		return jsonEvents{w, enc}
	}
	return &eventTable{t: newStreamTable(c.stdout, 256, "POSITION", "P", "ID", "VERSION", "TYPE", "RECORDED AT", "DATA")}
}

// jsonEvents buffers its lines: one write per line would cost a system
// call per event.
type jsonEvents struct {
	w   *bufio.Writer
	enc *json.Encoder
}

func (j jsonEvents) print(ev eventstore.Event) error { return j.enc.Encode(toEventJSON(ev)) }
func (j jsonEvents) flush() error                    { return j.w.Flush() }

type eventTable struct{ t *streamTable }

func (e *eventTable) print(ev eventstore.Event) error {
	return e.t.add(ev.Position.String(), strconv.Itoa(ev.Partition), ev.Stream.ID, strconv.FormatUint(ev.Version, 10),
		ev.Type, formatTime(ev.RecordedAt), dataCell(ev.Data, 60))
}

func (e *eventTable) flush() error { return e.t.flush() }

// formatTime is the human form of a time: UTC, milliseconds, the same
// RFC 3339 form that --from and --to accept.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// dataCell is a payload on one line, at most max runes.
func dataCell(data []byte, max int) string {
	if !utf8.Valid(data) {
		return fmt.Sprintf("<%s of binary data>", formatBytes(int64(len(data))))
	}
	if json.Valid(data) {
		var b bytes.Buffer
		if json.Compact(&b, data) == nil {
			data = b.Bytes()
		}
	}
	return truncate(oneLine(string(data)), max)
}

// oneLine escapes control characters so that a cell stays on its line.
func oneLine(s string) string {
	if strings.IndexFunc(s, unicode.IsControl) < 0 {
		return s
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

func truncate(s string, max int) string {
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	r := []rune(s)
	return string(r[:max-1]) + "…"
}

// streamTable prints an aligned table without holding all rows: it buffers
// up to buffer rows to size the columns, then keeps each column at least
// as wide as it has been (widths only grow). The last column is not padded.
type streamTable struct {
	w       io.Writer
	header  []string
	widths  []int
	rows    [][]string
	buffer  int
	started bool
}

func newStreamTable(w io.Writer, buffer int, header ...string) *streamTable {
	t := &streamTable{w: w, header: header, widths: make([]int, len(header)), buffer: buffer}
	t.widen(header)
	return t
}

func (t *streamTable) widen(row []string) {
	for i, cell := range row {
		t.widths[i] = max(t.widths[i], utf8.RuneCountInString(cell))
	}
}

func (t *streamTable) add(row ...string) error {
	t.rows = append(t.rows, row)
	if len(t.rows) >= t.buffer {
		return t.flush()
	}
	return nil
}

func (t *streamTable) flush() error {
	if len(t.rows) == 0 {
		return nil
	}
	for _, r := range t.rows {
		t.widen(r)
	}
	var b strings.Builder
	if !t.started {
		t.line(&b, t.header)
		t.started = true
	}
	for _, r := range t.rows {
		t.line(&b, r)
	}
	t.rows = t.rows[:0]
	_, err := io.WriteString(t.w, b.String())
	return err
}

func (t *streamTable) line(b *strings.Builder, row []string) {
	var l strings.Builder
	for i, cell := range row {
		l.WriteString(cell)
		if i < len(row)-1 {
			l.WriteString(strings.Repeat(" ", t.widths[i]-utf8.RuneCountInString(cell)+2))
		}
	}
	b.WriteString(strings.TrimRight(l.String(), " "))
	b.WriteByte('\n')
}

// newTable is an aligned table for output that fits in memory.
func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) }

// writeJSON writes one JSON document.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// formatBytes is a size in IEC units: 512 B, 1.5 KiB, 12.3 MiB.
func formatBytes(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, unit := float64(n), ""
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB", "PiB"} {
		v, unit = v/1024, u
		if v < 1024 {
			break
		}
	}
	if v < 10 {
		return fmt.Sprintf("%.2f %s", v, unit)
	}
	return fmt.Sprintf("%.1f %s", v, unit)
}

// formatCount writes thousands separators: 1234567 → 1,234,567.
func formatCount(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// formatDuration rounds a duration to what a person reads: 850ms, 12s,
// 3m12s, 2h05m, 3d04h.
func formatDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + formatDuration(-d)
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Round(time.Second)/time.Second))
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 48*time.Hour:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	d = d.Round(time.Hour)
	return fmt.Sprintf("%dd%02dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
