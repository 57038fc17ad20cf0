package cluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/tokend/tokend/tokens"
)

// counterSM sums the uint64 entries it applies; entry 0 is rejected. An
// entry with the top bit set (withdraw) subtracts the rest, and is rejected
// when the sum is smaller: a rule that depends on the state, like deleting
// a token that must exist.
type counterSM struct {
	mu      sync.Mutex
	sum     uint64
	applied atomic.Uint64
	// refused, when set, receives each entry Check refuses.
	refused chan []byte
}

const withdrawBit = 1 << 63

func withdraw(v uint64) []byte { return entry(v | withdrawBit) }

// rule returns the rejection of v against sum, and the sum after it.
func (s *counterSM) rule(v uint64) (uint64, error) {
	switch {
	case v == 0:
		return s.sum, tokens.Errorf(tokens.CodeInvalid, "zero is rejected")
	case v&withdrawBit != 0 && s.sum < v&^withdrawBit:
		return s.sum, tokens.Errorf(tokens.CodeNotFound, "cannot withdraw %d from %d", v&^withdrawBit, s.sum)
	case v&withdrawBit != 0:
		return s.sum - v&^withdrawBit, nil
	}
	return s.sum + v, nil
}

func (s *counterSM) Apply(index uint64, entry []byte) error {
	defer s.applied.Store(index)
	s.mu.Lock()
	defer s.mu.Unlock()
	sum, err := s.rule(binary.BigEndian.Uint64(entry))
	s.sum = sum
	return err
}

func (s *counterSM) Check(entry []byte) error {
	s.mu.Lock()
	_, err := s.rule(binary.BigEndian.Uint64(entry))
	s.mu.Unlock()
	if err != nil && s.refused != nil {
		s.refused <- entry
	}
	return err
}

func (s *counterSM) Snapshot() (io.WriterTo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := binary.BigEndian.AppendUint64(nil, s.sum)
	b = binary.BigEndian.AppendUint64(b, s.applied.Load())
	return bytes.NewBuffer(b), nil
}

func (s *counterSM) Restore(r io.Reader, index uint64) error {
	var b [16]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return err
	}
	s.mu.Lock()
	s.sum = binary.BigEndian.Uint64(b[:8])
	s.mu.Unlock()
	if index == 0 {
		index = binary.BigEndian.Uint64(b[8:])
	}
	s.applied.Store(index)
	return nil
}

func (s *counterSM) AppliedIndex() uint64 { return s.applied.Load() }

func (s *counterSM) value() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sum
}

func entry(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

type testNode struct {
	cfg Config
	sm  *counterSM
	*Cluster
}

type testCluster struct {
	t     testing.TB
	nodes []*testNode
}

func newTestCluster(t testing.TB) *testCluster {
	tc := &testCluster{t: t}
	t.Cleanup(func() {
		for _, n := range tc.nodes {
			n.Shutdown()
		}
	})
	return tc
}

var nodeSeq atomic.Int64

// add starts a server; mod adjusts its config. It joins the first node.
func (tc *testCluster) add(expect int, mod func(*Config)) *testNode {
	tc.t.Helper()
	i := nodeSeq.Add(1)
	level := hclog.Warn
	if os.Getenv("TOKEND_TEST_LOG") != "" {
		level = hclog.Debug
	}
	cfg := Config{
		NodeID:          fmt.Sprintf("id-%03d", i),
		NodeName:        fmt.Sprintf("n%d", i),
		DataDir:         tc.t.TempDir(),
		RaftAddr:        "127.0.0.1:0",
		GossipAddr:      "127.0.0.1:0",
		BootstrapExpect: expect,
		Timing:          FastTiming(),
		Logger:          hclog.New(&hclog.LoggerOptions{Name: fmt.Sprintf("n%d", i), Level: level, Output: testLog{tc.t}}),
	}
	if len(tc.nodes) > 0 {
		cfg.Join = []string{tc.nodes[0].GossipAddr()}
	}
	if mod != nil {
		mod(&cfg)
	}
	sm := &counterSM{}
	c, err := New(cfg, sm)
	if err != nil {
		tc.t.Fatalf("start %s: %v", cfg.NodeName, err)
	}
	n := &testNode{cfg: cfg, sm: sm, Cluster: c}
	tc.nodes = append(tc.nodes, n)
	return n
}

type testLog struct{ t testing.TB }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func waitFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (tc *testCluster) leader() *testNode {
	tc.t.Helper()
	var l *testNode
	waitFor(tc.t, 10*time.Second, func() error {
		for _, n := range tc.nodes {
			if isShutdown(n) {
				continue
			}
			if n.IsLeader() {
				l = n
				return nil
			}
		}
		return errors.New("no leader")
	})
	return l
}

func isShutdown(n *testNode) bool {
	select {
	case <-n.ShutdownCh():
		return true
	default:
		return false
	}
}

// suffrage returns id → "voter"/"nonvoter" from the leader's configuration.
func (tc *testCluster) suffrage() map[string]string {
	tc.t.Helper()
	peers, err := tc.leader().Peers()
	if err != nil {
		tc.t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range peers {
		out[p.ID] = p.Suffrage
	}
	return out
}

func countVoters(s map[string]string) int {
	n := 0
	for _, v := range s {
		if v == "voter" {
			n++
		}
	}
	return n
}

func TestBootstrapExpectFormsOneCluster(t *testing.T) {
	tc := newTestCluster(t)
	for range 3 {
		tc.add(3, nil)
	}
	l := tc.leader()
	waitFor(t, 5*time.Second, func() error {
		for _, n := range tc.nodes {
			if id, _ := n.Leader(); id != l.cfg.NodeID {
				return fmt.Errorf("%s sees leader %q", n.cfg.NodeName, id)
			}
		}
		return nil
	})
	if s := tc.suffrage(); len(s) != 3 || countVoters(s) != 3 {
		t.Fatalf("configuration after bootstrap = %v", s)
	}
	// Every node's own configuration is the same single cluster (a node may
	// hear the leader's heartbeat before the configuration entry).
	for _, n := range tc.nodes {
		waitFor(t, 5*time.Second, func() error {
			peers, err := n.Peers()
			if err != nil || len(peers) != 3 {
				return fmt.Errorf("%s peers = %v, %v", n.cfg.NodeName, peers, err)
			}
			return nil
		})
	}
}

// Five servers started at once with --bootstrap-expect 3 still form one
// cluster: three bootstrap it, the other two are added and promoted.
func TestBootstrapExpectWithExtraServers(t *testing.T) {
	tc := newTestCluster(t)
	for range 5 {
		tc.add(3, nil)
	}
	waitFor(t, 10*time.Second, func() error {
		s := tc.suffrage()
		if len(s) != 5 || countVoters(s) != 5 {
			return fmt.Errorf("configuration = %v", s)
		}
		return nil
	})
	l := tc.leader()
	for _, n := range tc.nodes {
		waitFor(t, 5*time.Second, func() error {
			if id, _ := n.Leader(); id != l.cfg.NodeID {
				return fmt.Errorf("%s follows %q, not %s: two clusters", n.cfg.NodeName, id, l.cfg.NodeID)
			}
			return nil
		})
	}
}

func TestBootstrapExpectMismatchRefuses(t *testing.T) {
	tc := newTestCluster(t)
	a := tc.add(2, nil)
	b := tc.add(3, nil)
	waitFor(t, 5*time.Second, func() error {
		if len(a.Members()) != 2 || len(b.Members()) != 2 {
			return errors.New("gossip has not converged")
		}
		return nil
	})
	_, err := a.tryBootstrap()
	if err == nil || !strings.Contains(err.Error(), "same value") {
		t.Fatalf("tryBootstrap with mismatched expect = %v", err)
	}
	if a.hasState() || b.hasState() {
		t.Fatal("a server bootstrapped despite mismatched --bootstrap-expect")
	}
}

// New servers join as non-voters and are promoted while keeping an odd
// number of voters, never more than MaxVoters.
func TestJoinPromotesToOddVotersUpToMax(t *testing.T) {
	tc := newTestCluster(t)
	for range 3 {
		tc.add(3, func(c *Config) { c.MaxVoters = 5 })
	}
	tc.leader()
	fourth := tc.add(0, func(c *Config) { c.MaxVoters = 5 })
	waitFor(t, 5*time.Second, func() error {
		if s := tc.suffrage(); s[fourth.cfg.NodeID] != "nonvoter" {
			return fmt.Errorf("fourth server: %v", s)
		}
		return nil
	})
	// Stays a non-voter through reconcile passes that would promote it if
	// even voter counts were allowed: four voters tolerate no more failures
	// than three.
	for range 5 {
		tc.leader().reconcile(context.Background(), map[raft.ServerID]time.Time{})
		if s := tc.suffrage(); countVoters(s) != 3 {
			t.Fatalf("an even voter count was reached: %v", s)
		}
	}
	tc.add(0, func(c *Config) { c.MaxVoters = 5 })
	waitFor(t, 10*time.Second, func() error {
		if s := tc.suffrage(); len(s) != 5 || countVoters(s) != 5 {
			return fmt.Errorf("configuration = %v", s)
		}
		return nil
	})
	sixth := tc.add(0, func(c *Config) { c.MaxVoters = 5 })
	waitFor(t, 5*time.Second, func() error {
		if s := tc.suffrage(); s[sixth.cfg.NodeID] != "nonvoter" {
			return fmt.Errorf("sixth server: %v", s)
		}
		return nil
	})
	for range 5 {
		tc.leader().reconcile(context.Background(), map[raft.ServerID]time.Time{})
	}
	if s := tc.suffrage(); countVoters(s) != 5 {
		t.Fatalf("MaxVoters 5 exceeded: %v", s)
	}
}

// A --non-voter server replicates but is never promoted.
func TestNonVoterIsNeverPromoted(t *testing.T) {
	tc := newTestCluster(t)
	tc.add(1, nil)
	tc.leader()
	nv := tc.add(0, func(c *Config) { c.NonVoter = true })
	waitFor(t, 5*time.Second, func() error {
		if s := tc.suffrage(); s[nv.cfg.NodeID] != "nonvoter" {
			return fmt.Errorf("non-voter: %v", s)
		}
		return nil
	})
	if _, err := tc.leader().Apply(context.Background(), entry(7)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() error {
		if v := nv.sm.value(); v != 7 {
			return fmt.Errorf("non-voter has %d", v)
		}
		return nil
	})
	since := map[raft.ServerID]time.Time{raft.ServerID(nv.cfg.NodeID): time.Now().Add(-time.Hour)}
	if err := tc.leader().reconcile(context.Background(), since); err != nil {
		t.Fatal(err)
	}
	if s := tc.suffrage(); s[nv.cfg.NodeID] != "nonvoter" {
		t.Fatalf("non-voter was promoted: %v", s)
	}
}

// A failed server is removed from Raft only after DeadServerTimeout, and the
// leader never removes itself.
func TestDeadServerRemovedAfterTimeout(t *testing.T) {
	tc := newTestCluster(t)
	timeout := 500 * time.Millisecond
	mod := func(c *Config) { c.DeadServerTimeout = timeout }
	for range 3 {
		tc.add(3, mod)
	}
	l := tc.leader()
	var victim *testNode
	for _, n := range tc.nodes {
		if n != l {
			victim = n
			break
		}
	}
	victim.Shutdown()
	var failedAt time.Time
	waitFor(t, 5*time.Second, func() error {
		for _, m := range l.Members() {
			if m.ID == victim.cfg.NodeID && m.Status == StatusFailed {
				failedAt = m.Since
				return nil
			}
		}
		return errors.New("victim not failed in gossip yet")
	})
	waitFor(t, 10*time.Second, func() error {
		if _, ok := tc.suffrage()[victim.cfg.NodeID]; ok {
			return errors.New("dead server still in the configuration")
		}
		return nil
	})
	if waited := time.Since(failedAt); waited < timeout {
		t.Fatalf("dead server removed %s after it failed, before the %s timeout", waited, timeout)
	}
	if _, ok := tc.suffrage()[l.cfg.NodeID]; !ok {
		t.Fatal("the leader removed itself")
	}
}

// Writes on a follower are forwarded, and the follower answers only after it
// has applied them; rejections come back with their code.
func TestApplyForwardsAndReadsOwnWrite(t *testing.T) {
	tc := newTestCluster(t)
	for range 3 {
		tc.add(3, nil)
	}
	l := tc.leader()
	var total uint64
	for _, n := range tc.nodes {
		if n == l {
			continue
		}
		idx, err := n.Apply(context.Background(), entry(5))
		if err != nil {
			t.Fatalf("forwarded apply: %v", err)
		}
		total += 5
		if n.sm.AppliedIndex() < idx || n.sm.value() != total {
			t.Fatalf("follower answered before applying index %d (applied %d, value %d, want %d)", idx, n.sm.AppliedIndex(), n.sm.value(), total)
		}
		before := l.raft.LastIndex()
		idx, err = n.Apply(context.Background(), entry(0))
		if !errors.Is(err, tokens.ErrInvalid) || idx != 0 {
			t.Fatalf("forwarded rejection = %d, %v, want invalid_request at no index", idx, err)
		}
		if after := l.raft.LastIndex(); after != before {
			t.Fatalf("a write the leader refused took log entries %d..%d", before, after)
		}
	}
}

func TestApplyWithoutLeaderFails(t *testing.T) {
	tc := newTestCluster(t)
	n := tc.add(0, nil) // never bootstraps, never joined
	_, err := n.Apply(context.Background(), entry(1))
	if !errors.Is(err, tokens.ErrNoLeader) {
		t.Fatalf("apply without leader = %v", err)
	}
}

func TestMetaFitsMemberlistLimit(t *testing.T) {
	tc := newTestCluster(t)
	n := tc.add(1, func(c *Config) {
		c.Region = strings.Repeat("r", 64)
		c.Zone = strings.Repeat("z", 64)
		c.APIAddr = "[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
	})
	if ms := n.Members(); len(ms) != 1 || ms[0].Zone != strings.Repeat("z", 64) {
		t.Fatalf("members = %+v", ms)
	}
}

func TestConfigRejectsWildcardAndBadAddresses(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:1", "[::]:1", "localhost:1", "127.0.0.1", "127.0.0.1:x"} {
		cfg := Config{NodeID: "a", NodeName: "a", RaftAddr: addr, GossipAddr: "127.0.0.1:0"}
		if err := cfg.validate(); err == nil {
			t.Errorf("raft address %q accepted", addr)
		}
	}
}

// Every agent records an index durably before the state it names becomes
// visible, so whatever a reader saw survives a crash: sampled while writes
// flow, the recorded index — in the applied-index file, or in the log with
// an append that returned (stagedcommit.go) — is never behind the applied
// one.
func TestAppliedIndexDurableBeforeVisible(t *testing.T) {
	tc := newTestCluster(t)
	for range 3 {
		tc.add(3, nil)
	}
	l := tc.leader()
	var last atomic.Uint64
	done := make(chan error, 1)
	go func() {
		// Leadership may move on a loaded machine: write through whoever
		// leads; the property holds for every write that lands.
		for ok, tries := 0, 0; ok < 100; tries++ {
			if tries == 1000 {
				done <- errors.New("fewer than 100 of 1000 writes committed")
				return
			}
			idx, err := l.Apply(context.Background(), entry(1))
			if err != nil {
				l = tc.leader()
				continue
			}
			last.Store(idx)
			ok++
		}
		done <- nil
	}()
	samples := 0
	check := func() {
		for _, n := range tc.nodes {
			applied := n.sm.AppliedIndex()
			recorded := max(readAppliedIndex(t, n.cfg.DataDir), n.commits.Durable())
			if recorded < applied {
				t.Fatalf("%s: applied index %d visible, only %d recorded", n.cfg.NodeName, applied, recorded)
			}
			samples++
		}
	}
	for running := true; running; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			running = false
		default:
			check()
		}
	}
	waitFor(t, 5*time.Second, func() error {
		for _, n := range tc.nodes {
			if got := max(readAppliedIndex(t, n.cfg.DataDir), n.commits.Durable()); got < last.Load() {
				return fmt.Errorf("%s recorded %d, want %d", n.cfg.NodeName, got, last.Load())
			}
		}
		return nil
	})
	check()
	t.Logf("%d samples while 100 writes committed", samples)
}

// applyExactlyOnce adds v through whoever leads, riding out elections on a
// loaded machine: a write whose outcome an election left unknown is looked
// for in the leader's sum before it is sent again. It returns the index v
// was applied at; for tests with one writer.
func applyExactlyOnce(t testing.TB, tc *testCluster, v uint64) uint64 {
	t.Helper()
	var idx uint64
	waitFor(t, 10*time.Second, func() error {
		l := tc.leader()
		if err := l.raft.Barrier(time.Second).Error(); err != nil {
			return err
		}
		before := l.sm.value()
		i, err := l.Apply(context.Background(), entry(v))
		if err == nil {
			idx = i
			return nil
		}
		l = tc.leader()
		if err := l.raft.Barrier(time.Second).Error(); err != nil {
			return err
		}
		if l.sm.value() == before+v {
			idx = l.sm.AppliedIndex()
			return nil
		}
		return err
	})
	return idx
}

func readAppliedIndex(t *testing.T, dataDir string) uint64 {
	t.Helper()
	return readAppliedIndexFile(t, filepath.Join(dataDir, "raft", appliedIndexFile))
}

// A torn write spoils one slot; the other still holds an index.
func TestAppliedIndexSurvivesTornSlot(t *testing.T) {
	path := filepath.Join(t.TempDir(), appliedIndexFile)
	a, err := openAppliedIndex(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, idx := range []uint64{5, 9, 9, 3, 12} {
		if err := a.save(idx); err != nil {
			t.Fatal(err)
		}
	}
	if got := a.get(); got != 12 {
		t.Fatalf("saved = %d, want 12 (never lowered)", got)
	}
	a.Close()
	// Slots alternate: 5 went to slot 0, 9 to slot 1, 12 to slot 0.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xff, 0xff, 0xff}, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	a, err = openAppliedIndex(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if got := a.get(); got != 9 {
		t.Fatalf("after tearing the newest slot: %d, want the previous index 9", got)
	}
	if err := a.save(10); err != nil {
		t.Fatal(err)
	}
	if got := readAppliedIndexFile(t, path); got != 10 {
		t.Fatalf("rewrote the torn slot: read back %d, want 10", got)
	}
}

func readAppliedIndexFile(t *testing.T, path string) uint64 {
	t.Helper()
	a, err := openAppliedIndex(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	return a.get()
}

// A restart restores the latest snapshot and replays the committed entries
// after it before Raft starts, and keeps the Raft configuration.
func TestRestartReplaysSnapshotAndLog(t *testing.T) {
	n := stoppedWith31(t)
	checkRestartServes31(t, n)
}

// CallLeader reaches the leader's handler from every agent, and the
// handler's errors come back with their codes.
func TestCallLeader(t *testing.T) {
	tc := newTestCluster(t)
	for range 3 {
		tc.add(3, nil)
	}
	l := tc.leader()
	for _, n := range tc.nodes {
		n.HandleLeader("echo", func(_ context.Context, body []byte) ([]byte, error) {
			if string(body) == "bad" {
				return nil, tokens.Errorf(tokens.CodeConflict, "bad body")
			}
			return append([]byte(n.cfg.NodeName+":"), body...), nil
		})
	}
	for _, n := range tc.nodes {
		waitFor(t, 5*time.Second, func() error {
			if id, _ := n.Leader(); id != l.cfg.NodeID {
				return errors.New("leader not known yet")
			}
			return nil
		})
		got, err := n.CallLeader(context.Background(), "echo", []byte("hi"))
		if err != nil || string(got) != l.cfg.NodeName+":hi" {
			t.Fatalf("%s: CallLeader = %q, %v; want the leader %s to answer", n.cfg.NodeName, got, err, l.cfg.NodeName)
		}
		if _, err := n.CallLeader(context.Background(), "echo", []byte("bad")); !errors.Is(err, tokens.ErrConflict) {
			t.Fatalf("%s: handler error = %v, want conflict", n.cfg.NodeName, err)
		}
		if _, err := n.CallLeader(context.Background(), "missing", nil); !errors.Is(err, tokens.ErrUnavailable) {
			t.Fatalf("%s: missing handler = %v, want unavailable", n.cfg.NodeName, err)
		}
	}
}

// Everything Raft writes, snapshots included, is for this agent's user
// only, whatever the process umask: directories 0700, files 0600.
func TestRaftFilesArePrivate(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	tc := newTestCluster(t)
	n := tc.add(1, nil)
	tc.leader()
	for v := range uint64(3) {
		if _, err := n.Apply(context.Background(), entry(v+1)); err != nil {
			t.Fatal(err)
		}
		if err := n.Snapshot(); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]int{}
	err := filepath.WalkDir(filepath.Join(n.cfg.DataDir, "raft"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		want := os.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", path, fi.Mode().Perm(), want)
		}
		seen[d.Name()]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen["state.bin"] == 0 || seen["meta.json"] == 0 || seen["raft.db"] != 1 {
		t.Fatalf("walked %v: no snapshot or no raft.db", seen)
	}
}

// stoppedWith31 returns a stopped single-server cluster whose data dir
// holds a snapshot of entries 1, 2 and 4 and, after it, entries 8 and 16
// in the log: state 31, as checkRestartServes31 expects.
func stoppedWith31(t *testing.T) *testNode {
	t.Helper()
	tc := newTestCluster(t)
	n := tc.add(1, nil)
	tc.leader()
	for _, v := range []uint64{1, 2, 4} {
		if _, err := n.Apply(context.Background(), entry(v)); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	for _, v := range []uint64{8, 16} {
		if _, err := n.Apply(context.Background(), entry(v)); err != nil {
			t.Fatal(err)
		}
	}
	n.Shutdown()
	return n
}

// checkRestartServes31 starts the stopped single-server cluster n again from
// its data dir and checks that it holds state 31 (the counter's sum of
// entries 1..7 and 8..31 as the tests write them) before Raft runs, keeps its
// configuration, leads, and applies a new write exactly once: Raft re-sends
// the replayed entries once it leads, and they are not applied twice.
func checkRestartServes31(t *testing.T, n *testNode) {
	t.Helper()
	cfg := n.cfg
	cfg.RaftAddr, cfg.GossipAddr = n.RaftAddr(), n.GossipAddr()
	sm := &counterSM{}
	c, err := New(cfg, sm)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Shutdown()
	if v := sm.value(); v != 31 {
		t.Fatalf("state right after restart = %d, want 31", v)
	}
	peers, err := c.Peers()
	if err != nil || len(peers) != 1 || peers[0].ID != cfg.NodeID {
		t.Fatalf("configuration after restart = %+v, %v", peers, err)
	}
	waitFor(t, 5*time.Second, func() error {
		if !c.IsLeader() {
			return errors.New("not leader yet")
		}
		return nil
	})
	if _, err := c.Apply(context.Background(), entry(32)); err != nil {
		t.Fatal(err)
	}
	if v := sm.value(); v != 63 {
		t.Fatalf("state after a new write = %d, want 63", v)
	}
}
