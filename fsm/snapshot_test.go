package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
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
	if err := f.Restore(bytes.NewReader(snap), 0); err != nil {
		t.Fatalf("Restore: %v\n%s", err, snap)
	}
	return f
}

// fullState is a state in which every field of every record type is set,
// including the values no command can produce yet.
func fullState() *State {
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	p1 := &tokens.Pool{
		Name: "github", Selection: tokens.SelectRoundRobin, MinHealthy: 3, Provider: tokens.ProviderSpec{Type: tokens.ProviderStatic},
		Labels: map[string]string{"team": "payments", "note": "ünïcödé, spaces and \"quotes\""},
		Health: tokens.HealthPolicy{Window: 30, DegradedFailures: 7, DegradedRatio: 0.3, OutcomeTTL: tokens.Duration(90 * time.Second),
			DefaultCooldown: tokens.Duration(2 * time.Minute), ReportQuorum: 3, ReportWindow: tokens.Duration(time.Hour)},
		CreatedAt: at(0), UpdatedAt: at(time.Hour), CreateIndex: 1, ModifyIndex: 40,
	}
	p2 := &tokens.Pool{Name: "empty", Selection: tokens.SelectPriority, Provider: tokens.ProviderSpec{Type: tokens.ProviderStatic}, CreatedAt: at(time.Minute), UpdatedAt: at(time.Minute), CreateIndex: 2, ModifyIndex: 2}
	tk := func(id string, prio int, idx uint64, l tokens.Lifecycle, h tokens.Health) *tokens.Token {
		return &tokens.Token{
			ID: id, Pool: "github", Value: tokens.Sealed("sealed:" + id), Fingerprint: legacyFingerprint([]byte(id)),
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
	toks[3].Value, toks[3].Fingerprint = sealedFixture(testKeyA, "vault", "tok_v8").value, sealedFixture(testKeyA, "vault", "tok_v8").fingerprint
	toks[3].ExpiresAt, toks[3].NotBefore = time.Time{}, time.Time{}
	// A pool that rotates: every provider, rotation and health check
	// field, a status with every field, open rotations, and tokens that
	// rotations issued, retired and orphaned.
	p3 := &tokens.Pool{
		Name: "vault", Selection: tokens.SelectPriority, MinHealthy: 1, Size: 3,
		Provider: tokens.ProviderSpec{Type: tokens.ProviderExec, Timeout: tokens.Duration(20 * time.Second),
			Command: []string{"/bin/issue", "--pool", "vault"}, RevokeCommand: []string{"/bin/revoke"}, Env: []string{"VAULT_ADDR", "HOME"}},
		Rotation: tokens.RotationPolicy{MaxAge: tokens.Duration(24 * time.Hour), RenewBefore: tokens.Duration(time.Hour), Grace: tokens.Duration(2 * time.Minute),
			MinActive: 2, RetryMin: tokens.Duration(2 * time.Second), RetryMax: tokens.Duration(time.Minute), AlertBefore: tokens.Duration(30 * time.Minute)},
		HealthCheck: &tokens.HealthCheck{URL: "https://api.example.com/user", Method: "HEAD", Header: "X-Token", Format: "token {{token}}", ExpectStatus: []int{200, 204},
			Interval: tokens.Duration(time.Minute), Timeout: tokens.Duration(3 * time.Second), RateLimitRemainingHeader: "X-RateLimit-Remaining", RateLimitResetHeader: "X-RateLimit-Reset"},
		CreatedAt: at(2 * time.Minute), UpdatedAt: at(3 * time.Minute), CreateIndex: 3, ModifyIndex: 9,
	}
	vt := func(id string, idx uint64, l tokens.Lifecycle, rot string, gen uint64, retire time.Time) *tokens.Token {
		return &tokens.Token{
			ID: id, Pool: "vault", Value: tokens.Sealed("sealed:" + id), Fingerprint: legacyFingerprint([]byte(id)), Priority: 0,
			ExpiresAt: at(48 * time.Hour), Lifecycle: l, Health: tokens.Health{State: tokens.Healthy, Since: at(time.Duration(idx) * time.Second)},
			Metadata: map[string]string{"client_id": "c-" + id, "scope": "read write"}, RotationID: rot, Generation: gen, RetireAt: retire,
			CreatedAt: at(time.Duration(idx) * time.Second), CreateIndex: idx, ModifyIndex: idx + 1,
		}
	}
	vaultToks := []*tokens.Token{
		vt("tok_v1", 10, tokens.LifecycleRetiring, "", 0, at(time.Hour)),
		vt("tok_v2", 11, tokens.LifecycleActive, "rot_1", 1, time.Time{}),
		vt("tok_v3", 12, tokens.LifecycleOrphaned, "rot_2", 2, at(2*time.Hour).In(time.FixedZone("", -7*3600))),
	}
	rotations := []*tokens.Rotation{
		{ID: "rot_3", Pool: "vault", Replaces: "tok_v2", Reason: tokens.ReasonRenewBefore, Generation: 3, Term: 7, Leader: "node-2", StartedAt: at(time.Hour), Attempts: 2},
		{ID: "rot_4", Pool: "vault", Reason: tokens.ReasonSize, Generation: 4, Term: 8, Leader: "node-ünï", StartedAt: at(time.Hour).In(time.FixedZone("", 3600)), Attempts: 1},
	}
	status := tokens.RotationStatus{Generation: 4, Failures: 3, NextAttempt: at(90 * time.Minute), LastError: "issuer: 503 \"unavailable\" ünï", LastSuccess: at(30 * time.Minute)}
	return &State{
		pools: map[string]*PoolState{
			"github": {Pool: p1, Tokens: toks},
			"empty":  {Pool: p2},
			"vault":  {Pool: p3, Tokens: vaultToks, Rotations: rotations, Status: status},
		},
		keyring: KeyringState{Primary: testKeyA, UpdatedAt: at(5 * time.Hour).In(time.FixedZone("", 3600)), By: "alice ünïcödé"},
		acl:     fullACL(at),
	}
}

// fullEvents is an event log in which every field of an event is set
// somewhere, several events share an index, and older events were dropped.
func fullEvents() eventView {
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	return eventView{Dropped: 1200, Events: []tokens.Event{
		{Index: 1200, At: at(0), Type: tokens.EventPoolApplied, Pool: "github"},
		{Index: 1201, At: at(time.Second), Type: tokens.EventTokenAdded, Pool: "github", Token: "tok_a", To: tokens.Healthy},
		{Index: 1202, At: at(time.Minute), Type: tokens.EventTokenHealth, Pool: "github", Token: "tok_b", From: tokens.Healthy, To: tokens.Failed, Reason: "unauthorized", Reporter: "node-2"},
		{Index: 1202, At: at(time.Minute), Type: tokens.EventTokenHealth, Pool: "github", Token: "tok_c", From: tokens.Degraded, To: tokens.Cooldown, Reason: "rate_limited", Reporter: "node-3"},
		{Index: 1203, At: at(time.Hour), Type: tokens.EventTokenReset, Pool: "github", Token: "tok_b", From: tokens.Failed, To: tokens.Healthy, Reason: "reset by operator", Reporter: "alice ünïcödé"},
		{Index: 1204, At: at(2 * time.Hour).In(time.FixedZone("", 5*3600+1800)), Type: tokens.EventTokenRemoved, Pool: "github", Token: "tok_z"},
		{Index: 1205, At: at(3 * time.Hour), Type: tokens.EventPoolDeleted, Pool: "old", Reason: "forced, with 3 tokens"},
		{Index: 1206, At: at(4 * time.Hour), Type: tokens.EventRotationCommitted, Pool: "vault", Token: "tok_v2", To: tokens.Healthy, Reason: tokens.ReasonMaxAge, Reporter: "node-1", Rotation: "rot_1"},
		{Index: 1206, At: at(4 * time.Hour), Type: tokens.EventTokenRetiring, Pool: "vault", Token: "tok_v1", Reason: "replaced by tok_v2", Rotation: "rot_1"},
	}}
}

// manyUpserts applies n pool upserts, one event each, at indices 1..n.
func manyUpserts(t testing.TB, n int) *harness {
	t.Helper()
	h := newHarness(t)
	for i := range n {
		h.mustApply(PoolUpsertType, poolReq(fmt.Sprintf("p%d", i%7), t0.Add(time.Duration(i)*time.Second)))
	}
	return h
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
			ev := fullEvents()
			f.events.reset(ev.Events, ev.Dropped)
			return f
		},
		// The log is trimmed in bulk: past 2*MaxEvents it holds MaxEvents
		// events, in between up to twice that, of which it shows MaxEvents.
		"events dropped, trimmed":     func(t *testing.T) *FSM { return manyUpserts(t, 2*tokens.MaxEvents+5).f },
		"events dropped, not trimmed": func(t *testing.T) *FSM { return manyUpserts(t, tokens.MaxEvents+3).f },
		"events at the limit":         func(t *testing.T) *FSM { return manyUpserts(t, tokens.MaxEvents).f },
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
			if got, want := g.State().Keyring(), f.State().Keyring(); got != want {
				t.Errorf("restored keyring %+v, want %+v", got, want)
			}
			if got, want := frozenACL(g.State()), frozenACL(f.State()); got != want {
				t.Errorf("restored ACLs %s, want %s", got, want)
			}
			if got, want := eventsOf(g), eventsOf(f); !reflect.DeepEqual(got, want) {
				t.Errorf("restored events differ:\n got %+v\nwant %+v", got, want)
			}
			if len(eventsOf(f).Events) > tokens.MaxEvents {
				t.Errorf("the log shows %d events, more than MaxEvents", len(eventsOf(f).Events))
			}
			// Readers see the same log, including what was dropped.
			for _, since := range []uint64{0, 1, eventsOf(f).Dropped - 1, eventsOf(f).Dropped, eventsOf(f).Dropped + 1, f.AppliedIndex()} {
				for _, limit := range []int{1, 5, tokens.MaxEvents} {
					ge, gt := g.Events(since, limit)
					fe, ft := f.Events(since, limit)
					if !reflect.DeepEqual(ge, fe) || gt != ft {
						t.Errorf("Events(%d, %d) after restore = %d events, %v; before %d events, %v", since, limit, len(ge), gt, len(fe), ft)
					}
				}
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
	want, wantEvents := freeze(h.f.State()), eventsOf(h.f)
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	h.mustApply(TokenHealthType, changes(change("p", "tok_a", failed("forbidden", t0))))
	h.mustApply(PoolUpsertType, poolReq("q", t0))
	h.mustApply(TokenResetType, TokenResetRequest{Pool: "p", ID: "tok_a", By: "alice", At: t0})
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	g := restoreInto(t, buf.Bytes())
	if got := freeze(g.State()); !reflect.DeepEqual(got, want) {
		t.Fatalf("snapshot holds %+v, want the state at Snapshot time %+v", got, want)
	}
	if got := eventsOf(g); !reflect.DeepEqual(got, wantEvents) {
		t.Fatalf("snapshot holds events %+v, want those at Snapshot time %+v", got, wantEvents)
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
	heldEvents, _ := h.f.Events(0, tokens.MaxEvents)
	frozenEvents := slices.Clone(heldEvents)
	if err := h.f.Restore(bytes.NewReader(snap), 0); err != nil {
		t.Fatal(err)
	}
	// The event log is the snapshot's too, not the old one with it.
	wantEvents := []tokens.Event{{Index: 1, At: t0, Type: tokens.EventPoolApplied, Pool: "new"}}
	if got := eventsOf(h.f); !reflect.DeepEqual(got, eventView{Events: wantEvents}) {
		t.Errorf("events after restore = %+v, want %+v", got, wantEvents)
	}
	if !reflect.DeepEqual(heldEvents, frozenEvents) {
		t.Error("Restore modified events a reader held")
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

// priorState is what an agent holds before the Restore that
// TestRestoreRejects feeds it: state, and an event log that has dropped
// events and holds more since its last restore.
func priorState(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t)
	prior := strings.Join([]string{
		`{"format":"tokend-state","version":2,"applied_index":40,"events_dropped":37}`,
		`{"type":"pool","pool":{"name":"older","selection":"priority","provider":{"type":"static"}}}`,
		`{"type":"event","event":{"index":37,"at":"2030-01-02T03:04:05Z","type":"pool_applied","pool":"gone"}}`,
		`{"type":"event","event":{"index":40,"at":"2030-01-02T03:04:05Z","type":"pool_applied","pool":"older"}}`,
		`{"type":"end","count":3}`,
	}, "\n")
	if err := h.f.Restore(strings.NewReader(prior), 0); err != nil {
		t.Fatal(err)
	}
	h.index = h.f.AppliedIndex()
	h.mustApply(PoolUpsertType, poolReq("old", t0))
	h.mustApply(TokenAddType, tokenReq("old", "tok_x", "value-x", 0, t0))
	if ev := eventsOf(h.f); len(ev.Events) != 4 || ev.Dropped != 37 {
		t.Fatalf("prior event log = %+v", ev)
	}
	return h
}

func TestRestoreRejects(t *testing.T) {
	good := snapshotBytes(t, applyAll(t, version1Commands(t)).f)
	lines := strings.Split(strings.TrimSuffix(string(good), "\n"), "\n")
	// lines: header, pool github, tok_a, tok_b, pool openai, tok_d, tok_e,
	// 16 events, end.
	if len(lines) != 24 || !strings.Contains(lines[1], `"github"`) || !strings.Contains(lines[4], `"openai"`) ||
		!strings.Contains(lines[7], `"type":"event"`) || !strings.Contains(lines[22], `"type":"event"`) || lines[23] != `{"type":"end","count":22}` {
		t.Fatalf("unexpected snapshot layout:\n%s", good)
	}
	header, end := lines[0], lines[23]
	body := lines[1:7]
	events := lines[7:23]
	// The two health events share an index; these two do not.
	if !strings.Contains(events[1], `"index":2,`) || !strings.Contains(events[2], `"index":3,`) {
		t.Fatalf("unexpected events:\n%s", strings.Join(events, "\n"))
	}
	join := func(ls ...[]string) string {
		var all []string
		for _, l := range ls {
			all = append(all, l...)
		}
		return strings.Join(all, "\n") + "\n"
	}
	one := func(s ...string) []string { return s }
	endCount := func(n int) []string { return one(fmt.Sprintf(`{"type":"end","count":%d}`, n)) }
	current := fmt.Sprintf(`"version":%d`, snapshotVersion)
	if !strings.Contains(header, current) {
		t.Fatalf("header %s is not of version %d", header, snapshotVersion)
	}
	version := func(v string) []string { return one(strings.Replace(header, current, `"version":`+v, 1)) }
	newer := fmt.Sprint(snapshotVersion + 1)
	// Records of version 3: a pool's status and an open rotation, in pool
	// github (body[0]) and openai (body[3]).
	status := strings.Replace(body[0], `{"type":"pool",`, `{"type":"pool","status":{"generation":4,"failures":2,"last_error":"boom"},`, 1)
	rotation := func(id, pool string) string {
		return fmt.Sprintf(`{"type":"rotation","rotation":{"id":%q,"pool":%q,"replaces":"tok_a","reason":"manual","generation":4,"term":2,"leader":"node-1","started_at":"2030-01-02T03:04:05Z","attempts":1}}`, id, pool)
	}
	rot := rotation("rot_1", "github")
	n := len(body) + len(events) // records before the end record
	many := func(k int) []string {
		out := make([]string, k)
		for i := range out {
			out[i] = events[len(events)-1]
		}
		return out
	}
	swapped := slices.Clone(events)
	swapped[1], swapped[2] = swapped[2], swapped[1]
	tests := []struct {
		name, input, errHas string
	}{
		{"empty input", "", "header"},
		{"not JSON", "hello world\n", "header"},
		{"wrong format", join(one(strings.Replace(header, "tokend-state", "consul-state", 1)), body, events, one(end)), "not a tokend snapshot"},
		{"no format", join(one(`{"version":2,"applied_index":18}`), body, events, one(end)), "not a tokend snapshot"},
		{"header not an object", join(one(`[1,2,3]`), body, events, one(end)), "header"},
		{"newer version", join(version(newer), body, events, one(end)), "version " + newer},
		{"much newer version", join(version("1000"), body, events, one(end)), "version 1000"},
		{"version zero", join(version("0"), body, events, one(end)), "version 0"},
		{"negative version", join(version("-1"), body, events, one(end)), "version -1"},
		{"header only", join(one(header)), "truncated"},
		{"no end record", join(one(header), body, events), "truncated"},
		{"cut inside a record", string(good[:len(good)/2]), "record"},
		{"cut inside an event", join(one(header), body, events[:3], one(events[3][:40])), "record"},
		{"count too low", join(one(header), body, events, endCount(n-1)), fmt.Sprintf("counts %d", n-1)},
		{"count too high", join(one(header), body, events, endCount(n+1)), fmt.Sprintf("counts %d", n+1)},
		{"count missing", join(one(header), body, events, one(`{"type":"end"}`)), "counts 0"},
		{"count without events", join(one(header), body, endCount(n)), fmt.Sprintf("counts %d", n)},
		{"token before its pool", join(one(header), one(body[1], body[0]), body[2:], events, one(end)), "has not defined"},
		{"token of a missing pool", join(one(header), body[:3], body[4:], events, endCount(n-1)), "has not defined"},
		{"unknown record type", join(one(header), body[:3], one(`{"type":"mystery"}`), body[3:], events, endCount(n+1)), "unknown type"},
		{"record without type", join(one(header), body[:3], one(`{}`), body[3:], events, endCount(n+1)), "unknown type"},
		{"record not an object", join(one(header), body[:3], one(`"pool"`), body[3:], events, endCount(n+1)), "record 3"},
		{"pool record without pool", join(one(header), body, one(`{"type":"pool"}`), events, endCount(n+1)), "without a valid pool"},
		{"pool record with invalid name", join(one(header), body, one(`{"type":"pool","pool":{"name":"Bad Name"}}`), events, endCount(n+1)), "without a valid pool"},
		{"token record without token", join(one(header), body, one(`{"type":"token"}`), events, endCount(n+1)), "without a token"},
		{"pool twice", join(one(header), body[:3], one(body[0]), body[3:], events, endCount(n+1)), "appears twice"},
		{"token twice", join(one(header), body[:3], one(body[1]), body[3:], events, endCount(n+1)), "appears twice"},
		{"events in a version 1 stream", join(version("1"), body, events, one(end)), "not valid in version 1"},
		{"one event in a version 1 stream", join(version("1"), body, events[:1], endCount(len(body)+1)), "not valid in version 1"},
		{"event record without event", join(one(header), body, events, one(`{"type":"event"}`), endCount(n+1)), "event record"},
		{"event record with null event", join(one(header), body, events, one(`{"type":"event","event":null}`), endCount(n+1)), "event record"},
		{"event not an object", join(one(header), body, events, one(`{"type":"event","event":[1]}`), endCount(n+1)), fmt.Sprintf("record %d", n)},
		{"event with a bad time", join(one(header), body, events, one(`{"type":"event","event":{"index":99,"at":"yesterday"}}`), endCount(n+1)), fmt.Sprintf("record %d", n)},
		{"events out of order", join(one(header), body, swapped, one(end)), "out of order"},
		{"event older than the first", join(one(header), body, events, one(events[0]), endCount(n+1)), "out of order"},
		{"more than MaxEvents events", join(one(header), body, many(tokens.MaxEvents+1), endCount(len(body)+tokens.MaxEvents+1)), "more than"},
		{"many more than MaxEvents events", join(one(header), body, events, many(2*tokens.MaxEvents), endCount(n+2*tokens.MaxEvents)), "more than"},
		{"rotation in a version 1 stream", join(version("1"), body[:3], one(rot), body[3:], endCount(len(body)+1)), "rotation record not valid in version 1"},
		{"rotation in a version 2 stream", join(version("2"), body[:3], one(rot), body[3:], events, endCount(n+1)), "rotation record not valid in version 2"},
		{"pool status in a version 1 stream", join(version("1"), one(status), body[1:], endCount(len(body))), "pool status not valid in version 1"},
		{"pool status in a version 2 stream", join(version("2"), one(status), body[1:], events, one(end)), "pool status not valid in version 2"},
		{"rotation record without rotation", join(one(header), body, one(`{"type":"rotation"}`), events, endCount(n+1)), "rotation record"},
		{"rotation record with null rotation", join(one(header), body, one(`{"type":"rotation","rotation":null}`), events, endCount(n+1)), "rotation record"},
		{"rotation not an object", join(one(header), body, one(`{"type":"rotation","rotation":"rot_1"}`), events, endCount(n+1)), fmt.Sprintf("record %d", len(body))},
		{"rotation before its pool", join(one(header), one(rot), body, events, endCount(n+1)), "has not defined"},
		{"rotation of a missing pool", join(one(header), body, one(rotation("rot_1", "stripe")), events, endCount(n+1)), "has not defined"},
		{"rotation without a pool", join(one(header), body, one(rotation("rot_1", "")), events, endCount(n+1)), "has not defined"},
		{"rotation twice", join(one(header), body[:3], one(rot, rot), body[3:], events, endCount(n+2)), `rotation "rot_1" appears twice`},
		{"rotation twice, apart", join(one(header), body[:1], one(rot), body[1:3], one(rot), body[3:], events, endCount(n+2)), "appears twice"},
		{"pool status not an object", join(one(header), one(strings.Replace(body[0], `{"type":"pool",`, `{"type":"pool","status":[1],`, 1)), body[1:], events, one(end)), "record 0"},
		{"MaxEvents events, then a broken record", join(one(header), body, many(tokens.MaxEvents), one(`{"type":"token"}`), endCount(len(body)+tokens.MaxEvents+1)), "without a token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := priorState(t)
			before, frozen, index := h.f.State(), freeze(h.f.State()), h.f.AppliedIndex()
			beforeEvents := eventsOf(h.f)
			err := h.f.Restore(strings.NewReader(tt.input), 0)
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
			if got := eventsOf(h.f); !reflect.DeepEqual(got, beforeEvents) {
				t.Errorf("a rejected Restore changed the event log:\n got %+v\nwant %+v", got, beforeEvents)
			}
			if _, truncated := h.f.Events(36, 1); !truncated {
				t.Error("a rejected Restore forgot which events were dropped")
			}
			// The FSM goes on applying and recording.
			h.mustApply(PoolUpsertType, poolReq("after", t0))
			if len(h.last) != 1 {
				t.Errorf("after a rejected Restore, an upsert recorded %+v", h.last)
			}
		})
	}
	// The unmodified streams are accepted: the cases above fail for their
	// own reason. That includes version 1 without events, events sharing
	// an index, and exactly MaxEvents events.
	for name, input := range map[string]string{
		"unmodified":       join(one(header), body, events, one(end)),
		"version 1":        join(version("1"), body, endCount(len(body))),
		"no events":        join(one(header), body, endCount(len(body))),
		"MaxEvents events": join(one(header), body, many(tokens.MaxEvents), endCount(len(body)+tokens.MaxEvents)),
		"version 2":        join(version("2"), body, events, one(end)),
		// The same rotation id in two pools, and a rotation whose token
		// is gone: neither breaks anything.
		"rotations and status": join(one(header), one(status), body[1:3], one(rot, rotation("rot_2", "github")), body[3:], one(rotation("rot_1", "openai")), events, endCount(n+3)),
	} {
		h := priorState(t)
		if err := h.f.Restore(strings.NewReader(input), 0); err != nil {
			t.Fatalf("Restore of the %s snapshot: %v", name, err)
		}
		want := eventView{}
		switch name {
		case "unmodified", "version 2", "rotations and status":
			want = eventsOf(applyAll(t, version1Commands(t)).f)
		case "MaxEvents events":
			ev := eventsOf(applyAll(t, version1Commands(t)).f).Events
			want.Events = slices.Repeat(ev[len(ev)-1:], tokens.MaxEvents)
		}
		if got := eventsOf(h.f); !reflect.DeepEqual(got, want) {
			t.Errorf("%s snapshot restored events %+v, want %+v", name, got, want)
		}
		checkInvariants(t, h.f.State())
		var rotations []string
		var statuses []tokens.RotationStatus
		for _, ps := range h.f.State().Pools() {
			for _, r := range ps.Rotations {
				rotations = append(rotations, r.Pool+"/"+r.ID)
			}
			statuses = append(statuses, ps.Status)
		}
		wantRotations, wantStatuses := []string(nil), []tokens.RotationStatus{{}, {}}
		if name == "rotations and status" {
			wantRotations = []string{"github/rot_1", "github/rot_2", "openai/rot_1"}
			wantStatuses[0] = tokens.RotationStatus{Generation: 4, Failures: 2, LastError: "boom"}
		}
		if !slices.Equal(rotations, wantRotations) || !slices.Equal(statuses, wantStatuses) {
			t.Errorf("%s snapshot restored rotations %v and statuses %+v, want %v and %+v", name, rotations, statuses, wantRotations, wantStatuses)
		}
		if r, ok := h.pool("github").Rotation("rot_1"); ok && (r.Replaces != "tok_a" || r.Attempts != 1 || !r.StartedAt.Equal(t0) || r.Term != 2 || r.Generation != 4) {
			t.Errorf("%s snapshot restored rotation %+v", name, r)
		}
	}
}

// A version 2 stream carries the index of the newest dropped event, so that
// readers of a restored log learn that they missed events.
func TestRestoreEventsDropped(t *testing.T) {
	stream := strings.Join([]string{
		`{"format":"tokend-state","version":2,"applied_index":60,"events_dropped":50}`,
		`{"type":"event","event":{"index":50,"at":"2030-01-02T03:04:05Z","type":"pool_applied","pool":"a"}}`,
		`{"type":"event","event":{"index":52,"at":"2030-01-02T03:04:05Z","type":"pool_applied","pool":"b"}}`,
		`{"type":"event","event":{"index":52,"at":"2030-01-02T03:04:05Z","type":"pool_deleted","pool":"c"}}`,
		`{"type":"end","count":3}`,
	}, "\n") + "\n"
	f := restoreInto(t, []byte(stream))
	tests := []struct {
		since     uint64
		want      []uint64
		truncated bool
	}{
		{0, []uint64{50, 52, 52}, true},
		{49, []uint64{50, 52, 52}, true},
		{50, []uint64{52, 52}, false},
		{52, nil, false},
		{60, nil, false},
	}
	for _, tt := range tests {
		events, truncated := f.Events(tt.since, 10)
		var got []uint64
		for _, ev := range events {
			got = append(got, ev.Index)
		}
		if !slices.Equal(got, tt.want) || truncated != tt.truncated {
			t.Errorf("Events(%d) = %v, %v; want %v, %v", tt.since, got, truncated, tt.want, tt.truncated)
		}
	}
	// Written again at the current version, which writes events as
	// version 2 did.
	want := strings.Replace(stream, `"version":2`, fmt.Sprintf(`"version":%d`, snapshotVersion), 1)
	if got := snapshotBytes(t, f); string(got) != want {
		t.Errorf("snapshot of the restored log:\n%s\nwant\n%s", got, want)
	}
}

// goldenSnapshot returns testdata/snapshot-v<version>.jsonl, after
// checking that it is a snapshot of that version. Only the file of the
// current version can be written: while version is snapshotVersion,
// TOKEND_UPDATE_GOLDEN=1 first rewrites it from current. Do that once, when
// a version is introduced, never to make a change to the encoding pass. The
// files of older versions were written by older agents and are never
// rewritten.
func goldenSnapshot(t *testing.T, version int, current *FSM) []byte {
	t.Helper()
	path := filepath.Join("testdata", fmt.Sprintf("snapshot-v%d.jsonl", version))
	if os.Getenv("TOKEND_UPDATE_GOLDEN") != "" && version == snapshotVersion {
		if err := os.WriteFile(path, snapshotBytes(t, current), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	golden, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(golden, fmt.Appendf(nil, `{"format":"tokend-state","version":%d,`, version)) {
		t.Fatalf("%s is no longer a version %d snapshot:\n%s", path, version, golden)
	}
	return golden
}

// asCurrentVersion is an older snapshot as the current version writes the
// same state: versions 2 to 5 added records and fields that are left out
// when empty, and changed nothing else, so only the header's version
// differs. A version that changes how pools or tokens are written must
// revisit the callers.
func asCurrentVersion(t *testing.T, golden []byte, version int) []byte {
	t.Helper()
	if snapshotVersion != 5 {
		t.Fatalf("snapshot version %d: check what it changed, and update asCurrentVersion", snapshotVersion)
	}
	return bytes.Replace(golden, fmt.Appendf(nil, `"version":%d`, version), fmt.Appendf(nil, `"version":%d`, snapshotVersion), 1)
}

// testdata/snapshot-v1.jsonl is a version 1 snapshot, written from
// version1Commands when version 1 was current. Agents must restore
// snapshots written by older versions, so it must keep restoring to the
// same state for as long as version 1 is readable. It can no longer be
// written: do not regenerate it.
func TestRestoreVersion1Golden(t *testing.T) {
	golden := goldenSnapshot(t, 1, nil)
	want := applyAll(t, version1Commands(t)).f
	// Restored over an agent that holds events, rotations and pool status:
	// a version 1 snapshot has none, so they are all gone afterwards, and
	// no event counts as dropped.
	got := applyAll(t, everyCommand(t)).f
	if err := got.Restore(bytes.NewReader(golden), 0); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(freeze(got.State()), freeze(want.State())) || got.AppliedIndex() != want.AppliedIndex() {
		t.Fatalf("golden snapshot restores to %+v at %d, want %+v at %d", freeze(got.State()), got.AppliedIndex(), freeze(want.State()), want.AppliedIndex())
	}
	if ev := eventsOf(got); !reflect.DeepEqual(ev, eventView{}) {
		t.Fatalf("version 1 snapshot restored events %+v", ev)
	}
	if events, truncated := got.Events(0, tokens.MaxEvents); len(events) != 0 || truncated {
		t.Fatalf("after a version 1 restore Events(0) = %+v, %v", events, truncated)
	}
	// Its state has no events, rotations or status: pools and tokens are
	// written as version 1 wrote them.
	if now, want := snapshotBytes(t, got), asCurrentVersion(t, golden, 1); !bytes.Equal(now, want) {
		t.Fatalf("version 1 state now encodes as:\n%s\nwant\n%s", now, want)
	}
}

// testdata/snapshot-v2.jsonl is a version 2 snapshot of version2Commands'
// state and events, written when version 2 was current. It must keep
// restoring to the same state and events for as long as version 2 is
// readable. It can no longer be written: do not regenerate it.
func TestRestoreVersion2Golden(t *testing.T) {
	golden := goldenSnapshot(t, 2, nil)
	if !bytes.Contains(golden, []byte(`"type":"event"`)) {
		t.Fatalf("testdata/snapshot-v2.jsonl holds no events:\n%s", golden)
	}
	want := applyAll(t, version2Commands(t)).f
	// Restored over an agent that holds rotations and pool status: a
	// version 2 snapshot has none.
	got := applyAll(t, everyCommand(t)).f
	if err := got.Restore(bytes.NewReader(golden), 0); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(freeze(got.State()), freeze(want.State())) || got.AppliedIndex() != want.AppliedIndex() {
		t.Fatalf("golden snapshot restores to %+v at %d, want %+v at %d", freeze(got.State()), got.AppliedIndex(), freeze(want.State()), want.AppliedIndex())
	}
	if g, w := eventsOf(got), eventsOf(want); !reflect.DeepEqual(g, w) {
		t.Fatalf("golden snapshot restores events\n%+v\nwant\n%+v", g, w)
	}
	for _, ps := range got.State().Pools() {
		if len(ps.Rotations) != 0 || ps.Status != (tokens.RotationStatus{}) {
			t.Fatalf("version 2 snapshot restored pool %s with rotations %v and status %+v", ps.Pool.Name, ps.Rotations, ps.Status)
		}
	}
	// Its state has no rotations or status: everything else is written as
	// version 2 wrote it.
	if now, want := snapshotBytes(t, got), asCurrentVersion(t, golden, 2); !bytes.Equal(now, want) {
		t.Fatalf("version 2 state now encodes as:\n%s\nwant\n%s", now, want)
	}
}

// testdata/snapshot-v3.jsonl is a version 3 snapshot of version3Commands'
// state and events: open rotations, pools with and without status, and
// tokens in every lifecycle commands make. It must keep restoring to the
// same state and events for as long as version 3 is readable. It can no
// longer be written: do not regenerate it.
func TestRestoreVersion3Golden(t *testing.T) {
	golden := goldenSnapshot(t, 3, nil)
	for _, part := range []string{`"type":"event"`, `"type":"rotation"`, `"status":{"generation":`, `"failures":1,`, `"lifecycle":"retiring"`, `"lifecycle":"orphaned"`, `"rotation_id":`} {
		if !bytes.Contains(golden, []byte(part)) {
			t.Fatalf("testdata/snapshot-v3.jsonl does not hold %s:\n%s", part, golden)
		}
	}
	want := applyAll(t, version3Commands(t)).f
	// Restored over an agent that chose a sealing key: a version 3
	// snapshot has no keyring record, so that choice is gone.
	got := applyAll(t, everyCommand(t)).f
	if err := got.Restore(bytes.NewReader(golden), 0); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(freeze(got.State()), freeze(want.State())) || got.AppliedIndex() != want.AppliedIndex() {
		t.Fatalf("golden snapshot restores to %+v at %d, want %+v at %d", freeze(got.State()), got.AppliedIndex(), freeze(want.State()), want.AppliedIndex())
	}
	if g, w := eventsOf(got), eventsOf(want); !reflect.DeepEqual(g, w) {
		t.Fatalf("golden snapshot restores events\n%+v\nwant\n%+v", g, w)
	}
	if kr := got.State().Keyring(); kr != (KeyringState{}) {
		t.Fatalf("version 3 snapshot restored keyring %+v", kr)
	}
	if now, want := snapshotBytes(t, got), asCurrentVersion(t, golden, 3); !bytes.Equal(now, want) {
		t.Fatalf("version 3 state now encodes as:\n%s\nwant\n%s", now, want)
	}
}

// testdata/snapshot-v4.jsonl is a version 4 snapshot of version4Commands'
// state and events: everything version 3 had, sealed and plaintext values
// side by side, the keyring record and resealed secrets. It must keep
// restoring to the same state and events for as long as version 4 is
// readable. It can no longer be written: do not regenerate it.
func TestRestoreVersion4Golden(t *testing.T) {
	golden := goldenSnapshot(t, 4, nil)
	for _, part := range []string{`"type":"keyring"`, `"primary":"` + testKeyB + `"`, `"fingerprint":"` + testKeyB + `:`, `"fingerprint":"` + testKeyA + `:`, `"type":"secrets_resealed"`} {
		if !bytes.Contains(golden, []byte(part)) {
			t.Fatalf("testdata/snapshot-v4.jsonl does not hold %s:\n%s", part, golden)
		}
	}
	want := applyAll(t, version4Commands(t)).f
	// Restored over an agent with ACLs: a version 4 snapshot has none.
	got := applyAll(t, everyCommand(t)).f
	if err := got.Restore(bytes.NewReader(golden), 0); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(freeze(got.State()), freeze(want.State())) || got.AppliedIndex() != want.AppliedIndex() {
		t.Fatalf("golden snapshot restores to %+v at %d, want %+v at %d", freeze(got.State()), got.AppliedIndex(), freeze(want.State()), want.AppliedIndex())
	}
	if g, w := eventsOf(got), eventsOf(want); !reflect.DeepEqual(g, w) {
		t.Fatalf("golden snapshot restores events\n%+v\nwant\n%+v", g, w)
	}
	if g, w := got.State().Keyring(), want.State().Keyring(); g != w || g.Primary != testKeyB {
		t.Fatalf("golden snapshot restores keyring %+v, want %+v", g, w)
	}
	if acl := frozenACL(got.State()); acl != frozenACL(New(nil).State()) {
		t.Fatalf("version 4 snapshot restored ACLs %s", acl)
	}
	if now, want := snapshotBytes(t, got), asCurrentVersion(t, golden, 4); !bytes.Equal(now, want) {
		t.Fatalf("version 4 state now encodes as:\n%s\nwant\n%s", now, want)
	}
}

// testdata/snapshot-v5.jsonl is a version 5 snapshot of everyCommand's
// state and events: everything version 4 had, and ACL policies and tokens.
// While version 5 is current, the snapshot of that history must be this
// file byte for byte; afterwards, it must still restore to the same state
// and events.
func TestSnapshotVersion5Golden(t *testing.T) {
	want := applyAll(t, everyCommand(t)).f
	golden := goldenSnapshot(t, 5, want)
	for _, part := range []string{`"type":"acl","acl":{"bootstrapped":true}`, `"type":"acl_policy"`, `"type":"acl_token"`, `"management":true`, `"type":"acl_token_created"`} {
		if !bytes.Contains(golden, []byte(part)) {
			t.Fatalf("testdata/snapshot-v5.jsonl does not hold %s:\n%s", part, golden)
		}
	}
	got := applyAll(t, version2Commands(t)).f
	if err := got.Restore(bytes.NewReader(golden), 0); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(freeze(got.State()), freeze(want.State())) || got.AppliedIndex() != want.AppliedIndex() {
		t.Fatalf("golden snapshot restores to %+v at %d, want %+v at %d", freeze(got.State()), got.AppliedIndex(), freeze(want.State()), want.AppliedIndex())
	}
	if g, w := eventsOf(got), eventsOf(want); !reflect.DeepEqual(g, w) {
		t.Fatalf("golden snapshot restores events\n%+v\nwant\n%+v", g, w)
	}
	if g, w := frozenACL(got.State()), frozenACL(want.State()); g != w {
		t.Fatalf("golden snapshot restores ACLs\n%s\nwant\n%s", g, w)
	}
	if snapshotVersion == 5 {
		if now := snapshotBytes(t, want); !bytes.Equal(now, golden) {
			t.Fatalf("version 5 encoding changed; bump snapshotVersion (and keep reading 5) instead:\n%s\nwas\n%s", now, golden)
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
		if err := h.f.Restore(bytes.NewReader(snapshotBytes(t, c.f)), 0); err != nil {
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
