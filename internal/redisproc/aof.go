package redisproc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Redis 7 keeps the AOF as several files in appendonlydir: a base (an RDB
// or AOF image), zero or more history files and incremental ("incr")
// files, listed in appendonly.aof.manifest. New writes go to the newest
// incr file. Truncating that file's tail keeps the manifest valid, and
// with aof-load-truncated yes (the default) Redis loads the valid prefix,
// leaving out an incomplete MULTI/EXEC (a script's effects), and trims
// the file. Redis 7.0.15 trims a short read inside a MULTI block to its
// last complete command, not to before the MULTI: the next restart then
// replays that half block with the next one, unless the AOF was rewritten
// in between (BGREWRITEAOF; docs/reliability.md).

const aofDir = "appendonlydir"

// newestIncr returns the path of the incr AOF file new writes go to, from
// the manifest in dir/appendonlydir.
func newestIncr(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, aofDir, "appendonly.aof.manifest"))
	if err != nil {
		return "", fmt.Errorf("redisproc: AOF manifest: %w", err)
	}
	name, seq := "", -1
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		// file <name> seq <n> type <b|h|i>
		if len(f) != 6 || f[0] != "file" || f[2] != "seq" || f[4] != "type" || f[5] != "i" {
			continue
		}
		if n, err := strconv.Atoi(f[3]); err == nil && n > seq {
			name, seq = f[1], n
		}
	}
	if name == "" {
		return "", errors.New("redisproc: AOF manifest lists no incr file")
	}
	return filepath.Join(dir, aofDir, name), nil
}

// CutAOF emulates a torn write: it kills the server (if running), removes
// the last n bytes of the newest incr AOF file (all of it if shorter) and
// restarts the server, which loads the valid prefix. It returns the bytes
// removed.
func (s *Server) CutAOF(n int64) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.needAOF("CutAOF"); err != nil {
		return 0, err
	}
	if err := s.kill(); err != nil {
		return 0, err
	}
	path, err := newestIncr(s.dir)
	if err != nil {
		return 0, err
	}
	size, err := fileSize(path)
	if err != nil {
		return 0, err
	}
	cut := min(n, size)
	if err := os.Truncate(path, size-cut); err != nil {
		return 0, err
	}
	return cut, s.restart()
}

// CutAOFBack emulates a power loss: it kills the server (if running),
// truncates the newest incr AOF file back to the size it had d before the
// call and restarts the server. Everything the server wrote to the file
// in the last d is gone, as if the kernel had not flushed it to disk (with
// appendfsync everysec, Redis acknowledges writes up to about a second
// before they are on disk).
//
// The sizes come from a sampler that records the file's size every 5ms
// while the server runs, so the cut lands up to 5ms earlier than asked
// (never later), and never before the start of the server's last run. It
// returns the bytes removed, and an error when the AOF was rewritten
// (BGREWRITEAOF) since then.
func (s *Server) CutAOFBack(d time.Duration) (int64, error) {
	at := time.Now().Add(-d)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.needAOF("CutAOFBack"); err != nil {
		return 0, err
	}
	if err := s.kill(); err != nil {
		return 0, err
	}
	if s.last == nil {
		return 0, errors.New("redisproc: CutAOFBack: no AOF samples (the server has not run since it was wiped)")
	}
	then := s.last.at(at)
	path, err := newestIncr(s.dir)
	if err != nil {
		return 0, err
	}
	if then.path == "" {
		return 0, errors.New("redisproc: CutAOFBack: no AOF samples")
	}
	if then.path != path {
		return 0, fmt.Errorf("redisproc: CutAOFBack: the AOF was rewritten since then (%s, now %s)", then.path, path)
	}
	size, err := fileSize(path)
	if err != nil {
		return 0, err
	}
	cut := max(size-then.size, 0)
	if err := os.Truncate(path, size-cut); err != nil {
		return 0, err
	}
	return cut, s.restart()
}

// AOFSize returns the size of the newest incr AOF file now.
func (s *Server) AOFSize() (int64, error) {
	path, err := newestIncr(s.dir)
	if err != nil {
		return 0, err
	}
	return fileSize(path)
}

func (s *Server) needAOF(op string) error {
	if s.opts.AOF == "no" {
		return fmt.Errorf("redisproc: %s on %s: the server runs without an AOF", op, s.Addr())
	}
	return nil
}

// AOFSnapshot is a copy of a server's AOF directory, from SnapshotAOF.
type AOFSnapshot struct {
	dir  string
	At   time.Time // when it was taken
	Size int64     // the newest incr file's size then
}

// SnapshotAOF copies the server's AOF directory (manifest, base and incr
// files) while the process is paused, so the copy is one consistent
// moment. Together with RestoreAOF it emulates losing everything written
// after it (failure-modes §4 #2): keep writing, Kill, RestoreAOF.
func (s *Server) SnapshotAOF() (*AOFSnapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.needAOF("SnapshotAOF"); err != nil {
		return nil, err
	}
	if s.cur == nil {
		return nil, fmt.Errorf("redisproc: SnapshotAOF on %s: server is down", s.Addr())
	}
	if !s.paused.Load() {
		if err := s.cur.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			return nil, err
		}
		defer func() { _ = s.cur.cmd.Process.Signal(syscall.SIGCONT) }()
	}
	s.snaps++
	snap := &AOFSnapshot{dir: filepath.Join(s.base, fmt.Sprintf("aof-snapshot-%d", s.snaps)), At: time.Now()}
	if err := copyDir(filepath.Join(s.dir, aofDir), snap.dir); err != nil {
		return nil, fmt.Errorf("redisproc: SnapshotAOF: %w", err)
	}
	if size, err := s.AOFSize(); err == nil {
		snap.Size = size
	}
	return snap, nil
}

// RestoreAOF kills the server (if running), puts the snapshot's AOF
// directory in place of the current one and restarts the server from it.
func (s *Server) RestoreAOF(snap *AOFSnapshot) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.needAOF("RestoreAOF"); err != nil {
		return err
	}
	if err := s.kill(); err != nil {
		return err
	}
	dst := filepath.Join(s.dir, aofDir)
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	if err := copyDir(snap.dir, dst); err != nil {
		return fmt.Errorf("redisproc: RestoreAOF: %w", err)
	}
	s.last = nil
	return s.restart()
}

// copyDir copies the regular files of src into a new directory dst.
func copyDir(src, dst string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	if err := os.Mkdir(dst, 0o755); err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// sampler records the newest incr AOF file's size every few milliseconds,
// for CutAOFBack. It runs while the server runs; its samples outlive it.
type sampler struct {
	dir  string
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	samples []aofSample // in time order; a new one only when the file changes
}

type aofSample struct {
	when time.Time // taken after the stat: the file had at least size by then
	path string
	size int64
}

const (
	sampleEvery = 5 * time.Millisecond
	sampleKeep  = 10 * time.Minute
)

func startSampler(dir string) *sampler {
	s := &sampler{dir: dir, stop: make(chan struct{}), done: make(chan struct{})}
	s.sample()
	go s.run()
	return s
}

func (s *sampler) run() {
	defer close(s.done)
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.sample()
		}
	}
}

func (s *sampler) sample() {
	path, err := newestIncr(s.dir)
	if err != nil {
		return
	}
	size, err := fileSize(path)
	if err != nil {
		return
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.samples); n > 0 && s.samples[n-1].path == path && s.samples[n-1].size == size {
		return
	}
	s.samples = append(s.samples, aofSample{when: now, path: path, size: size})
	// Drop samples older than sampleKeep, keeping the last one before it.
	i := 0
	for i+1 < len(s.samples) && now.Sub(s.samples[i+1].when) > sampleKeep {
		i++
	}
	s.samples = s.samples[i:]
}

// close stops the sampler after one last sample and waits for it.
func (s *sampler) close() {
	select {
	case <-s.stop:
		return
	default:
	}
	close(s.stop)
	<-s.done
	s.sample()
}

// at returns the file as it was at t: the last sample taken at or before
// t, or the first one if t is earlier.
func (s *sampler) at(t time.Time) aofSample {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.samples) == 0 {
		return aofSample{}
	}
	best := s.samples[0]
	for _, x := range s.samples {
		if x.when.After(t) {
			break
		}
		best = x
	}
	return best
}
