package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sync"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// A restarted agent must serve what it knew before it stopped, even while
// the cluster has no leader, and after a crash as much as after a clean
// stop. hashicorp/raft alone restores only the latest snapshot and applies
// later entries once a leader tells it they are committed, which never
// happens without a quorum.
//
// Two ways were open. raft's RestoreCommittedLogs with a commit-tracking log
// store cannot be used in v1.8.0: replaying the log that way skips the
// configuration entries (the agent came back with an empty Raft
// configuration), and StageCommitIndex is written only with the next
// StoreLogs, so the last write before a quiet spell — the one a crash
// test checks — is never recorded as committed. An FSM that writes its
// whole state with its index in one transaction would store every token a
// second time and cost a state write per entry.
//
// So the state machine's applied index is made durable instead, and before
// the state it names becomes visible: raftFSM.ApplyBatch writes the batch's
// last index to <raft dir>/applied-index and syncs it, then applies the
// batch. Raft hands the FSM only committed entries, and every one of them is
// already in this agent's log store (raft stores entries before it counts
// them), so snapshot + log up to that index is exactly the state a reader
// saw. A restart restores the latest snapshot and replays the log up to the
// recorded index before Raft starts (replayCommitted); Raft runs with
// NoSnapshotRestoreOnStart and, once a leader is back, re-sends entries the
// state machine already holds, which raftFSM skips by index.
//
// The cost is one fsync of 16 bytes per applied batch (80–120 µs on the test
// machine), paid by the FSM goroutine before the batch shows — except where
// the log append that brought newer entries already recorded the batch as
// committed (a follower under steady writes: stagedcommit.go), which that
// append's own sync made durable. Nothing a
// reader or a writer was ever shown is lost by a crash: a write is
// acknowledged only after the acknowledging agent applied it. An agent that
// had not yet learned a write was committed (within one CommitTimeout of
// the leader learning it) gets it from the next leader.

// appliedIndexFile holds two slots, written alternately, each an index and
// its CRC: a torn write can spoil only the slot being written, and the
// other still holds the previous index.
const appliedIndexFile = "applied-index"

// keyCommitIndex is where agents before the applied-index file recorded,
// once a second, the commit index they had seen. Still read on upgrade.
var keyCommitIndex = []byte("tokend_commit_index")

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// appliedIndex is the durable record of the state machine's applied index.
type appliedIndex struct {
	mu    sync.Mutex
	f     *os.File
	saved uint64
	slot  int64
}

func openAppliedIndex(path string) (*appliedIndex, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	a := &appliedIndex{f: f}
	if a.saved, a.slot, err = a.read(); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}

// read returns the highest valid slot's index and the slot to write next.
func (a *appliedIndex) read() (uint64, int64, error) {
	var buf [32]byte
	n, err := a.f.ReadAt(buf[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, 0, err
	}
	var best uint64
	var next int64
	for slot := range int64(2) {
		rec := buf[slot*16 : slot*16+16]
		if int64(n) < slot*16+16 {
			continue
		}
		idx := binary.BigEndian.Uint64(rec[:8])
		if crc32.Checksum(rec[:8], crcTable) != binary.BigEndian.Uint32(rec[8:12]) {
			continue
		}
		if idx >= best {
			best, next = idx, 1-slot
		}
	}
	return best, next, nil
}

// save durably records idx, if it is higher than what is recorded.
func (a *appliedIndex) save(idx uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if idx <= a.saved {
		return nil
	}
	var rec [16]byte
	binary.BigEndian.PutUint64(rec[:8], idx)
	binary.BigEndian.PutUint32(rec[8:12], crc32.Checksum(rec[:8], crcTable))
	if _, err := a.f.WriteAt(rec[:], a.slot*16); err != nil {
		return err
	}
	if err := a.f.Sync(); err != nil {
		return err
	}
	a.saved, a.slot = idx, 1-a.slot
	return nil
}

func (a *appliedIndex) get() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.saved
}

func (a *appliedIndex) Close() error { return a.f.Close() }

// replayCommitted brings the state machine to the applied index this agent
// recorded, from the latest readable snapshot and the log.
// recorded is the highest index the data dir records as committed.
func (c *Cluster) replayCommitted(logs raft.LogStore, stable raft.StableStore, snaps raft.SnapshotStore, recorded uint64) error {
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
	commit := recorded
	if legacy, err := stable.GetUint64(keyCommitIndex); err == nil {
		commit = max(commit, legacy)
	} else if !errors.Is(err, raftboltdb.ErrKeyNotFound) {
		return fmt.Errorf("read commit index: %w", err)
	}
	if commit == 0 {
		return nil
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
	c.logger.Info("restored committed state from disk", "snapshot_index", from, "applied_index", commit, "replayed", replayed)
	return nil
}
