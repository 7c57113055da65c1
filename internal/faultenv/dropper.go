package faultenv

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrReplyDropped is the cause of the error a Dropper makes a client see
// when it drops a reply: errors.Is(err, ErrReplyDropped). The error itself
// is a *net.OpError (Op "read", or "write" when the client's writer
// notices first), as a connection reset would be.
var ErrReplyDropped = errors.New("faultenv: reply dropped")

// Dropper loses replies on the client side: the request reaches the
// server and runs, the client never learns the outcome. Put its Dial in
// rueidis.ClientOption.DialCtxFn; every connection the client opens, to
// any node of a cluster, goes through it.
//
// What is dropped is a request write: one Write on a connection, which
// is one flush of the client's buffer and may carry several pipelined
// commands. Writes made only of connection setup and upkeep (HELLO, AUTH,
// CLIENT, SELECT, READONLY, READWRITE, PING, CLUSTER, QUIT) never count
// and are never dropped; Only narrows what counts further. When a write
// is chosen, it goes through to the server whole; from that moment the
// connection delivers nothing more to the client. As soon as the server
// answers anything after the write has completed (or after 200ms, if the
// answer came too soon to tell apart), the connection is closed and the
// client's read fails with ErrReplyDropped. Every command in flight on
// that connection fails with it, as after a real reset: the chosen write's
// commands, which reached the server; any sent before them whose replies
// had not been read, which reached it too; and, under concurrent use, any
// that rueidis had queued for that connection but not written yet, which
// never left the client (rueidis fails its whole queue with the error
// that broke the connection). So the error means "outcome unknown", not
// "it ran"; a lone command on a connection (rueidis's synchronous path)
// always ran.
//
// rueidis retries read-only commands (GET, XRANGE...) on a network error,
// so a drop there is mostly invisible unless the client has DisableRetry;
// writes and scripts (INCR, EVALSHA) return the error.
//
// The random choices of SetRate come from a generator seeded by
// NewDropper, so one goroutine issuing requests in a fixed order sees the
// same drops every run; concurrent requests reach it in a varying order.
type Dropper struct {
	mu      sync.Mutex
	rng     *rand.Rand
	next    int     // writes still to drop (DropNext)
	rate    float64 // probability of dropping a write
	refuse  bool
	only    map[string]bool
	conns   map[*dropConn]struct{}
	stats   DropStats
	closing time.Duration
}

// DropStats counts what a Dropper did.
type DropStats struct {
	Dials    int // connections opened
	Refused  int // dials refused (Refuse)
	Requests int // request writes seen (those that count, see Dropper)
	Dropped  int // request writes whose replies were dropped
	Reset    int // connections closed by Reset
}

// NewDropper returns a Dropper that drops nothing yet; seed drives SetRate.
func NewDropper(seed uint64) *Dropper {
	return &Dropper{
		rng:     rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)),
		conns:   map[*dropConn]struct{}{},
		closing: 200 * time.Millisecond,
	}
}

// Dial dials addr over TCP through the Dropper; the signature is
// rueidis.ClientOption.DialCtxFn's. TLS is not supported.
func (d *Dropper) Dial(ctx context.Context, addr string, dialer *net.Dialer, cfg *tls.Config) (net.Conn, error) {
	d.mu.Lock()
	refuse := d.refuse
	if refuse {
		d.stats.Refused++
	}
	d.mu.Unlock()
	if refuse {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: tcpAddr(addr), Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	if cfg != nil {
		return nil, errors.New("faultenv: Dropper does not support TLS")
	}
	if dialer == nil {
		dialer = &net.Dialer{}
	}
	conn, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &dropConn{Conn: conn, d: d}
	d.mu.Lock()
	d.stats.Dials++
	d.conns[c] = struct{}{}
	d.mu.Unlock()
	return c, nil
}

func tcpAddr(addr string) net.Addr {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil
	}
	p, _ := strconv.Atoi(port)
	return &net.TCPAddr{IP: net.ParseIP(host), Port: p}
}

// DropNext drops the replies of the next n request writes (added to any
// still pending).
func (d *Dropper) DropNext(n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.next += n
}

// SetRate drops each request write with probability p (0 turns it off).
func (d *Dropper) SetRate(p float64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rate = p
}

// Only makes only writes that carry one of the named commands count
// ("EVALSHA", "EVAL"; case does not matter); no names: every command
// counts again.
func (d *Dropper) Only(commands ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.only = nil
	if len(commands) > 0 {
		d.only = map[string]bool{}
		for _, c := range commands {
			d.only[strings.ToUpper(c)] = true
		}
	}
}

// Refuse makes new dials fail, or succeed again, at once with a
// connection-refused error (errors.Is syscall.ECONNREFUSED): the server
// looks down. Open connections are not touched; Reset closes them.
func (d *Dropper) Refuse(on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.refuse = on
}

// Reset closes every open connection, as a network failure would: what
// was in flight gets ErrReplyDropped, with an unknown outcome.
func (d *Dropper) Reset() {
	d.mu.Lock()
	conns := make([]*dropConn, 0, len(d.conns))
	for c := range d.conns {
		conns = append(conns, c)
	}
	d.stats.Reset += len(conns)
	d.mu.Unlock()
	for _, c := range conns {
		c.cut()
	}
}

// Stats returns the counters so far.
func (d *Dropper) Stats() DropStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

// choose decides whether the write p is dropped, and counts it.
func (d *Dropper) choose(p []byte) bool {
	names := commandNames(p)
	if len(names) == 0 {
		return false // a continuation of a large command, or not RESP
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	counts := false
	for _, n := range names {
		if d.only != nil {
			counts = counts || d.only[n]
		} else {
			counts = counts || !setupCommands[n]
		}
	}
	if !counts {
		return false
	}
	d.stats.Requests++
	drop := false
	if d.next > 0 {
		d.next--
		drop = true
	} else if d.rate > 0 && d.rng.Float64() < d.rate {
		drop = true
	}
	if drop {
		d.stats.Dropped++
	}
	return drop
}

var setupCommands = map[string]bool{
	"HELLO": true, "AUTH": true, "CLIENT": true, "SELECT": true, "READONLY": true,
	"READWRITE": true, "PING": true, "CLUSTER": true, "QUIT": true,
}

// commandNames returns the upper-case names of the RESP commands (arrays
// of bulk strings, as clients send them) that p starts with; it stops at
// the first thing it cannot read, such as a command cut off at the end of
// p (its name still counts when complete).
func commandNames(p []byte) []string {
	var names []string
	for len(p) > 0 && p[0] == '*' {
		n, rest, ok := respInt(p[1:])
		if !ok || n < 1 {
			break
		}
		p = rest
		for i := 0; i < n; i++ {
			if len(p) == 0 || p[0] != '$' {
				return names
			}
			l, rest, ok := respInt(p[1:])
			if !ok || l < 0 || len(rest) < l {
				return names
			}
			if i == 0 {
				names = append(names, strings.ToUpper(string(rest[:l])))
			}
			if len(rest) < l+2 {
				return names
			}
			p = rest[l+2:]
		}
	}
	return names
}

// respInt reads "<digits>\r\n".
func respInt(p []byte) (int, []byte, bool) {
	i := bytes.Index(p, []byte("\r\n"))
	if i < 1 || i > 20 {
		return 0, nil, false
	}
	n, err := strconv.Atoi(string(p[:i]))
	if err != nil {
		return 0, nil, false
	}
	return n, p[i+2:], true
}

// dropConn is a connection through a Dropper.
type dropConn struct {
	net.Conn
	d *Dropper

	mu       sync.Mutex
	poisoned bool // a dropped write has started: deliver nothing more
	armed    bool // ...and has completed: the next answer is after it
	dropped  bool // closed by the Dropper
	closed   bool
	timer    *time.Timer
}

func (c *dropConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	poisoned, dropped := c.poisoned, c.dropped
	c.mu.Unlock()
	if dropped {
		// The client's writer may notice before its reader: same error.
		return 0, c.dropErr("write")
	}
	drop := !poisoned && c.d.choose(p)
	if drop {
		c.mu.Lock()
		c.poisoned = true
		c.mu.Unlock()
	}
	n, err := c.Conn.Write(p)
	if err != nil && c.isDropped() {
		err = c.dropErr("write")
	}
	if drop {
		c.mu.Lock()
		c.armed = true
		if !c.closed {
			c.timer = time.AfterFunc(c.d.closing, c.cut)
		}
		c.mu.Unlock()
	}
	return n, err
}

func (c *dropConn) Read(p []byte) (int, error) {
	for {
		n, err := c.Conn.Read(p)
		c.mu.Lock()
		poisoned, armed, dropped := c.poisoned, c.armed, c.dropped
		c.mu.Unlock()
		switch {
		case dropped:
			return 0, c.dropErr("read")
		case !poisoned:
			return n, err
		case err != nil || armed:
			c.cut()
			return 0, c.dropErr("read")
		}
		// Replies that arrived while the dropped write was under way:
		// withheld too, since they may include its own.
	}
}

func (c *dropConn) dropErr(op string) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: ErrReplyDropped}
}

func (c *dropConn) isDropped() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropped
}

// cut closes the connection so that a pending Read fails.
func (c *dropConn) cut() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed, c.dropped, c.poisoned = true, true, true
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
	_ = c.Conn.Close()
	c.d.mu.Lock()
	delete(c.d.conns, c)
	c.d.mu.Unlock()
}

func (c *dropConn) Close() error {
	c.mu.Lock()
	c.closed = true
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
	c.d.mu.Lock()
	delete(c.d.conns, c)
	c.d.mu.Unlock()
	return c.Conn.Close()
}
