package faultenv

import (
	"testing"

	"github.com/redsource/redsource/internal/redisproc"
)

// The private servers and clusters are redisproc's; faultenv names them
// too, so that a fault test needs one import. See package redisproc for
// what they do.
type (
	// Options configure a private redis-server: [redisproc.Options].
	Options = redisproc.Options
	// Server is a private redis-server process: [redisproc.Server].
	Server = redisproc.Server
	// AOFSnapshot is a copy of a server's AOF: [redisproc.AOFSnapshot].
	AOFSnapshot = redisproc.AOFSnapshot
	// ClusterOptions configure StartCluster: [redisproc.ClusterOptions].
	ClusterOptions = redisproc.ClusterOptions
	// Cluster is a Redis Cluster of private servers: [redisproc.Cluster].
	Cluster = redisproc.Cluster
)

// Start is [redisproc.Start]: a private redis-server, stopped when the
// test ends.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	return redisproc.Start(tb, opts)
}

// StartCluster is [redisproc.StartCluster]: a Redis Cluster of private
// servers, stopped when the test ends.
func StartCluster(tb testing.TB, opts ClusterOptions) *Cluster {
	tb.Helper()
	return redisproc.StartCluster(tb, opts)
}

// KeySlot is [redisproc.KeySlot]: the cluster slot of key.
func KeySlot(key string) int { return redisproc.KeySlot(key) }
