package cluster

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/tokend/tokend/internal/atomicfile"
)

// metaVersion is the format of nodeMeta; a member whose meta has another
// version, or none, is not a tokend server and is ignored.
const metaVersion = 1

// nodeMeta is what each agent gossips about itself. It must stay far below
// memberlist's 512-byte limit, so keys are short.
type nodeMeta struct {
	Version int    `json:"v"`
	ID      string `json:"id"`
	Raft    string `json:"raft"`
	API     string `json:"api,omitempty"`
	Region  string `json:"region,omitempty"`
	Zone    string `json:"zone,omitempty"`
	Voter   bool   `json:"voter"`
	Expect  int    `json:"expect,omitempty"`
}

// MemberStatus is a member's state in gossip.
type MemberStatus string

const (
	StatusAlive  MemberStatus = "alive"
	StatusFailed MemberStatus = "failed"
	StatusLeft   MemberStatus = "left"
)

// Member is one agent as gossip knows it.
type Member struct {
	Name       string       `json:"name"`
	ID         string       `json:"id"`
	GossipAddr string       `json:"gossip_addr"`
	RaftAddr   string       `json:"raft_addr"`
	APIAddr    string       `json:"api_addr,omitempty"`
	Region     string       `json:"region,omitempty"`
	Zone       string       `json:"zone,omitempty"`
	Voter      bool         `json:"voter"`
	Status     MemberStatus `json:"status"`
	// Since is when this agent saw the member enter Status.
	Since  time.Time `json:"since"`
	expect int
}

// memberTable remembers members, including failed ones, which memberlist
// forgets. Its methods are called from memberlist's event delegate, so they
// only take its own lock and never call back into memberlist.
type memberTable struct {
	mu      sync.Mutex
	members map[string]Member
	// changed is signalled on every change, without blocking.
	changed []chan struct{}
}

func newMemberTable() *memberTable { return &memberTable{members: map[string]Member{}} }

func (t *memberTable) set(n *memberlist.Node, status MemberStatus) {
	var meta nodeMeta
	if err := json.Unmarshal(n.Meta, &meta); err != nil || meta.Version != metaVersion || meta.ID == "" {
		return
	}
	m := Member{
		Name: n.Name, ID: meta.ID, GossipAddr: n.Address(), RaftAddr: meta.Raft, APIAddr: meta.API,
		Region: meta.Region, Zone: meta.Zone, Voter: meta.Voter, Status: status, Since: time.Now(), expect: meta.Expect,
	}
	t.mu.Lock()
	if old, ok := t.members[n.Name]; ok && old.Status == status {
		m.Since = old.Since
	}
	t.members[n.Name] = m
	for _, ch := range t.changed {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	t.mu.Unlock()
}

// notify registers ch to be signalled on changes.
func (t *memberTable) notify(ch chan struct{}) {
	t.mu.Lock()
	t.changed = append(t.changed, ch)
	t.mu.Unlock()
}

// list returns every known member, by name.
func (t *memberTable) list() []Member {
	t.mu.Lock()
	out := make([]Member, 0, len(t.members))
	for _, m := range t.members {
		out = append(out, m)
	}
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Members returns every member gossip knows, failed and left ones included.
func (c *Cluster) Members() []Member { return c.members.list() }

// gossipDelegate hands memberlist our metadata and feeds its events into the
// member table. Nothing here blocks.
type gossipDelegate struct {
	meta    []byte
	members *memberTable
}

func (d *gossipDelegate) NodeMeta(limit int) []byte {
	if len(d.meta) > limit {
		return nil // checked at startup; unreachable
	}
	return d.meta
}
func (d *gossipDelegate) NotifyMsg([]byte)                           {}
func (d *gossipDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *gossipDelegate) LocalState(join bool) []byte                { return nil }
func (d *gossipDelegate) MergeRemoteState(buf []byte, join bool)     {}

func (d *gossipDelegate) NotifyJoin(n *memberlist.Node)   { d.members.set(n, StatusAlive) }
func (d *gossipDelegate) NotifyUpdate(n *memberlist.Node) { d.members.set(n, StatusAlive) }
func (d *gossipDelegate) NotifyLeave(n *memberlist.Node) {
	if n.State == memberlist.StateLeft {
		d.members.set(n, StatusLeft)
	} else {
		d.members.set(n, StatusFailed)
	}
}

func (c *Cluster) setupGossip() error {
	ip, port, _ := splitIPPort("gossip address", c.cfg.GossipAddr)
	meta, err := json.Marshal(nodeMeta{
		Version: metaVersion,
		ID:      c.cfg.NodeID,
		Raft:    c.raftAddr,
		API:     c.cfg.APIAddr,
		Region:  c.cfg.Region,
		Zone:    c.cfg.Zone,
		Voter:   !c.cfg.NonVoter,
		Expect:  c.cfg.BootstrapExpect,
	})
	if err != nil {
		return err
	}
	if len(meta) > memberlist.MetaMaxSize {
		return fmt.Errorf("gossip metadata is %d bytes, over memberlist's %d: shorten node id, addresses, region or zone", len(meta), memberlist.MetaMaxSize)
	}
	t := c.cfg.Timing
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.cfg.NodeName
	mc.BindAddr = ip.String()
	mc.BindPort = port
	mc.AdvertisePort = port
	mc.ProbeInterval = t.GossipProbeInterval
	mc.ProbeTimeout = t.GossipProbeTimeout
	mc.GossipInterval = t.GossipInterval
	mc.PushPullInterval = t.GossipPushPull
	mc.SuspicionMult = t.GossipSuspicionMult
	mc.Logger = c.logger.Named("gossip").StandardLogger(nil)
	keys, err := c.loadGossipKeys()
	if err != nil {
		return err
	}
	if len(keys) > 0 {
		kr, err := memberlist.NewKeyring(keys[1:], keys[0])
		if err != nil {
			return fmt.Errorf("gossip keyring: %w", err)
		}
		mc.Keyring = kr
		c.gossipKeys = kr
	}
	// Without a key these are moot; with one, nothing unencrypted is sent
	// or accepted.
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	d := &gossipDelegate{meta: meta, members: c.members}
	mc.Delegate = d
	mc.Events = d
	c.members.notify(c.reconcileCh)
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("start gossip: %w", err)
	}
	c.gossip = ml
	return nil
}

// joinLoop joins the configured and remembered members, retrying until one
// answers, then keeps the list of known members on disk so that a restart
// finds the cluster again even without --join.
func (c *Cluster) joinLoop() {
	var changed chan struct{}
	if c.cfg.DataDir != "" {
		// Registered before joining, so the members the join finds are saved.
		changed = make(chan struct{}, 1)
		c.members.notify(changed)
	}
	addrs := c.joinAddrs()
	self := c.GossipAddr()
	addrs = slices.DeleteFunc(addrs, func(a string) bool { return a == self })
	for len(addrs) > 0 {
		n, err := c.gossip.Join(addrs)
		if n > 0 {
			c.logger.Info("joined gossip", "contacted", n)
			break
		}
		c.logger.Warn("join failed; will retry", "addrs", addrs, "error", err, "retry_in", c.cfg.Timing.JoinRetry)
		select {
		case <-time.After(c.cfg.Timing.JoinRetry):
		case <-c.shutdownCh:
			return
		}
	}
	if changed == nil {
		return
	}
	for {
		select {
		case <-changed:
			c.savePeers()
		case <-c.shutdownCh:
			return
		}
	}
}

func (c *Cluster) peersFile() string { return filepath.Join(c.cfg.DataDir, "gossip-peers.json") }

func (c *Cluster) joinAddrs() []string {
	addrs := slices.Clone(c.cfg.Join)
	if c.cfg.DataDir == "" {
		return addrs
	}
	b, err := os.ReadFile(c.peersFile())
	if err != nil {
		return addrs
	}
	var saved []string
	if err := json.Unmarshal(b, &saved); err != nil {
		c.logger.Warn("ignoring unreadable gossip peers file", "path", c.peersFile(), "error", err)
		return addrs
	}
	for _, a := range saved {
		if _, _, err := net.SplitHostPort(a); err == nil && !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

func (c *Cluster) savePeers() {
	var addrs []string
	for _, m := range c.members.list() {
		if m.Status == StatusAlive && m.ID != c.cfg.NodeID {
			addrs = append(addrs, m.GossipAddr)
		}
	}
	if len(addrs) == 0 {
		return
	}
	b, _ := json.Marshal(addrs)
	if err := atomicfile.Write(c.peersFile(), b); err != nil {
		c.logger.Warn("save gossip peers", "error", err)
	}
}
