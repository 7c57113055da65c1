package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/redsource/redsource/internal/redisinfo"
)

var doctorCommand = &command{
	name:    "doctor",
	summary: "check that Redis is set up to keep an event store safe",
	help: `Checks, on every node of the deployment (every master and replica of a
cluster), what matters for an event store and says ok, warn, unsafe or
unknown for each, with what to do:

  maxmemory-policy     allkeys-* may evict events (unsafe); volatile-* may
                       evict leases (warn); noeviction is ok
  appendonly, appendfsync, no-appendfsync-on-rewrite,
  aof_last_write_status, rdb_last_bgsave_status
                       whether an acknowledged event survives a restart
                       or a power loss
  maxmemory, used_memory
                       a limit, and room below it
  replicas, replica, replication
                       replicas and how far behind they are
  cluster, cluster-require-full-coverage
                       cluster state and slot coverage
  permissions          whether this user may run every command redsource
                       uses, on keys of --namespace (probed without
                       changing data)
  clock                the server clock against the newest event of
                       --namespace

A check the user may not make (INFO or CONFIG refused, as for a
restricted ACL user or on managed services) is unknown: it does not fail
the run, and its FIX says why. Exit 4 when any check is unsafe, else 0.`,
	example: `  redsource doctor
  redsource doctor --namespace bank --json`,
	setup: func(*flag.FlagSet) runFunc { return runDoctor },
}

// Verdicts of a check.
const (
	verdictOK      = "ok"
	verdictWarn    = "warn"
	verdictUnsafe  = "unsafe"
	verdictUnknown = "unknown" // not allowed to look; never fails the run
)

// checkJSON is one row of `doctor`: one check on one node. The field names
// are a contract (docs/cli.md).
type checkJSON struct {
	Check   string `json:"check"`
	Node    string `json:"node"`
	Value   string `json:"value"`
	Verdict string `json:"verdict"`
	Fix     string `json:"fix"`
}

// doctorJSON is the output of `doctor --json`.
type doctorJSON struct {
	Checks   []checkJSON `json:"checks"`
	Unsafe   int         `json:"unsafe"`
	Warnings int         `json:"warnings"`
	Unknown  int         `json:"unknown"`
}

// checkOrder is the order of the checks in the output; checks of one
// rank keep the order they were made in.
var checkOrder = map[string]int{
	"node": 0, "maxmemory-policy": 1, "appendonly": 2, "appendfsync": 3, "no-appendfsync-on-rewrite": 4,
	"aof_last_write_status": 5, "rdb_last_bgsave_status": 6, "maxmemory": 7, "used_memory": 8,
	"replicas": 9, "replica": 9, "replication": 9, "cluster": 10, "cluster-require-full-coverage": 10,
	"permissions": 11, "clock": 12,
}

// Thresholds, documented in docs/cli.md.
const (
	usedMemoryWarnPercent = 90
	replicaBehindWarn     = 1 << 20 // bytes of replication stream
	replicaLagWarnSeconds = 10      // seconds since the replica's last ack
	clockAheadWarnMs      = 1000
)

func runDoctor(ctx context.Context, c *cli, _ []string) error {
	rc, err := c.redis(ctx)
	if err != nil {
		return err
	}
	d := &doctor{cli: c, rc: rc, ns: c.g.namespace}
	d.gather(ctx)
	d.checkNodes()
	d.checkEviction(ctx)
	d.checkPersistence()
	d.checkMemory()
	d.checkReplication()
	d.checkCluster(ctx)
	d.checkPermissions(ctx)
	d.checkClock(ctx)
	// One check's rows together, node after node; a master's replica rows
	// stay with it.
	slices.SortStableFunc(d.checks, func(a, b checkJSON) int { return checkOrder[a.Check] - checkOrder[b.Check] })

	out := doctorJSON{Checks: d.checks}
	var unsafe []string
	for _, ch := range d.checks {
		switch ch.Verdict {
		case verdictUnsafe:
			out.Unsafe++
			unsafe = append(unsafe, ch.Check+" on "+ch.Node)
		case verdictWarn:
			out.Warnings++
		case verdictUnknown:
			out.Unknown++
		}
	}
	if c.g.json {
		if err := writeJSON(c.stdout, out); err != nil {
			return err
		}
	} else if err := printChecks(c, out.Checks); err != nil {
		return err
	}
	fmt.Fprintf(c.stderr, "%d unsafe, %s, %d unknown\n", out.Unsafe, plural(out.Warnings, "warning", "warnings"), out.Unknown)
	if out.Unknown > 0 {
		fmt.Fprintf(c.stderr, "%s could not be made (see FIX: mostly not allowed to look); unknown checks do not fail the run\n", plural(out.Unknown, "check", "checks"))
	}
	if out.Unsafe > 0 {
		return &exitError{code: exitUnsafe, msg: "unsafe: " + strings.Join(unsafe, ", ")}
	}
	return nil
}

func printChecks(c *cli, checks []checkJSON) error {
	tw := newTable(c.stdout)
	fmt.Fprintln(tw, "CHECK\tNODE\tVERDICT\tVALUE\tFIX")
	for _, ch := range checks {
		fix := ch.Fix
		if fix == "" {
			fix = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", ch.Check, ch.Node, ch.Verdict, oneLine(ch.Value), oneLine(fix))
	}
	return tw.Flush()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// doctor is one run: the nodes and what they said, and the checks made.
type doctor struct {
	cli    *cli
	rc     rueidis.Client
	ns     string
	nodes  []*nodeState
	checks []checkJSON
}

// nodeState is what one node answered.
type nodeState struct {
	redisinfo.Node
	down      error // PING failed: the node does not answer
	info      map[string]string
	infoErr   error
	config    map[string]string
	configErr error
}

// configParams are read with one CONFIG GET per node.
var configParams = []string{
	"maxmemory-policy", "maxmemory", "appendonly", "appendfsync", "no-appendfsync-on-rewrite",
	"save", "cluster-require-full-coverage",
}

// nodeTimeout bounds the wait for a node's PING: a node that hangs is
// reported, not waited for.
const nodeTimeout = 5 * time.Second

func (d *doctor) gather(ctx context.Context) {
	for _, n := range redisinfo.Nodes(d.rc) {
		st := &nodeState{Node: n}
		d.nodes = append(d.nodes, st)
		pctx, cancel := context.WithTimeout(ctx, nodeTimeout)
		err := n.Client.Do(pctx, n.Client.B().Ping().Build()).Error()
		cancel()
		if err != nil && !redisinfo.Refused(err) {
			st.down = err
			continue
		}
		st.info, st.infoErr = redisinfo.Info(ctx, n.Client, "server", "memory", "persistence", "replication", "cluster")
		st.config, st.configErr = redisinfo.Configs(ctx, n.Client, configParams...)
	}
}

func (d *doctor) add(check, node, value, verdict, fix string) {
	d.checks = append(d.checks, checkJSON{Check: check, Node: node, Value: value, Verdict: verdict, Fix: fix})
}

// up returns the nodes that answer.
func (d *doctor) up() []*nodeState {
	var out []*nodeState
	for _, n := range d.nodes {
		if n.down == nil {
			out = append(out, n)
		}
	}
	return out
}

func (d *doctor) checkNodes() {
	for _, n := range d.nodes {
		if n.down != nil {
			d.add("node", n.Addr, "does not answer: "+n.down.Error(), verdictUnsafe,
				"a node that does not answer holds slots (or a copy of them) that cannot be read or written; bring it back or fail it over")
			continue
		}
		if n.infoErr != nil {
			d.add("node", n.Addr, "answers (role and version unknown)", verdictOK, "")
			continue
		}
		value := n.info["role"] + ", Redis " + n.info["redis_version"]
		if n.info["cluster_enabled"] == "1" {
			value += ", cluster"
		}
		d.add("node", n.Addr, value, verdictOK, "")
	}
}

// setting returns a parameter from CONFIG GET, else from INFO (infoField,
// converted by conv when given), else why it is unknown.
func (n *nodeState) setting(param, infoField string, conv func(string) string) (value string, unknown string) {
	if n.configErr == nil {
		if v, ok := n.config[param]; ok {
			return v, ""
		}
	}
	if infoField != "" && n.infoErr == nil {
		if v, ok := n.info[infoField]; ok {
			if conv != nil {
				v = conv(v)
			}
			return v, ""
		}
	}
	if infoField == "" {
		return "", notAllowed(namedErr{"CONFIG GET", n.configErr})
	}
	return "", notAllowed(namedErr{"CONFIG GET", n.configErr}, namedErr{"INFO", n.infoErr})
}

type namedErr struct {
	cmd string
	err error
}

// notAllowed says why a value could not be read.
func notAllowed(errs ...namedErr) string {
	var parts []string
	refused := false
	for _, e := range errs {
		switch {
		case e.err == nil:
			parts = append(parts, e.cmd+" does not report it")
		case redisinfo.NoPerm(e.err):
			parts = append(parts, e.cmd+" is refused for this user (NOPERM)")
			refused = true
		case redisinfo.UnknownCommand(e.err):
			parts = append(parts, e.cmd+" is not available on this server (disabled or renamed, as on managed services)")
			refused = true
		default:
			parts = append(parts, e.cmd+" failed: "+e.err.Error())
		}
	}
	msg := strings.Join(parts, "; ")
	if refused {
		msg = "not allowed to look: " + msg + "; run doctor as a user that may run CONFIG GET and INFO, or check the setting with your provider"
	}
	return msg
}

func (d *doctor) checkEviction(ctx context.Context) {
	for _, n := range d.up() {
		p := redisinfo.EvictionPolicy(ctx, n.Node)
		if p.Err != nil {
			_, why := n.setting("maxmemory-policy", "maxmemory_policy", nil)
			d.add("maxmemory-policy", n.Addr, "?", verdictUnknown, why)
			continue
		}
		value := p.Value
		if p.Source != "CONFIG GET maxmemory-policy" {
			value += " (from " + p.Source + ")"
		}
		switch {
		case p.Value == "noeviction":
			d.add("maxmemory-policy", n.Addr, value, verdictOK, "")
		case redisinfo.Evicting(p.Value):
			d.add("maxmemory-policy", n.Addr, value, verdictUnsafe,
				"set maxmemory-policy noeviction: this policy evicts any key when memory is full, events included (with maxmemory 0 it evicts nothing today, but will once a limit is set); with noeviction a full Redis refuses appends instead")
		case redisinfo.EvictsExpiring(p.Value):
			d.add("maxmemory-policy", n.Addr, value, verdictWarn,
				"set maxmemory-policy noeviction: events have no TTL and are safe, but projection leases and membership keys have one and may be evicted under memory pressure, which moves partitions between workers early")
		default:
			d.add("maxmemory-policy", n.Addr, value, verdictWarn, "unknown policy; set maxmemory-policy noeviction")
		}
	}
}

func (d *doctor) checkPersistence() {
	for _, n := range d.up() {
		aof, why := n.setting("appendonly", "aof_enabled", func(v string) string {
			if v == "1" {
				return "yes"
			}
			return "no"
		})
		switch aof {
		case "":
			d.add("appendonly", n.Addr, "?", verdictUnknown, why)
		case "yes":
			d.add("appendonly", n.Addr, aof, verdictOK, "")
		default:
			fix := "set appendonly yes: without the AOF a restart loses every event written since the last RDB snapshot"
			if save, ok := n.config["save"]; ok && n.configErr == nil && strings.TrimSpace(save) == "" {
				fix = "set appendonly yes: without the AOF, and with no RDB snapshots (save \"\"), a restart loses every event"
			}
			d.add("appendonly", n.Addr, aof, verdictUnsafe, fix)
		}
		if aof != "no" {
			d.checkFsync(n)
		}
		for _, f := range []struct{ field, fix string }{
			{"aof_last_write_status", "the last write to the AOF failed (disk full or failing?): Redis refuses writes until a write succeeds, and acknowledged events may not be on disk; see the Redis log"},
			{"rdb_last_bgsave_status", "the last RDB snapshot failed (disk full or failing?): with stop-writes-on-bgsave-error yes (the default) Redis refuses writes; see the Redis log"},
		} {
			switch v, ok := n.info[f.field]; {
			case n.infoErr != nil:
				d.add(f.field, n.Addr, "?", verdictUnknown, notAllowed(namedErr{"INFO", n.infoErr}))
			case !ok:
				d.add(f.field, n.Addr, "?", verdictUnknown, "INFO persistence does not report it")
			case v == "ok":
				d.add(f.field, n.Addr, v, verdictOK, "")
			default:
				d.add(f.field, n.Addr, v, verdictUnsafe, f.fix)
			}
		}
	}
}

func (d *doctor) checkFsync(n *nodeState) {
	switch v, why := n.setting("appendfsync", "", nil); v {
	case "":
		d.add("appendfsync", n.Addr, "?", verdictUnknown, why)
	case "always":
		d.add("appendfsync", n.Addr, v, verdictOK, "")
	case "everysec":
		d.add("appendfsync", n.Addr, v, verdictWarn,
			"a power loss or kernel crash loses about the last second of acknowledged appends (a crash of Redis alone loses nothing); appendfsync always closes that window at a throughput cost")
	default:
		d.add("appendfsync", n.Addr, v, verdictWarn,
			"the kernel decides when the AOF reaches the disk (about every 30 s on Linux): a power loss or kernel crash loses that much of acknowledged appends; set appendfsync everysec or always")
	}
	switch v, why := n.setting("no-appendfsync-on-rewrite", "", nil); v {
	case "":
		d.add("no-appendfsync-on-rewrite", n.Addr, "?", verdictUnknown, why)
	case "no":
		d.add("no-appendfsync-on-rewrite", n.Addr, v, verdictOK, "")
	default:
		d.add("no-appendfsync-on-rewrite", n.Addr, v, verdictWarn,
			"while the AOF is rewritten or an RDB snapshot is saved, Redis does not fsync: a power loss then loses up to 30 s of acknowledged appends (Linux defaults); set no-appendfsync-on-rewrite no")
	}
}

func (d *doctor) checkMemory() {
	for _, n := range d.up() {
		raw, why := n.setting("maxmemory", "maxmemory", nil)
		if raw == "" {
			d.add("maxmemory", n.Addr, "?", verdictUnknown, why)
		}
		limit, limitErr := strconv.ParseInt(raw, 10, 64)
		switch {
		case raw == "":
		case limitErr != nil:
			d.add("maxmemory", n.Addr, raw, verdictUnknown, "not a number")
		case limit == 0:
			d.add("maxmemory", n.Addr, "0 (no limit)", verdictWarn,
				"set maxmemory (with maxmemory-policy noeviction) below the machine's memory: without a limit the kernel's OOM killer may kill Redis when memory runs out, and a restart loses what is not yet on disk")
		default:
			d.add("maxmemory", n.Addr, formatBytes(limit), verdictOK, "")
		}
		used, err := strconv.ParseInt(n.info["used_memory"], 10, 64)
		switch {
		case n.infoErr != nil:
			d.add("used_memory", n.Addr, "?", verdictUnknown, notAllowed(namedErr{"INFO", n.infoErr}))
		case err != nil:
			d.add("used_memory", n.Addr, "?", verdictUnknown, "INFO memory does not report used_memory")
		case limitErr != nil || limit == 0:
			d.add("used_memory", n.Addr, formatBytes(used), verdictOK, "")
		default:
			pct := used * 100 / limit
			value := fmt.Sprintf("%s of %s (%d%%)", formatBytes(used), formatBytes(limit), pct)
			if pct > usedMemoryWarnPercent {
				d.add("used_memory", n.Addr, value, verdictWarn,
					"appends will be refused with OOM when full: raise maxmemory, add memory or shards, or trim what is no longer needed")
			} else {
				d.add("used_memory", n.Addr, value, verdictOK, "")
			}
		}
	}
}

func (d *doctor) checkReplication() {
	for _, n := range d.up() {
		if n.infoErr != nil {
			d.add("replicas", n.Addr, "?", verdictUnknown, notAllowed(namedErr{"INFO", n.infoErr}))
			continue
		}
		switch n.info["role"] {
		case "master":
			d.checkReplicas(n)
		case "slave":
			value := fmt.Sprintf("replica of %s:%s, link %s", n.info["master_host"], n.info["master_port"], n.info["master_link_status"])
			if io := n.info["master_last_io_seconds_ago"]; io != "" && io != "-1" {
				value += ", last I/O " + io + "s ago"
			}
			if n.info["master_link_status"] == "up" {
				d.add("replication", n.Addr, value, verdictOK, "")
			} else {
				d.add("replication", n.Addr, value, verdictWarn,
					"the replica is not connected to its master: it falls behind, and a failover to it would lose the events it has not received")
			}
		}
	}
}

func (d *doctor) checkReplicas(n *nodeState) {
	count, _ := strconv.Atoi(n.info["connected_slaves"])
	if count == 0 {
		d.add("replicas", n.Addr, "none", verdictOK, "no replica: losing this machine loses what is not in a backup (replication is asynchronous: a failover can lose the last acknowledged events)")
		return
	}
	d.add("replicas", n.Addr, strconv.Itoa(count), verdictOK, "")
	masterOffset, _ := strconv.ParseInt(n.info["master_repl_offset"], 10, 64)
	for i := range count {
		f := redisinfo.Fields(n.info["slave"+strconv.Itoa(i)])
		offset, _ := strconv.ParseInt(f["offset"], 10, 64)
		lag, _ := strconv.Atoi(f["lag"])
		behind := max(masterOffset-offset, 0)
		value := fmt.Sprintf("%s:%s %s, offset %d, %s behind, last ack %ds ago", f["ip"], f["port"], f["state"], offset, formatBytes(behind), lag)
		switch {
		case f["state"] != "online":
			d.add("replica", n.Addr, value, verdictWarn, "the replica is not online (still syncing or disconnected): a failover to it now would lose acknowledged events")
		case behind > replicaBehindWarn || lag > replicaLagWarnSeconds:
			d.add("replica", n.Addr, value, verdictWarn, "the replica is far behind: a failover to it now would lose the acknowledged events it has not received; check its network, disk and load")
		default:
			d.add("replica", n.Addr, value, verdictOK, "")
		}
	}
}

func (d *doctor) checkCluster(ctx context.Context) {
	for _, n := range d.up() {
		enabled := n.infoErr == nil && n.info["cluster_enabled"] == "1"
		if n.infoErr == nil && !enabled {
			d.add("cluster", n.Addr, "disabled (a single server)", verdictOK, "")
			continue
		}
		if !enabled && d.rc.Mode() != rueidis.ClientModeCluster {
			d.add("cluster", n.Addr, "?", verdictUnknown, notAllowed(namedErr{"INFO", n.infoErr}))
			continue
		}
		text, err := n.Client.Do(ctx, n.Client.B().ClusterInfo().Build()).ToString()
		if err != nil {
			d.add("cluster", n.Addr, "?", verdictUnknown, notAllowed(namedErr{"CLUSTER INFO", err}))
		} else {
			ci := redisinfo.ParseInfo(text)
			value := fmt.Sprintf("state %s, %s of 16384 slots assigned, %s failing, %s nodes", ci["cluster_state"], ci["cluster_slots_assigned"], ci["cluster_slots_fail"], ci["cluster_known_nodes"])
			switch {
			case ci["cluster_state"] != "ok":
				d.add("cluster", n.Addr, value, verdictUnsafe, "the cluster refuses commands (cluster_state is not ok): appends fail; see CLUSTER NODES for the failing nodes and slots")
			case ci["cluster_slots_assigned"] != "16384":
				d.add("cluster", n.Addr, value, verdictUnsafe, "not every slot is served: appends to partitions in the missing slots fail; assign them (redis-cli --cluster fix)")
			default:
				d.add("cluster", n.Addr, value, verdictOK, "")
			}
		}
		switch v, why := n.setting("cluster-require-full-coverage", "", nil); v {
		case "":
			d.add("cluster-require-full-coverage", n.Addr, "?", verdictUnknown, why)
		case "yes":
			d.add("cluster-require-full-coverage", n.Addr, v, verdictOK,
				"while a shard is down the whole cluster refuses commands, so every partition stops; with no, the partitions on healthy shards keep working (each partition stands alone, so redsource is safe with either)")
		default:
			d.add("cluster-require-full-coverage", n.Addr, v, verdictOK,
				"while a shard is down the partitions on healthy shards keep working, and those in its slots fail (each partition stands alone, so redsource is safe with either)")
		}
	}
}

// isMoved reports a cluster redirection: the key lives on another node.
func isMoved(err error) bool {
	var re *rueidis.RedisError
	if !errors.As(err, &re) {
		return false
	}
	_, moved := re.IsMoved()
	return moved
}
