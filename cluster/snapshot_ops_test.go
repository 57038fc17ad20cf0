package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokend/tokend/tokens"
)

// An operator's snapshot, saved through a follower and restored on the
// leader, becomes every node's state; each node's applied index is the
// index Raft installed it at, above everything applied before, so indexes
// never go back and later entries are applied, not skipped. The leader's
// tasks are stopped for the restore and started again. A node restarted
// afterwards comes back with the restored state from its own disk.
func TestSnapshotSaveAndRestore(t *testing.T) {
	tc := newTestCluster(t)
	var starts, running atomic.Int64
	task := func(ctx context.Context) {
		starts.Add(1)
		running.Add(1)
		defer running.Add(-1)
		<-ctx.Done()
	}
	for range 3 {
		tc.add(3, func(c *Config) { c.LeaderTasks = []func(context.Context){task} })
	}
	leader := tc.leader()
	var follower *testNode
	for _, n := range tc.nodes {
		if n != leader {
			follower = n
			break
		}
	}
	ctx := context.Background()
	apply := func(v uint64) uint64 {
		t.Helper()
		index, err := follower.Apply(ctx, entry(v))
		if err != nil {
			t.Fatalf("apply %d: %v", v, err)
		}
		return index
	}
	converge := func(want uint64, atLeast uint64) {
		t.Helper()
		waitFor(t, 10*time.Second, func() error {
			for _, n := range tc.nodes {
				if v, idx := n.sm.value(), n.sm.AppliedIndex(); v != want || idx < atLeast {
					return fmt.Errorf("%s holds %d at index %d, want %d at %d or later", n.cfg.NodeName, v, idx, want, atLeast)
				}
			}
			return nil
		})
	}
	for v := uint64(1); v <= 5; v++ {
		apply(v)
	}
	meta, data, err := follower.SaveSnapshot(ctx)
	if err != nil {
		t.Fatalf("save through a follower: %v", err)
	}
	if meta.Index == 0 || meta.Term == 0 || len(data) != 16 {
		t.Fatalf("snapshot meta %+v, %d bytes", meta, len(data))
	}
	before := apply(100)
	converge(115, before)
	waitFor(t, 5*time.Second, func() error {
		if starts.Load() != 1 || running.Load() != 1 {
			return fmt.Errorf("leader task started %d times, %d running", starts.Load(), running.Load())
		}
		return nil
	})

	if _, err := follower.RestoreSnapshot(ctx, meta.Index, data); err == nil {
		t.Fatal("a follower restored a snapshot")
	}
	index, err := leader.RestoreSnapshot(ctx, meta.Index, data)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if index <= before {
		t.Fatalf("restored at index %d, not above %d, the last index before it", index, before)
	}
	converge(15, index)
	waitFor(t, 5*time.Second, func() error {
		if starts.Load() != 2 || running.Load() != 1 {
			return fmt.Errorf("leader task started %d times, %d running; want a restart", starts.Load(), running.Load())
		}
		return nil
	})
	after := apply(7)
	if after <= index {
		t.Fatalf("write after the restore at index %d, not above %d", after, index)
	}
	converge(22, after)

	// A restarted follower replays the restored snapshot and what followed.
	follower.Shutdown()
	cfg := follower.cfg
	cfg.RaftAddr, cfg.GossipAddr = follower.RaftAddr(), follower.GossipAddr()
	sm := &counterSM{}
	c, err := New(cfg, sm)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Shutdown)
	waitFor(t, 10*time.Second, func() error {
		if v, idx := sm.value(), sm.AppliedIndex(); v != 22 || idx < after {
			return fmt.Errorf("restarted follower holds %d at index %d, want 22 at %d or later", v, idx, after)
		}
		return nil
	})
}

// One restore runs at a time: another at the same moment is refused.
func TestSnapshotRestoreOneAtATime(t *testing.T) {
	tc := newTestCluster(t)
	n := tc.add(1, nil)
	tc.leader()
	if _, err := n.Apply(context.Background(), entry(3)); err != nil {
		t.Fatal(err)
	}
	meta, data, err := n.SaveSnapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n.restoreMu.Lock()
	_, err = n.RestoreSnapshot(context.Background(), meta.Index, data)
	n.restoreMu.Unlock()
	if err == nil || !errors.Is(err, tokens.ErrConflict) {
		t.Fatalf("a restore while another runs: %v", err)
	}
}
