package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// progress draws one status line on a terminal (stderr), redrawn at most
// ten times a second and erased when done. A nil *progress does nothing,
// so callers need not check whether a terminal is attached.
type progress struct {
	w     io.Writer
	label string
	start time.Time
	drawn time.Time
	now   func() time.Time
}

// newProgress returns a progress line on w when w is a terminal, else nil.
func newProgress(w io.Writer, label string) *progress {
	if !isTerminal(w) {
		return nil
	}
	return &progress{w: w, label: label, start: time.Now(), now: time.Now}
}

// update redraws the line: frac in [0, 1] (negative: unknown) and the
// number of items done.
func (p *progress) update(frac float64, done int64, unit string) {
	if p == nil {
		return
	}
	now := p.now()
	if now.Sub(p.drawn) < 100*time.Millisecond {
		return
	}
	p.drawn = now
	fmt.Fprintf(p.w, "\r\033[K%s", p.render(frac, done, unit, now.Sub(p.start)))
}

// status redraws the line with a free text.
func (p *progress) status(text string) {
	if p == nil {
		return
	}
	now := p.now()
	if now.Sub(p.drawn) < 100*time.Millisecond {
		return
	}
	p.drawn = now
	fmt.Fprintf(p.w, "\r\033[K%s %s", p.label, text)
}

// done erases the line.
func (p *progress) done() {
	if p == nil || p.drawn.IsZero() {
		return
	}
	fmt.Fprint(p.w, "\r\033[K")
}

// render is "label [#####-----]  42%  12,345 events  3,456/s  eta 4s".
func (p *progress) render(frac float64, done int64, unit string, elapsed time.Duration) string {
	const width = 30
	var b strings.Builder
	b.WriteString(p.label)
	if frac >= 0 {
		frac = min(frac, 1)
		n := int(frac * width)
		fmt.Fprintf(&b, " [%s%s] %3d%%", strings.Repeat("#", n), strings.Repeat("-", width-n), int(frac*100))
	}
	fmt.Fprintf(&b, "  %s %s", formatCount(done), unit)
	if secs := elapsed.Seconds(); secs >= 0.5 {
		fmt.Fprintf(&b, "  %s/s", formatCount(int64(float64(done)/secs)))
		if frac > 0.01 && frac < 1 {
			eta := time.Duration(float64(elapsed) * (1 - frac) / frac)
			fmt.Fprintf(&b, "  eta %s", formatDuration(eta.Round(time.Second)))
		}
	}
	return b.String()
}
