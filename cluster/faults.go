package cluster

import (
	"errors"
	"sync"
	"sync/atomic"
)

// Fault injection, for in-process tests of what the cluster guarantees
// (issue 6): a test makes one server's state machine stall, as a slow disk
// would, or cuts the server off from every other one, as a network
// partition would. Nothing in tokend calls these outside tests; when unused
// they cost an atomic load per applied entry and per connection.

// BlockApply holds back this server's state machine: entries Raft commits
// are not applied until release is called (or the cluster shuts down).
// Raft keeps storing, acknowledging and committing entries, so the server
// still counts toward a quorum while its state lags: a slow follower.
func (c *Cluster) BlockApply() (release func()) {
	return c.applyGate.block()
}

// Isolate cuts this server off from every other one (on) or heals it:
// while isolated, its Raft and RPC connections are closed and new ones fail
// in both directions. Gossip is left alone.
func (c *Cluster) Isolate(on bool) { c.mux.isolate(on) }

// applyGate blocks the state machine while closed.
type applyGate struct {
	mu     sync.Mutex
	closed atomic.Pointer[chan struct{}]
}

func (g *applyGate) block() (release func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ch := make(chan struct{})
	g.closed.Store(&ch)
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			if g.closed.Load() == &ch {
				g.closed.Store(nil)
			}
			close(ch)
		})
	}
}

// pass returns once the gate is open or shutdown is closed.
func (g *applyGate) pass(shutdown <-chan struct{}) {
	if ch := g.closed.Load(); ch != nil {
		select {
		case <-*ch:
		case <-shutdown:
		}
	}
}

var errIsolated = errors.New("isolated by a test")

// isolate turns isolation on or off. Turning it on closes every connection
// the mux has made or accepted.
func (m *mux) isolate(on bool) {
	m.isolated.Store(on)
	if !on {
		return
	}
	m.mu.Lock()
	conns := make([]*trackedConn, 0, len(m.conns))
	for c := range m.conns {
		conns = append(conns, c)
	}
	m.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}
