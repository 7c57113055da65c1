package redisproc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// The harness talks to its servers over a throwaway connection per command
// in RESP2, never through rueidis: no client goroutines outlive a call, a
// paused server costs one deadline, and nothing here shares a connection
// with the code under test.

// adminTimeout bounds one admin command when the context has no earlier
// deadline.
const adminTimeout = 2 * time.Second

// serverError is an error reply ("-ERR ...") from a server.
type serverError string

func (e serverError) Error() string { return string(e) }

// do sends one command to addr and returns its reply: string (simple or
// bulk), int64, []any, nil (null), or a serverError as the error.
func do(ctx context.Context, addr string, args ...string) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	dl, _ := ctx.Deadline()
	if err := conn.SetDeadline(dl); err != nil {
		return nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return nil, err
	}
	return readReply(bufio.NewReader(conn))
}

// doString is do for commands whose reply is a string (INFO, CLUSTER
// NODES, PING).
func doString(ctx context.Context, addr string, args ...string) (string, error) {
	r, err := do(ctx, addr, args...)
	if err != nil {
		return "", err
	}
	s, ok := r.(string)
	if !ok {
		return "", fmt.Errorf("redisproc: %s %s: reply %T, want a string", addr, args[0], r)
	}
	return s, nil
}

func readReply(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 3 || !strings.HasSuffix(line, "\r\n") {
		return nil, errors.New("redisproc: malformed reply line")
	}
	kind, body := line[0], line[1:len(line)-2]
	switch kind {
	case '+':
		return body, nil
	case '-':
		return nil, serverError(body)
	case ':':
		return strconv.ParseInt(body, 10, 64)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = readReply(r); err != nil {
				var se serverError
				if !errors.As(err, &se) {
					return nil, err
				}
				out[i] = se
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("redisproc: unexpected reply type %q", kind)
}

// replyText is a reply as text: an array's elements one per line, "" for
// a null.
func replyText(r any) string {
	switch r := r.(type) {
	case nil:
		return ""
	case []any:
		parts := make([]string, len(r))
		for i, e := range r {
			parts[i] = replyText(e)
		}
		return strings.Join(parts, "\n")
	}
	return fmt.Sprint(r)
}

// infoField returns field's value in an INFO or CLUSTER INFO reply.
func infoField(info, field string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r"), field+":"); ok {
			return v
		}
	}
	return ""
}

// waitFor polls cond every interval until it returns true or ctx ends. An
// error from cond is the reason it is not true yet, reported if ctx ends
// first; a giveUp error ends the wait at once.
func waitFor(ctx context.Context, interval time.Duration, what string, cond func() (bool, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		var g giveUp
		if errors.As(err, &g) {
			return fmt.Errorf("redisproc: %s: %w", what, g.error)
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("redisproc: %s: %w (last: %v)", what, ctx.Err(), last)
			}
			return fmt.Errorf("redisproc: %s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}

// giveUp is a cond error that ends a waitFor at once.
type giveUp struct{ error }
