package redisproc

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ClusterOptions configure StartCluster.
type ClusterOptions struct {
	// Masters is the number of masters. Zero: 3.
	Masters int
	// ReplicasPerMaster is the number of replicas of each master.
	ReplicasPerMaster int
	// NodeTimeout is cluster-node-timeout: how long a node may not answer
	// before it counts as failed, and so the least time a failover takes.
	// Zero: 2s.
	NodeTimeout time.Duration
	// AOF, Args: as in Options, for every node.
	AOF  string
	Args []string
	// Timeout bounds the start of the whole cluster. Zero: 60s.
	Timeout time.Duration
}

// Cluster is a Redis Cluster of private servers on loopback.
type Cluster struct {
	opts  ClusterOptions
	nodes []*Server

	mu    sync.Mutex
	owned map[string][]slotRange // node ID -> the slots it served when last seen
}

// StartCluster starts the nodes, creates the cluster with redis-cli
// --cluster create (16384 slots spread over the masters, replicas
// assigned by redis-cli), and returns once every node reports
// cluster_state:ok with every slot assigned, all nodes agree on who
// serves what, every replica's link to its master is up and every node's
// CLUSTER SLOTS, where clients learn the topology, lists them all. redis-cli
// is $REDSOURCE_REDIS_CLI, else the one beside redis-server, else from
// PATH. It fails the test when the cluster does not come up.
func StartCluster(tb testing.TB, opts ClusterOptions) *Cluster {
	tb.Helper()
	if opts.Masters == 0 {
		opts.Masters = 3
	}
	if opts.NodeTimeout == 0 {
		opts.NodeTimeout = 2 * time.Second
	}
	if opts.Timeout == 0 {
		opts.Timeout = 60 * time.Second
	}
	if opts.Masters < 3 {
		tb.Fatalf("redisproc: StartCluster: redis-cli needs at least 3 masters, not %d", opts.Masters)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.Timeout)
	defer cancel()
	c := &Cluster{opts: opts, owned: map[string][]slotRange{}}
	n := opts.Masters * (1 + opts.ReplicasPerMaster)
	for range n {
		s, err := newServer(tb, Options{AOF: opts.AOF, Args: opts.Args, Cluster: true, NodeTimeout: opts.NodeTimeout})
		if err != nil {
			tb.Fatalf("%v", err)
		}
		c.nodes = append(c.nodes, s)
	}
	if err := c.create(ctx); err != nil {
		for _, s := range c.nodes {
			if s.port != 0 {
				tb.Logf("redisproc: node %s log:\n%s", s.Addr(), s.LogTail(10))
			}
		}
		tb.Fatalf("%v", err)
	}
	return c
}

func (c *Cluster) create(ctx context.Context) error {
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i, s := range c.nodes {
		wg.Go(func() { errs[i] = s.boot(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, s := range c.nodes {
		id, err := doString(ctx, s.Addr(), "CLUSTER", "MYID")
		if err != nil {
			return fmt.Errorf("redisproc: CLUSTER MYID on %s: %w", s.Addr(), err)
		}
		s.nodeID.Store(id)
	}
	cli, err := redisBinary("REDSOURCE_REDIS_CLI", "redis-cli", c.nodes[0].bin)
	if err != nil {
		return err
	}
	args := []string{"--cluster", "create"}
	for _, s := range c.nodes {
		args = append(args, s.Addr())
	}
	args = append(args, "--cluster-replicas", strconv.Itoa(c.opts.ReplicasPerMaster), "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("redisproc: redis-cli %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return waitFor(ctx, 20*time.Millisecond, "cluster to come up", func() (bool, error) { return c.ready(ctx) })
}

// ready says whether every node sees a healthy cluster: state ok, all
// slots assigned, all nodes known, one same map of slots to masters,
// replicas linked, and every node in CLUSTER SLOTS, where clients learn
// the topology from.
func (c *Cluster) ready(ctx context.Context) (bool, error) {
	var first string
	for _, s := range c.nodes {
		info, err := doString(ctx, s.Addr(), "CLUSTER", "INFO")
		if err != nil {
			return false, err
		}
		if st := infoField(info, "cluster_state"); st != "ok" {
			return false, fmt.Errorf("%s: cluster_state:%s", s.Addr(), st)
		}
		if n := infoField(info, "cluster_slots_assigned"); n != "16384" {
			return false, fmt.Errorf("%s: cluster_slots_assigned:%s", s.Addr(), n)
		}
		if n := infoField(info, "cluster_known_nodes"); n != strconv.Itoa(len(c.nodes)) {
			return false, fmt.Errorf("%s: cluster_known_nodes:%s", s.Addr(), n)
		}
		v, err := viewOf(ctx, s)
		if err != nil {
			return false, err
		}
		sig := v.signature()
		if first == "" {
			first = sig
		} else if sig != first {
			return false, fmt.Errorf("%s sees %s, %s sees %s", c.nodes[0].Addr(), first, s.Addr(), sig)
		}
		if v.self().master != "" {
			repl, err := doString(ctx, s.Addr(), "INFO", "replication")
			if err != nil {
				return false, err
			}
			if st := infoField(repl, "master_link_status"); st != "up" {
				return false, fmt.Errorf("replica %s: master_link_status:%s", s.Addr(), st)
			}
		} else {
			c.remember(v)
		}
		n, err := slotNodes(ctx, s)
		if err != nil {
			return false, err
		}
		if n != len(c.nodes) {
			return false, fmt.Errorf("%s: CLUSTER SLOTS lists %d of %d nodes", s.Addr(), n, len(c.nodes))
		}
	}
	return true, nil
}

// slotNodes counts the distinct nodes, masters and replicas, that CLUSTER
// SLOTS on s lists: each entry is [from, to, node...], a node [ip, port,
// id, ...].
func slotNodes(ctx context.Context, s *Server) (int, error) {
	r, err := s.Do(ctx, "CLUSTER", "SLOTS")
	if err != nil {
		return 0, err
	}
	ids := map[string]bool{}
	entries, _ := r.([]any)
	for _, e := range entries {
		entry, _ := e.([]any)
		for _, n := range entry[min(2, len(entry)):] {
			if node, ok := n.([]any); ok && len(node) > 2 {
				ids[fmt.Sprint(node[2])] = true
			}
		}
	}
	return len(ids), nil
}

// URL is a redis:// URL naming every node: the first as host, the others
// as addr parameters (rueidis.ParseURL appends them to InitAddress).
// rueidis finds out from the node that it is a cluster.
func (c *Cluster) URL() string {
	q := make([]string, 0, len(c.nodes)-1)
	for _, s := range c.nodes[1:] {
		q = append(q, "addr="+s.Addr())
	}
	return "redis://" + c.nodes[0].Addr() + "?" + strings.Join(q, "&")
}

// Addrs are the nodes' host:port addresses (rueidis.ClientOption.InitAddress).
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.nodes))
	for i, s := range c.nodes {
		out[i] = s.Addr()
	}
	return out
}

// Nodes are all the nodes, in start order, whatever their current role.
func (c *Cluster) Nodes() []*Server { return slices.Clone(c.nodes) }

// NodeID is a cluster node's ID.
func (s *Server) NodeID() string {
	id, _ := s.nodeID.Load().(string)
	return id
}

// Masters returns the nodes that serve slots, in slot order, as the first
// node that answers (running and not paused) sees the cluster. A master
// that failed keeps its slots until a replica is promoted.
func (c *Cluster) Masters(ctx context.Context) ([]*Server, error) {
	v, err := c.view(ctx)
	if err != nil {
		return nil, err
	}
	var ms []*Server
	for _, n := range v.byFirstSlot() {
		if s := c.node(n.id); s != nil {
			ms = append(ms, s)
		}
	}
	return ms, nil
}

// MasterOf returns the master that serves key's slot.
func (c *Cluster) MasterOf(ctx context.Context, key string) (*Server, error) {
	return c.MasterOfSlot(ctx, KeySlot(key))
}

// MasterOfSlot returns the master that serves slot.
func (c *Cluster) MasterOfSlot(ctx context.Context, slot int) (*Server, error) {
	v, err := c.view(ctx)
	if err != nil {
		return nil, err
	}
	n, ok := v.owner(slot)
	if !ok || c.node(n.id) == nil {
		return nil, fmt.Errorf("redisproc: no master serves slot %d", slot)
	}
	return c.node(n.id), nil
}

// ReplicaOf returns a replica of master that is not marked failed, or nil
// if it has none.
func (c *Cluster) ReplicaOf(ctx context.Context, master *Server) (*Server, error) {
	v, err := c.view(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range v.nodes {
		if n.master == master.NodeID() && !n.failed() {
			if s := c.node(n.id); s != nil {
				return s, nil
			}
		}
	}
	return nil, nil
}

// WaitFailover waits, after old (a master) was killed, paused or
// otherwise cut off, until a replica has taken over its slots and every
// running node reports cluster_state:ok again, and returns the promoted
// node. Without a deadline on ctx, it gives up after 10 node timeouts
// plus 10s, with an error saying what the nodes reported last.
func (c *Cluster) WaitFailover(ctx context.Context, old *Server) (*Server, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*c.opts.NodeTimeout+10*time.Second)
		defer cancel()
	}
	c.mu.Lock()
	slots := c.owned[old.NodeID()]
	c.mu.Unlock()
	if len(slots) == 0 {
		return nil, fmt.Errorf("redisproc: WaitFailover: %s served no slots when last seen", old.Addr())
	}
	slot := slots[0].from
	var promoted *Server
	err := waitFor(ctx, 20*time.Millisecond, "failover of "+old.Addr(), func() (bool, error) {
		promoted = nil
		for _, s := range c.nodes {
			if s == old || !s.Running() || s.Paused() {
				continue
			}
			info, err := doString(ctx, s.Addr(), "CLUSTER", "INFO")
			if err != nil {
				return false, fmt.Errorf("%s: %w", s.Addr(), err)
			}
			if st := infoField(info, "cluster_state"); st != "ok" {
				return false, fmt.Errorf("%s: cluster_state:%s", s.Addr(), st)
			}
			v, err := viewOf(ctx, s)
			if err != nil {
				return false, err
			}
			n, ok := v.owner(slot)
			switch {
			case !ok:
				return false, fmt.Errorf("%s: nobody serves slot %d", s.Addr(), slot)
			case n.id == old.NodeID():
				return false, fmt.Errorf("%s: %s still serves slot %d (flags %s)", s.Addr(), old.Addr(), slot, strings.Join(n.flags, ","))
			case promoted == nil:
				promoted = c.node(n.id)
			case promoted.NodeID() != n.id:
				return false, fmt.Errorf("nodes disagree on who serves slot %d", slot)
			}
		}
		return promoted != nil, errors.New("no running node to ask")
	})
	if err != nil {
		return nil, err
	}
	if v, err := viewOf(ctx, promoted); err == nil {
		c.remember(v)
	}
	return promoted, nil
}

func (c *Cluster) node(id string) *Server {
	for _, s := range c.nodes {
		if s.NodeID() == id {
			return s
		}
	}
	return nil
}

// view asks the first running, unpaused node that answers for its
// CLUSTER NODES.
func (c *Cluster) view(ctx context.Context) (clusterView, error) {
	var errs []error
	for _, s := range c.nodes {
		if !s.Running() || s.Paused() {
			continue
		}
		v, err := viewOf(ctx, s)
		if err == nil {
			c.remember(v)
			return v, nil
		}
		errs = append(errs, err)
	}
	return clusterView{}, fmt.Errorf("redisproc: no cluster node answers: %w", errors.Join(errs...))
}

// remember records who served which slots in v.
func (c *Cluster) remember(v clusterView) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range v.nodes {
		if len(n.slots) > 0 {
			c.owned[n.id] = n.slots
		}
	}
}

// clusterView is one node's CLUSTER NODES.
type clusterView struct{ nodes []clusterNode }

type clusterNode struct {
	id, addr string
	flags    []string
	master   string // the master's ID, for a replica
	slots    []slotRange
}

type slotRange struct{ from, to int }

func (n clusterNode) failed() bool {
	return slices.Contains(n.flags, "fail") || slices.Contains(n.flags, "fail?")
}

func viewOf(ctx context.Context, s *Server) (clusterView, error) {
	out, err := doString(ctx, s.Addr(), "CLUSTER", "NODES")
	if err != nil {
		return clusterView{}, fmt.Errorf("redisproc: CLUSTER NODES on %s: %w", s.Addr(), err)
	}
	return parseNodes(out)
}

// parseNodes reads CLUSTER NODES: <id> <ip:port@cport[,hostname]> <flags>
// <master> <ping-sent> <pong-recv> <epoch> <link> <slot>...
func parseNodes(out string) (clusterView, error) {
	var v clusterView
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			return clusterView{}, fmt.Errorf("redisproc: CLUSTER NODES line %q", line)
		}
		n := clusterNode{id: f[0], addr: strings.SplitN(f[1], "@", 2)[0], flags: strings.Split(f[2], ",")}
		if f[3] != "-" {
			n.master = f[3]
		}
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				continue // a slot being imported or migrated
			}
			a, b, isRange := strings.Cut(r, "-")
			from, err1 := strconv.Atoi(a)
			to := from
			var err2 error
			if isRange {
				to, err2 = strconv.Atoi(b)
			}
			if err1 != nil || err2 != nil {
				return clusterView{}, fmt.Errorf("redisproc: CLUSTER NODES slots %q", r)
			}
			n.slots = append(n.slots, slotRange{from, to})
		}
		v.nodes = append(v.nodes, n)
	}
	return v, nil
}

func (v clusterView) self() clusterNode {
	for _, n := range v.nodes {
		if slices.Contains(n.flags, "myself") {
			return n
		}
	}
	return clusterNode{}
}

func (v clusterView) owner(slot int) (clusterNode, bool) {
	for _, n := range v.nodes {
		for _, r := range n.slots {
			if slot >= r.from && slot <= r.to {
				return n, true
			}
		}
	}
	return clusterNode{}, false
}

func (v clusterView) byFirstSlot() []clusterNode {
	var ms []clusterNode
	for _, n := range v.nodes {
		if len(n.slots) > 0 {
			ms = append(ms, n)
		}
	}
	slices.SortFunc(ms, func(a, b clusterNode) int { return a.slots[0].from - b.slots[0].from })
	return ms
}

// signature sums up who serves what and who replicates whom, to compare
// nodes' views.
func (v clusterView) signature() string {
	var parts []string
	for _, n := range v.nodes {
		if len(n.slots) > 0 {
			parts = append(parts, fmt.Sprintf("%s=%v", n.id[:8], n.slots))
		} else if n.master != "" {
			parts = append(parts, fmt.Sprintf("%s<-%s", n.master[:8], n.id[:8]))
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

// KeySlot is the cluster slot of key: CRC16 of the key, or of its hash tag
// (the part between the first "{" and the next "}", when not empty), mod
// 16384.
func KeySlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key) % 16384)
}

// crc16 is CRC-16/XMODEM, as Redis Cluster uses.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
