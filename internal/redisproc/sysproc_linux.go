package redisproc

import (
	"os/exec"
	"syscall"
)

// DieWithParent makes the kernel kill cmd's process (SIGKILL) when the
// test binary dies without running its cleanups (a go test timeout, a
// crash, its output pipe closed), so no redis-server or helper outlives
// the test that started it. Call it before cmd.Start. Elsewhere than on
// Linux it does nothing.
func DieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
