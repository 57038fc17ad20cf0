// Package cluster owns everything between agents: Raft (transport, log and
// stable store, snapshots), memberlist gossip, bootstrapping, the leader's
// reconciliation of gossip membership into the Raft configuration,
// forwarding writes to the leader, and read indexes for consistent reads
// (readindex.go).
//
// It knows nothing about tokens: it replicates opaque entries into a
// StateMachine.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/tokend/tokend/tokens"
)

// StateMachine is what the cluster replicates into. Apply's error is a
// deterministic rejection, handed back to the proposer.
type StateMachine interface {
	Apply(index uint64, entry []byte) error
	// Check returns the rejection Apply would give entry against the
	// current state, changing nothing. The leader checks before it commits,
	// so a refused write costs no log entry.
	Check(entry []byte) error
	// Snapshot must be quick; the returned WriterTo does the I/O and may run
	// concurrently with Apply.
	Snapshot() (io.WriterTo, error)
	// Restore replaces the state with a snapshot's. index is the Raft
	// index the snapshot stands for, and becomes AppliedIndex: after an
	// operator's restore (snapshot_ops.go) that is not the index the
	// snapshot was taken at.
	Restore(r io.Reader, index uint64) error
	AppliedIndex() uint64
}

// Cluster is this agent's membership in the Raft cluster.
type Cluster struct {
	cfg    Config
	logger hclog.Logger

	sm      StateMachine
	applied *notifier

	mux       *mux
	transport *raft.NetworkTransport
	raft      *raft.Raft
	// logs is Raft's log store; the leader reads it to answer read
	// indexes (readindex.go).
	logs      raft.LogStore
	applyGate applyGate
	closers   []io.Closer
	raftAddr  string
	// appliedIdx, when on disk, records the applied index (commitlog.go).
	appliedIdx *appliedIndex
	// commits, when on disk, tracks the commit index recorded in the log
	// (stagedcommit.go).
	commits *commitTracker

	gossip  *memberlist.Memberlist
	members *memberTable
	// gossipKeys is memberlist's keyring, nil without gossip encryption;
	// gossipKeysMu orders changes and their saving.
	gossipKeys   *memberlist.Keyring
	gossipKeysMu sync.Mutex
	// reconcileCh wakes the leader's reconciler on gossip events.
	reconcileCh chan struct{}

	rpcServer    *http.Server
	rpcClient    *http.Client
	handlersMu   sync.RWMutex
	handlers     map[string]LeaderHandler
	callOpts     map[string]CallOptions
	nodeHandlers map[string]LeaderHandler

	leaderNotify chan bool
	// barrierTerm is the last term whose leader barrier completed on this
	// agent; barrierDone wakes read indexes waiting for it.
	barrierTerm atomic.Uint64
	barrierDone *notifier
	// transfers counts the starts and ends of leadership transfers: odd
	// while one runs. The leader answers no read index meanwhile.
	transfers atomic.Uint64
	// dutiesCh pauses and resumes the leader's tasks (leader.go).
	dutiesCh chan dutiesRequest
	// restoreMu lets one operator's restore run at a time.
	restoreMu  sync.Mutex
	shutdownCh chan struct{}
	// ctx ends at shutdown; background RPCs use it.
	ctx          context.Context
	cancel       context.CancelFunc
	shutdownOnce sync.Once
	wg           sync.WaitGroup
}

// New starts Raft and gossip and returns once both are listening. Joining,
// bootstrapping and leader duties go on in the background.
func New(cfg Config, sm StateMachine) (*Cluster, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Cluster{
		cfg:          cfg,
		logger:       cfg.Logger,
		sm:           sm,
		applied:      newNotifier(),
		members:      newMemberTable(),
		reconcileCh:  make(chan struct{}, 1),
		leaderNotify: make(chan bool, 10),
		barrierDone:  newNotifier(),
		dutiesCh:     make(chan dutiesRequest),
		shutdownCh:   make(chan struct{}),
	}
	c.HandleLeader(leaderReadIndex, c.serveReadIndex)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if err := c.setupRaft(); err != nil {
		c.cancel()
		c.closeAll()
		return nil, err
	}
	c.setupRPC()
	if err := c.setupGossip(); err != nil {
		c.Shutdown()
		return nil, err
	}
	c.goFunc(c.monitorLeadership)
	c.goFunc(c.joinLoop)
	if cfg.BootstrapExpect > 0 {
		c.goFunc(c.bootstrapLoop)
	}
	return c, nil
}

func (c *Cluster) goFunc(f func()) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
}

func (c *Cluster) setupRaft() error {
	ln, err := c.cfg.listen("tcp", c.cfg.RaftAddr)
	if err != nil {
		return fmt.Errorf("listen on raft address: %w", err)
	}
	c.raftAddr = ln.Addr().String()
	c.mux = newMux(ln, c.cfg.TLS, c.logger.Named("mux"))
	c.closers = append(c.closers, c.mux)

	c.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  raftLayer{c.mux.raft},
		MaxPool: 3,
		Timeout: 10 * time.Second,
		Logger:  c.logger.Named("raft-net"),
	})
	c.closers = append([]io.Closer{c.transport}, c.closers...)

	t := c.cfg.Timing
	conf := raft.DefaultConfig()
	conf.LocalID = raft.ServerID(c.cfg.NodeID)
	conf.Logger = c.logger.Named("raft")
	conf.HeartbeatTimeout = t.RaftHeartbeat
	conf.ElectionTimeout = t.RaftElection
	conf.LeaderLeaseTimeout = t.RaftLeaderLease
	conf.CommitTimeout = t.RaftCommit
	conf.NotifyCh = c.leaderNotify
	// A server removed while it was down must be able to come back and be
	// re-added, so removal must not shut its Raft down for good.
	conf.ShutdownOnRemove = false

	var (
		logs   raft.LogStore
		stable raft.StableStore
		snaps  raft.SnapshotStore
	)
	if c.cfg.DataDir == "" {
		store := raft.NewInmemStore()
		logs, stable, snaps = store, store, indexedSnapshots{raft.NewInmemSnapshotStore()}
	} else {
		dir := filepath.Join(c.cfg.DataDir, "raft")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create raft dir: %w", err)
		}
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("restrict raft dir: %w", err)
		}
		bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
		if err != nil {
			return fmt.Errorf("open raft store: %w", err)
		}
		c.closers = append(c.closers, bolt)
		walLog, err := openLogStore(dir, bolt, c.logger)
		if err != nil {
			return err
		}
		c.closers = append(c.closers, walLog)
		if c.appliedIdx, err = openAppliedIndex(filepath.Join(dir, appliedIndexFile)); err != nil {
			return fmt.Errorf("open applied index: %w", err)
		}
		c.closers = append(c.closers, c.appliedIdx)
		staging, err := newStagingStore(walLog, c.appliedIdx)
		if err != nil {
			return fmt.Errorf("read the raft log: %w", err)
		}
		c.commits = staging.t
		cache, err := raft.NewLogCache(512, staging)
		if err != nil {
			return err
		}
		logs, stable = trackingLogs{cache, staging.t}, bolt
		// Only so that raft stages commit indexes with the log store
		// (stagedcommit.go); it replays nothing itself.
		conf.RestoreCommittedLogs = true
		files, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, c.logger.Named("snapshot"))
		if err != nil {
			return fmt.Errorf("open snapshot store: %w", err)
		}
		private, err := newPrivateSnapshots(files, dir)
		if err != nil {
			return fmt.Errorf("restrict snapshot files: %w", err)
		}
		snaps = indexedSnapshots{private}
		if err := c.replayCommitted(logs, stable, snaps, max(c.appliedIdx.get(), c.commits.Durable())); err != nil {
			return fmt.Errorf("restore state from the data dir: %w", err)
		}
		conf.NoSnapshotRestoreOnStart = true
	}
	c.logs = logs
	fsm := &raftFSM{sm: c.sm, applied: c.applied, durable: c.appliedIdx, commits: c.commits, logger: c.logger, gate: &c.applyGate, shutdownCh: c.shutdownCh}
	r, err := raft.NewRaft(conf, fsm, logs, stable, snaps, voteGuard{c.transport, c.logger.Named("raft-net")})
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	c.raft = r
	return nil
}

// Shutdown stops gossip and Raft without leaving the cluster: a server that
// stops keeps its place and rejoins when it starts again with its data dir.
func (c *Cluster) Shutdown() {
	c.shutdownOnce.Do(func() {
		close(c.shutdownCh)
		c.cancel()
		if c.gossip != nil {
			if err := c.gossip.Shutdown(); err != nil {
				c.logger.Warn("gossip shutdown", "error", err)
			}
		}
		if c.raft != nil {
			if err := c.raft.Shutdown().Error(); err != nil {
				c.logger.Warn("raft shutdown", "error", err)
			}
		}
		if c.rpcServer != nil {
			_ = c.rpcServer.Close()
		}
		if c.rpcClient != nil {
			c.rpcClient.CloseIdleConnections()
		}
		c.wg.Wait()
		c.closeAll()
	})
}

func (c *Cluster) closeAll() {
	for _, cl := range c.closers {
		if err := cl.Close(); err != nil {
			c.logger.Warn("close", "error", err)
		}
	}
	c.closers = nil
}

// ShutdownCh is closed when Shutdown starts.
func (c *Cluster) ShutdownCh() <-chan struct{} { return c.shutdownCh }

// RaftAddr is the address Raft and RPC listen on.
func (c *Cluster) RaftAddr() string { return c.raftAddr }

// GossipAddr is the address gossip listens on.
func (c *Cluster) GossipAddr() string {
	return c.gossip.LocalNode().Address()
}

// Term is the current Raft term. Leader tasks read it once when they start:
// it cannot change while they run, and it fences their writes (a deposed
// leader's writes carry an older term).
func (c *Cluster) Term() uint64 { return c.raft.CurrentTerm() }

// TransferLeadership asks the leader to hand leadership to another voter
// and step down; it stays a member.
func (c *Cluster) TransferLeadership() error {
	c.transfers.Add(1)
	defer c.transfers.Add(1)
	if err := c.raft.LeadershipTransfer().Error(); err != nil {
		return translateRaftError(err)
	}
	return nil
}

// Snapshot has Raft take a snapshot now and compact its log.
func (c *Cluster) Snapshot() error { return c.raft.Snapshot().Error() }

// IsLeader reports whether this agent is the Raft leader.
func (c *Cluster) IsLeader() bool { return c.raft.State() == raft.Leader }

// Leader returns the current leader's server id and Raft address, empty when
// there is none.
func (c *Cluster) Leader() (id, addr string) {
	a, i := c.raft.LeaderWithID()
	return string(i), string(a)
}

// Freshness says how current this agent's state is: the index it has
// applied, whether it knows a leader, and the time since it last heard from
// one (0 on the leader, -1 if never).
func (c *Cluster) Freshness() (applied uint64, knownLeader bool, lastContact time.Duration) {
	applied = c.sm.AppliedIndex()
	addr, _ := c.raft.LeaderWithID()
	knownLeader = addr != ""
	switch {
	case c.raft.State() == raft.Leader:
		lastContact = 0
	default:
		if lc := c.raft.LastContact(); lc.IsZero() {
			lastContact = -1
		} else {
			lastContact = time.Since(lc)
		}
	}
	return applied, knownLeader, lastContact
}

// Apply commits entry through Raft: directly on the leader, or forwarded to
// it once. It returns the entry's index after this agent has applied it, so
// the caller reads its own write. A rejection by the state machine comes back
// as the error, with the index.
func (c *Cluster) Apply(ctx context.Context, entry []byte) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timing.ApplyTimeout)
	defer cancel()
	addr, err := c.waitForLeader(ctx)
	if err != nil {
		return 0, err
	}
	if c.IsLeader() {
		return c.applyLocal(ctx, entry)
	}
	index, err := c.forwardApply(ctx, addr, entry)
	if err != nil || index == 0 {
		return index, err
	}
	if err := c.WaitForIndex(ctx, index); err != nil {
		return index, tokens.Errorf(tokens.CodeUnavailable, "write committed at index %d, but this agent has not applied it yet: %v", index, err)
	}
	return index, nil
}

// waitForLeader returns the leader's address, waiting up to LeaderWait for
// an election to finish.
func (c *Cluster) waitForLeader(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timing.LeaderWait)
	defer cancel()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if addr, _ := c.raft.LeaderWithID(); addr != "" {
			return string(addr), nil
		}
		select {
		case <-ctx.Done():
			return "", errNoLeader()
		case <-c.shutdownCh:
			return "", tokens.Errorf(tokens.CodeUnavailable, "the agent is shutting down")
		case <-t.C:
		}
	}
}

func (c *Cluster) applyLocal(ctx context.Context, entry []byte) (uint64, error) {
	timeout := c.cfg.Timing.ApplyTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	if err := c.sm.Check(entry); err != nil {
		// A refusal is an answer from this agent's state, so it must be as
		// fresh as a consistent read: hold every write acknowledged before
		// it. A leader's state may not. A new leader applies what earlier
		// leaders committed only once its barrier commits; and a leader
		// frozen (a pause, a long stall) or cut off can have been deposed
		// without knowing it yet, its successor having committed writes
		// meanwhile: it would refuse a delete of a token added since as not
		// found. So the refusal stands only after a read index — a quorum
		// confirms this leader, in a term whose barrier is done — and
		// against a state that has applied it.
		index, rerr := c.leaderReadIndex(ctx)
		if rerr != nil {
			return 0, tokens.Errorf(tokens.CodeNoLeader, "this agent could not confirm that it still leads, so it cannot check this write against the cluster's latest state; nothing was written: %v", rerr)
		}
		if werr := c.WaitForIndex(ctx, index); werr != nil {
			return 0, tokens.Errorf(tokens.CodeUnavailable, "the leader has not yet applied index %d, so it cannot check this write; nothing was written: %v", index, werr)
		}
		if err := c.sm.Check(entry); err != nil {
			return 0, err
		}
	}
	f := c.raft.Apply(entry, timeout)
	if err := f.Error(); err != nil {
		return 0, translateRaftError(err)
	}
	if err, ok := f.Response().(error); ok && err != nil {
		return f.Index(), err
	}
	return f.Index(), nil
}

// WaitForIndex blocks until this agent's state machine has applied index.
func (c *Cluster) WaitForIndex(ctx context.Context, index uint64) error {
	return c.applied.wait(ctx, func() bool { return c.sm.AppliedIndex() >= index })
}

func errNoLeader() error {
	return tokens.Errorf(tokens.CodeNoLeader, "the cluster has no leader, so writes cannot be committed; reads still work")
}

func translateRaftError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader):
		return errNoLeader()
	case errors.Is(err, raft.ErrLeadershipLost):
		return tokens.Errorf(tokens.CodeNoLeader, "leadership was lost before the write committed; it may or may not have been applied")
	case errors.Is(err, raft.ErrRaftShutdown):
		return tokens.Errorf(tokens.CodeUnavailable, "the agent is shutting down")
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return tokens.Errorf(tokens.CodeUnavailable, "timed out waiting to submit the write")
	}
	return tokens.Errorf(tokens.CodeUnavailable, "raft: %v", err)
}

// raftFSM adapts a StateMachine to raft.BatchingFSM.
type raftFSM struct {
	sm      StateMachine
	applied *notifier
	// durable, when on disk, records each batch's index before the batch
	// is applied (commitlog.go).
	durable *appliedIndex
	// commits says up to which index the log itself records entries as
	// committed: a batch at or below it needs no sync of its own.
	commits *commitTracker
	logger  hclog.Logger
	// gate holds batches back while a test blocks them (faults.go).
	gate       *applyGate
	shutdownCh <-chan struct{}
}

func (f *raftFSM) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

func (f *raftFSM) ApplyBatch(logs []*raft.Log) []any {
	f.gate.pass(f.shutdownCh)
	out := make([]any, len(logs))
	// Entries at or below the applied index were replayed from disk at
	// startup (commitlog.go); Raft sends them again once a leader is back.
	applied := f.sm.AppliedIndex()
	last := logs[len(logs)-1].Index
	if last <= applied {
		return out
	}
	if f.durable != nil && (f.commits == nil || f.commits.Durable() < last) {
		if err := f.durable.save(last); err != nil {
			f.logger.Error("cannot record the applied index; after a crash this agent waits for a leader to serve its newest state", "index", last, "error", err)
		}
	}
	for i, l := range logs {
		if l.Type != raft.LogCommand || l.Index <= applied {
			continue
		}
		if err := f.sm.Apply(l.Index, l.Data); err != nil {
			out[i] = err
		}
	}
	f.applied.notify()
	return out
}

func (f *raftFSM) Snapshot() (raft.FSMSnapshot, error) {
	w, err := f.sm.Snapshot()
	if err != nil {
		return nil, err
	}
	return fsmSnapshot{w}, nil
}

func (f *raftFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	err := f.sm.Restore(rc, snapshotIndex(rc))
	f.applied.notify()
	return err
}

type fsmSnapshot struct{ w io.WriterTo }

func (s fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.w.WriteTo(sink); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (fsmSnapshot) Release() {}

// notifier wakes everyone waiting for a condition each time notify is called.
type notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

func newNotifier() *notifier { return &notifier{ch: make(chan struct{})} }

func (n *notifier) notify() {
	n.mu.Lock()
	close(n.ch)
	n.ch = make(chan struct{})
	n.mu.Unlock()
}

func (n *notifier) wait(ctx context.Context, done func() bool) error {
	for {
		n.mu.Lock()
		ch := n.ch
		n.mu.Unlock()
		if done() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Peer is one server in the Raft configuration.
type Peer struct {
	ID       string `json:"id"`
	Node     string `json:"node,omitempty"`
	Address  string `json:"address"`
	Suffrage string `json:"suffrage"`
	Leader   bool   `json:"leader"`
}

// Peers returns the Raft configuration as this agent knows it.
func (c *Cluster) Peers() ([]Peer, error) {
	f := c.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, translateRaftError(err)
	}
	names := map[string]string{}
	for _, m := range c.members.list() {
		if _, ok := names[m.ID]; !ok || m.Status == StatusAlive {
			names[m.ID] = m.Name
		}
	}
	_, leader := c.raft.LeaderWithID()
	var peers []Peer
	for _, s := range f.Configuration().Servers {
		suffrage := "voter"
		if s.Suffrage != raft.Voter {
			suffrage = "nonvoter"
		}
		peers = append(peers, Peer{ID: string(s.ID), Node: names[string(s.ID)], Address: string(s.Address), Suffrage: suffrage, Leader: s.ID == leader})
	}
	return peers, nil
}

// RaftState is "leader", "follower", "candidate" or "shutdown".
func (c *Cluster) RaftState() string { return strings.ToLower(c.raft.State().String()) }
