package cluster

import (
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
)

// privateSnapshots makes raft's file snapshots readable by this agent's user
// only: raft creates their directories 0755 and files with the process
// umask. The state file is restricted before a byte is written to it.
type privateSnapshots struct {
	raft.SnapshotStore
	dir string // where raft keeps the snapshots: <raft dir>/snapshots
}

func newPrivateSnapshots(store raft.SnapshotStore, raftDir string) (*privateSnapshots, error) {
	s := &privateSnapshots{SnapshotStore: store, dir: filepath.Join(raftDir, "snapshots")}
	// Snapshots an older agent left behind, and the directory itself.
	return s, restrictTree(s.dir)
}

func (s *privateSnapshots) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.SnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	if err := restrictTree(filepath.Join(s.dir, sink.ID()+".tmp")); err != nil {
		_ = sink.Cancel()
		return nil, err
	}
	return &privateSink{SnapshotSink: sink, dir: filepath.Join(s.dir, sink.ID())}, nil
}

type privateSink struct {
	raft.SnapshotSink
	dir string
}

// Close finishes the snapshot, then restricts what raft wrote at the end
// (its metadata).
func (s *privateSink) Close() error {
	if err := s.SnapshotSink.Close(); err != nil {
		return err
	}
	return restrictTree(s.dir)
}

// restrictTree makes every directory under root 0700 and every file 0600.
func restrictTree(root string) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		mode := os.FileMode(0o600)
		if d.IsDir() {
			mode = 0o700
		}
		return os.Chmod(path, mode)
	})
}

// indexedSnapshots tells the state machine the Raft index of each snapshot
// it restores. raft.FSM.Restore gets a bare stream, and the index in the
// stream's own header is not the one Raft installs it at after an
// operator's restore (snapshot_ops.go). Raft opens the stream from this
// store right before it restores it — on a follower installing the
// leader's snapshot, on the leader installing an operator's, and at start —
// so every stream this store opens carries its snapshot's index, and
// raftFSM.Restore finds it under raft's own wrappers.
type indexedSnapshots struct{ raft.SnapshotStore }

func (s indexedSnapshots) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := s.SnapshotStore.Open(id)
	if err != nil {
		return nil, nil, err
	}
	return meta, &indexedReader{ReadCloser: rc, index: meta.Index}, nil
}

// indexedReader is a snapshot's stream and the Raft index of the snapshot.
type indexedReader struct {
	io.ReadCloser
	index uint64
}

// snapshotIndex returns the Raft index of the snapshot rc reads, unwrapping
// what raft wraps it in; 0 (the stream header's index) for a stream that
// did not come from indexedSnapshots.
func snapshotIndex(rc io.ReadCloser) uint64 {
	for {
		switch r := rc.(type) {
		case *indexedReader:
			return r.index
		case raft.ReadCloserWrapper:
			rc = r.WrappedReadCloser()
		default:
			return 0
		}
	}
}
