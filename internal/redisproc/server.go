package redisproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Options configure a private redis-server. The zero value is a standalone
// server without persistence that refuses writes when memory is full
// (there is no limit unless MaxMemory is set).
type Options struct {
	// AOF is the append-only file's fsync policy: "always", "everysec", or
	// "no" (also the empty string), which turns the AOF off (appendonly
	// no). Automatic AOF rewrites are off, so the files only change when a
	// test asks (BGREWRITEAOF).
	AOF string
	// Save is Redis's save directive (RDB snapshots), e.g. "3600 1". Empty:
	// no snapshots.
	Save string
	// MaxMemory is Redis's maxmemory, e.g. "4mb". Empty: no limit.
	MaxMemory string
	// Policy is the maxmemory-policy. Empty: "noeviction".
	Policy string
	// ReplicaOf makes the server a replica of another private server;
	// Start returns once the replication link is up.
	ReplicaOf *Server
	// Cluster enables cluster mode (nodes.conf in the data directory); the
	// cluster bus uses port+10000. StartCluster sets it.
	Cluster bool
	// NodeTimeout is cluster-node-timeout, with Cluster. Zero: 2s.
	NodeTimeout time.Duration
	// Args are extra redis-server arguments ("--name", "value", ...),
	// after the harness's own, so they override them.
	Args []string
	// StartTimeout bounds each start and restart: until the server
	// answers PING and has loaded its data. Zero: 30s.
	StartTimeout time.Duration
}

func (o Options) withDefaults() Options {
	if o.AOF == "" {
		o.AOF = "no"
	}
	if o.Policy == "" {
		o.Policy = "noeviction"
	}
	if o.NodeTimeout == 0 {
		o.NodeTimeout = 2 * time.Second
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 30 * time.Second
	}
	return o
}

func (o Options) validate() error {
	switch o.AOF {
	case "always", "everysec", "no":
	default:
		return fmt.Errorf("redisproc: Options.AOF %q: want always, everysec or no", o.AOF)
	}
	if o.ReplicaOf != nil && o.Cluster {
		return errors.New("redisproc: Options.ReplicaOf and Cluster together: cluster replicas come from StartCluster")
	}
	return nil
}

// Server is a redis-server process that a test started, in its own
// directory on its own loopback port. Every fault acts on that process by
// its PID; nothing else is ever signalled. Its methods are safe for
// concurrent use; lifecycle changes (Kill, Restart, CutAOF...) run one at
// a time.
type Server struct {
	tb   testing.TB // the test that started it
	opts Options
	bin  string
	base string // the test's temp dir: the data dir, the log, snapshots
	dir  string // Redis's working directory (data files, nodes.conf)
	log  string
	out  string // the process's stdout and stderr (errors before the log opens)
	port int

	mu      sync.Mutex // serializes lifecycle changes
	cur     *proc      // the running process; nil when down
	last    *sampler   // the AOF samples of the last run, kept after it ends
	snaps   int
	paused  atomic.Bool
	running atomic.Bool
	nodeID  atomic.Value // string: cluster node ID
}

// proc is one run of redis-server.
type proc struct {
	cmd     *exec.Cmd
	done    chan struct{} // closed once the process has exited and been reaped
	err     error         // its exit status, once done is closed
	out     *os.File
	sampler *sampler // nil without AOF
}

// Start starts a private redis-server and stops it (SIGKILL) when the test
// ends. The binary is $REDSOURCE_REDIS_SERVER, else /usr/bin/redis-server,
// else redis-server from PATH; Redis 7.0 or later. Start fails the test
// when the server does not come up.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	s, err := newServer(tb, opts)
	if err == nil {
		err = s.boot(context.Background())
	}
	if err != nil {
		tb.Fatalf("%v", err)
	}
	return s
}

// newServer prepares a Server (directory, cleanup) without starting it:
// what must happen on the test's goroutine.
func newServer(tb testing.TB, opts Options) (*Server, error) {
	tb.Helper()
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	bin, err := redisBinary("REDSOURCE_REDIS_SERVER", "redis-server", "")
	if err != nil {
		return nil, err
	}
	base := tb.TempDir() // before Cleanup: the server stops before its dir is removed
	s := &Server{tb: tb, opts: opts, bin: bin, base: base, dir: filepath.Join(base, "data"),
		log: filepath.Join(base, "redis.log"), out: filepath.Join(base, "redis.out")}
	if err := os.Mkdir(s.dir, 0o755); err != nil {
		return nil, err
	}
	tb.Cleanup(func() {
		if tb.Failed() && s.port != 0 {
			tb.Logf("redisproc: redis-server %s (dir %s), last log lines:\n%s", s.Addr(), s.dir, s.LogTail(20))
		}
		if err := s.Kill(); err != nil {
			tb.Errorf("%v", err)
		}
	})
	return s, nil
}

// boot picks a free port and starts the server, trying another port when
// someone else took the one it picked.
func (s *Server) boot(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	for range 5 {
		if s.port, err = freePort(s.opts.Cluster); err != nil {
			return err
		}
		if err = s.launch(ctx); !errors.Is(err, errAddrInUse) {
			break
		}
	}
	if err != nil {
		return err
	}
	if m := s.opts.ReplicaOf; m != nil {
		ctx, cancel := context.WithTimeout(ctx, s.opts.StartTimeout)
		defer cancel()
		if err := waitFor(ctx, 10*time.Millisecond, "replica "+s.Addr()+" linking to "+m.Addr(), func() (bool, error) {
			info, err := doString(ctx, s.Addr(), "INFO", "replication")
			if err != nil {
				return false, err
			}
			st := infoField(info, "master_link_status")
			return st == "up", fmt.Errorf("master_link_status:%s", st)
		}); err != nil {
			return err
		}
	}
	return nil
}

var errAddrInUse = errors.New("address in use")

// args is the server's command line: every setting the harness relies on
// is explicit, then the caller's Args.
func (s *Server) args() []string {
	o := s.opts
	a := []string{
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--dir", s.dir, "--logfile", s.log, "--daemonize", "no", "--pidfile", "",
		"--save", o.Save,
		"--appenddirname", "appendonlydir", "--appendfilename", "appendonly.aof",
		"--auto-aof-rewrite-percentage", "0",
		"--maxmemory-policy", o.Policy,
		"--enable-debug-command", "local",
		// Replicas sync at once instead of waiting for others to join.
		"--repl-diskless-sync-delay", "0",
	}
	if o.AOF == "no" {
		a = append(a, "--appendonly", "no")
	} else {
		a = append(a, "--appendonly", "yes", "--appendfsync", o.AOF)
	}
	if o.MaxMemory != "" {
		a = append(a, "--maxmemory", o.MaxMemory)
	}
	if o.ReplicaOf != nil {
		a = append(a, "--replicaof", "127.0.0.1", strconv.Itoa(o.ReplicaOf.Port()))
	}
	if o.Cluster {
		a = append(a, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", strconv.FormatInt(o.NodeTimeout.Milliseconds(), 10),
			// CLUSTER SLOTS lists a replica once its node has seen the
			// replica's offset move, on the master's pings: every second
			// instead of every 10 s, so StartCluster is ready sooner.
			"--repl-ping-replica-period", "1")
	}
	return append(a, o.Args...)
}

// launch starts the process on s.port and waits until it has loaded its
// data. s.mu is held.
func (s *Server) launch(ctx context.Context) error {
	out, err := os.OpenFile(s.out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	logStart, _ := fileSize(s.log)
	// Output to a file, not a pipe: a fork child of a killed server (an
	// AOF rewrite, a replica sync) cannot then hold up Wait.
	cmd := exec.Command(s.bin, s.args()...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = out, out
	DieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("redisproc: start %s: %w", s.bin, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{}), out: out}
	go func() {
		p.err = cmd.Wait()
		out.Close()
		close(p.done)
	}()
	s.cur = p
	s.running.Store(true)
	s.paused.Store(false)

	ctx, cancel := context.WithTimeout(ctx, s.opts.StartTimeout)
	defer cancel()
	start := time.Now()
	err = waitFor(ctx, 5*time.Millisecond, "redis-server "+s.Addr()+" to load", func() (bool, error) {
		select {
		case <-p.done:
			return false, giveUp{fmt.Errorf("exited (%v)", p.err)}
		default:
		}
		r, err := s.Do(ctx, "PING")
		var se serverError
		if errors.As(err, &se) && !strings.HasPrefix(string(se), "LOADING") {
			// Up, but the harness may not look (NOAUTH: requirepass in
			// Args): there is no loading flag to wait for.
			return true, nil
		}
		if err != nil || r != "PONG" {
			return false, fmt.Errorf("PING: %v %v", r, err)
		}
		info, err := doString(ctx, s.Addr(), "INFO", "persistence")
		if err != nil {
			return false, err
		}
		return infoField(info, "loading") == "0", errors.New("loading")
	})
	if err != nil {
		s.reap(p)
		tail := s.tailSince(logStart, 15)
		if strings.Contains(tail, "Address already in use") {
			return fmt.Errorf("redisproc: port %d: %w", s.port, errAddrInUse)
		}
		return fmt.Errorf("%w after %v; log:\n%s", err, time.Since(start).Round(time.Millisecond), tail)
	}
	if s.opts.AOF != "no" {
		p.sampler = startSampler(s.dir)
	}
	return nil
}

// reap kills p and waits for it; s.mu is held.
func (s *Server) reap(p *proc) error {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	err := waitDone(p, 10*time.Second)
	s.ended(p)
	return err
}

// ended records that p is over; s.mu is held.
func (s *Server) ended(p *proc) {
	if p.sampler != nil {
		p.sampler.close()
		s.last = p.sampler
	}
	if s.cur == p {
		s.cur = nil
		s.running.Store(false)
		s.paused.Store(false)
	}
}

func waitDone(p *proc, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		return fmt.Errorf("redisproc: redis-server pid %d did not exit within %v", p.cmd.Process.Pid, d)
	}
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL is a redis:// URL for rueidis.ParseURL, as the default user.
func (s *Server) URL() string { return "redis://" + s.Addr() }

// UserURL is URL with an ACL user's credentials (set up with ACL SETUSER).
func (s *Server) UserURL(user, password string) string {
	u := url.URL{Scheme: "redis", User: url.UserPassword(user, password), Host: s.Addr()}
	return u.String()
}

// Port is the server's TCP port; it keeps it across restarts.
func (s *Server) Port() int { return s.port }

// Dir is the server's data directory (appendonlydir, dump.rdb, nodes.conf).
func (s *Server) Dir() string { return s.dir }

// PID is the running process's ID, 0 when the server is down.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return 0
	}
	return s.cur.cmd.Process.Pid
}

// Running reports whether the process is up (it may be paused).
func (s *Server) Running() bool { return s.running.Load() }

// Paused reports whether the process is stopped by Pause.
func (s *Server) Paused() bool { return s.paused.Load() }

// Do sends one command on a fresh connection and returns the reply:
// string, int64, []any, nil, or an error (a server error reply included).
// It is for the test's own checks and settings (CONFIG SET, DEBUG, INFO);
// the code under test uses its own client.
func (s *Server) Do(ctx context.Context, args ...string) (any, error) {
	return do(ctx, s.Addr(), args...)
}

// Command runs one command for a test's set-up or checks (CONFIG SET, ACL
// SETUSER, INFO, ROLE), as Do does, and returns the reply as text: the
// elements of an array one per line, "" for a null. An error fails the
// test.
func (s *Server) Command(tb testing.TB, args ...string) string {
	tb.Helper()
	r, err := s.Do(context.Background(), args...)
	if err != nil {
		tb.Fatalf("redisproc: %s on %s: %v", strings.Join(args, " "), s.Addr(), err)
	}
	return replyText(r)
}

// LogTail returns the last n lines of the server's log (and of its
// output, where errors before the log opens go), for failure messages.
func (s *Server) LogTail(n int) string {
	return s.tailSince(0, n)
}

func (s *Server) tailSince(from int64, n int) string {
	out := tailLines(s.log, from, n)
	if extra := tailLines(s.out, 0, n); extra != "" {
		out += "\n[output]\n" + extra
	}
	return out
}

// Kill sends SIGKILL and waits for the process to exit: a crash. Data not
// yet written to the AOF is lost; with appendfsync everysec or always,
// what reached the file survives (the kernel still has it). A server
// that is down already is left as it is.
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kill()
}

func (s *Server) kill() error {
	p := s.cur
	if p == nil {
		return nil
	}
	if err := s.reap(p); err != nil {
		return err
	}
	return nil
}

// Stop shuts the server down cleanly (SIGTERM; a paused server is resumed
// first) and waits for it to exit, at most 15s before SIGKILL and an error.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.cur
	if p == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if err := waitDone(p, 15*time.Second); err != nil {
		_ = s.reap(p)
		return fmt.Errorf("%w on SIGTERM; killed", err)
	}
	s.ended(p)
	return nil
}

// Pause stops the process (SIGSTOP): connections stay open, commands
// hang until Resume. A cluster's other nodes see a paused node fail after
// the node timeout. A server still paused when its test ends is resumed
// then, before the cleanups registered ahead of Pause (a namespace's, say)
// run and hang on it.
func (s *Server) Pause() error {
	if err := s.signal(syscall.SIGSTOP, true); err != nil {
		return err
	}
	s.tb.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.cur != nil && s.paused.Load() {
			_ = s.cur.cmd.Process.Signal(syscall.SIGCONT)
			s.paused.Store(false)
		}
	})
	return nil
}

// Resume continues a paused process (SIGCONT).
func (s *Server) Resume() error { return s.signal(syscall.SIGCONT, false) }

func (s *Server) signal(sig syscall.Signal, paused bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return fmt.Errorf("redisproc: %s: server is down", s.Addr())
	}
	if err := s.cur.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("redisproc: %s: %v: %w", s.Addr(), sig, err)
	}
	s.paused.Store(paused)
	return nil
}

// Restart starts the server again after Kill or Stop, on the same port
// and directory with the same settings, and waits until it has loaded its
// data. It fails if the server is running.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restart()
}

func (s *Server) restart() error {
	if s.cur != nil {
		return fmt.Errorf("redisproc: restart %s: still running (Kill or Stop it first)", s.Addr())
	}
	return s.launch(context.Background())
}

// Wipe kills the server, deletes its data files (the AOF directory and
// the RDB file) and starts it again empty: a restart without persistence.
// A cluster node keeps nodes.conf, so it rejoins as the same node.
func (s *Server) Wipe() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.kill(); err != nil {
		return err
	}
	for _, f := range []string{"appendonlydir", "dump.rdb"} {
		if err := os.RemoveAll(filepath.Join(s.dir, f)); err != nil {
			return err
		}
	}
	s.last = nil
	return s.restart()
}

// redisBinary finds a Redis program: $env, then /usr/bin/name (or next to
// sibling), then PATH.
func redisBinary(env, name, sibling string) (string, error) {
	if p := os.Getenv(env); p != "" {
		return p, nil
	}
	cands := []string{"/usr/bin/" + name}
	if sibling != "" {
		cands = append([]string{filepath.Join(filepath.Dir(sibling), name)}, cands...)
	}
	for _, c := range cands {
		if st, err := os.Stat(c); err == nil && !st.IsDir() {
			return c, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("redisproc: no %s (set $%s): %w", name, env, err)
	}
	return p, nil
}

// freePort returns a loopback port nobody listens on right now (and, for a
// cluster node, whose bus port, +10000, is free too). Someone may take it
// before Redis binds it; boot then tries another.
func freePort(cluster bool) (int, error) {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !cluster {
			return port, nil
		}
		if port+10000 > 65535 {
			continue
		}
		if b, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+10000))); err == nil {
			b.Close()
			return port, nil
		}
	}
	return 0, errors.New("redisproc: no free port pair (port, port+10000) found")
}

func fileSize(path string) (int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// tailLines returns the last n lines of path from offset from on.
func tailLines(path string, from int64, n int) string {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < from {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b[from:]), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
