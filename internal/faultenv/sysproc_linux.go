package faultenv

import "syscall"

// sysProcAttr makes a child die with the test binary (a go test timeout,
// a crash), so no redis-server or helper outlives the test that started it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
