//go:build docker

package docker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
	"github.com/tokend/tokend/tokens"
)

// The driver: a cluster of agent containers and the faults it can inject.
// Each container is on two networks this suite creates: "raft", where the
// agents' Raft, RPC and gossip addresses live and every network fault
// happens, and "api", where the host reaches each agent's HTTP API at the
// container's address. So a node cut off from the others by any fault still
// answers its clients, as an agent on a partitioned host answers the
// services on that host.

const (
	apiPort    = 8550
	raftPort   = 8551
	gossipPort = 8552
)

// Node is one agent container.
type Node struct {
	Name      string // agent node name: n1, n2, ...
	Container string
	Volume    string // named volume holding /data
	Zone      string
	RaftIP    string // on the raft network: Raft, RPC and gossip
	APIIP     string // on the api network: the HTTP API
	URL       string // http://APIIP:8550

	mu      sync.Mutex
	delayer *delayer // the latency helper, while one runs
	netem   string   // the interface carrying a netem qdisc, while one does
}

func (n *Node) String() string { return n.Name }

// Target is a node as e2e/chaos names its targets.
type Target struct {
	Name string
	URL  string
}

// Cluster is a set of agent containers on this suite's own networks.
type Cluster struct {
	t     testing.TB
	name  string
	Nodes []*Node
	raft  network
	api   network
	http  *http.Client

	mu     sync.Mutex
	down   map[*Node][]span // when each node was killed, stopped or paused
	ledger ledger           // every write any workload made, for the lost-write checks
	// flowPrimary is the token every fetch on the flow pool must return.
	flowPrimary string
	// faultLog, when set, hears of every process fault (LogFaults).
	faultLog func(node, kind string) (end func())
	faultEnd map[*Node]func()
}

type network struct {
	name   string
	prefix string // the /24's first three octets: "10.213.7"
}

// span is a time a node could not serve; to is zero while it lasts.
type span struct{ from, to time.Time }

var clusterSeq atomic.Int64

// NewCluster starts n agents (zones a, b, c in turn, region e2e) that
// bootstrap one cluster, and waits until every agent is a voter and follows
// the same leader. Everything is removed when the test ends; a failed
// test first logs every agent's output.
func NewCluster(t *testing.T, n int) *Cluster {
	t.Helper()
	ctx := context.Background()
	start := time.Now()
	c := &Cluster{
		t:        t,
		name:     fmt.Sprintf("tokend-e2e-%s-%d", runID, clusterSeq.Add(1)),
		down:     map[*Node][]span{},
		faultEnd: map[*Node]func(){},
		http: &http.Client{Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 32,
		}},
	}
	t.Cleanup(c.destroy)
	var err error
	if c.raft, err = createNetwork(ctx, c.name+"-raft"); err != nil {
		t.Fatal(err)
	}
	if c.api, err = createNetwork(ctx, c.name+"-api"); err != nil {
		t.Fatal(err)
	}
	zones := []string{"a", "b", "c"}
	for i := range n {
		node := &Node{
			Name:   fmt.Sprintf("n%d", i+1),
			Zone:   zones[i%len(zones)],
			RaftIP: fmt.Sprintf("%s.%d", c.raft.prefix, 11+i),
			APIIP:  fmt.Sprintf("%s.%d", c.api.prefix, 11+i),
		}
		node.Container = c.name + "-" + node.Name
		node.Volume = node.Container
		node.URL = fmt.Sprintf("http://%s:%d", node.APIIP, apiPort)
		c.Nodes = append(c.Nodes, node)
	}
	key := tokens.GenerateKey()
	for _, node := range c.Nodes {
		if _, err := dockerCmd(ctx, "volume", "create", "--label", labelKey+"=1", "--label", ownerLabel+"="+owner, node.Volume); err != nil {
			t.Fatal(err)
		}
		args := []string{"create", "--name", node.Container, "--hostname", node.Name,
			"--label", labelKey + "=1", "--label", ownerLabel + "=" + owner,
			"--network", c.raft.name, "--ip", node.RaftIP,
			"-v", node.Volume + ":/data", "-e", "TOKEND_ENCRYPT_KEY=" + key,
			image, "agent", "--node", node.Name, "--data-dir", "/data",
			"--http-addr", fmt.Sprintf("0.0.0.0:%d", apiPort),
			"--raft-addr", fmt.Sprintf("%s:%d", node.RaftIP, raftPort),
			"--gossip-addr", fmt.Sprintf("%s:%d", node.RaftIP, gossipPort),
			"--bootstrap-expect", strconv.Itoa(n), "--region", "e2e", "--zone", node.Zone,
			"--acl=false",
		}
		for _, other := range c.Nodes {
			if other != node {
				args = append(args, "--join", fmt.Sprintf("%s:%d", other.RaftIP, gossipPort))
			}
		}
		if _, err := dockerCmd(ctx, args...); err != nil {
			t.Fatal(err)
		}
		if _, err := dockerCmd(ctx, "network", "connect", "--ip", node.APIIP, c.api.name, node.Container); err != nil {
			t.Fatal(err)
		}
	}
	for _, node := range c.Nodes {
		if _, err := dockerCmd(ctx, "start", node.Container); err != nil {
			t.Fatal(err)
		}
	}
	for _, node := range c.Nodes {
		if err := c.waitHealthy(ctx, node, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	c.WaitLeader(t, c.Nodes, time.Minute)
	testutil.WaitFor(t, time.Minute, func() error {
		var peers []api.Peer
		if err := c.getJSON(ctx, c.Nodes[0], "/v1/status/peers", &peers); err != nil {
			return err
		}
		voters := 0
		for _, p := range peers {
			if p.Suffrage == "voter" {
				voters++
			}
		}
		if voters != n {
			return fmt.Errorf("%d voters of %d: %+v", voters, n, peers)
		}
		return nil
	})
	t.Logf("%d agents up in %s on networks %s (%s.0/24) and %s (%s.0/24)", n, time.Since(start).Round(time.Millisecond),
		c.raft.name, c.raft.prefix, c.api.name, c.api.prefix)
	return c
}

// createNetwork creates a bridge network on a free private /24: one no
// route of the host and no other Docker network (the engine refuses
// overlaps) uses, and never compose's 172.28.0.0/24.
func createNetwork(ctx context.Context, name string) (network, error) {
	var used []*net.IPNet
	if out, err := exec.Command("ip", "-4", "route").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				if _, n, err := net.ParseCIDR(f[0]); err == nil {
					used = append(used, n)
				}
			}
		}
	}
	var lastErr error
	for range 100 {
		prefix := fmt.Sprintf("10.%d.%d", 200+rand.IntN(50), rand.IntN(256))
		_, subnet, _ := net.ParseCIDR(prefix + ".0/24")
		clash := false
		for _, u := range used {
			if u.Contains(subnet.IP) || subnet.Contains(u.IP) {
				clash = true
			}
		}
		if clash {
			continue
		}
		_, err := dockerCmd(ctx, "network", "create", "--driver", "bridge", "--subnet", subnet.String(),
			"--label", labelKey+"=1", "--label", ownerLabel+"="+owner, name)
		if err == nil {
			return network{name: name, prefix: prefix}, nil
		}
		lastErr = err
		if !strings.Contains(err.Error(), "overlap") {
			return network{}, err
		}
	}
	return network{}, fmt.Errorf("no free /24 for network %s: %v", name, lastErr)
}

// destroy removes the cluster's containers, volumes and networks, after
// logging every agent's output if the test failed.
func (c *Cluster) destroy() {
	ctx := context.Background()
	if c.t.Failed() {
		for _, n := range c.Nodes {
			c.t.Logf("---- %s (%s) log ----\n%s", n.Name, n.Container, c.Logs(n))
		}
	}
	for _, n := range c.Nodes {
		_ = c.ClearNetem(ctx, n)
	}
	var names, vols []string
	for _, n := range c.Nodes {
		names = append(names, n.Container)
		vols = append(vols, n.Volume)
	}
	if len(names) > 0 {
		if _, err := dockerCmd(ctx, append([]string{"rm", "-f", "-v"}, names...)...); err != nil {
			c.t.Errorf("cleanup: %v", err)
		}
		if _, err := dockerCmd(ctx, append([]string{"volume", "rm", "-f"}, vols...)...); err != nil {
			c.t.Errorf("cleanup: %v", err)
		}
	}
	for _, nw := range []network{c.raft, c.api} {
		if nw.name != "" {
			if err := removeNetwork(ctx, nw.name); err != nil {
				c.t.Errorf("cleanup: %v", err)
			}
		}
	}
}

// removeNetwork removes a network whose containers were just removed. The
// engine can still list a removed container's endpoint for a moment after
// `docker rm -f` returns ("has active endpoints"): that is retried for a
// while, any other error is not.
func removeNetwork(ctx context.Context, name string) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := dockerCmd(ctx, "network", "rm", name)
		if err == nil || !strings.Contains(err.Error(), "active endpoints") || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Targets names every node's API as e2e/chaos expects.
func (c *Cluster) Targets() []Target {
	var ts []Target
	for _, n := range c.Nodes {
		ts = append(ts, Target{Name: n.Name, URL: n.URL})
	}
	return ts
}

// Node returns the node called name, nil if there is none.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Others returns the cluster's nodes except those given.
func (c *Cluster) Others(except ...*Node) []*Node {
	var out []*Node
next:
	for _, n := range c.Nodes {
		for _, e := range except {
			if n == e {
				continue next
			}
		}
		out = append(out, n)
	}
	return out
}

// ---- process faults ----

// Kill sends SIGKILL to the agents, at once; the containers stay, with
// their volumes.
func (c *Cluster) Kill(ctx context.Context, nodes ...*Node) error {
	args := []string{"kill", "--signal", "KILL"}
	for _, n := range nodes {
		c.markDown(n, faultKilled)
		args = append(args, n.Container)
	}
	_, err := dockerCmd(ctx, args...)
	return err
}

// Stop stops the agent with SIGTERM (SIGKILL after 10 s).
func (c *Cluster) Stop(ctx context.Context, n *Node) error {
	c.markDown(n, faultKilled)
	_, err := dockerCmd(ctx, "stop", "--time", "10", n.Container)
	return err
}

// Start starts a killed or stopped agent from its volume and waits until
// its API answers.
func (c *Cluster) Start(ctx context.Context, n *Node) error {
	_, err := c.start(ctx, n)
	return err
}

// start starts the container and returns how long after its process
// started the agent first answered.
func (c *Cluster) start(ctx context.Context, n *Node) (time.Duration, error) {
	if _, err := dockerCmd(ctx, "start", n.Container); err != nil {
		return 0, err
	}
	// The restarted container has a new MAC address; the host's neighbour
	// entry for it is stale or failed (clients kept knocking while it was
	// down) and would delay the first answers by most of a second.
	_ = exec.CommandContext(ctx, "ip", "neigh", "flush", "to", n.APIIP).Run()
	if err := c.waitHealthy(ctx, n, time.Minute); err != nil {
		return 0, err
	}
	answered := time.Now()
	c.markUp(n)
	out, err := dockerCmd(ctx, "inspect", "--format", "{{.State.StartedAt}}", n.Container)
	if err != nil {
		return 0, err
	}
	started, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(out))
	if err != nil {
		return 0, fmt.Errorf("%s started at %q: %v", n.Name, out, err)
	}
	return answered.Sub(started), nil
}

// Restart stops the agent and starts it again.
func (c *Cluster) Restart(ctx context.Context, n *Node) error {
	if err := c.Stop(ctx, n); err != nil {
		return err
	}
	return c.Start(ctx, n)
}

// Pause freezes every process of the container (docker pause): the agent
// neither answers nor notices time passing until Unpause.
func (c *Cluster) Pause(ctx context.Context, n *Node) error {
	c.markDown(n, faultPaused)
	_, err := dockerCmd(ctx, "pause", n.Container)
	return err
}

// Unpause thaws a paused container and waits until its API answers.
func (c *Cluster) Unpause(ctx context.Context, n *Node) error {
	if _, err := dockerCmd(ctx, "unpause", n.Container); err != nil {
		return err
	}
	if err := c.waitHealthy(ctx, n, time.Minute); err != nil {
		return err
	}
	c.markUp(n)
	return nil
}

// Kinds of process faults, as e2e/chaos's FaultLog names them.
const (
	faultKilled = "killed"
	faultPaused = "paused"
)

// markDown records that n stops answering now (killed, stopped or paused),
// also in the fault log when one is set.
func (c *Cluster) markDown(n *Node, kind string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down[n] = append(c.down[n], span{from: time.Now()})
	if c.faultLog != nil && c.faultEnd[n] == nil {
		c.faultEnd[n] = c.faultLog(n.Name, kind)
	}
}

// markUp records that n answers again.
func (c *Cluster) markUp(n *Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.down[n]; len(s) > 0 && s[len(s)-1].to.IsZero() {
		s[len(s)-1].to = time.Now()
	}
	if end := c.faultEnd[n]; end != nil {
		end()
		delete(c.faultEnd, n)
	}
}

// LogFaults makes the cluster report every process fault it injects to
// begin (chaos.FaultLog.Begin): begin is called when a node is killed,
// stopped or paused, and the function it returns once the node answers
// again.
func (c *Cluster) LogFaults(begin func(node, kind string) (end func())) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faultLog = begin
}

// wasDown says whether n was killed, stopped or paused at any time between
// from and to.
func (c *Cluster) wasDown(n *Node, from, to time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.down[n] {
		if !s.from.After(to) && (s.to.IsZero() || !s.to.Before(from)) {
			return true
		}
	}
	return false
}

// ---- network faults ----

// Disconnect takes the node off the raft network (docker network
// disconnect): it can reach no other agent, and none can reach it. Its API
// stays reachable.
func (c *Cluster) Disconnect(ctx context.Context, n *Node) error {
	_, err := dockerCmd(ctx, "network", "disconnect", c.raft.name, n.Container)
	return err
}

// Connect puts a disconnected node back on the raft network at its address.
func (c *Cluster) Connect(ctx context.Context, n *Node) error {
	_, err := dockerCmd(ctx, "network", "connect", "--ip", n.RaftIP, c.raft.name, n.Container)
	return err
}

// Partition splits the cluster into sides that cannot reach each other:
// every node gets a blackhole route to each address on another side, in
// its own network namespace (ip route, run by nsenter from the host), so
// packets across sides are discarded on both ends. Nodes in no side keep
// reaching everyone. heal removes the routes.
func (c *Cluster) Partition(ctx context.Context, sides ...[]*Node) (heal func(context.Context) error, err error) {
	routes := map[*Node][]string{}
	for i, side := range sides {
		for j, other := range sides {
			if i == j {
				continue
			}
			for _, n := range side {
				for _, o := range other {
					routes[n] = append(routes[n], o.RaftIP+"/32")
				}
			}
		}
	}
	apply := func(ctx context.Context, verb string) error {
		for n, dsts := range routes {
			var batch bytes.Buffer
			for _, d := range dsts {
				fmt.Fprintf(&batch, "route %s blackhole %s\n", verb, d)
			}
			if _, err := c.nsenter(ctx, n, &batch, "ip", "-batch", "-"); err != nil {
				return fmt.Errorf("%s: %v", n.Name, err)
			}
		}
		return nil
	}
	if err := apply(ctx, "add"); err != nil {
		_ = apply(ctx, "del")
		return nil, err
	}
	return func(ctx context.Context) error { return apply(ctx, "del") }, nil
}

// Netem describes latency and loss on a node's outgoing cluster traffic.
type Netem struct {
	Delay  time.Duration
	Jitter time.Duration
	Loss   float64 // a fraction: 0.02 drops 2% of packets
}

func (s Netem) String() string {
	return fmt.Sprintf("delay %s ± %s, loss %g%%", s.Delay, s.Jitter, s.Loss*100)
}

// delayer is a running latency helper (netdelay_test.go).
type delayer struct {
	cmd    *exec.Cmd
	dev    string
	stderr *bytes.Buffer
	done   chan struct{}
}

const delayQueue = 7

// Netem delays (and drops) the packets the node sends on its cluster
// interface: with tc's netem qdisc in the container's network namespace
// where the kernel has netem, otherwise with the NFQUEUE helper of
// netdelay_test.go, which needs iptables on the host. It returns which of
// the two it used.
func (c *Cluster) Netem(ctx context.Context, n *Node, spec Netem) (string, error) {
	if err := c.ClearNetem(ctx, n); err != nil {
		return "", err
	}
	dev, err := c.raftInterface(ctx, n)
	if err != nil {
		return "", err
	}
	args := []string{"tc", "qdisc", "replace", "dev", dev, "root", "netem",
		"delay", fmt.Sprintf("%dus", spec.Delay.Microseconds()), fmt.Sprintf("%dus", spec.Jitter.Microseconds())}
	if spec.Loss > 0 {
		args = append(args, "loss", fmt.Sprintf("%g%%", spec.Loss*100))
	}
	out, err := c.nsenter(ctx, n, nil, args...)
	if err == nil {
		n.mu.Lock()
		n.netem = dev
		n.mu.Unlock()
		return "tc netem", nil
	}
	if !strings.Contains(out+err.Error(), "kind is unknown") {
		return "", err
	}
	// No netem in this kernel: the NFQUEUE helper.
	pid, err := c.pid(ctx, n)
	if err != nil {
		return "", err
	}
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	cfg := netDelayConfig{Queue: delayQueue, Delay: spec.Delay, Jitter: spec.Jitter, Loss: spec.Loss, Seed: rand.Uint64()}
	cmd := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-n", exe)
	cmd.Env = append(os.Environ(), envNetDelay+"="+cfg.String())
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	d := &delayer{cmd: cmd, dev: dev, stderr: &bytes.Buffer{}, done: make(chan struct{})}
	cmd.Stderr = d.stderr
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start the latency helper: %v", err)
	}
	go func() {
		_ = cmd.Wait()
		close(d.done)
	}()
	ready := make(chan error, 1)
	go func() {
		r := bufio.NewReader(stdout)
		ready <- readyLine(r)
		_, _ = io.Copy(io.Discard, r)
	}()
	select {
	case err = <-ready:
	case <-time.After(10 * time.Second):
		err = fmt.Errorf("not ready after 10 s")
	}
	if err != nil {
		_ = cmd.Process.Kill()
		<-d.done
		return "", fmt.Errorf("latency helper: %v: %s", err, d.stderr)
	}
	n.mu.Lock()
	n.delayer = d
	n.mu.Unlock()
	if _, err := c.nsenter(ctx, n, nil, delayRule("-I", dev)...); err != nil {
		_ = c.ClearNetem(ctx, n)
		return "", fmt.Errorf("no netem in this kernel, and iptables could not queue packets to the helper: %v", err)
	}
	return "nfqueue helper (no netem in this kernel)", nil
}

func delayRule(op, dev string) []string {
	return []string{"iptables", "-w", "5", op, "OUTPUT", "-o", dev, "-j", "NFQUEUE",
		"--queue-num", strconv.Itoa(delayQueue), "--queue-bypass"}
}

// ClearNetem removes what Netem added.
func (c *Cluster) ClearNetem(ctx context.Context, n *Node) error {
	n.mu.Lock()
	d, dev := n.delayer, n.netem
	n.delayer, n.netem = nil, ""
	n.mu.Unlock()
	var errs []string
	if dev != "" {
		if _, err := c.nsenter(ctx, n, nil, "tc", "qdisc", "del", "dev", dev, "root"); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if d != nil {
		if _, err := c.nsenter(ctx, n, nil, delayRule("-D", d.dev)...); err != nil {
			errs = append(errs, err.Error())
		}
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(5 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.done
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("clear latency on %s: %s", n.Name, strings.Join(errs, "; "))
	}
	return nil
}

// raftInterface is the name of the node's interface on the raft network.
func (c *Cluster) raftInterface(ctx context.Context, n *Node) (string, error) {
	out, err := c.nsenter(ctx, n, nil, "ip", "-o", "-4", "addr", "show")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && strings.HasPrefix(f[3], n.RaftIP+"/") {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("%s has no interface with %s:\n%s", n.Name, n.RaftIP, out)
}

func (c *Cluster) pid(ctx context.Context, n *Node) (int, error) {
	out, err := dockerCmd(ctx, "inspect", "--format", "{{.State.Pid}}", n.Container)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil || pid == 0 {
		return 0, fmt.Errorf("%s is not running (pid %q)", n.Name, strings.TrimSpace(out))
	}
	return pid, nil
}

// nsenter runs a host command inside the node's network namespace.
func (c *Cluster) nsenter(ctx context.Context, n *Node, stdin io.Reader, args ...string) (string, error) {
	pid, err := c.pid(ctx, n)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(pid), "-n"}, args...)...)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("nsenter %s: %s: %v: %s", n.Name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// ---- observing ----

// Logs is the tail of the agent's output.
func (c *Cluster) Logs(n *Node) string { return c.logs(n, "300") }

// logs is the agent's output: its last tail lines, or "all".
func (c *Cluster) logs(n *Node, tail string) string {
	out, err := dockerCmd(context.Background(), "logs", "--tail", tail, n.Container)
	if err != nil {
		return err.Error()
	}
	return out
}

// Health asks the node about itself.
func (c *Cluster) Health(ctx context.Context, n *Node) (api.AgentHealth, error) {
	var h api.AgentHealth
	err := c.getJSON(ctx, n, "/v1/health", &h)
	return h, err
}

// Leader asks each node of among which leader it follows, and returns it
// when all name the same node and that node says it leads.
func (c *Cluster) Leader(ctx context.Context, among []*Node) (*Node, error) {
	var name string
	for _, n := range among {
		var l api.Leader
		if err := c.getJSON(ctx, n, "/v1/status/leader", &l); err != nil {
			return nil, fmt.Errorf("%s: %v", n.Name, err)
		}
		if l.Node == "" {
			return nil, fmt.Errorf("%s knows no leader", n.Name)
		}
		if name != "" && l.Node != name {
			return nil, fmt.Errorf("%s follows %s, others %s", n.Name, l.Node, name)
		}
		name = l.Node
	}
	l := c.Node(name)
	if l == nil || !slices.Contains(among, l) {
		return nil, fmt.Errorf("%v follow %s, which is not one of them", among, name)
	}
	h, err := c.Health(ctx, l)
	if err != nil {
		return nil, fmt.Errorf("leader %s: %v", name, err)
	}
	if h.RaftState != "leader" {
		return nil, fmt.Errorf("%s is followed as leader but is %s", name, h.RaftState)
	}
	return l, nil
}

// WaitLeader waits until every node of among follows the same leader.
func (c *Cluster) WaitLeader(t testing.TB, among []*Node, timeout time.Duration) *Node {
	t.Helper()
	var l *Node
	testutil.WaitFor(t, timeout, func() error {
		var err error
		l, err = c.Leader(context.Background(), among)
		return err
	})
	return l
}

func (c *Cluster) waitHealthy(ctx context.Context, n *Node, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		_, err := c.Health(ctx, n)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not answering after %s: %v\n%s", n.Name, timeout, err, c.Logs(n))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// response is an API answer read in full.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) code() string {
	var e api.ErrorResponse
	_ = json.Unmarshal(r.body, &e)
	return e.Error.Code
}

func (r response) index() uint64 {
	i, _ := strconv.ParseUint(r.header.Get(api.HeaderIndex), 10, 64)
	return i
}

// do sends one request to the node's API, giving up after timeout.
func (c *Cluster) do(ctx context.Context, n *Node, timeout time.Duration, method, path string, body any) (response, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return response{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, n.URL+path, rd)
	if err != nil {
		return response{}, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}, err
}

func (c *Cluster) getJSON(ctx context.Context, n *Node, path string, out any) error {
	r, err := c.do(ctx, n, 3*time.Second, "GET", path, nil)
	if err != nil {
		return err
	}
	if r.status != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", path, r.status, r.body)
	}
	return json.Unmarshal(r.body, out)
}
