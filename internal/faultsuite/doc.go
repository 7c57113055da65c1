// Package faultsuite is redsource's fault suite: one test per fault
// scenario, each against its own redis-server processes (package
// faultenv) and its own PostgreSQL schema, with concurrent writers and,
// where it matters, a projection runner feeding a ledger read model.
// Each test injects its fault under load, then checks what the log kept
// against what the writers were told (faultenv.History) and what the
// read model holds against a fold of the log.
//
// The property every scenario asserts is the same: every acknowledged
// append is in the log or its loss is detected by a typed error matching
// eventstore.ErrDataLoss (a partition stopped with
// projection.ErrLogRegressed, a *eventstore.NamespaceError); the only
// loss allowed to go undetected is of events that nothing durable had
// seen, and it is reported as such; no retry appends twice; no append is
// stored in part; and the read model equals a fold of the log wherever
// its projector is not stopped.
//
// Run it with
//
//	go test -race -count=1 -run TestFault ./internal/faultsuite/
//
// Each test logs its figures; with REDSOURCE_FAULT_REPORT=<path> it also
// appends them to that file as a JSON line, from which
// scripts/fault-report.go prints the table of docs/reliability.md. The
// soak test (build tag soak) runs random faults for -soak.duration.
//
// The package holds tests only.
package faultsuite
