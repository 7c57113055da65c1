package faultenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/redsource/redsource/internal/redisproc"
	"github.com/redsource/redsource/internal/testenv"
)

// helperEnv names the helper a child process runs.
const helperEnv = "FAULTENV_HELPER"

// Helpers maps helper names to the functions a child process runs; the
// function's result is the process's exit code.
type Helpers map[string]func() int

// RunHelper turns this test binary into a helper process when Spawn
// started it: it runs the helper the environment names and exits with its
// result. Otherwise it returns at once. Call it first in TestMain:
//
//	var helpers = faultenv.Helpers{"writer": writerMain}
//
//	func TestMain(m *testing.M) {
//		faultenv.RunHelper(helpers)
//		testenv.VerifyTestMain(m)
//	}
//
// A name missing from helpers exits with code 2 and a message, so a typo
// never runs the test suite inside the child.
func RunHelper(helpers Helpers) {
	name, ok := os.LookupEnv(helperEnv)
	if !ok {
		return
	}
	fn := helpers[name]
	if fn == nil {
		fmt.Fprintf(os.Stderr, "faultenv: no helper %q in this test binary\n", name)
		os.Exit(2)
	}
	os.Exit(fn())
}

// Process is a helper process started by Spawn.
type Process struct {
	Name   string
	Stdout *testenv.Buffer
	Stderr *testenv.Buffer

	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // exit status, once done is closed
}

// Spawn starts this test binary again as the named helper (see RunHelper),
// with the parent's environment plus env ("KEY=value"). The process is
// killed, if still running, when the test ends, and its output logged if
// the test failed. It fails the test if the process cannot start.
func Spawn(tb testing.TB, name string, env ...string) *Process {
	tb.Helper()
	// -test.run=^$: should TestMain lack RunHelper, the child runs no tests.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), helperEnv+"="+name), env...)
	p := &Process{Name: name, Stdout: &testenv.Buffer{}, Stderr: &testenv.Buffer{}, cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.Stdout, p.Stderr
	redisproc.DieWithParent(cmd)
	// A grandchild holding the output pipes must not hold up Wait.
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		tb.Fatalf("faultenv: spawn helper %q: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	tb.Cleanup(func() {
		_ = p.Kill()
		if tb.Failed() {
			tb.Logf("faultenv: helper %q (pid %d) %v\nstdout:\n%s\nstderr:\n%s", name, p.PID(), p.err, p.Stdout, p.Stderr)
		}
	})
	return p
}

// PID is the process's ID.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Kill sends SIGKILL and waits for the process to exit. Killing a process
// that has exited already does nothing.
func (p *Process) Kill() error {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := p.Wait(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("faultenv: helper %q (pid %d) did not exit on SIGKILL", p.Name, p.PID())
	}
	return nil
}

// Signal sends sig (SIGTERM for a clean stop, say).
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Pause stops the process (SIGSTOP).
func (p *Process) Pause() error { return p.cmd.Process.Signal(syscall.SIGSTOP) }

// Resume continues a paused process (SIGCONT).
func (p *Process) Resume() error { return p.cmd.Process.Signal(syscall.SIGCONT) }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait waits for the process to exit and returns its exit status (nil
// for code 0, an *exec.ExitError otherwise), or ctx's error.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ExitCode is the process's exit code once it has exited (-1 when killed
// by a signal), or -1 while it runs.
func (p *Process) ExitCode() int {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	default:
		return -1
	}
}
