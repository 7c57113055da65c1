package main

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/keys"
	"github.com/redsource/redsource/internal/redisinfo"
)

// probe is one command redsource uses, sent in a form that changes no
// data: on a key that does not exist, with options that write nothing
// there (NOMKSTREAM, XX), or with arguments the command refuses after the
// ACL check (an odd HSET). Redis checks ACLs (command and key pattern)
// before it runs a command or redirects it to another cluster node, so a
// NOPERM reply means not permitted and any other reply, errors such as
// NOGROUP, MOVED or WRONGTYPE included, means permitted.
type probe struct {
	name   string // as an ACL names it, e.g. "XGROUP CREATE"
	usedBy string
	build  func(b rueidis.Builder, p probeKeys) rueidis.Completed
}

// probeKeys are the keys probes use: a key of the namespace that does not
// exist, and for HSETNX (which writes to a missing key whatever its
// arguments) the namespace's categories hash with a field it already has.
type probeKeys struct {
	missing  string
	sha      string // of no loaded script
	category string // "" when the namespace has none
	catSet   string // the categories hash
}

var probes = []probe{
	{"PING", "projection, cli", func(b rueidis.Builder, _ probeKeys) rueidis.Completed { return b.Arbitrary("PING").Build() }},
	{"TIME", "eventstore, projection", func(b rueidis.Builder, _ probeKeys) rueidis.Completed { return b.Arbitrary("TIME").Build() }},
	{"EVALSHA", "eventstore, projection", func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary("EVALSHA", p.sha, "1").Keys(p.missing).Build()
	}},
	{"EVAL", "eventstore, projection", func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary("EVAL", "return 0", "1").Keys(p.missing).Build()
	}},
	{"EVALSHA_RO", "eventstore (reads)", func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary("EVALSHA_RO", p.sha, "1").Keys(p.missing).Build()
	}},
	{"EVAL_RO", "eventstore (reads)", func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary("EVAL_RO", "#!lua flags=no-writes\nreturn 0", "1").Keys(p.missing).Build()
	}},
	{"LLEN", "eventstore", key1("LLEN")},
	{"LRANGE", "eventstore", func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary("LRANGE").Keys(p.missing).Args("0", "0").Build()
	}},
	{"LINDEX", "eventstore", func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary("LINDEX").Keys(p.missing).Args("-1").Build()
	}},
	{"RPUSH", "eventstore", nil}, // built in permissions: needs a category
	{"XADD", "eventstore, projection", func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary("XADD").Keys(p.missing).Args("NOMKSTREAM", "*", "f", "v").Build()
	}},
	{"XLEN", "eventstore, projection, cli", key1("XLEN")},
	{"XRANGE", "eventstore, projection", func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary("XRANGE").Keys(p.missing).Args("-", "+", "COUNT", "1").Build()
	}},
	{"XREVRANGE", "eventstore, projection, cli", func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary("XREVRANGE").Keys(p.missing).Args("+", "-", "COUNT", "1").Build()
	}},
	{"XDEL", "eventstore, projection", func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary("XDEL").Keys(p.missing).Args("0-1").Build()
	}},
	{"XREAD", "cli (tail)", func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary("XREAD", "COUNT", "1", "STREAMS").Keys(p.missing).Args("0-0").Build()
	}},
	{"XREADGROUP", "projection", func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary("XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "STREAMS").Keys(p.missing).Args(">").Build()
	}},
	{"XACK", "projection", func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary("XACK").Keys(p.missing).Args("g", "0-1").Build()
	}},
	{"XCLAIM", "projection", func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary("XCLAIM").Keys(p.missing).Args("g", "c", "0", "0-1").Build()
	}},
	{"XPENDING", "projection", func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary("XPENDING").Keys(p.missing).Args("g").Build()
	}},
	{"XINFO GROUPS", "projection, cli", func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary("XINFO", "GROUPS").Keys(p.missing).Build()
	}},
	{"XGROUP CREATE", "projection", func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary("XGROUP", "CREATE").Keys(p.missing).Args("g", "0").Build() // no MKSTREAM
	}},
	{"XGROUP SETID", "projection", func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary("XGROUP", "SETID").Keys(p.missing).Args("g", "0").Build()
	}},
	{"XGROUP DESTROY", "projection", func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary("XGROUP", "DESTROY").Keys(p.missing).Args("g").Build()
	}},
	{"SET", "eventstore, projection", func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary("SET").Keys(p.missing).Args("v", "XX").Build()
	}},
	{"GET", "eventstore, projection, cli", key1("GET")},
	{"DEL", "projection, snapshot", key1("DEL")},
	{"EXISTS", "projection", key1("EXISTS")},
	{"PEXPIRE", "projection", func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary("PEXPIRE").Keys(p.missing).Args("1").Build()
	}},
	{"HSETNX", "eventstore", nil}, // built in permissions: needs a category
	{"HKEYS", "eventstore, cli", key1("HKEYS")},
	{"HSET", "projection, snapshot", func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary("HSET").Keys(p.missing).Args("f1", "v1", "f2").Build() // odd: refused after the ACL check
	}},
	{"HGET", "projection", func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary("HGET").Keys(p.missing).Args("f").Build()
	}},
	{"HGETALL", "snapshot", key1("HGETALL")},
	{"HDEL", "projection", func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary("HDEL").Keys(p.missing).Args("f").Build()
	}},
	{"ZADD", "projection", func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary("ZADD").Keys(p.missing).Args("XX", "1", "m").Build()
	}},
	{"ZREM", "projection", func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary("ZREM").Keys(p.missing).Args("m").Build()
	}},
	{"ZREMRANGEBYSCORE", "projection", func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary("ZREMRANGEBYSCORE").Keys(p.missing).Args("1", "0").Build() // an empty range
	}},
	{"ZCARD", "projection", key1("ZCARD")},
	{"MEMORY USAGE", "cli (categories)", func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary("MEMORY", "USAGE").Keys(p.missing).Build()
	}},
}

// clusterProbe is the command rueidis learns a cluster's slots with
// (CLUSTER SHARDS from Redis 8 on).
var clusterProbe = probe{"CLUSTER SLOTS", "rueidis (cluster topology)", func(b rueidis.Builder, _ probeKeys) rueidis.Completed {
	return b.Arbitrary("CLUSTER", "SLOTS").Build()
}}

var clusterShardsProbe = probe{"CLUSTER SHARDS", "rueidis (cluster topology, Redis 8+)", func(b rueidis.Builder, _ probeKeys) rueidis.Completed {
	return b.Arbitrary("CLUSTER", "SHARDS").Build()
}}

func key1(cmd string) func(rueidis.Builder, probeKeys) rueidis.Completed {
	return func(b rueidis.Builder, p probeKeys) rueidis.Completed {
		return b.Arbitrary(cmd).Keys(p.missing).Build()
	}
}

// aclLine is the least a redsource user needs, with the namespace's key
// pattern.
func aclLine(user, ns string, cluster bool) string {
	line := fmt.Sprintf("ACL SETUSER %s on ~%s:* -@all +@read +@write +@stream +@connection +@scripting -@dangerous +time", user, ns)
	if cluster {
		line += " +cluster|slots +cluster|shards"
	}
	return line
}

func (d *doctor) probeKeys(ctx context.Context) (probeKeys, error) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	suffix := hex.EncodeToString(b[:])
	sum := sha1.Sum([]byte("redsource doctor probe " + suffix))
	p := probeKeys{
		missing: d.ns + ":doctor:probe:" + suffix,
		sha:     hex.EncodeToString(sum[:]),
		catSet:  keys.Layout{NS: d.ns}.Categories(),
	}
	// The probe key must not exist: a probe such as DEL would change it.
	n, err := d.rc.Do(ctx, d.rc.B().Exists().Key(p.missing).Build()).AsInt64()
	if err == nil && n > 0 {
		return p, fmt.Errorf("the probe key %s exists; run doctor again", p.missing)
	}
	if cats, err := d.rc.Do(ctx, d.rc.B().Hkeys().Key(p.catSet).Build()).AsStrSlice(); err == nil && len(cats) > 0 {
		slices.Sort(cats)
		p.category = cats[0]
	}
	return p, nil
}

// dryRun asks ACL DRYRUN whether user may run a command. It fails when
// this user may not run ACL DRYRUN (most restricted users).
func dryRun(ctx context.Context, c rueidis.Client, user string, cmd ...string) (bool, error) {
	reply, err := c.Do(ctx, c.B().Arbitrary("ACL", "DRYRUN", user).Args(cmd...).Build()).ToString()
	if err != nil {
		return false, err
	}
	// OK, or a sentence saying why not.
	return reply == "OK", nil
}

// probeResult is what one node said to the probes.
type probeResult struct {
	denied      []probe // NOPERM
	unavailable []probe // unknown command: disabled or renamed
	unchecked   []string
	failed      error // the node did not answer
}

func (d *doctor) checkPermissions(ctx context.Context) {
	pk, err := d.probeKeys(ctx)
	if err != nil {
		for _, n := range d.up() {
			d.add("permissions", n.Addr, "?", verdictUnknown, err.Error())
		}
		return
	}
	user := "default"
	if opt, err := rueidis.ParseURL(d.cli.g.redisURL); err == nil && opt.Username != "" {
		user = opt.Username
	}
	for _, n := range d.up() {
		cluster := d.rc.Mode() == rueidis.ClientModeCluster || n.info["cluster_enabled"] == "1"
		res := d.probeNode(ctx, n, pk, user, cluster)
		total := len(probes)
		if cluster {
			total++
		}
		switch {
		case res.failed != nil:
			d.add("permissions", n.Addr, "?", verdictUnknown, "the probes failed: "+res.failed.Error())
		case len(res.denied)+len(res.unavailable) > 0:
			var parts, fix []string
			if len(res.denied) > 0 {
				parts = append(parts, "not permitted: "+probeNames(res.denied))
				var plus []string
				for _, p := range res.denied {
					plus = append(plus, "+"+strings.ToLower(strings.ReplaceAll(p.name, " ", "|")))
				}
				fix = append(fix, fmt.Sprintf("allow them, on the namespace's keys (ACL SETUSER %s %s ~%s:*), or give the user the line: %s",
					user, strings.Join(plus, " "), d.ns, aclLine(user, d.ns, cluster)))
			}
			if len(res.unavailable) > 0 {
				parts = append(parts, "not available (disabled or renamed): "+probeNames(res.unavailable))
				fix = append(fix, "redsource cannot work without them: enable them on the server")
			}
			d.add("permissions", n.Addr, strings.Join(parts, "; "), verdictUnsafe, strings.Join(fix, "; "))
		case len(res.unchecked) > 0:
			d.add("permissions", n.Addr, fmt.Sprintf("%d of %d commands permitted; not checked: %s", total-len(res.unchecked), total, strings.Join(res.unchecked, "; ")),
				verdictUnknown, "run doctor again after the first append, or with the --namespace of a store in use")
		default:
			d.add("permissions", n.Addr, fmt.Sprintf("all %d commands redsource uses are permitted on ~%s:*", total, d.ns), verdictOK, "")
		}
	}
}

func probeNames(ps []probe) string {
	var names []string
	for _, p := range ps {
		names = append(names, p.name+" ("+p.usedBy+")")
	}
	return strings.Join(names, ", ")
}

func (d *doctor) probeNode(ctx context.Context, n *nodeState, pk probeKeys, user string, cluster bool) probeResult {
	var res probeResult
	list := slices.Clone(probes)
	if cluster {
		if major, _, _ := strings.Cut(n.info["redis_version"], "."); len(major) > 1 || major >= "8" {
			list = append(list, clusterShardsProbe)
		} else {
			list = append(list, clusterProbe)
		}
	}
	b := n.Client.B()
	var sent []probe
	var cmds rueidis.Commands
	for _, p := range list {
		if p.build == nil { // HSETNX, RPUSH: they write to a missing key
			if pk.category == "" {
				// Nothing to probe them on without writing: only ACL
				// DRYRUN can tell, if this user may run it.
				switch allowed, err := dryRun(ctx, n.Client, user, p.name, pk.catSet, "x", "1"); {
				case err != nil:
					res.unchecked = append(res.unchecked, p.name+" (no category in namespace "+d.ns+" yet, and checking it without one would write)")
				case !allowed:
					res.denied = append(res.denied, p)
				}
				continue
			}
			if p.name == "RPUSH" {
				cmds = append(cmds, b.Arbitrary("RPUSH").Keys(pk.catSet).Args("x").Build()) // the categories hash: WRONGTYPE, after the ACL check
			} else {
				cmds = append(cmds, b.Arbitrary("HSETNX").Keys(pk.catSet).Args(pk.category, "0").Build()) // a field it has: no change
			}
		} else {
			cmds = append(cmds, p.build(b, pk))
		}
		sent = append(sent, p)
	}
	for i, r := range n.Client.DoMulti(ctx, cmds...) {
		err := r.Error()
		switch {
		case err == nil || rueidis.IsRedisNil(err):
		case redisinfo.NoPerm(err):
			res.denied = append(res.denied, sent[i])
		case redisinfo.UnknownCommand(err):
			res.unavailable = append(res.unavailable, sent[i])
		default:
			if _, isRedis := rueidis.IsRedisErr(err); !isRedis {
				res.failed = fmt.Errorf("%s: %w", sent[i].name, err)
				return res
			}
		}
	}
	return res
}

// checkClock compares the newest entry of every partition log of the
// namespace with the clock of the node that holds it: entry IDs are the
// server's milliseconds, so an ID ahead of the clock means the clock went
// back (Redis keeps IDs increasing, but times derived from them are off).
func (d *doctor) checkClock(ctx context.Context) {
	logs, listErr := d.logKeys(ctx)
	for _, n := range d.up() {
		if n.info["role"] == "slave" {
			continue // a replica's log IDs are its master's
		}
		now, err := n.Client.Do(ctx, n.Client.B().Time().Build()).ToArray()
		var nowMs int64
		if err == nil && len(now) == 2 {
			sec, _ := now[0].AsInt64()
			usec, _ := now[1].AsInt64()
			nowMs = sec*1000 + usec/1000
		}
		switch {
		case err != nil:
			d.add("clock", n.Addr, "?", verdictUnknown, notAllowed(namedErr{"TIME", err}))
			continue
		case listErr != nil:
			d.add("clock", n.Addr, "server time "+formatTime(time.UnixMilli(nowMs)), verdictUnknown,
				"cannot list the logs of namespace "+d.ns+": "+listErr.Error())
			continue
		}
		newest, newestKey, err := newestEntry(ctx, n.Client, logs)
		serverTime := "server time " + formatTime(time.UnixMilli(nowMs))
		switch {
		case err != nil:
			d.add("clock", n.Addr, serverTime, verdictUnknown, "cannot read the logs: "+err.Error())
		case newestKey == "":
			d.add("clock", n.Addr, serverTime+"; no events of namespace "+d.ns+" here", verdictOK, "")
		case int64(newest.Ms)-nowMs > clockAheadWarnMs:
			ahead := time.Duration(int64(newest.Ms)-nowMs) * time.Millisecond
			d.add("clock", n.Addr, fmt.Sprintf("%s; the newest event (%s in %s) is %s ahead", serverTime, newest, newestKey, formatDuration(ahead)), verdictWarn,
				"the server clock went back (or the log's last ID was set ahead): positions stay increasing, but --from/--to times and the recorded_at of new events are off by that much until the clock catches up; check the clock (NTP)")
		default:
			d.add("clock", n.Addr, fmt.Sprintf("%s; the newest event is %s older", serverTime, formatDuration(time.Duration(nowMs-int64(newest.Ms))*time.Millisecond)), verdictOK, "")
		}
	}
}

// logKeys lists the partition logs of the namespace (read only: the
// partition counts come from GET, not Store.Partitions, which records one
// for a category that has none).
func (d *doctor) logKeys(ctx context.Context) ([]string, error) {
	store, err := eventstore.New(d.rc, eventstore.Config{Namespace: d.ns})
	if err != nil {
		return nil, err
	}
	cats, err := store.Categories(ctx)
	if err != nil {
		return nil, err
	}
	var logs []string
	for _, cat := range cats {
		n, err := d.cli.recordedPartitions(ctx, cat)
		if err != nil {
			return nil, err
		}
		for p := range n {
			logs = append(logs, store.LogKey(cat, p))
		}
	}
	return logs, nil
}

// newestEntry returns the newest entry among the logs this node holds:
// the others answer MOVED (a cluster) and are left to their own node.
func newestEntry(ctx context.Context, c rueidis.Client, logs []string) (eventstore.Position, string, error) {
	var newest eventstore.Position
	var newestKey string
	if len(logs) == 0 {
		return newest, "", nil
	}
	cmds := make(rueidis.Commands, len(logs))
	for i, k := range logs {
		cmds[i] = c.B().Xrevrange().Key(k).End("+").Start("-").Count(1).Build()
	}
	for i, r := range c.DoMulti(ctx, cmds...) {
		entries, err := r.AsXRange()
		if isMoved(err) {
			continue
		}
		if err != nil {
			return newest, "", fmt.Errorf("%s: %w", logs[i], err)
		}
		if len(entries) == 0 {
			continue
		}
		pos, err := eventstore.ParsePosition(entries[0].ID)
		if err != nil {
			return newest, "", fmt.Errorf("%s: %w", logs[i], err)
		}
		if newestKey == "" || newest.Compare(pos) < 0 {
			newest, newestKey = pos, logs[i]
		}
	}
	return newest, newestKey, nil
}
