package cluster

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"
	"github.com/hashicorp/raft-wal/types"
)

// A small segment size, so that a few entries fill a segment.
const testSegmentSize = 4096

func reopenWAL(t *testing.T, w walStore, dir string) walStore {
	t.Helper()
	if w.WAL != nil {
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	w, err := openWAL(dir, testSegmentSize, hclog.NewNullLogger())
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	return w
}

func readMeta(t *testing.T, dir string) types.PersistentState {
	t.Helper()
	meta := &metadb.BoltMetaDB{}
	defer meta.Close()
	ps, err := meta.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// Raft truncates a follower's log suffix when a new leader's entries
// conflict with it. raft-wal v0.4.0 recorded the truncated tail as sealed
// without the index block the seal writes, and could not read it after a
// restart ("sealed segment has no index block"): an agent SIGKILLed after
// such a truncation never started again.
func TestWALReopensAfterTailTruncation(t *testing.T) {
	dir := t.TempDir()
	w := reopenWAL(t, walStore{}, dir)
	if err := w.StoreLogs(testLogs(1, 5)); err != nil {
		t.Fatal(err)
	}
	if err := w.DeleteRange(2, 5); err != nil {
		t.Fatal(err)
	}
	w = reopenWAL(t, w, dir)
	checkLogs(t, w, testLogs(1, 1))
	if err := w.StoreLogs(testLogs(2, 3)); err != nil {
		t.Fatal(err)
	}
	w = reopenWAL(t, w, dir)
	checkLogs(t, w, testLogs(1, 3))
	w.Close()
}

// bigLogs are entries larger than testSegmentSize: each append of one
// seals the tail segment and sets off its rotation.
func bigLogs(from, to uint64) []*raft.Log {
	logs := testLogs(from, to)
	for _, l := range logs {
		l.Data = append(l.Data, make([]byte, testSegmentSize)...)
	}
	return logs
}

// walWithSealedTail returns the dir of a closed WAL holding entries 1..3
// and the big entry 4, which sealed their segment and set off a rotation
// that is done.
func walWithSealedTail(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	w := reopenWAL(t, walStore{}, dir)
	if err := w.StoreLogs(testLogs(1, 3)); err != nil {
		t.Fatal(err)
	}
	sealTail(t, w, dir, 4)
	return dir
}

// sealTail appends a big entry at index, then closes the WAL. The rotation
// after the seal is done when sealTail returns: by the WAL, or, when Close
// came first, by the repair of the next open.
func sealTail(t *testing.T, w walStore, dir string, index uint64) {
	t.Helper()
	segments := len(readMetaLive(t, w, dir))
	if err := w.StoreLogs(bigLogs(index, index)); err != nil {
		t.Fatal(err)
	}
	w = reopenWAL(t, w, dir)
	w.Close()
	if got := len(readMeta(t, dir).Segments); got != segments+1 {
		t.Fatalf("%d segments after sealing the tail, want %d", got, segments+1)
	}
}

// A crash after the append that fills a segment seals it and before the
// rotation records it sealed leaves a sealed file as the meta store's
// unsealed tail: raft-wal v0.4.2's Open takes it as the tail and every later
// append fails with "segment is sealed".
func TestWALRepairsTailSealedBeforeRotation(t *testing.T) {
	dir := walWithSealedTail(t)
	// Put the meta store back as it was before the rotation: the sealed
	// segment is the unsealed tail, the new one does not exist.
	ps := readMeta(t, dir)
	newTail := ps.Segments[len(ps.Segments)-1]
	sealed := &ps.Segments[len(ps.Segments)-2]
	if sealed.IndexStart == 0 || sealed.SealTime.IsZero() {
		t.Fatalf("segment %d was not sealed by the rotation: %+v", sealed.ID, *sealed)
	}
	sealed.SealTime, sealed.IndexStart, sealed.MaxIndex = time.Time{}, 0, 0
	ps.Segments = ps.Segments[:len(ps.Segments)-1]
	ps.NextSegmentID--
	meta := &metadb.BoltMetaDB{}
	if _, err := meta.Load(dir); err != nil {
		t.Fatal(err)
	}
	if err := meta.CommitState(ps); err != nil {
		t.Fatal(err)
	}
	meta.Close()
	if err := os.Remove(filepath.Join(dir, segment.FileName(newTail))); err != nil {
		t.Fatal(err)
	}

	w := reopenWAL(t, walStore{}, dir)
	if err := w.StoreLogs(testLogs(5, 6)); err != nil {
		t.Fatalf("append after the repair: %v", err)
	}
	want := append(append(testLogs(1, 3), bigLogs(4, 4)...), testLogs(5, 6)...)
	checkLogs(t, w, want)
	w = reopenWAL(t, w, dir)
	checkLogs(t, w, want)
	w.Close()
}

// A crash after the meta store names a new tail and before its file exists.
func TestWALRepairsMissingTailFile(t *testing.T) {
	dir := walWithSealedTail(t)
	ps := readMeta(t, dir)
	if err := os.Remove(filepath.Join(dir, segment.FileName(ps.Segments[len(ps.Segments)-1]))); err != nil {
		t.Fatal(err)
	}
	w := reopenWAL(t, walStore{}, dir)
	if err := w.StoreLogs(testLogs(5, 5)); err != nil {
		t.Fatalf("append after the repair: %v", err)
	}
	w = reopenWAL(t, w, dir)
	checkLogs(t, w, append(append(testLogs(1, 3), bigLogs(4, 4)...), testLogs(5, 5)...))
	w.Close()
}

// Appends, suffix truncations (a new leader's conflicting entries), prefix
// truncations (compaction after a snapshot) and restarts in random order,
// with segments small enough to rotate every few entries: after every step
// the WAL holds exactly what a model of the log holds. Close skips a
// rotation still pending, as a crash would.
func TestWALRandomOperationsWithRestarts(t *testing.T) {
	seeds := 40
	if testing.Short() {
		seeds = 5
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, seed))
			dir := t.TempDir()
			w := reopenWAL(t, walStore{}, dir)
			defer func() { w.Close() }()
			var first, last uint64 // the model: entries first..last; term says which write
			term := map[uint64]uint64{}
			var ops []string
			for step := range 150 {
				var op string
				switch x := r.IntN(10); {
				case x < 6 || last == 0:
					n := 1 + uint64(r.IntN(4))
					logs := make([]*raft.Log, 0, n)
					for i := last + 1; i <= last+n; i++ {
						logs = append(logs, &raft.Log{Index: i, Term: uint64(step), Type: raft.LogCommand, Data: make([]byte, r.IntN(400))})
						term[i] = uint64(step)
					}
					op = fmt.Sprintf("store %d..%d", last+1, last+n)
					if err := w.StoreLogs(logs); err != nil {
						t.Fatalf("%s: %v\nafter %v", op, err, ops)
					}
					if first == 0 {
						first = 1
					}
					last += n
				case x < 8 && last > first:
					from := first + 1 + uint64(r.IntN(int(last-first)))
					op = fmt.Sprintf("delete %d..%d", from, last)
					if err := w.DeleteRange(from, last); err != nil {
						t.Fatalf("%s: %v\nafter %v", op, err, ops)
					}
					last = from - 1
				case x < 9 && last > first:
					to := first + uint64(r.IntN(int(last-first)))
					op = fmt.Sprintf("delete %d..%d", first, to)
					if err := w.DeleteRange(first, to); err != nil {
						t.Fatalf("%s: %v\nafter %v", op, err, ops)
					}
					first = to + 1
				default:
					op = "restart"
					w = reopenWAL(t, w, dir)
				}
				ops = append(ops, op)
				gotFirst, _ := w.FirstIndex()
				gotLast, _ := w.LastIndex()
				if gotFirst != first || gotLast != last {
					t.Fatalf("holds %d..%d, want %d..%d after %v", gotFirst, gotLast, first, last, ops)
				}
				for i := first; i <= last && last > 0; i++ {
					var l raft.Log
					if err := w.GetLog(i, &l); err != nil {
						t.Fatalf("entry %d: %v after %v", i, err, ops)
					}
					if l.Index != i || l.Term != term[i] {
						t.Fatalf("entry %d = index %d term %d, want term %d after %v", i, l.Index, l.Term, term[i], ops)
					}
				}
			}
		})
	}
}

// readMetaLive lists the segments of an open WAL (it holds the meta store's
// lock, so ask its own handle).
func readMetaLive(t *testing.T, w walStore, dir string) []types.SegmentInfo {
	t.Helper()
	ps, err := w.meta.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ps.Segments
}
