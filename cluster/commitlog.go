package cluster

import (
	"errors"
	"fmt"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// A restarted agent must serve what it knew before it stopped, even while
// the cluster has no leader. hashicorp/raft alone restores only the latest
// snapshot and applies later entries once a leader tells it they are
// committed, which never happens without a quorum. raft's own
// RestoreCommittedLogs cannot be used: in v1.8.0, replaying the log that way
// skips the configuration entries it replays, and the agent comes back with
// an empty Raft configuration.
//
// So the cluster keeps raft.CommitIndex() in the stable store, and before
// starting Raft restores the latest snapshot into the state machine itself
// and replays the committed entries after it (replayCommitted). Raft starts
// with NoSnapshotRestoreOnStart and, once a leader is back, re-sends entries
// the state machine already holds; raftFSM skips them by index.
//
// Persisting raft.CommitIndex() is safe at any moment: an agent's commit
// index never exceeds the entries it has stored, and Raft never removes a
// committed entry from a log. A value that lags only means the newest
// entries wait for a leader.

// keyCommitIndex keeps, in the stable store, a commit index this agent has
// seen.
var keyCommitIndex = []byte("tokend_commit_index")

// replayCommitted brings the state machine to the last commit index this
// agent recorded, from the latest readable snapshot and the log.
func (c *Cluster) replayCommitted(logs raft.LogStore, stable raft.StableStore, snaps raft.SnapshotStore) error {
	metas, err := snaps.List()
	if err != nil {
		return fmt.Errorf("list snapshots: %w", err)
	}
	var from uint64
	for _, meta := range metas {
		_, rc, err := snaps.Open(meta.ID)
		if err != nil {
			c.logger.Warn("cannot open snapshot; trying an older one", "snapshot", meta.ID, "error", err)
			continue
		}
		err = c.sm.Restore(rc, meta.Index)
		rc.Close()
		if err != nil {
			c.logger.Warn("cannot restore snapshot; trying an older one", "snapshot", meta.ID, "error", err)
			continue
		}
		from = meta.Index
		break
	}
	if len(metas) > 0 && from == 0 {
		return errors.New("no snapshot in the data dir could be restored")
	}
	commit, err := stable.GetUint64(keyCommitIndex)
	if errors.Is(err, raftboltdb.ErrKeyNotFound) {
		return nil
	} else if err != nil {
		return fmt.Errorf("read commit index: %w", err)
	}
	last, err := logs.LastIndex()
	if err != nil {
		return err
	}
	first, err := logs.FirstIndex()
	if err != nil {
		return err
	}
	commit = min(commit, last)
	if from+1 < first && commit >= first {
		return fmt.Errorf("log starts at %d, after the snapshot at %d: entries are missing", first, from)
	}
	replayed := 0
	for idx := from + 1; idx <= commit; idx++ {
		var l raft.Log
		if err := logs.GetLog(idx, &l); err != nil {
			return fmt.Errorf("read log entry %d: %w", idx, err)
		}
		if l.Type == raft.LogCommand {
			_ = c.sm.Apply(l.Index, l.Data) // a rejection is part of the state
			replayed++
		}
	}
	c.logger.Info("restored committed state from disk", "snapshot_index", from, "commit_index", commit, "replayed", replayed)
	return nil
}

// persistCommitIndex records Raft's commit index if it has moved.
func (c *Cluster) persistCommitIndex() {
	if c.stable == nil || c.raft == nil {
		return
	}
	idx := c.raft.CommitIndex()
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	if idx <= c.commitSaved {
		return
	}
	if err := c.stable.SetUint64(keyCommitIndex, idx); err != nil {
		c.logger.Warn("could not record the commit index; a restart replays less before a leader is found", "error", err)
		return
	}
	c.commitSaved = idx
}
