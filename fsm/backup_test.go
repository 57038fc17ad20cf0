package fsm

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/tokens"
)

// Restore takes the Raft index it is given as the applied index, not the
// one in the stream's header; without one, the header's.
func TestRestoreTakesRaftIndex(t *testing.T) {
	h := rotationHarness(t)
	snap := snapshotBytes(t, h.f)
	f := New(nil)
	if err := f.Restore(bytes.NewReader(snap), 1000); err != nil {
		t.Fatal(err)
	}
	if got := f.AppliedIndex(); got != 1000 {
		t.Fatalf("applied index %d after a restore at 1000", got)
	}
	if !reflect.DeepEqual(freeze(f.State()), freeze(h.f.State())) {
		t.Fatal("restored state differs")
	}
	g := New(nil)
	if err := g.Restore(bytes.NewReader(snap), 0); err != nil {
		t.Fatal(err)
	}
	if got := g.AppliedIndex(); got != h.f.AppliedIndex() {
		t.Fatalf("applied index %d without a Raft index, want the header's %d", got, h.f.AppliedIndex())
	}
}

// DecodeSnapshot checks a stream like Restore and more strictly, installs
// nothing, and what it decodes writes back as the same stream.
func TestDecodeSnapshot(t *testing.T) {
	h := rotationHarness(t)
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_1", "tok_a", 1), t0))
	snap := snapshotBytes(t, h.f)
	c, err := DecodeSnapshot(bytes.NewReader(snap))
	if err != nil {
		t.Fatal(err)
	}
	if c.Version() != snapshotVersion || c.AppliedIndex() != h.f.AppliedIndex() || c.Events() != len(eventsOf(h.f).Events) {
		t.Fatalf("version %d, applied %d, %d events", c.Version(), c.AppliedIndex(), c.Events())
	}
	if !reflect.DeepEqual(freeze(c.State()), freeze(h.f.State())) {
		t.Fatal("decoded state differs")
	}
	var out bytes.Buffer
	if _, err := c.WriteTo(&out); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), snap) {
		t.Fatalf("written back:\n%s\nwant\n%s", out.Bytes(), snap)
	}
	if got := c.MaxIndex(); got != h.f.AppliedIndex() {
		t.Fatalf("MaxIndex %d, want %d (the last entry)", got, h.f.AppliedIndex())
	}

	for name, bad := range map[string][]byte{
		"trailing data": append(bytes.Clone(snap), `{"type":"pool"}`...),
		"truncated":     snap[:len(snap)-20],
		"empty":         nil,
		"newer version": bytes.Replace(snap, []byte(`"version":5`), []byte(`"version":99`), 1),
	} {
		if _, err := DecodeSnapshot(bytes.NewReader(bad)); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	// Restore itself keeps reading what it always read.
	if err := New(nil).Restore(bytes.NewReader(append(bytes.Clone(snap), "\n"...)), 0); err != nil {
		t.Fatal(err)
	}
}

// MaxIndex finds the highest index named anywhere, even one above the
// header's applied index (a crafted or inconsistent snapshot).
func TestSnapshotMaxIndex(t *testing.T) {
	h := newHarness(t)
	h.mustApply(PoolUpsertType, poolReq("p", t0))
	snap := snapshotBytes(t, h.f)
	snap = bytes.Replace(snap, []byte(`"modify_index":1`), []byte(`"modify_index":77`), 1)
	c, err := DecodeSnapshot(bytes.NewReader(snap))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.MaxIndex(); got != 77 {
		t.Fatalf("MaxIndex %d, want 77", got)
	}
}

// Disowned clears every open rotation's term, so the leader that installs
// the state resumes them in its own term, and leaves the original as it
// was.
func TestSnapshotDisowned(t *testing.T) {
	h := rotationHarness(t)
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_1", "tok_a", 1), t0))
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_2", "tok_b", 2), t0))
	c, err := DecodeSnapshot(bytes.NewReader(snapshotBytes(t, h.f)))
	if err != nil {
		t.Fatal(err)
	}
	d := c.Disowned()
	ps, _ := d.State().Pool("p")
	if len(ps.Rotations) != 2 {
		t.Fatalf("disowned rotations %+v", ps.Rotations)
	}
	for _, r := range ps.Rotations {
		if r.Term != 0 {
			t.Fatalf("rotation %s keeps term %d", r.ID, r.Term)
		}
	}
	if orig, _ := c.State().Pool("p"); orig.Rotations[0].Term != 3 || orig.Rotations[1].Term != 3 {
		t.Fatal("Disowned changed the contents it was called on")
	}
	var buf bytes.Buffer
	if _, err := d.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	g := newHarness(t)
	if err := g.f.Restore(&buf, 50); err != nil {
		t.Fatal(err)
	}
	g.index = 50
	// Any leader's term may take it over; nobody can finish it as its own
	// without resuming it first.
	g.rejectHas(RotationCommitType, commitReq("p", "rot_1", 3, issuedToken("p", "tok_c", "value-c"), t0.Add(time.Hour)), tokens.CodeConflict, "term 0")
	g.mustApply(RotationResumeType, RotationResumeRequest{Pool: "p", ID: "rot_1", Term: 1, Leader: "n", At: t0.Add(time.Hour)})
	g.mustApply(RotationCommitType, commitReq("p", "rot_1", 1, issuedToken("p", "tok_c", "value-c"), t0.Add(time.Hour)))
}

// SnapshotRestored records an event and changes nothing else; older agents
// may skip it.
func TestSnapshotRestoredEntry(t *testing.T) {
	if SnapshotRestoredType&IgnoreUnknownTypeFlag == 0 || SnapshotRestoredType != 149 || SnapshotRestoredType.String() != "SnapshotRestored" {
		t.Fatalf("SnapshotRestoredType = %d (%s)", SnapshotRestoredType, SnapshotRestoredType)
	}
	h := rotationHarness(t)
	before := h.f.State()
	h.mustApply(SnapshotRestoredType, SnapshotRestoredRequest{FromIndex: 42, FromTerm: 3, SavedAt: t0, SavedBy: "node1", Pools: 1, Tokens: 2, By: "acl:acc_x", At: t0.Add(time.Hour)})
	if h.f.State() != before {
		t.Fatal("the entry changed the state")
	}
	if len(h.last) != 1 {
		t.Fatalf("events %+v", h.last)
	}
	ev := h.last[0]
	if ev.Type != tokens.EventSnapshotRestored || ev.Reporter != "acl:acc_x" || !ev.At.Equal(t0.Add(time.Hour)) ||
		!strings.Contains(ev.Reason, "index 42 (term 3)") || !strings.Contains(ev.Reason, "node1") || !strings.Contains(ev.Reason, "1 pools and 2 tokens") {
		t.Fatalf("event %+v", ev)
	}
	h.rejectRaw(append([]byte{byte(SnapshotRestoredType)}, "{not json"...), tokens.CodeInvalid)
}
