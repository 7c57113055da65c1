package testenv

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes the kernel kill the server when the test process
// dies without running its cleanups (killed, or its output pipe closed).
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
