package main

import (
	"fmt"
	"html"
	"math"
	"os"
	"slices"
	"strings"
)

// svgSeries is one line of the plot: medians per caller count, with the
// rounds' range.
type svgSeries struct {
	name   string
	color  string
	dash   string
	points []svgPoint
}

type svgPoint struct {
	callers int
	stat    benchStat
}

// writeBenchSVG plots events/s against callers for raw XADD (1 per
// call), Append of 1 event and Watermill Publish of 1 message, on a log2
// axis of callers.
func writeBenchSVG(path string, b *bench) error {
	pick := func(path, name, color, dash string) svgSeries {
		s := svgSeries{name: name, color: color, dash: dash}
		for _, r := range b.results {
			if r.Path == path && r.EventsPerCall == 1 && len(r.Rounds) > 0 {
				s.points = append(s.points, svgPoint{r.Callers, r.Summary.EventsPerSec})
			}
		}
		slices.SortFunc(s.points, func(a, b svgPoint) int { return a.callers - b.callers })
		return s
	}
	series := []svgSeries{
		pick("xadd", "raw XADD, 1 per call (ceiling)", "#888888", "6 4"),
		pick("append", "redsource Append, 1 event", "#c0392b", ""),
		pick("watermill-publish", "Watermill Publish, 1 message", "#2471a3", ""),
	}
	if len(series[0].points)+len(series[1].points) == 0 {
		return fmt.Errorf("no append measurements to plot (--sections must include append)")
	}
	title := fmt.Sprintf("events/s against callers — %s, %d CPUs, Redis %s, %s",
		b.env.StartedAt.Format("2006-01-02"), b.env.NumCPU, b.env.Redis.Version, roundsText(b.o.rounds))
	return os.WriteFile(path, []byte(renderSVG(title, series)), 0o644)
}

func roundsText(n int) string {
	if n == 1 {
		return "1 round"
	}
	return fmt.Sprintf("median of %d rounds, bars: range", n)
}

func renderSVG(title string, series []svgSeries) string {
	const (
		width, height          = 760, 440
		left, right, top, bott = 80, 250, 40, 60
	)
	pw, ph := float64(width-left-right), float64(height-top-bott)
	var xs []int
	ymax := 0.0
	for _, s := range series {
		for _, p := range s.points {
			if !slices.Contains(xs, p.callers) {
				xs = append(xs, p.callers)
			}
			ymax = math.Max(ymax, p.stat.Max)
		}
	}
	slices.Sort(xs)
	step := niceStep(ymax / 5)
	ytop := math.Ceil(ymax/step) * step
	if ytop == 0 {
		ytop = 1
	}
	lx0, lx1 := math.Log2(float64(xs[0])), math.Log2(float64(xs[len(xs)-1]))
	x := func(c int) float64 {
		if lx1 == lx0 {
			return float64(left) + pw/2
		}
		return float64(left) + (math.Log2(float64(c))-lx0)/(lx1-lx0)*pw
	}
	y := func(v float64) float64 { return float64(top) + ph - v/ytop*ph }

	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&sb, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	fmt.Fprintf(&sb, `<text x="%d" y="22" font-size="14">%s</text>`+"\n", left, html.EscapeString(title))
	for v := 0.0; v <= ytop+step/2; v += step {
		fmt.Fprintf(&sb, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e5e5e5"/>`+"\n", left, y(v), float64(left)+pw, y(v))
		fmt.Fprintf(&sb, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-8, y(v)+4, formatRate(v))
	}
	for _, c := range xs {
		fmt.Fprintf(&sb, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%.1f" stroke="#e5e5e5"/>`+"\n", x(c), top, x(c), float64(top)+ph)
		fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f" text-anchor="middle">%d</text>`+"\n", x(c), float64(top)+ph+18, c)
	}
	fmt.Fprintf(&sb, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="none" stroke="#444"/>`+"\n", left, top, pw, ph)
	fmt.Fprintf(&sb, `<text x="%.1f" y="%d" text-anchor="middle">concurrent callers (log scale)</text>`+"\n", float64(left)+pw/2, height-18)
	fmt.Fprintf(&sb, `<text x="18" y="%.1f" text-anchor="middle" transform="rotate(-90 18 %.1f)">events/s</text>`+"\n", float64(top)+ph/2, float64(top)+ph/2)
	legend := 0
	for _, s := range series {
		if len(s.points) == 0 {
			continue
		}
		var pts []string
		for _, p := range s.points {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p.callers), y(p.stat.Median)))
		}
		dash := ""
		if s.dash != "" {
			dash = ` stroke-dasharray="` + s.dash + `"`
		}
		fmt.Fprintf(&sb, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.Join(pts, " "), s.color, dash)
		for _, p := range s.points {
			if p.stat.Max > p.stat.Min {
				fmt.Fprintf(&sb, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", x(p.callers), y(p.stat.Min), x(p.callers), y(p.stat.Max), s.color)
			}
			fmt.Fprintf(&sb, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s, %d callers: %s events/s</title></circle>`+"\n",
				x(p.callers), y(p.stat.Median), s.color, html.EscapeString(s.name), p.callers, formatRate(p.stat.Median))
		}
		ly := float64(top + 10 + 22*legend)
		lx := float64(left) + pw + 16
		fmt.Fprintf(&sb, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"%s/>`+"\n", lx, ly, lx+24, ly, s.color, dash)
		fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f">%s</text>`+"\n", lx+30, ly+4, html.EscapeString(s.name))
		legend++
	}
	sb.WriteString("</svg>\n")
	return sb.String()
}

// niceStep rounds a grid step up to 1, 2 or 5 times a power of ten.
func niceStep(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}
