//go:build ignore

// fault-report prints the scenario table of docs/reliability.md from the
// JSON lines the fault suite appends to $REDSOURCE_FAULT_REPORT:
//
//	REDSOURCE_FAULT_REPORT=/tmp/fault.jsonl go test -race -count=1 -run TestFault ./internal/faultsuite/
//	go run scripts/fault-report.go /tmp/fault.jsonl
//
// A test reported more than once (several runs into one file) shows its
// last line. Lines that are not JSON are an error.
package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/redsource/redsource/internal/faultsuite"
)

func main() {
	var in []io.Reader
	for _, name := range os.Args[1:] {
		f, err := os.Open(name)
		if err != nil {
			fail(err)
		}
		defer f.Close()
		in = append(in, f)
	}
	if len(in) == 0 {
		in = append(in, os.Stdin)
	}
	byTest := map[string]faultsuite.Result{}
	for _, r := range in {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for n := 1; sc.Scan(); n++ {
			line := strings.TrimSpace(sc.Text())
			if line == "" {
				continue
			}
			var res faultsuite.Result
			if err := json.Unmarshal([]byte(line), &res); err != nil {
				fail(fmt.Errorf("line %d: %w", n, err))
			}
			byTest[res.Test] = res
		}
		if err := sc.Err(); err != nil {
			fail(err)
		}
	}
	rows := make([]faultsuite.Result, 0, len(byTest))
	for _, r := range byTest {
		rows = append(rows, r)
	}
	slices.SortFunc(rows, func(a, b faultsuite.Result) int {
		return cmp.Or(cmp.Compare(order(a.Scenario), order(b.Scenario)), cmp.Compare(a.Scenario, b.Scenario))
	})

	fmt.Println("| Scenario | Injected | Property | Ops | Acknowledged | Lost | Duplicated | Detected | Test | Result |")
	fmt.Println("|---|---|---|--:|--:|--:|--:|--:|---|---|")
	for _, r := range rows {
		outcome := "pass"
		if !r.Passed {
			outcome = "**FAIL**"
		}
		fmt.Printf("| %s | %s | %s | %d | %d | %d | %d | %d | `%s` | %s |\n", cell(r.Scenario), cell(r.Injected), cell(r.Property),
			r.Ops, r.Acked, r.Lost, r.Duplicated, r.Detected, r.Test, outcome)
	}
	fmt.Println()
	for _, r := range rows {
		extra := ""
		if r.Unseen > 0 {
			extra = fmt.Sprintf(" Lost but seen by nothing durable: %d.", r.Unseen)
		}
		fmt.Printf("- **%s** (%.1f s): %s.%s\n", r.Scenario, r.Seconds, strings.TrimSuffix(r.Note, "."), extra)
		for _, d := range r.Defects {
			fmt.Printf("  - FAILED: %s\n", d)
		}
	}
}

// order is the scenario's number: "4b. …" sorts after "4. …".
func order(name string) float64 {
	num, _, _ := strings.Cut(name, ".")
	sub := 0.0
	if n := len(num); n > 0 && num[n-1] >= 'a' && num[n-1] <= 'z' {
		sub = float64(num[n-1]-'a'+1) / 10
		num = num[:n-1]
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 1e9
	}
	return f + sub
}

func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func fail(err error) {
	fmt.Fprintln(os.Stderr, "fault-report:", err)
	os.Exit(1)
}
