package fsm

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/tokens"
)

// applyAll applies entries to a fresh FSM at indices 1, 2, ...
func applyAll(t testing.TB, entries [][]byte) *harness {
	t.Helper()
	h := newHarness(t)
	for _, e := range entries {
		_ = h.applyRaw(e)
	}
	return h
}

func restoreInto(t testing.TB, snap []byte) *FSM {
	t.Helper()
	f := New(nil)
	if err := f.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatalf("Restore: %v\n%s", err, snap)
	}
	return f
}

// fullState is a state in which every field of every record type is set,
// including the values no command can produce yet.
func fullState() *State {
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	p1 := &tokens.Pool{
		Name: "github", Selection: tokens.SelectRoundRobin, MinHealthy: 3, Provider: tokens.Provider{Type: tokens.ProviderStatic},
		Labels:    map[string]string{"team": "payments", "note": "ünïcödé, spaces and \"quotes\""},
		CreatedAt: at(0), UpdatedAt: at(time.Hour), CreateIndex: 1, ModifyIndex: 40,
	}
	p2 := &tokens.Pool{Name: "empty", Selection: tokens.SelectPriority, Provider: tokens.Provider{Type: tokens.ProviderStatic}, CreatedAt: at(time.Minute), UpdatedAt: at(time.Minute), CreateIndex: 2, ModifyIndex: 2}
	tk := func(id string, prio int, idx uint64, l tokens.Lifecycle, h tokens.Health) *tokens.Token {
		return &tokens.Token{
			ID: id, Pool: "github", Value: tokens.Secret("sealed:" + id), Fingerprint: tokens.Fingerprint([]byte(id)),
			Priority: prio, Labels: map[string]string{"scope": "repo", "id": id},
			ExpiresAt: at(90 * 24 * time.Hour), NotBefore: at(-time.Hour), Lifecycle: l, Health: h,
			CreatedAt: at(time.Duration(idx) * time.Second), CreateIndex: idx, ModifyIndex: idx + 10,
		}
	}
	toks := []*tokens.Token{
		tk("tok_a", -3, 3, tokens.LifecycleActive, tokens.Health{State: tokens.Healthy, Since: at(3 * time.Second)}),
		tk("tok_b", 0, 4, tokens.LifecycleActive, tokens.Health{State: tokens.Failed, Reason: "unauthorized", Since: at(time.Minute), Reporter: "node-2"}),
		tk("tok_c", 0, 5, tokens.LifecycleRetiring, tokens.Health{State: tokens.Cooldown, Reason: "rate_limited", Since: at(time.Minute), Until: at(time.Hour), Reporter: "node-3"}),
		tk("tok_d", 7, 6, tokens.LifecycleRevoked, tokens.Health{State: tokens.Degraded, Reason: "timeouts", Since: at(2 * time.Minute)}),
	}
	toks[3].Labels = nil
	toks[3].ExpiresAt, toks[3].NotBefore = time.Time{}, time.Time{}
	return &State{pools: map[string]*PoolState{"github": {Pool: p1, Tokens: toks}, "empty": {Pool: p2}}}
}

func TestSnapshotRoundTrip(t *testing.T) {
	tests := map[string]func(t *testing.T) *FSM{
		"empty": func(*testing.T) *FSM { return New(nil) },
		"every command": func(t *testing.T) *FSM {
			return applyAll(t, everyCommand(t)).f
		},
		"every field": func(*testing.T) *FSM {
			f := New(nil)
			f.state.Store(fullState())
			f.applied.Store(1234)
			return f
		},
	}
	for name, build := range tests {
		t.Run(name, func(t *testing.T) {
			f := build(t)
			snap := snapshotBytes(t, f)
			g := restoreInto(t, snap)
			if g.AppliedIndex() != f.AppliedIndex() {
				t.Errorf("restored AppliedIndex = %d, want %d", g.AppliedIndex(), f.AppliedIndex())
			}
			if got, want := freeze(g.State()), freeze(f.State()); !reflect.DeepEqual(got, want) {
				t.Errorf("restored state differs:\n got %+v\nwant %+v", got, want)
			}
			checkInvariants(t, g.State())
			if again := snapshotBytes(t, g); !bytes.Equal(again, snap) {
				t.Errorf("snapshot of the restored state differs:\n%s\nwant\n%s", again, snap)
			}
		})
	}
}

// The snapshot holds the state of the moment Snapshot was called, even
// when WriteTo runs after later Applies.
func TestSnapshotIsPointInTime(t *testing.T) {
	h := newHarness(t)
	h.mustApply(PoolUpsertType, poolReq("p", t0))
	h.mustApply(TokenAddType, tokenReq("p", "tok_a", "value-a", 0, t0))
	want := freeze(h.f.State())
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	h.mustApply(TokenReportType, TokenReportRequest{Reports: []tokens.Report{report("p", "tok_a", tokens.OutcomeForbidden, t0, time.Time{})}})
	h.mustApply(PoolUpsertType, poolReq("q", t0))
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	g := restoreInto(t, buf.Bytes())
	if got := freeze(g.State()); !reflect.DeepEqual(got, want) {
		t.Fatalf("snapshot holds %+v, want the state at Snapshot time %+v", got, want)
	}
	if g.AppliedIndex() != 2 {
		t.Fatalf("snapshot AppliedIndex = %d, want 2", g.AppliedIndex())
	}
}

type failingWriter struct{ err error }

func (w failingWriter) Write([]byte) (int, error) { return 0, w.err }

func TestSnapshotWriteError(t *testing.T) {
	f := applyAll(t, everyCommand(t)).f
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("disk full")
	if _, err := snap.WriteTo(failingWriter{boom}); !errors.Is(err, boom) {
		t.Fatalf("WriteTo to a failing writer = %v, want %v", err, boom)
	}
}

// Restore discards everything the FSM held before.
func TestRestoreReplacesState(t *testing.T) {
	src := newHarness(t)
	src.mustApply(PoolUpsertType, poolReq("new", t0))
	snap := snapshotBytes(t, src.f)

	h := newHarness(t)
	h.mustApply(PoolUpsertType, poolReq("old", t0))
	h.mustApply(TokenAddType, tokenReq("old", "tok_a", "value-a", 0, t0))
	h.mustApply(PoolUpsertType, poolReq("new", t0.Add(time.Hour)))
	held := h.f.State()
	frozen := freeze(held)
	if err := h.f.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.f.State().Pool("old"); ok {
		t.Error("pool from before the restore survived it")
	}
	if p := h.pool("new").Pool; p.CreateIndex != 1 || !p.CreatedAt.Equal(t0) {
		t.Errorf("restored pool = %+v, want the snapshot's", p)
	}
	if h.f.AppliedIndex() != 1 {
		t.Errorf("AppliedIndex = %d, want the snapshot's 1", h.f.AppliedIndex())
	}
	if !reflect.DeepEqual(freeze(held), frozen) {
		t.Error("Restore modified a state a reader held")
	}
}

func TestRestoreSortsTokens(t *testing.T) {
	lines := []string{
		`{"format":"tokend-state","version":1,"applied_index":9}`,
		`{"type":"pool","pool":{"name":"p","selection":"priority","provider":{"type":"static"}}}`,
		`{"type":"token","token":{"id":"tok_c","pool":"p","priority":2,"create_index":1}}`,
		`{"type":"token","token":{"id":"tok_b","pool":"p","priority":1,"create_index":5}}`,
		`{"type":"token","token":{"id":"tok_a","pool":"p","priority":1,"create_index":5}}`,
		`{"type":"token","token":{"id":"tok_d","pool":"p","priority":1,"create_index":3}}`,
		`{"type":"end","count":5}`,
	}
	f := restoreInto(t, []byte(strings.Join(lines, "\n")))
	ps, _ := f.State().Pool("p")
	var got []string
	for _, tk := range ps.Tokens {
		got = append(got, tk.ID)
	}
	if want := []string{"tok_d", "tok_a", "tok_b", "tok_c"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("restored order %v, want %v", got, want)
	}
}

func TestRestoreRejects(t *testing.T) {
	good := snapshotBytes(t, applyAll(t, everyCommand(t)).f)
	lines := strings.Split(strings.TrimSuffix(string(good), "\n"), "\n")
	// lines: header, pool github, tok_a, tok_b, pool openai, tok_d, tok_e, end.
	if len(lines) != 8 || !strings.Contains(lines[1], `"github"`) || !strings.Contains(lines[4], `"openai"`) {
		t.Fatalf("unexpected snapshot layout:\n%s", good)
	}
	header, end := lines[0], lines[7]
	body := lines[1:7]
	join := func(ls ...[]string) string {
		var all []string
		for _, l := range ls {
			all = append(all, l...)
		}
		return strings.Join(all, "\n") + "\n"
	}
	one := func(s ...string) []string { return s }
	endCount := func(n int) []string { return one(strings.Replace(end, `"count":6`, `"count":`+strconv.Itoa(n), 1)) }
	tests := []struct {
		name, input, errHas string
	}{
		{"empty input", "", "header"},
		{"not JSON", "hello world\n", "header"},
		{"wrong format", join(one(strings.Replace(header, "tokend-state", "consul-state", 1)), body, one(end)), "not a tokend snapshot"},
		{"no format", join(one(`{"version":1,"applied_index":18}`), body, one(end)), "not a tokend snapshot"},
		{"header not an object", join(one(`[1,2,3]`), body, one(end)), "header"},
		{"newer version", join(one(strings.Replace(header, `"version":1`, `"version":2`, 1)), body, one(end)), "version 2"},
		{"version zero", join(one(strings.Replace(header, `"version":1`, `"version":0`, 1)), body, one(end)), "version 0"},
		{"header only", join(one(header)), "truncated"},
		{"no end record", join(one(header), body), "truncated"},
		{"cut inside a record", string(good[:len(good)/2]), "record"},
		{"count too low", join(one(header), body, endCount(5)), "counts 5"},
		{"count too high", join(one(header), body, endCount(7)), "counts 7"},
		{"count missing", join(one(header), body, one(`{"type":"end"}`)), "counts 0"},
		{"token before its pool", join(one(header), one(body[1], body[0]), body[2:], one(end)), "has not defined"},
		{"token of a missing pool", join(one(header), body[:3], body[4:], endCount(5)), "has not defined"},
		{"unknown record type", join(one(header), body[:3], one(`{"type":"mystery"}`), body[3:], endCount(7)), "unknown type"},
		{"record without type", join(one(header), body[:3], one(`{}`), body[3:], endCount(7)), "unknown type"},
		{"record not an object", join(one(header), body[:3], one(`"pool"`), body[3:], endCount(7)), "record 3"},
		{"pool record without pool", join(one(header), body, one(`{"type":"pool"}`), endCount(7)), "without a valid pool"},
		{"pool record with invalid name", join(one(header), body, one(`{"type":"pool","pool":{"name":"Bad Name"}}`), endCount(7)), "without a valid pool"},
		{"token record without token", join(one(header), body, one(`{"type":"token"}`), endCount(7)), "without a token"},
		{"pool twice", join(one(header), body[:3], one(body[0]), body[3:], endCount(7)), "appears twice"},
		{"token twice", join(one(header), body[:3], one(body[1]), body[3:], endCount(7)), "appears twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.mustApply(PoolUpsertType, poolReq("old", t0))
			h.mustApply(TokenAddType, tokenReq("old", "tok_x", "value-x", 0, t0))
			before, frozen, index := h.f.State(), freeze(h.f.State()), h.f.AppliedIndex()
			err := h.f.Restore(strings.NewReader(tt.input))
			if err == nil {
				t.Fatalf("Restore accepted:\n%s", tt.input)
			}
			if !strings.Contains(err.Error(), tt.errHas) {
				t.Errorf("Restore error %q does not contain %q", err, tt.errHas)
			}
			if h.f.State() != before || !reflect.DeepEqual(freeze(before), frozen) {
				t.Error("a rejected Restore changed the state")
			}
			if h.f.AppliedIndex() != index {
				t.Errorf("a rejected Restore changed AppliedIndex to %d", h.f.AppliedIndex())
			}
		})
	}
	// The unmodified stream is accepted: the cases above fail for their
	// own reason.
	if err := New(nil).Restore(strings.NewReader(join(one(header), body, one(end)))); err != nil {
		t.Fatalf("Restore of the unmodified snapshot: %v", err)
	}
}

// testdata/snapshot-v1.jsonl is a version 1 snapshot. Agents must restore
// snapshots written by older versions, so it must keep restoring to the
// same state for as long as version 1 is readable.
func TestRestoreVersion1Golden(t *testing.T) {
	path := filepath.Join("testdata", "snapshot-v1.jsonl")
	want := applyAll(t, everyCommand(t)).f
	if os.Getenv("TOKEND_UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(path, snapshotBytes(t, want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	golden, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got := restoreInto(t, golden)
	if !reflect.DeepEqual(freeze(got.State()), freeze(want.State())) || got.AppliedIndex() != want.AppliedIndex() {
		t.Fatalf("golden snapshot restores to %+v at %d, want %+v at %d", freeze(got.State()), got.AppliedIndex(), freeze(want.State()), want.AppliedIndex())
	}
	if snapshotVersion == 1 {
		if now := snapshotBytes(t, want); !bytes.Equal(now, golden) {
			t.Fatalf("version 1 encoding changed; bump snapshotVersion (and keep reading 1) instead:\n%s\nwas\n%s", now, golden)
		}
	}
}

// Every agent applies the same log and must end in the same state, byte for
// byte, including an agent that restored a snapshot half-way.
func TestDeterministicReplay(t *testing.T) {
	entries := everyCommand(t)
	a := applyAll(t, entries)
	b := applyAll(t, entries)
	snapA, snapB := snapshotBytes(t, a.f), snapshotBytes(t, b.f)
	if !bytes.Equal(snapA, snapB) {
		t.Fatalf("same log, different snapshots:\n%s\n%s", snapA, snapB)
	}
	for cut := range entries {
		c := applyAll(t, entries[:cut])
		h := newHarness(t)
		if err := h.f.Restore(bytes.NewReader(snapshotBytes(t, c.f))); err != nil {
			t.Fatal(err)
		}
		h.index = uint64(cut)
		for _, e := range entries[cut:] {
			_ = h.applyRaw(e)
		}
		if snap := snapshotBytes(t, h.f); !bytes.Equal(snap, snapA) {
			t.Fatalf("restored at %d and replayed: snapshot differs:\n%s\nwant\n%s", cut, snap, snapA)
		}
	}
}
