package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

func TestCommitExtRoundTrip(t *testing.T) {
	for _, own := range [][]byte{nil, []byte("x"), []byte("tokend.commit")} {
		idx, rest := splitCommitExt(withCommitExt(42, own))
		if idx != 42 || string(rest) != string(own) {
			t.Fatalf("split(with(42, %q)) = %d, %q", own, idx, rest)
		}
		if idx, rest := splitCommitExt(own); idx != 0 || string(rest) != string(own) {
			t.Fatalf("split(%q) = %d, %q: found a record that is not there", own, idx, rest)
		}
	}
}

func openStaging(t *testing.T, dir string) (*stagingStore, walStore, *appliedIndex) {
	t.Helper()
	w, err := openWAL(filepath.Join(dir, walDir), walSegmentSize, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	a, err := openAppliedIndex(filepath.Join(dir, appliedIndexFile))
	if err != nil {
		t.Fatal(err)
	}
	s, err := newStagingStore(w, a)
	if err != nil {
		t.Fatal(err)
	}
	return s, w, a
}

// A staged commit index is durable once the append carrying it returns, a
// reopened log reads it back, readers never see it, and the caller's
// entries are not changed.
func TestStagedCommitIsDurableWithTheAppend(t *testing.T) {
	dir := t.TempDir()
	s, w, a := openStaging(t, dir)
	logs := testLogs(1, 10)
	if err := s.StoreLogs(logs[:5]); err != nil {
		t.Fatal(err)
	}
	if d := s.t.Durable(); d != 0 {
		t.Fatalf("durable %d before anything was staged", d)
	}
	s.t.stage(4) // a follower learns 4 is committed with entries 6..10
	if d := s.t.Durable(); d != 0 {
		t.Fatalf("durable %d before the append that carries it", d)
	}
	if err := s.StoreLogs(logs[5:]); err != nil {
		t.Fatal(err)
	}
	if d := s.t.Durable(); d != 4 {
		t.Fatalf("durable = %d after the append, want 4", d)
	}
	for _, l := range logs {
		if l.Extensions != nil {
			t.Fatalf("the caller's entry %d was changed: %q", l.Index, l.Extensions)
		}
	}
	checkLogs(t, s, logs) // GetLog strips the record
	w.Close()
	a.Close()

	s, w, a = openStaging(t, dir)
	defer a.Close()
	defer w.Close()
	if d := s.t.Durable(); d != 4 {
		t.Fatalf("reopened: durable = %d, want 4", d)
	}
	// An append with nothing newer staged still carries the durable index,
	// so the last entry always holds the highest one.
	if err := s.StoreLogs(testLogs(11, 11)); err != nil {
		t.Fatal(err)
	}
	var raw raft.Log
	if err := w.GetLog(11, &raw); err != nil {
		t.Fatal(err)
	}
	if idx, _ := splitCommitExt(raw.Extensions); idx != 4 {
		t.Fatalf("entry 11 records %d, want 4", idx)
	}
}

// Before entries leave the log, the durable index goes to the applied-index
// file: deleting the entry that recorded it loses nothing.
func TestStagedCommitSurvivesDeleteRange(t *testing.T) {
	dir := t.TempDir()
	s, w, a := openStaging(t, dir)
	defer a.Close()
	defer w.Close()
	if err := s.StoreLogs(testLogs(1, 5)); err != nil {
		t.Fatal(err)
	}
	s.t.stage(5)
	if err := s.StoreLogs(testLogs(6, 8)); err != nil {
		t.Fatal(err)
	}
	if got := a.get(); got != 0 {
		t.Fatalf("applied-index file holds %d before any delete", got)
	}
	// A new leader's log differs from 6 on: the suffix goes.
	if err := s.DeleteRange(6, 8); err != nil {
		t.Fatal(err)
	}
	if got := readAppliedIndexFile(t, filepath.Join(dir, appliedIndexFile)); got != 5 {
		t.Fatalf("applied-index file holds %d after the delete, want 5", got)
	}
}

// A follower under steady writes skips the applied-index sync (its commit
// rides in its log appends), and restarted — stopped in the middle of the
// writes — it still comes back with at least every state it showed.
func TestFollowerRestartsFromStagedCommit(t *testing.T) {
	tc := newTestCluster(t)
	for range 3 {
		tc.add(3, nil)
	}
	l := tc.leader()
	var f *testNode
	for _, n := range tc.nodes {
		if n != l {
			f = n
			break
		}
	}
	stop := make(chan struct{})
	wrote := make(chan int)
	go func() {
		n := 0
		defer func() { wrote <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := tc.leader().Apply(context.Background(), entry(1)); err == nil {
				n++
			}
		}
	}()
	var shown uint64
	staged := false
	waitFor(t, 20*time.Second, func() error {
		applied := f.sm.AppliedIndex()
		shown = max(shown, f.sm.value())
		if readAppliedIndex(t, f.cfg.DataDir) < applied {
			staged = true
		}
		if !staged || shown < 50 {
			return fmt.Errorf("follower at %d, staged seen %v", shown, staged)
		}
		return nil
	})
	shown = max(shown, f.sm.value())
	f.Shutdown()
	close(stop)
	<-wrote
	t.Logf("stopped at applied index %d, %d in the applied-index file", f.sm.AppliedIndex(), readAppliedIndex(t, f.cfg.DataDir))

	cfg := f.cfg
	cfg.RaftAddr, cfg.GossipAddr = f.RaftAddr(), f.GossipAddr()
	sm := &counterSM{}
	c, err := New(cfg, sm)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Shutdown()
	if v := sm.value(); v < shown {
		t.Fatalf("restarted follower starts at %d, but showed %d before it stopped", v, shown)
	}
}
