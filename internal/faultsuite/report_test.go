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

// scenario describes one row of the table.
type scenario struct {
	Name, Injected, Property string
}

var reportMu sync.Mutex

// report logs a scenario's figures and keeps them for the report file.
// unseen counts lost events the scenario found that no durable memory
// had seen (allowed to go undetected).
func (w *world) report(sc scenario, rep *faultenv.Report, unseen int, note string) {
	w.t.Helper()
	w.result = &Result{
		Scenario: sc.Name, Test: w.t.Name(), Ops: rep.Operations, Acked: rep.Acknowledged, Lost: rep.Lost,
		Duplicated: rep.Duplicated, Detected: rep.Detected, Note: note, Injected: sc.Injected, Property: sc.Property,
		Unknown: rep.Unknown, Unseen: unseen,
	}
	w.t.Logf("%s: %s", sc.Name, rep)
	w.t.Logf("%s: %s", sc.Name, note)
}

// defect fails the test with a finding about the code under test (not
// the harness), which also goes into the report line.
func (w *world) defect(format string, args ...any) {
	w.t.Helper()
	msg := fmt.Sprintf(format, args...)
	w.defects = append(w.defects, msg)
	w.t.Error(msg)
}

// writeResult appends the scenario's line to $REDSOURCE_FAULT_REPORT,
// if set, once the test is over: its figures, if it got that far, and
// whether it passed.
func (w *world) writeResult() {
	path := os.Getenv(reportEnv)
	if path == "" {
		return
	}
	r := w.result
	if r == nil {
		r = &Result{Scenario: w.sc.Name, Test: w.t.Name(), Injected: w.sc.Injected, Property: w.sc.Property,
			Note: "failed before its figures were taken"}
	}
	r.Passed = !w.t.Failed()
	r.Defects = w.defects
	r.Seconds = time.Since(w.start).Round(10 * time.Millisecond).Seconds()
	line, err := json.Marshal(r)
	if err != nil {
		w.t.Errorf("report: %v", err)
		return
	}
	reportMu.Lock()
	defer reportMu.Unlock()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		w.t.Errorf("report: %v", err)
		return
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "%s\n", line); err != nil {
		w.t.Errorf("report: %v", err)
	}
}
