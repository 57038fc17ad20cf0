package cluster

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/hashicorp/raft-wal/migrate"
)

func testLogs(from, to uint64) []*raft.Log {
	var logs []*raft.Log
	for i := from; i <= to; i++ {
		logs = append(logs, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: entry(i), AppendedAt: time.Unix(1700000000, int64(i)).UTC()})
	}
	return logs
}

func openBolt(t *testing.T, dir string) *raftboltdb.BoltStore {
	t.Helper()
	b, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkLogs asserts that s holds exactly want, field by field.
func checkLogs(t *testing.T, s raft.LogStore, want []*raft.Log) {
	t.Helper()
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	if first != want[0].Index || last != want[len(want)-1].Index {
		t.Fatalf("log holds %d..%d, want %d..%d", first, last, want[0].Index, want[len(want)-1].Index)
	}
	for _, w := range want {
		var got raft.Log
		if err := s.GetLog(w.Index, &got); err != nil {
			t.Fatalf("entry %d: %v", w.Index, err)
		}
		if got.Term != w.Term || got.Type != w.Type || string(got.Data) != string(w.Data) || !got.AppendedAt.Equal(w.AppendedAt) {
			t.Fatalf("entry %d = %+v, want %+v", w.Index, got, *w)
		}
	}
}

func boltLogCount(t *testing.T, b *raftboltdb.BoltStore) uint64 {
	t.Helper()
	first, _ := b.FirstIndex()
	last, _ := b.LastIndex()
	if last == 0 {
		return 0
	}
	return last - first + 1
}

// A data dir whose log is in raft.db has it moved to the WAL on start, with
// the stable store left where it was; a second start finds the WAL.
func TestLogStoreMovesBoltLog(t *testing.T) {
	dir := t.TempDir()
	bolt := openBolt(t, dir)
	want := testLogs(5, 300) // as after a compaction
	if err := bolt.StoreLogs(want); err != nil {
		t.Fatal(err)
	}
	if err := bolt.SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatal(err)
	}
	w, err := openLogStore(dir, bolt, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	checkLogs(t, w, want)
	if n := boltLogCount(t, bolt); n != 0 {
		t.Fatalf("raft.db still holds %d entries after the move", n)
	}
	if term, err := bolt.GetUint64([]byte("CurrentTerm")); err != nil || term != 7 {
		t.Fatalf("stable store after the move: %d, %v", term, err)
	}
	if _, err := os.Stat(filepath.Join(dir, walMigrating)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s left behind: %v", walMigrating, err)
	}
	// Appends go on from there, and survive a reopen.
	more := testLogs(301, 310)
	if err := w.StoreLogs(more); err != nil {
		t.Fatal(err)
	}
	w.Close()
	bolt.Close()

	bolt = openBolt(t, dir)
	defer bolt.Close()
	w, err = openLogStore(dir, bolt, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	checkLogs(t, w, append(want, more...))
}

// A move that crashed before its rename left a partial wal.new and raft.db
// untouched: the next start copies again from raft.db.
func TestLogStoreMoveCrashedBeforeRename(t *testing.T) {
	dir := t.TempDir()
	bolt := openBolt(t, dir)
	defer bolt.Close()
	want := testLogs(1, 100)
	if err := bolt.StoreLogs(want); err != nil {
		t.Fatal(err)
	}
	partial, err := openWAL(filepath.Join(dir, walMigrating), walSegmentSize, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := partial.StoreLogs(want[:40]); err != nil {
		t.Fatal(err)
	}
	partial.Close()

	w, err := openLogStore(dir, bolt, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	checkLogs(t, w, want)
}

// A move that crashed after its rename but before raft.db was emptied:
// the WAL is the log, and the copies left in raft.db are deleted.
func TestLogStoreMoveCrashedAfterRename(t *testing.T) {
	dir := t.TempDir()
	bolt := openBolt(t, dir)
	defer bolt.Close()
	want := testLogs(1, 50)
	if err := bolt.StoreLogs(want); err != nil {
		t.Fatal(err)
	}
	done, err := openWAL(filepath.Join(dir, walDir), walSegmentSize, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate.CopyLogs(context.Background(), done, bolt, 1<<20, nil); err != nil {
		t.Fatal(err)
	}
	done.Close()

	w, err := openLogStore(dir, bolt, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	checkLogs(t, w, want)
	if n := boltLogCount(t, bolt); n != 0 {
		t.Fatalf("raft.db still holds %d entries", n)
	}
}

// An agent whose data dir predates the WAL (its log in raft.db) restarts
// with its committed state, its Raft configuration, and takes new writes.
func TestRestartFromBoltDataDir(t *testing.T) {
	n := stoppedWith31(t)

	// Put the log back in raft.db, as an agent before the WAL kept it.
	raftDir := filepath.Join(n.cfg.DataDir, "raft")
	bolt := openBolt(t, raftDir)
	w, err := openWAL(filepath.Join(raftDir, walDir), walSegmentSize, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate.CopyLogs(context.Background(), bolt, w, 1<<20, nil); err != nil {
		t.Fatal(err)
	}
	w.Close()
	bolt.Close()
	if err := os.RemoveAll(filepath.Join(raftDir, walDir)); err != nil {
		t.Fatal(err)
	}

	checkRestartServes31(t, n)
}
