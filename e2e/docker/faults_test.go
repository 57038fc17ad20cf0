//go:build docker

package docker

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// Fault is one of the driver's faults in the shape of e2e/chaos's Nemesis
// (Name, and Start returning the heal), so a one-line adapter runs it under
// that package's workload. Victims says whom the last Start hit: the
// isolated side, the paused, killed or delayed node.
type Fault struct {
	name   string
	inject func(ctx context.Context, rng *rand.Rand) (victims []*Node, heal func(context.Context) error, err error)

	mu      sync.Mutex
	victims []*Node
}

// Name names the fault.
func (f *Fault) Name() string { return f.name }

// Start injects the fault and returns the function that heals it.
func (f *Fault) Start(ctx context.Context, rng *rand.Rand) (heal func(context.Context) error, err error) {
	victims, heal, err := f.inject(ctx, rng)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", f.name, err)
	}
	f.mu.Lock()
	f.victims = victims
	f.mu.Unlock()
	return heal, nil
}

// Victims are the nodes the last Start hit.
func (f *Fault) Victims() []*Node {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.victims
}

// leader waits up to 30 s for the nodes that are up to agree on a leader.
func (c *Cluster) leader(ctx context.Context) (*Node, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var up []*Node
		for _, n := range c.Nodes {
			if !c.wasDown(n, time.Now(), time.Now()) {
				up = append(up, n)
			}
		}
		l, err := c.Leader(ctx, up)
		if err == nil {
			return l, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no leader: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// IsolateLeader disconnects the leader from the cluster's network
// (docker network disconnect): the leader alone is a minority. Heal
// connects it again.
func (c *Cluster) IsolateLeader() *Fault {
	return &Fault{name: "isolate-leader", inject: func(ctx context.Context, _ *rand.Rand) ([]*Node, func(context.Context) error, error) {
		l, err := c.leader(ctx)
		if err != nil {
			return nil, nil, err
		}
		if err := c.Disconnect(ctx, l); err != nil {
			return nil, nil, err
		}
		return []*Node{l}, func(ctx context.Context) error { return c.Connect(ctx, l) }, nil
	}}
}

// Split cuts the cluster in two sides that cannot reach each other, one
// of size nodes (the victims); with withLeader it holds the leader,
// without it does not. The rest is chosen by rng.
func (c *Cluster) Split(size int, withLeader bool) *Fault {
	name := fmt.Sprintf("split-%d-%d", size, len(c.Nodes)-size)
	if withLeader {
		name += "-leader-in-the-smaller"
	}
	return &Fault{name: name, inject: func(ctx context.Context, rng *rand.Rand) ([]*Node, func(context.Context) error, error) {
		l, err := c.leader(ctx)
		if err != nil {
			return nil, nil, err
		}
		others := c.Others(l)
		rng.Shuffle(len(others), func(i, j int) { others[i], others[j] = others[j], others[i] })
		var side []*Node
		if withLeader {
			side = append([]*Node{l}, others[:size-1]...)
		} else {
			side = others[:size]
		}
		heal, err := c.Partition(ctx, side, c.Others(side...))
		if err != nil {
			return nil, nil, err
		}
		return side, heal, nil
	}}
}

// PauseLeader freezes the leader's container; heal thaws it.
func (c *Cluster) PauseLeader() *Fault {
	return &Fault{name: "pause-leader", inject: func(ctx context.Context, _ *rand.Rand) ([]*Node, func(context.Context) error, error) {
		l, err := c.leader(ctx)
		if err != nil {
			return nil, nil, err
		}
		if err := c.Pause(ctx, l); err != nil {
			return nil, nil, err
		}
		return []*Node{l}, func(ctx context.Context) error { return c.Unpause(ctx, l) }, nil
	}}
}

// KillLeader sends the leader SIGKILL; heal starts it again from its
// volume.
func (c *Cluster) KillLeader() *Fault {
	return &Fault{name: "kill-leader", inject: func(ctx context.Context, _ *rand.Rand) ([]*Node, func(context.Context) error, error) {
		l, err := c.leader(ctx)
		if err != nil {
			return nil, nil, err
		}
		if err := c.Kill(ctx, l); err != nil {
			return nil, nil, err
		}
		return []*Node{l}, func(ctx context.Context) error { return c.Start(ctx, l) }, nil
	}}
}

// Delay adds latency (and loss) to what one node sends to the others: the
// leader, or a follower chosen by rng. Heal removes it.
func (c *Cluster) Delay(onLeader bool, spec Netem) *Fault {
	name := "delay-follower"
	if onLeader {
		name = "delay-leader"
	}
	return &Fault{name: name, inject: func(ctx context.Context, rng *rand.Rand) ([]*Node, func(context.Context) error, error) {
		l, err := c.leader(ctx)
		if err != nil {
			return nil, nil, err
		}
		n := l
		if !onLeader {
			others := c.Others(l)
			n = others[rng.IntN(len(others))]
		}
		how, err := c.Netem(ctx, n, spec)
		if err != nil {
			return nil, nil, err
		}
		c.t.Logf("%s on %s's cluster interface by %s", spec, n.Name, how)
		return []*Node{n}, func(ctx context.Context) error { return c.ClearNetem(ctx, n) }, nil
	}}
}

// KillAll sends every agent SIGKILL at once; heal starts them all again.
func (c *Cluster) KillAll() *Fault {
	return &Fault{name: "kill-all", inject: func(ctx context.Context, _ *rand.Rand) ([]*Node, func(context.Context) error, error) {
		if err := c.Kill(ctx, c.Nodes...); err != nil {
			return nil, nil, err
		}
		return c.Nodes, func(ctx context.Context) error {
			errs := make(chan error, len(c.Nodes))
			for _, n := range c.Nodes {
				go func() { errs <- c.Start(ctx, n) }()
			}
			var first error
			for range c.Nodes {
				if err := <-errs; err != nil && first == nil {
					first = err
				}
			}
			return first
		}, nil
	}}
}
