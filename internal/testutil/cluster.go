package testutil

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tokend/tokend/agent"
	"github.com/tokend/tokend/cluster"
	"github.com/tokend/tokend/tokens"
)

// Node is one in-process agent of a test cluster.
type Node struct {
	Name    string
	DataDir string
	Config  agent.Config
	*agent.Agent
}

// Cluster is agents in one test process on loopback, with 50 ms Raft and
// 100 ms gossip.
type Cluster struct {
	t     TB
	mu    sync.Mutex
	Nodes []*Node
}

// socketDir returns a short directory for unix sockets: t.TempDir() paths
// can exceed the 107-byte socket path limit.
func socketDir(t TB) string {
	dir, err := os.MkdirTemp("", "tokend-sock-")
	if err != nil {
		t.Fatalf("socket dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// TestKey is the keyring key every test agent is given, unless a test gives
// it another.
var TestKey = tokens.GenerateKey()

// NodeConfig is the configuration of test node name in dir, with every
// address on a free loopback port.
func NodeConfig(t TB, name, dataDir, sockDir string) agent.Config {
	level := hclog.Warn
	if os.Getenv("TOKEND_TEST_LOG") != "" {
		level = hclog.LevelFromString(os.Getenv("TOKEND_TEST_LOG"))
	}
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return agent.Config{
		NodeName:   name,
		DataDir:    dataDir,
		HTTPAddr:   "127.0.0.1:0",
		RaftAddr:   "127.0.0.1:0",
		GossipAddr: "127.0.0.1:0",
		SocketPath: filepath.Join(sockDir, name+".sock"),
		EncryptKey: TestKey,
		Timing:     cluster.FastTiming(),
		Logger: hclog.New(&hclog.LoggerOptions{
			Name:   name,
			Level:  level,
			Output: w,
		}),
	}
}

// NewCluster starts n agents that bootstrap one cluster together, and waits
// until every one of them knows the leader.
func NewCluster(t TB, n int) *Cluster {
	t.Helper()
	return NewClusterWith(t, n, nil)
}

// NewClusterWith is NewCluster with mod applied to each node's
// configuration.
func NewClusterWith(t TB, n int, mod func(*agent.Config)) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	sock := socketDir(t)
	var joinAddr string
	for i := range n {
		name := fmt.Sprintf("node%d", i)
		cfg := NodeConfig(t, name, filepath.Join(t.TempDir(), name), sock)
		cfg.BootstrapExpect = n
		if joinAddr != "" {
			cfg.Join = []string{joinAddr}
		}
		if mod != nil {
			mod(&cfg)
		}
		node := c.start(name, cfg)
		if joinAddr == "" {
			joinAddr = node.GossipAddr()
		}
	}
	t.Cleanup(c.Shutdown)
	c.WaitForLeader()
	return c
}

func (c *Cluster) start(name string, cfg agent.Config) *Node {
	c.t.Helper()
	a, err := agent.New(cfg)
	if err != nil {
		c.t.Fatalf("start %s: %v", name, err)
	}
	// Pin the ports picked for ":0" so Restart comes back on the same ones.
	cfg.HTTPAddr, cfg.RaftAddr, cfg.GossipAddr = a.HTTPAddr(), a.RaftAddr(), a.GossipAddr()
	node := &Node{Name: name, DataDir: cfg.DataDir, Config: cfg, Agent: a}
	c.mu.Lock()
	c.Nodes = append(c.Nodes, node)
	c.mu.Unlock()
	return node
}

// Add starts another agent, name, that joins the cluster through the first
// node's gossip address; mod, if not nil, adjusts its configuration first.
// It does not wait for the agent to join: it may be one that cannot.
func (c *Cluster) Add(name string, mod func(*agent.Config)) *Node {
	c.t.Helper()
	cfg := NodeConfig(c.t, name, filepath.Join(c.t.TempDir(), name), filepath.Dir(c.Nodes[0].Config.SocketPath))
	cfg.Join = []string{c.Nodes[0].Config.GossipAddr}
	if mod != nil {
		mod(&cfg)
	}
	return c.start(name, cfg)
}

// Running returns the nodes that have not been stopped.
func (c *Cluster) Running() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Node
	for _, n := range c.Nodes {
		if n.Agent != nil {
			out = append(out, n)
		}
	}
	return out
}

// WaitForLeader waits until every running node knows the same leader, and
// returns it.
func (c *Cluster) WaitForLeader() *Node {
	c.t.Helper()
	var leader *Node
	WaitFor(c.t, 10*time.Second, func() error {
		leader = nil
		running := c.Running()
		for _, n := range running {
			if n.IsLeader() {
				leader = n
			}
		}
		if leader == nil {
			return fmt.Errorf("no leader among %d nodes", len(running))
		}
		for _, n := range running {
			if id, _ := n.LeaderID(); id != leader.NodeID() {
				return fmt.Errorf("%s sees leader %q, not %s", n.Name, id, leader.Name)
			}
		}
		return nil
	})
	return leader
}

// Leader returns the current leader, waiting for one.
func (c *Cluster) Leader() *Node { return c.WaitForLeader() }

// Followers returns the running nodes that are not the leader.
func (c *Cluster) Followers() []*Node {
	leader := c.WaitForLeader()
	var out []*Node
	for _, n := range c.Running() {
		if n != leader {
			out = append(out, n)
		}
	}
	return out
}

// Stop shuts a node down, keeping its data dir for Restart.
func (c *Cluster) Stop(n *Node) {
	c.t.Helper()
	c.mu.Lock()
	a := n.Agent
	n.Agent = nil
	c.mu.Unlock()
	if a == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		c.t.Logf("stop %s: %v", n.Name, err)
	}
}

// Restart starts a stopped node again from its data dir, on the same Raft
// and gossip addresses it had.
func (c *Cluster) Restart(n *Node) {
	c.t.Helper()
	cfg := n.Config
	a, err := agent.New(cfg)
	if err != nil {
		c.t.Fatalf("restart %s: %v", n.Name, err)
	}
	c.mu.Lock()
	n.Agent = a
	c.mu.Unlock()
}

// Shutdown stops every node.
func (c *Cluster) Shutdown() {
	for _, n := range c.Running() {
		c.Stop(n)
	}
}

// testWriter sends agent logs to t.Logf, and drops them once the test is
// over (t.Logf panics after that).
type testWriter struct {
	mu   sync.Mutex
	t    TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Logf("%s", strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// StartAgent starts a single-node agent that bootstraps and leads its own
// cluster, waits until it leads, and shuts it down when the test ends. mod,
// if not nil, adjusts the configuration first.
func StartAgent(t TB, mod func(*agent.Config)) *agent.Agent {
	t.Helper()
	cfg := NodeConfig(t, "n1", t.TempDir(), socketDir(t))
	cfg.BootstrapExpect = 1
	if mod != nil {
		mod(&cfg)
	}
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatalf("start agent: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.WaitForLeader(ctx); err != nil {
		t.Fatalf("%v", err)
	}
	return a
}
