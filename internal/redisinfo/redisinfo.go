// Package redisinfo reads what a Redis deployment is configured to do:
// which nodes a client reaches and which of them are masters, INFO and
// CONFIG GET per node, and the eviction policy of every node.
//
// It is meant for a start-up guard of the event store and is what
// `redsource doctor` and the test helpers that walk every master use. Managed
// Redis services often refuse CONFIG (or rename it) and ACL users may be
// refused INFO; the functions say so with an error that [Refused]
// recognises, so that a caller can report "not allowed to look" instead of
// failing.
//
// A [Node]'s Client belongs to the client it came from: do not close it.
package redisinfo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/redis/rueidis"
)

// Node is one server a client talks to.
type Node struct {
	Addr string
	// Client sends commands to this node only. It shares the connection
	// of the client it came from, which owns it.
	Client rueidis.Client
}

// Nodes returns every node the client knows, sorted by address: for a
// plain client the one server, for a cluster client every master and
// replica of its slot map (c.Nodes()).
func Nodes(c rueidis.Client) []Node {
	m := c.Nodes()
	nodes := make([]Node, 0, len(m))
	for addr, nc := range m {
		nodes = append(nodes, Node{Addr: addr, Client: nc})
	}
	slices.SortFunc(nodes, func(a, b Node) int { return strings.Compare(a.Addr, b.Addr) })
	return nodes
}

// Masters returns the nodes that hold keys for writing: what anything that
// lists keys (SCAN) must walk, one cursor per node. A client that knows
// one node gets that node whatever its role. Otherwise each node is asked
// its role (ROLE, else INFO replication); a node that may be asked
// neither is kept, because walking a replica as well costs a little time
// while leaving out a master leaves keys behind. A node that does not
// answer is an error.
func Masters(ctx context.Context, c rueidis.Client) ([]Node, error) {
	nodes := Nodes(c)
	if len(nodes) <= 1 {
		return nodes, nil
	}
	masters := nodes[:0:0]
	for _, n := range nodes {
		role, err := Role(ctx, n.Client)
		switch {
		case Refused(err):
			masters = append(masters, n)
		case err != nil:
			return nil, fmt.Errorf("redisinfo: role of %s: %w", n.Addr, err)
		case role == "master":
			masters = append(masters, n)
		}
	}
	return masters, nil
}

// Role returns the node's replication role: "master", "slave" or
// "sentinel". It asks ROLE and falls back to INFO replication when ROLE is
// refused; when both are refused the error is ROLE's ([Refused] is true).
func Role(ctx context.Context, c rueidis.Client) (string, error) {
	reply, err := c.Do(ctx, c.B().Role().Build()).ToArray()
	if err == nil {
		if len(reply) == 0 {
			return "", errors.New("redisinfo: empty ROLE reply")
		}
		return reply[0].ToString()
	}
	if !Refused(err) {
		return "", err
	}
	info, ierr := Info(ctx, c, "replication")
	if ierr != nil {
		return "", err
	}
	if role, ok := info["role"]; ok {
		return role, nil
	}
	return "", errors.New("redisinfo: INFO replication has no role field")
}

// Info runs INFO with the given sections (all default sections when none)
// and returns its fields. Section headers and blank lines are dropped;
// values are as Redis prints them (replica lines such as slave0 keep their
// "ip=…,port=…" form, see [Fields]).
func Info(ctx context.Context, c rueidis.Client, sections ...string) (map[string]string, error) {
	var cmd rueidis.Completed
	if len(sections) == 0 {
		cmd = c.B().Info().Build()
	} else {
		cmd = c.B().Info().Section(sections...).Build()
	}
	text, err := c.Do(ctx, cmd).ToString()
	if err != nil {
		return nil, err
	}
	return ParseInfo(text), nil
}

// ParseInfo parses the text of an INFO (or CLUSTER INFO) reply.
func ParseInfo(text string) map[string]string {
	// Over RESP3 the reply is a verbatim string, which rueidis hands over
	// with its format prefix.
	text = strings.TrimPrefix(text, "txt:")
	fields := map[string]string{}
	for line := range strings.Lines(text) {
		line = strings.TrimRight(line, "\r\n")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = v
		}
	}
	return fields
}

// Fields splits an INFO value of the form "ip=10.0.0.2,port=6379,offset=42"
// into its parts.
func Fields(v string) map[string]string {
	out := map[string]string{}
	for part := range strings.SplitSeq(v, ",") {
		if k, val, ok := strings.Cut(part, "="); ok {
			out[k] = val
		}
	}
	return out
}

// ErrNoSuchParameter is returned by Config for a parameter the server does
// not have.
var ErrNoSuchParameter = errors.New("redisinfo: no such config parameter")

// Config returns one parameter of CONFIG GET.
func Config(ctx context.Context, c rueidis.Client, param string) (string, error) {
	m, err := Configs(ctx, c, param)
	if err != nil {
		return "", err
	}
	v, ok := m[param]
	if !ok {
		return "", fmt.Errorf("%w: %q", ErrNoSuchParameter, param)
	}
	return v, nil
}

// Configs returns several parameters with one CONFIG GET (Redis 7.0+);
// a parameter the server does not have is missing from the map.
func Configs(ctx context.Context, c rueidis.Client, params ...string) (map[string]string, error) {
	return c.Do(ctx, c.B().ConfigGet().Parameter(params...).Build()).AsStrMap()
}

// Policy is one node's maxmemory-policy.
type Policy struct {
	Addr  string
	Value string // "noeviction", "allkeys-lru", …; empty when Err is set
	// Source says where Value was read: "CONFIG GET maxmemory-policy" or,
	// when CONFIG is refused, "INFO memory".
	Source string
	Err    error // neither source could be read
}

// EvictionPolicies returns the maxmemory-policy of every node (see
// [Nodes]), read from CONFIG GET and, where CONFIG is refused (ACL NOPERM,
// or a managed service that disables or renames it), from the
// maxmemory_policy field of INFO memory. Err is set for a node where
// neither is allowed or the node does not answer.
func EvictionPolicies(ctx context.Context, c rueidis.Client) []Policy {
	nodes := Nodes(c)
	out := make([]Policy, len(nodes))
	for i, n := range nodes {
		out[i] = EvictionPolicy(ctx, n)
	}
	return out
}

// EvictionPolicy is EvictionPolicies for one node.
func EvictionPolicy(ctx context.Context, n Node) Policy {
	p := Policy{Addr: n.Addr}
	v, err := Config(ctx, n.Client, "maxmemory-policy")
	if err == nil {
		p.Value, p.Source = v, "CONFIG GET maxmemory-policy"
		return p
	}
	if !Refused(err) {
		p.Err = fmt.Errorf("CONFIG GET maxmemory-policy: %w", err)
		return p
	}
	info, ierr := Info(ctx, n.Client, "memory")
	switch {
	case ierr != nil:
		p.Err = fmt.Errorf("CONFIG GET maxmemory-policy: %w; INFO memory: %w", err, ierr)
	case info["maxmemory_policy"] == "":
		p.Err = fmt.Errorf("CONFIG GET maxmemory-policy: %w; INFO memory has no maxmemory_policy", err)
	default:
		p.Value, p.Source = info["maxmemory_policy"], "INFO memory"
	}
	return p
}

// Evicting reports whether a maxmemory-policy may evict any key, events
// included: allkeys-lru, allkeys-lfu and allkeys-random. The volatile-*
// policies evict only keys with a TTL (redsource's events have none, its
// leases do: see [EvictsExpiring]).
func Evicting(policy string) bool {
	switch policy {
	case "allkeys-lru", "allkeys-lfu", "allkeys-random":
		return true
	}
	return false
}

// EvictsExpiring reports whether a maxmemory-policy evicts keys that have
// a TTL before they expire (volatile-lru, volatile-lfu, volatile-random,
// volatile-ttl): events are safe, but projection leases and membership
// keys can vanish under memory pressure, which moves partitions between
// workers early.
func EvictsExpiring(policy string) bool {
	return strings.HasPrefix(policy, "volatile-")
}

// Refused reports whether err says the command may not be run here: an
// ACL NOPERM reply, or an unknown command (a managed service that
// disables or renames CONFIG, say). Such a node is not broken; the caller
// is only not allowed to look.
func Refused(err error) bool {
	return NoPerm(err) || UnknownCommand(err)
}

// NoPerm reports whether err is an ACL NOPERM reply (the user may not run
// the command, or not on that key).
func NoPerm(err error) bool { return errorCode(err) == "NOPERM" }

// UnknownCommand reports whether err is Redis's reply to a command it does
// not have (disabled, renamed, or newer than the server).
func UnknownCommand(err error) bool {
	re, ok := redisError(err)
	if !ok {
		return false
	}
	// Redis has no distinct error code for it: the reply is
	// "ERR unknown command 'X', with args beginning with: …" ("ERR
	// unknown subcommand" for a container command), and rueidis drops the
	// "ERR " of generic errors.
	msg := strings.TrimPrefix(re.Error(), "ERR ")
	return strings.HasPrefix(msg, "unknown command") || strings.HasPrefix(msg, "unknown subcommand")
}

// errorCode is the first word of a Redis error reply, the code by which
// the protocol classifies errors (NOPERM, WRONGTYPE, NOSCRIPT, …).
func errorCode(err error) string {
	re, ok := redisError(err)
	if !ok {
		return ""
	}
	code, _, _ := strings.Cut(re.Error(), " ")
	return code
}

// redisError finds an error reply of the server in err's chain.
func redisError(err error) (*rueidis.RedisError, bool) {
	var re *rueidis.RedisError
	if !errors.As(err, &re) {
		return nil, false
	}
	return rueidis.IsRedisErr(re)
}
