package cluster

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Config describes this agent to the cluster.
type Config struct {
	// NodeID is the Raft server id. It must survive restarts: an agent that
	// comes back with its data dir rejoins as the same server.
	NodeID string
	// NodeName is the gossip name, unique in the cluster.
	NodeName string
	// DataDir holds the Raft log, stable store and snapshots. Empty keeps
	// everything in memory (dev mode).
	DataDir string
	// RaftAddr is the IP:port for Raft and agent-to-agent RPC. Port 0 picks
	// a free port.
	RaftAddr string
	// GossipAddr is the IP:port for memberlist (TCP and UDP).
	GossipAddr string
	// APIAddr is advertised to other agents.
	APIAddr      string
	Region, Zone string
	// NonVoter keeps this server out of the voters: it replicates and
	// serves, but never votes.
	NonVoter bool
	// BootstrapExpect is the number of servers to wait for before
	// bootstrapping a new cluster; 0 means never bootstrap, only join.
	BootstrapExpect int
	// Join lists gossip addresses of existing members; joining is retried
	// until one answers.
	Join []string
	// MaxVoters caps the voters the leader promotes.
	MaxVoters int
	// DeadServerTimeout is how long a server must be failed in gossip before
	// the leader removes it from Raft.
	DeadServerTimeout time.Duration
	Timing            Timing
	Logger            hclog.Logger
	// LeaderTasks run on the leader only, from after a Barrier until
	// leadership is lost; each must return soon after its context ends.
	LeaderTasks []func(ctx context.Context)
	// TLS, when set, makes every Raft and RPC connection mutual TLS
	// (tls.go). Without it they are plaintext.
	TLS *TLS
	// GossipKey, when set, encrypts gossip (AES-128, -192 or -256 by its
	// length). A gossip keyring saved in DataDir by an earlier run wins
	// over it (gossip_keyring.go).
	GossipKey []byte

	// listen opens the Raft listener; tests wrap it to see the bytes.
	listen func(network, address string) (net.Listener, error)
}

// Timing holds every interval the cluster runs on.
type Timing struct {
	RaftHeartbeat   time.Duration
	RaftElection    time.Duration
	RaftLeaderLease time.Duration
	RaftCommit      time.Duration

	GossipProbeInterval time.Duration
	GossipProbeTimeout  time.Duration
	GossipInterval      time.Duration
	GossipPushPull      time.Duration
	GossipSuspicionMult int

	// ReconcileInterval is how often the leader reconciles gossip
	// membership into the Raft configuration even without gossip events.
	ReconcileInterval time.Duration
	// ServerStabilization is how long a non-voter must be healthy and
	// caught up before it is promoted.
	ServerStabilization time.Duration
	// JoinRetry is the pause between join attempts.
	JoinRetry time.Duration
	// ApplyTimeout bounds a write, forwarded or not.
	ApplyTimeout time.Duration
	// LeaderWait is how long a write waits for a leader to be elected
	// before it fails with no_leader, so writes ride out an election.
	LeaderWait time.Duration
}

// DefaultTiming is for production: hashicorp/raft's and memberlist's LAN
// defaults, except RaftCommit. Followers learn that an entry committed from
// the leader's next AppendEntries, sent every RaftCommit (randomized up to
// twice that); raft's 50 ms would let a dead token be served for up to
// 100 ms after its failure committed, so tokend uses 10 ms. Upstream that
// costs one empty RPC per follower every 10-20 ms even when idle; tokend's
// copy of raft skips the ticks with nothing to send (third_party/raft).
func DefaultTiming() Timing {
	return Timing{
		RaftHeartbeat:       time.Second,
		RaftElection:        time.Second,
		RaftLeaderLease:     500 * time.Millisecond,
		RaftCommit:          10 * time.Millisecond,
		GossipProbeInterval: time.Second,
		GossipProbeTimeout:  500 * time.Millisecond,
		GossipInterval:      200 * time.Millisecond,
		GossipPushPull:      30 * time.Second,
		GossipSuspicionMult: 4,
		ReconcileInterval:   10 * time.Second,
		ServerStabilization: 10 * time.Second,
		JoinRetry:           5 * time.Second,
		ApplyTimeout:        10 * time.Second,
		LeaderWait:          5 * time.Second,
	}
}

// The Raft multiplier scales the timing that decides how fast a dead
// leader is replaced, the way Consul's performance.raft_multiplier does:
// RaftHeartbeat and RaftElection are RaftTimingUnit × multiplier and
// RaftLeaderLease half of that. DefaultRaftMultiplier gives DefaultTiming's
// 1 s, safe over a WAN and on loaded machines; 1 replaces a dead leader
// fastest but deposes a healthy one that stalls (a GC pause, a slow disk,
// a congested link) for more than 200 ms. RaftCommit is not scaled: it is
// not a failure detector but how often a leader tells its followers what
// committed, so it bounds how long a reported token stays served on other
// agents, whatever the multiplier.
const (
	MinRaftMultiplier     = 1
	MaxRaftMultiplier     = 10
	DefaultRaftMultiplier = 5
	RaftTimingUnit        = 200 * time.Millisecond
)

// WithRaftMultiplier returns t with its Raft heartbeat, election and leader
// lease timeouts scaled by m (MinRaftMultiplier to MaxRaftMultiplier; the
// caller checks the range).
func (t Timing) WithRaftMultiplier(m int) Timing {
	t.RaftHeartbeat = time.Duration(m) * RaftTimingUnit
	t.RaftElection = time.Duration(m) * RaftTimingUnit
	t.RaftLeaderLease = time.Duration(m) * RaftTimingUnit / 2
	return t
}

// FastTiming is for tests and dev agents on one machine: 50 ms Raft and
// 100 ms gossip.
func FastTiming() Timing {
	return Timing{
		RaftHeartbeat:       50 * time.Millisecond,
		RaftElection:        50 * time.Millisecond,
		RaftLeaderLease:     50 * time.Millisecond,
		RaftCommit:          5 * time.Millisecond,
		GossipProbeInterval: 100 * time.Millisecond,
		GossipProbeTimeout:  50 * time.Millisecond,
		GossipInterval:      20 * time.Millisecond,
		GossipPushPull:      2 * time.Second,
		GossipSuspicionMult: 3,
		ReconcileInterval:   200 * time.Millisecond,
		ServerStabilization: 300 * time.Millisecond,
		JoinRetry:           100 * time.Millisecond,
		ApplyTimeout:        5 * time.Second,
		LeaderWait:          time.Second,
	}
}

// Defaults for Config fields left zero.
const (
	DefaultMaxVoters         = 5
	DefaultDeadServerTimeout = 30 * time.Minute
)

func (c *Config) validate() error {
	if c.NodeID == "" || c.NodeName == "" {
		return fmt.Errorf("node id and node name are required")
	}
	if _, _, err := splitIPPort("raft address", c.RaftAddr); err != nil {
		return err
	}
	if _, _, err := splitIPPort("gossip address", c.GossipAddr); err != nil {
		return err
	}
	if c.BootstrapExpect < 0 {
		return fmt.Errorf("bootstrap-expect must not be negative")
	}
	if c.BootstrapExpect > 0 && c.NonVoter {
		return fmt.Errorf("a non-voter cannot take part in bootstrap: drop bootstrap-expect or non-voter")
	}
	if c.MaxVoters == 0 {
		c.MaxVoters = DefaultMaxVoters
	}
	if c.MaxVoters < 1 {
		return fmt.Errorf("max voters must be at least 1")
	}
	if c.DeadServerTimeout == 0 {
		c.DeadServerTimeout = DefaultDeadServerTimeout
	}
	if c.Timing == (Timing{}) {
		c.Timing = DefaultTiming()
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.TLS != nil {
		if err := c.TLS.Validate(); err != nil {
			return fmt.Errorf("tls: %w", err)
		}
	}
	if c.GossipKey != nil {
		if err := validGossipKey(c.GossipKey); err != nil {
			return err
		}
	}
	if c.listen == nil {
		c.listen = net.Listen
	}
	return nil
}

// splitIPPort parses an IP:port that other agents can reach: a wildcard
// address cannot be advertised.
func splitIPPort(what, addr string) (net.IP, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, 0, fmt.Errorf("%s %q: %v (want IP:port)", what, addr, err)
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return nil, 0, fmt.Errorf("%s %q: %q is not an IP address", what, addr, host)
	}
	if ip.IsUnspecified() {
		return nil, 0, fmt.Errorf("%s %q: give the IP other agents reach this one on, not a wildcard", what, addr)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, 0, fmt.Errorf("%s %q: bad port %q", what, addr, portStr)
	}
	return ip, port, nil
}
