package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/migrate"
	"github.com/hashicorp/raft-wal/segment"
	"github.com/hashicorp/raft-wal/types"
)

// The Raft log lives in <raft dir>/wal, a hashicorp/raft-wal write-ahead
// log: each append is one write and one fsync of the tail segment file.
// raft.db (bolt) keeps the stable store — the current term and vote, written
// only at elections — and, in data dirs from before the WAL, the log. bbolt
// syncs twice per commit (its pages, then its meta page), and every append
// waited for both, on the leader before it replicates and on each follower
// before it answers: the WAL halves the syncs on a write's path.
//
// A data dir whose log is still in raft.db is moved over on start, before
// Raft runs: every entry is copied into <raft dir>/wal.new, which is synced
// and then renamed to wal (the rename is the commit point, made durable by
// syncing the raft dir), and only then are the entries deleted from
// raft.db. A crash before the rename leaves raft.db as it was and the copy
// is made again; a crash after it leaves entries in raft.db that nothing
// reads, deleted on the next start. There is no way back: an older agent
// would find no log in raft.db.

const (
	walDir       = "wal"
	walMigrating = "wal.new"
	// walSegmentSize is the size of each WAL segment file, allocated when
	// the segment is created. tokend's entries are small (a token add is a
	// few hundred bytes) and snapshots compact the log every few thousand
	// entries, so raft-wal's default of 64 MiB would mostly sit empty.
	walSegmentSize = 16 << 20
	// migrateBatchBytes is how much log data one append of the move
	// carries.
	migrateBatchBytes = 1 << 20
)

// openLogStore opens the Raft log of the raft dir, moving it out of bolt
// first if it is still there.
func openLogStore(dir string, bolt *raftboltdb.BoltStore, logger hclog.Logger) (walStore, error) {
	final := filepath.Join(dir, walDir)
	_, err := os.Stat(final)
	switch {
	case err == nil:
		// Entries left in raft.db by a move that crashed after its
		// rename.
		if err := deleteBoltLogs(bolt); err != nil {
			return walStore{}, err
		}
	case errors.Is(err, os.ErrNotExist):
		if err := migrateBoltLogs(dir, bolt, logger); err != nil {
			return walStore{}, fmt.Errorf("move the raft log from raft.db to %s: %w", walDir, err)
		}
	default:
		return walStore{}, err
	}
	return openWAL(final, walSegmentSize, logger)
}

// walStore is a raft-wal WAL that closes its meta store too: raft-wal
// v0.4.0's Close leaves it open, and with it the flock that keeps the next
// Open of the same dir waiting for ever.
type walStore struct {
	*wal.WAL
	meta *metadb.BoltMetaDB
}

func (w walStore) Close() error {
	err := w.WAL.Close()
	if cerr := w.meta.Close(); err == nil {
		err = cerr
	}
	return err
}

func openWAL(dir string, segmentSize int, logger hclog.Logger) (walStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return walStore{}, err
	}
	filer := segment.NewFiler(dir, privateVFS{fs.New()})
	if err := repairWALTail(dir, filer); err != nil {
		return walStore{}, fmt.Errorf("repair raft log %s: %w", dir, err)
	}
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(dir, wal.WithMetaStore(meta), wal.WithSegmentFiler(filer),
		wal.WithSegmentSize(segmentSize), wal.WithLogger(logger.Named("wal")))
	if err != nil {
		_ = meta.Close()
		return walStore{}, fmt.Errorf("open raft log %s: %w", dir, err)
	}
	ws := walStore{w, meta}
	// raft-wal creates its meta store 0644 (in a 0700 dir); data dir files
	// are 0600.
	entries, err := os.ReadDir(dir)
	for _, e := range entries {
		if err == nil && e.Type().IsRegular() {
			err = os.Chmod(filepath.Join(dir, e.Name()), 0o600)
		}
	}
	if err != nil {
		ws.Close()
		return walStore{}, fmt.Errorf("restrict raft log files: %w", err)
	}
	return ws, nil
}

// repairWALTail finishes what a crash interrupted at the tail of the WAL,
// which raft-wal v0.4.2's Open does not:
//   - A full segment is sealed (its index block written and synced) by the
//     append that fills it, and recorded as sealed in the meta store later,
//     by a goroutine, together with the next segment. A crash in between
//     leaves the meta store's tail sealed on disk: Open recovers it as the
//     tail, and every append after it fails with "segment is sealed".
//   - The meta store names a new tail segment before its file is created. A
//     crash in between leaves a tail Open cannot open.
//
// Both are repaired the way raft-wal would have gone on: the sealed tail is
// recorded as sealed and a new tail follows it; a missing tail file is
// created (it held nothing: entries are synced into a file that exists).
func repairWALTail(dir string, filer *segment.Filer) error {
	meta := &metadb.BoltMetaDB{}
	persisted, err := meta.Load(dir)
	if err != nil {
		return err
	}
	defer meta.Close()
	if len(persisted.Segments) == 0 {
		return nil
	}
	tail := persisted.Segments[len(persisted.Segments)-1]
	if !tail.SealTime.IsZero() {
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, segment.FileName(tail))); errors.Is(err, os.ErrNotExist) {
		return createSegment(filer, tail)
	} else if err != nil {
		return err
	}
	w, err := filer.RecoverTail(tail)
	if err != nil {
		return err
	}
	sealed, indexStart, err := w.Sealed()
	last := w.LastIndex()
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil || !sealed {
		return err
	}
	if last < tail.BaseIndex {
		return fmt.Errorf("segment %d (base index %d) is sealed with no entries", tail.ID, tail.BaseIndex)
	}
	now := time.Now()
	tail.SealTime, tail.MaxIndex, tail.IndexStart = now, last, indexStart
	next := types.SegmentInfo{
		ID:         persisted.NextSegmentID,
		BaseIndex:  last + 1,
		MinIndex:   last + 1,
		Codec:      tail.Codec,
		SizeLimit:  tail.SizeLimit,
		CreateTime: now,
	}
	persisted.Segments[len(persisted.Segments)-1] = tail
	persisted.Segments = append(persisted.Segments, next)
	persisted.NextSegmentID++
	if err := meta.CommitState(persisted); err != nil {
		return err
	}
	return createSegment(filer, next)
}

func createSegment(filer *segment.Filer, info types.SegmentInfo) error {
	w, err := filer.Create(info)
	if err != nil {
		return err
	}
	return w.Close()
}

// privateVFS creates segment files 0600 rather than raft-wal's 0644.
type privateVFS struct{ *fs.FS }

func (v privateVFS) Create(dir, name string, size uint64) (types.WritableFile, error) {
	f, err := v.FS.Create(dir, name, size)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(filepath.Join(dir, name), 0o600); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// migrateBoltLogs copies the log out of raft.db into a new WAL and commits
// the move by renaming it to wal. With no log in raft.db (a new data dir),
// it only creates the WAL.
func migrateBoltLogs(dir string, bolt *raftboltdb.BoltStore, logger hclog.Logger) error {
	first, err := bolt.FirstIndex()
	if err != nil {
		return err
	}
	last, err := bolt.LastIndex()
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, walMigrating)
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if last > 0 {
		w, err := openWAL(tmp, walSegmentSize, logger)
		if err != nil {
			return err
		}
		err = migrate.CopyLogs(context.Background(), w, bolt, migrateBatchBytes, nil)
		if err == nil {
			err = checkCopy(w, first, last)
		}
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		// Every StoreLogs of the copy synced its segment, and raft-wal
		// syncs its meta store and the directory when it creates a file.
		if err := os.Rename(tmp, filepath.Join(dir, walDir)); err != nil {
			return err
		}
		if err := syncDir(dir); err != nil {
			return err
		}
		logger.Info("moved the raft log from raft.db to the write-ahead log", "first_index", first, "last_index", last)
		return deleteBoltLogs(bolt)
	}
	return nil
}

// checkCopy verifies that the WAL holds exactly [first, last].
func checkCopy(w walStore, first, last uint64) error {
	f, err := w.FirstIndex()
	if err != nil {
		return err
	}
	l, err := w.LastIndex()
	if err != nil {
		return err
	}
	if f != first || l != last {
		return fmt.Errorf("copied entries %d..%d, want %d..%d", f, l, first, last)
	}
	return nil
}

func deleteBoltLogs(bolt *raftboltdb.BoltStore) error {
	first, err := bolt.FirstIndex()
	if err != nil {
		return err
	}
	last, err := bolt.LastIndex()
	if err != nil || last == 0 {
		return err
	}
	return bolt.DeleteRange(first, last)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

var (
	_ raft.LogStore          = walStore{}
	_ raft.MonotonicLogStore = walStore{}
	_ io.Closer              = walStore{}
)
