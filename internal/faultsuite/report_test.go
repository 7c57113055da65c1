package faultsuite

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/redsource/redsource/internal/faultenv"
)

// reportEnv names the file the scenarios append their figures to, one
// JSON line each; scripts/fault-report.go turns it into the table of
// docs/reliability.md.
const reportEnv = "REDSOURCE_FAULT_REPORT"

// result is one scenario's figures, as written to the report file.
type result struct {
	Scenario   string  `json:"scenario"`
	Test       string  `json:"test"`
	Ops        int     `json:"ops"`
	Acked      int     `json:"acked"`
	Lost       int     `json:"lost"`
	Duplicated int     `json:"duplicated"`
	Detected   int     `json:"detected"`
	Note       string  `json:"note"`
	Injected   string  `json:"injected"`
	Property   string  `json:"property"`
	Seconds    float64 `json:"seconds"`
	Unknown    int     `json:"unknown"`
	Unseen     int     `json:"unseen"`
}

// scenario describes one row of the table.
type scenario struct {
	Name, Injected, Property string
}

var reportMu sync.Mutex

// report logs the figures of a scenario and, with REDSOURCE_FAULT_REPORT
// set, appends them to that file. unseen counts lost events the scenario
// found that no durable memory had seen (allowed to go undetected).
func (w *world) report(sc scenario, rep *faultenv.Report, unseen int, note string) {
	w.t.Helper()
	r := result{
		Scenario: sc.Name, Test: w.t.Name(), Ops: rep.Operations, Acked: rep.Acknowledged, Lost: rep.Lost,
		Duplicated: rep.Duplicated, Detected: rep.Detected, Note: note, Injected: sc.Injected, Property: sc.Property,
		Seconds: time.Since(w.start).Round(10 * time.Millisecond).Seconds(), Unknown: rep.Unknown, Unseen: unseen,
	}
	w.t.Logf("%s: %s", sc.Name, rep)
	w.t.Logf("%s: %s", sc.Name, note)
	path := os.Getenv(reportEnv)
	if path == "" {
		return
	}
	line, err := json.Marshal(r)
	if err != nil {
		w.t.Fatalf("report: %v", err)
	}
	reportMu.Lock()
	defer reportMu.Unlock()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		w.t.Fatalf("report: %v", err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "%s\n", line); err != nil {
		w.t.Fatalf("report: %v", err)
	}
}
