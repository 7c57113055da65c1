package faultsuite

// Result is one scenario's figures, as a test writes them to
// $REDSOURCE_FAULT_REPORT (one JSON object a line) and
// scripts/fault-report.go reads them to print docs/reliability.md's table.
type Result struct {
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
	Passed     bool    `json:"passed"`
	// Defects are the product defects the test reported (see defect).
	Defects []string `json:"defects,omitempty"`
}
