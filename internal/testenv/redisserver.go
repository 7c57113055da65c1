package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// redisServerBinary is the redis-server that StartRedisServer runs:
// $REDSOURCE_REDIS_SERVER (as for scripts/services.sh), else the system's.
func redisServerBinary() string { return envOr("REDSOURCE_REDIS_SERVER", "/usr/bin/redis-server") }

// RedisServer is a redis-server process that one test started, for
// settings that must not be made on the shared server (eviction policy,
// persistence, ACL users, cluster mode). It listens on a free loopback
// port, keeps its files in a temporary directory and is stopped by PID
// when the test ends.
type RedisServer struct {
	Port int
	Dir  string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

// Addr is "127.0.0.1:<port>".
func (s *RedisServer) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// URL is the server's redis:// URL, as the default user; userinfo, if
// given, is "user:password".
func (s *RedisServer) URL(userinfo ...string) string {
	if len(userinfo) > 0 {
		return "redis://" + userinfo[0] + "@" + s.Addr() + "/0"
	}
	return "redis://" + s.Addr() + "/0"
}

// StartRedisServer starts a redis-server with persistence off and the
// given extra arguments (e.g. "--maxmemory-policy", "allkeys-lru"), waits
// until it answers PING and stops it when the test ends.
func StartRedisServer(tb testing.TB, args ...string) *RedisServer {
	tb.Helper()
	dir := tb.TempDir()
	var lastErr error
	// A free port can be taken between the probe and the server's bind:
	// try a few.
	for range 5 {
		port, err := freePort(hasArg(args, "--cluster-enabled"))
		if err != nil {
			tb.Fatalf("testenv: free port: %v", err)
		}
		s, err := startRedisServer(dir, port, args)
		if err == nil {
			tb.Cleanup(s.stop)
			return s
		}
		lastErr = err
	}
	tb.Fatalf("testenv: start redis-server: %v", lastErr)
	return nil
}

func startRedisServer(dir string, port int, args []string) (*RedisServer, error) {
	logFile := filepath.Join(dir, "redis-"+strconv.Itoa(port)+".log")
	base := []string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no",
		"--dir", dir, "--logfile", logFile,
	}
	if hasArg(args, "--cluster-enabled") {
		base = append(base, "--cluster-config-file", "nodes-"+strconv.Itoa(port)+".conf")
	}
	cmd := exec.Command(redisServerBinary(), append(base, args...)...)
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &RedisServer{Port: port, Dir: dir, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := ping(s.Addr()); err == nil {
			return s, nil
		} else if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("redis-server on port %d does not answer: %v%s", port, err, logTail(logFile))
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("redis-server on port %d exited at start%s", port, logTail(logFile))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Pause stops the process (SIGSTOP) until Resume: a server that hangs.
// A test that ends before it resumes the server resumes it at cleanup
// (before the cleanups registered earlier, such as a namespace's).
func (s *RedisServer) Pause(tb testing.TB) {
	tb.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		tb.Fatalf("testenv: SIGSTOP redis-server %d: %v", s.cmd.Process.Pid, err)
	}
	tb.Cleanup(func() { _ = s.cmd.Process.Signal(syscall.SIGCONT) })
}

// Resume continues a paused process (SIGCONT).
func (s *RedisServer) Resume(tb testing.TB) {
	tb.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		tb.Fatalf("testenv: SIGCONT redis-server %d: %v", s.cmd.Process.Pid, err)
	}
}

// stop ends the process by PID. SIGKILL: its data is thrown away with its
// directory, and a SIGTERM can take seconds (Redis refuses to exit while
// it writes its first AOF, and waits for lagging replicas).
func (s *RedisServer) stop() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// ping waits for a reply to PING: an error reply other than LOADING
// (NOAUTH, say) still means the server is up.
func ping(addr string) error {
	_, err := command(addr, "PING")
	var re replyError
	if errors.As(err, &re) && !strings.HasPrefix(string(re), "LOADING") {
		return nil
	}
	return err
}

// freePort returns a loopback port nobody listens on; with bus, port +
// 10000 (the cluster bus) is free too.
func freePort(bus bool) (int, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !bus {
			return port, nil
		}
		if port+10000 > 65535 {
			continue
		}
		lb, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+10000))
		if err != nil {
			continue
		}
		lb.Close()
		return port, nil
	}
	return 0, errors.New("no free port pair for a cluster node")
}

func hasArg(args []string, name string) bool {
	for _, a := range args {
		if a == name {
			return true
		}
	}
	return false
}

func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return "\nlog:\n" + string(b)
}

// StartRedisCluster starts a Redis Cluster of masters cluster-enabled
// redis-servers, each with replicas replicas, joined with
// `redis-cli --cluster create`, and waits until every node reports
// cluster_state:ok with all 16384 slots assigned and every replica is in
// sync. The processes are stopped when the test ends. redis-cli decides
// which nodes become masters.
func StartRedisCluster(tb testing.TB, masters, replicas int, args ...string) []*RedisServer {
	tb.Helper()
	total := masters * (1 + replicas)
	nodes := make([]*RedisServer, total)
	addrs := make([]string, total)
	for i := range nodes {
		nodes[i] = StartRedisServer(tb, append([]string{"--cluster-enabled", "yes", "--cluster-node-timeout", "5000", "--repl-ping-replica-period", "1", "--repl-diskless-sync-delay", "0"}, args...)...)
		addrs[i] = nodes[i].Addr()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	createArgs := append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if out, err := exec.CommandContext(ctx, "redis-cli", createArgs...).CombinedOutput(); err != nil {
		tb.Fatalf("testenv: redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, n := range nodes {
		for {
			info, err := command(n.Addr(), "CLUSTER", "INFO")
			ready := err == nil && strings.Contains(info, "cluster_state:ok") &&
				strings.Contains(info, "cluster_slots_assigned:16384") &&
				strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(total))
			if ready {
				// Clients learn the topology from CLUSTER SLOTS, which lists
				// a replica only once the node has seen its replication
				// offset move (the master's pings, every
				// repl-ping-replica-period).
				var listed int
				listed, err = slotNodes(n.Addr())
				ready = err == nil && listed == total
				info += fmt.Sprintf("\nCLUSTER SLOTS lists %d of %d nodes", listed, total)
			}
			if ready {
				break
			}
			select {
			case <-ctx.Done():
				tb.Fatalf("testenv: cluster node %s not ready: %v\n%s", n.Addr(), err, info)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nodes
}

// slotNodes counts the distinct nodes (masters and replicas) that
// CLUSTER SLOTS on addr lists.
func slotNodes(addr string) (int, error) {
	v, err := call(addr, "CLUSTER", "SLOTS")
	if err != nil {
		return 0, err
	}
	ids := map[string]bool{}
	ranges, _ := v.([]any)
	for _, r := range ranges {
		entry, _ := r.([]any)
		for i := 2; i < len(entry); i++ {
			if node, ok := entry[i].([]any); ok && len(node) > 2 {
				ids[fmt.Sprint(node[2])] = true
			}
		}
	}
	return len(ids), nil
}

// Do runs one command on the server as the default user and returns its
// reply as text (array elements one per line): for test set-up such as
// ACL SETUSER. An error reply fails the test.
func (s *RedisServer) Do(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := command(s.Addr(), args...)
	if err != nil {
		tb.Fatalf("testenv: %s on %s: %v", strings.Join(args, " "), s.Addr(), err)
	}
	return out
}

// command sends one command and returns its reply as text, array
// elements one per line.
func command(addr string, args ...string) (string, error) {
	v, err := call(addr, args...)
	if err != nil {
		return "", err
	}
	return flatten(v), nil
}

func flatten(v any) string {
	if a, ok := v.([]any); ok {
		parts := make([]string, len(a))
		for i, e := range a {
			parts[i] = flatten(e)
		}
		return strings.Join(parts, "\n")
	}
	return fmt.Sprint(v)
}

// call sends one command over a fresh connection (RESP2, the default
// user) and reads the reply: a string, an int64, nil or a []any.
func call(addr string, args ...string) (any, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return nil, err
	}
	return readReply(bufio.NewReader(c))
}

// replyError is an error reply of the server.
type replyError string

func (e replyError) Error() string { return string(e) }

func readReply(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty reply line")
	}
	switch line[0] {
	case '+':
		return line[1:], nil
	case ':':
		return strconv.ParseInt(line[1:], 10, 64)
	case '-':
		return nil, replyError(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return nil, err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return nil, err
		}
		elems := make([]any, 0, n)
		for range n {
			e, err := readReply(r)
			if err != nil {
				return nil, err
			}
			elems = append(elems, e)
		}
		return elems, nil
	}
	return nil, fmt.Errorf("unexpected reply %q", line)
}
