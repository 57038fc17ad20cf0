package cluster

import (
	"bytes"
	"encoding/binary"
	"sync"

	"github.com/hashicorp/raft"
)

// The applied index must be on disk before a batch becomes visible
// (commitlog.go), which costs the FSM goroutine an fsync per batch. On a
// follower under steady writes that fsync can be saved: the leader tells a
// follower an entry is committed in the same AppendEntries that carries the
// next entries, and raft hands that commit index to the log store
// (StageCommitIndex) just before it stores them. The log store writes it
// into that very append — in the Extensions of the batch's last entry, which
// the WAL syncs with the rest — so when the FSM then gets the committed
// batch, "committed up to here" is already on disk and it skips its own
// sync. A commit learned from a heartbeat with no entries, and the leader's
// own (it commits after its append), still go through the applied-index
// file.
//
// What makes it safe:
//   - stagingStore counts a staged index as durable only once the
//     StoreLogs that carried it returned (synced), and the FSM skips its
//     sync only for batches at or below that.
//   - Every append carries the highest durable index known, not only what
//     was staged for it, so the log's last entry always holds the highest
//     one ever written. A start reads it from there (and takes the larger of
//     it and the applied-index file) and carries it on.
//   - An entry that holds it can leave the log only through DeleteRange
//     (a conflicting suffix, compaction, or every entry after a snapshot is
//     installed): before any DeleteRange the durable index is written to
//     the applied-index file and synced.
//   - Readers never see the record: GetLog strips it, and the LogCache in
//     front holds raft's own entries, which never carry it.
//
// hashicorp/raft stages commit indexes only with Config.RestoreCommittedLogs
// on; GetCommitIndex answers 0, so raft itself replays nothing at start
// (replayCommitted does, with the configuration entries).

// commitExtPrefix marks the record in a log entry's Extensions; the index
// follows as 8 big-endian bytes, then the entry's own Extensions.
var commitExtPrefix = []byte("tokend.commit\x00")

func withCommitExt(idx uint64, ext []byte) []byte {
	out := make([]byte, 0, len(commitExtPrefix)+8+len(ext))
	out = append(out, commitExtPrefix...)
	out = binary.BigEndian.AppendUint64(out, idx)
	return append(out, ext...)
}

// splitCommitExt returns the recorded index (0 if none) and the entry's own
// Extensions.
func splitCommitExt(ext []byte) (uint64, []byte) {
	n := len(commitExtPrefix)
	if len(ext) < n+8 || !bytes.Equal(ext[:n], commitExtPrefix) {
		return 0, ext
	}
	rest := ext[n+8:]
	if len(rest) == 0 {
		rest = nil
	}
	return binary.BigEndian.Uint64(ext[n : n+8]), rest
}

// commitTracker holds the staged and the durable commit index.
type commitTracker struct {
	mu      sync.Mutex
	staged  uint64
	durable uint64
	// applied is where DeleteRange puts the durable index first.
	applied *appliedIndex
}

func (t *commitTracker) stage(idx uint64) {
	t.mu.Lock()
	t.staged = max(t.staged, idx)
	t.mu.Unlock()
}

// next is the index the next append carries.
func (t *commitTracker) next() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return max(t.staged, t.durable)
}

func (t *commitTracker) stored(idx uint64) {
	t.mu.Lock()
	t.durable = max(t.durable, idx)
	t.mu.Unlock()
}

// Durable is the highest index known committed that is on disk in the log.
func (t *commitTracker) Durable() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.durable
}

// stagingStore is the log store under raft's LogCache: it writes the
// tracker's index into each append and strips it from what it reads.
type stagingStore struct {
	raft.LogStore
	t *commitTracker
}

// newStagingStore wraps store and reads the index its last entry recorded.
func newStagingStore(store raft.LogStore, applied *appliedIndex) (*stagingStore, error) {
	s := &stagingStore{LogStore: store, t: &commitTracker{applied: applied}}
	last, err := store.LastIndex()
	if err != nil || last == 0 {
		return s, err
	}
	var l raft.Log
	if err := store.GetLog(last, &l); err != nil {
		return nil, err
	}
	idx, _ := splitCommitExt(l.Extensions)
	s.t.durable = min(idx, last)
	return s, nil
}

func (s *stagingStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

func (s *stagingStore) StoreLogs(logs []*raft.Log) error {
	idx := s.t.next()
	if idx == 0 || len(logs) == 0 {
		return s.LogStore.StoreLogs(logs)
	}
	// raft and the LogCache keep the caller's entries: record on a copy.
	out := make([]*raft.Log, len(logs))
	copy(out, logs)
	last := *logs[len(logs)-1]
	last.Extensions = withCommitExt(idx, last.Extensions)
	out[len(out)-1] = &last
	if err := s.LogStore.StoreLogs(out); err != nil {
		return err
	}
	s.t.stored(idx)
	return nil
}

func (s *stagingStore) GetLog(idx uint64, l *raft.Log) error {
	if err := s.LogStore.GetLog(idx, l); err != nil {
		return err
	}
	_, l.Extensions = splitCommitExt(l.Extensions)
	return nil
}

func (s *stagingStore) DeleteRange(lo, hi uint64) error {
	if s.t.applied != nil {
		if err := s.t.applied.save(s.t.Durable()); err != nil {
			return err
		}
	}
	return s.LogStore.DeleteRange(lo, hi)
}

// IsMonotonic passes on the WAL's answer: raft then deletes every entry
// after restoring a snapshot, rather than leaving a gap.
func (s *stagingStore) IsMonotonic() bool {
	m, ok := s.LogStore.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

// trackingLogs is what raft gets: the LogCache over the staging store, and
// the CommitTrackingLogStore methods.
type trackingLogs struct {
	*raft.LogCache
	t *commitTracker
}

func (l trackingLogs) StageCommitIndex(idx uint64) error {
	l.t.stage(idx)
	return nil
}

// GetCommitIndex is 0: replayCommitted restores the state before raft
// starts.
func (trackingLogs) GetCommitIndex() (uint64, error) { return 0, nil }

var (
	_ raft.CommitTrackingLogStore = trackingLogs{}
	_ raft.MonotonicLogStore      = trackingLogs{}
	_ raft.MonotonicLogStore      = (*stagingStore)(nil)
)
