package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tokend/tokend/tokens"
)

// The rotation commands of DESIGN §5, through the harness: every command
// below is also Checked before it is applied, with the same answer, and
// leaves the state it replaced untouched.

// rotation is a rotation the leader node-1 opens in term 3.
func rotation(pool, id, replaces string, generation uint64) tokens.Rotation {
	return tokens.Rotation{ID: id, Pool: pool, Replaces: replaces, Reason: tokens.ReasonManual, Generation: generation, Term: 3, Leader: "node-1"}
}

func beginReq(r tokens.Rotation, at time.Time) RotationBeginRequest {
	return RotationBeginRequest{Rotation: r, At: at}
}

// issuedToken is a token a provider issued, as the leader sends it.
func issuedToken(pool, id, value string, mods ...func(*tokens.Token)) tokens.Token {
	return tokenReq(pool, id, value, 0, time.Time{}, mods...).Token
}

func commitReq(pool, id string, term uint64, tk tokens.Token, at time.Time) RotationCommitRequest {
	return RotationCommitRequest{Pool: pool, ID: id, Term: term, Token: tk, At: at}
}

// rotationHarness holds issuing pool p with active tokens tok_a (expiring
// in 90 days) and tok_b (never expiring), at indices 1 to 3.
func rotationHarness(t *testing.T, mods ...func(*tokens.Pool)) *harness {
	t.Helper()
	h := newHarness(t)
	h.mustApply(PoolUpsertType, issuingPool("p", t0, mods...))
	h.mustApply(TokenAddType, tokenReq("p", "tok_a", "value-a", 0, t0, func(tk *tokens.Token) { tk.ExpiresAt = t0.Add(90 * 24 * time.Hour) }))
	h.mustApply(TokenAddType, tokenReq("p", "tok_b", "value-b", 1, t0))
	return h
}

// rejectHas applies a command that must be rejected with code and a message
// that contains has.
func (h *harness) rejectHas(typ MessageType, req any, code, has string) {
	h.t.Helper()
	if e := h.reject(typ, req, code); !strings.Contains(e.Message, has) {
		h.t.Errorf("%s rejected with %q, want it to say %q", typ, e.Message, has)
	}
}

func (h *harness) expectEvents(what string, want ...tokens.Event) {
	h.t.Helper()
	if !sameEvents(h.last, want) {
		h.t.Errorf("%s recorded\n%+v\nwant\n%+v", what, h.last, want)
	}
}

func (h *harness) openRotations(pool string) []tokens.Rotation {
	h.t.Helper()
	var out []tokens.Rotation
	for _, r := range h.pool(pool).Rotations {
		out = append(out, *r)
	}
	return out
}

func TestRotationBegin(t *testing.T) {
	h := rotationHarness(t)
	h.mustApply(PoolUpsertType, poolReq("static", t0))
	h.mustApply(TokenAddType, tokenReq("static", "tok_s", "value-s", 0, t0))
	at := t0.Add(time.Hour)

	// The proposer cannot choose when it started or how often it ran.
	r1 := rotation("p", "rot_1", "tok_a", 1)
	r1.Reason = tokens.ReasonRenewBefore
	req := r1
	req.StartedAt, req.Attempts = t0.Add(-time.Hour), 7
	tokensBefore := h.pool("p").Tokens
	h.mustApply(RotationBeginType, beginReq(req, at))
	want := r1
	want.StartedAt, want.Attempts = at, 1
	if got := h.openRotations("p"); !reflect.DeepEqual(got, []tokens.Rotation{want}) {
		t.Fatalf("open rotations %+v, want %+v", got, want)
	}
	if got := h.pool("p").Status; got != (tokens.RotationStatus{Generation: 1}) {
		t.Errorf("status after begin = %+v, want generation 1", got)
	}
	if got := h.pool("p").Tokens; !reflect.DeepEqual(got, tokensBefore) || got[0] != tokensBefore[0] {
		t.Errorf("begin changed the pool's tokens")
	}
	h.expectEvents("begin", tokens.Event{Index: h.index, At: at, Type: tokens.EventRotationBegun, Pool: "p", Token: "tok_a", Reason: tokens.ReasonRenewBefore, Reporter: "node-1", Rotation: "rot_1"})

	// Every rule, each broken alone by a command that would otherwise be
	// accepted: generation 2, replacing tok_b.
	ok := rotation("p", "rot_2", "tok_b", 2)
	with := func(mod func(*tokens.Rotation)) RotationBeginRequest {
		r := ok
		mod(&r)
		return beginReq(r, at)
	}
	h.mustApply(TokenOrphanType, TokenOrphanRequest{Token: issuedToken("p", "tok_o", "value-o"), Reason: "late", At: at})
	for _, c := range []struct {
		name, code, has string
		req             RotationBeginRequest
	}{
		{"invalid id", tokens.CodeInvalid, "valid id", with(func(r *tokens.Rotation) { r.ID = "Rot 2" })},
		{"no id", tokens.CodeInvalid, "valid id", with(func(r *tokens.Rotation) { r.ID = "" })},
		{"no term", tokens.CodeInvalid, "term", with(func(r *tokens.Rotation) { r.Term = 0 })},
		{"no reason", tokens.CodeInvalid, "reason", with(func(r *tokens.Rotation) { r.Reason = "" })},
		{"unknown pool", tokens.CodePoolNotFound, `"nope"`, with(func(r *tokens.Rotation) { r.Pool = "nope" })},
		{"no pool", tokens.CodePoolNotFound, "does not exist", with(func(r *tokens.Rotation) { r.Pool = "" })},
		{"static pool", tokens.CodeConflict, "cannot issue", with(func(r *tokens.Rotation) { r.Pool, r.Replaces, r.Generation = "static", "tok_s", 1 })},
		{"stale generation", tokens.CodeConflict, "generation 1 does not follow", with(func(r *tokens.Rotation) { r.Generation = 1 })},
		{"generation zero", tokens.CodeConflict, "generation 0", with(func(r *tokens.Rotation) { r.Generation = 0 })},
		{"skipped generation", tokens.CodeConflict, "generation 3", with(func(r *tokens.Rotation) { r.Generation = 3 })},
		{"open id", tokens.CodeConflict, `"rot_1" is open already`, with(func(r *tokens.Rotation) { r.ID = "rot_1" })},
		{"open id, other token", tokens.CodeConflict, "open already", with(func(r *tokens.Rotation) { r.ID, r.Replaces = "rot_1", "" })},
		{"unknown token", tokens.CodeTokenNotFound, `"tok_x"`, with(func(r *tokens.Rotation) { r.Replaces = "tok_x" })},
		{"token of another pool", tokens.CodeTokenNotFound, `"tok_s"`, with(func(r *tokens.Rotation) { r.Replaces = "tok_s" })},
		{"orphaned token", tokens.CodeConflict, "only active tokens", with(func(r *tokens.Rotation) { r.Replaces = "tok_o" })},
		{"token being rotated", tokens.CodeConflict, `"tok_a" has a rotation open`, with(func(r *tokens.Rotation) { r.Replaces = "tok_a" })},
	} {
		t.Run(c.name, func(t *testing.T) {
			defer h.use(t)()
			h.rejectHas(RotationBeginType, c.req, c.code, c.has)
		})
	}
	// Two leaders planned generation 2; the first one's begin wins.
	h.mustApply(RotationBeginType, beginReq(ok, at))
	other := ok
	other.ID, other.Replaces, other.Leader, other.Term = "rot_9", "", "node-2", 4
	h.rejectHas(RotationBeginType, beginReq(other, at), tokens.CodeConflict, "another plan was committed first")
	if got := h.pool("p").Status.Generation; got != 2 {
		t.Errorf("generation %d after rejected begins, want 2", got)
	}

	// A top-up rotation replaces nothing, and several may be open.
	for g := uint64(3); g <= 4; g++ {
		h.mustApply(RotationBeginType, beginReq(rotation("p", fmt.Sprintf("rot_%d", g), "", g), at))
		h.expectEvents("top-up begin", tokens.Event{Index: h.index, At: at, Type: tokens.EventRotationBegun, Pool: "p", Reason: tokens.ReasonManual, Reporter: "node-1", Rotation: fmt.Sprintf("rot_%d", g)})
	}
	var ids []string
	for _, r := range h.openRotations("p") {
		ids = append(ids, r.ID)
	}
	if want := []string{"rot_1", "rot_2", "rot_3", "rot_4"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("open rotations %v, want %v", ids, want)
	}
	// An id is unique among open rotations: once rot_1 is closed, a new
	// rotation may take it, and tok_a may be rotated again.
	h.mustApply(RotationAbandonType, RotationAbandonRequest{Pool: "p", ID: "rot_1", Reason: "gave up", At: at})
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_1", "tok_a", 5), at))
	// Rotation ids are per pool.
	h.mustApply(PoolUpsertType, issuingPool("q", at))
	h.mustApply(RotationBeginType, beginReq(rotation("q", "rot_1", "", 1), at))
	checkInvariants(t, h.f.State())
	checkRotationRules(t, h.f.State())
}

// A pool holds at most maxOpenRotations open rotations.
func TestRotationBeginLimit(t *testing.T) {
	h := rotationHarness(t)
	for g := uint64(1); g <= maxOpenRotations; g++ {
		h.mustApply(RotationBeginType, beginReq(rotation("p", fmt.Sprintf("rot_%d", g), "", g), t0))
	}
	h.rejectHas(RotationBeginType, beginReq(rotation("p", "rot_more", "", maxOpenRotations+1), t0), tokens.CodeConflict, fmt.Sprintf("%d rotations open", maxOpenRotations))
	// The limit counts rotations that replace a token too.
	h.rejectHas(RotationBeginType, beginReq(rotation("p", "rot_more", "tok_a", maxOpenRotations+1), t0), tokens.CodeConflict, "rotations open already")
	h.mustApply(RotationFailType, RotationFailRequest{Pool: "p", ID: "rot_50", Term: 3, Error: "boom", At: t0})
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_more", "tok_a", maxOpenRotations+1), t0))
	if n := len(h.pool("p").Rotations); n != maxOpenRotations {
		t.Fatalf("%d rotations open, want %d", n, maxOpenRotations)
	}
	checkRotationRules(t, h.f.State())
}

func TestRotationResume(t *testing.T) {
	h := rotationHarness(t)
	begun := t0.Add(time.Minute)
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_1", "tok_a", 1), begun))
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_2", "", 2), begun))
	at := t0.Add(time.Hour)
	resume := func(id string, term uint64, leader string) RotationResumeRequest {
		return RotationResumeRequest{Pool: "p", ID: id, Term: term, Leader: leader, At: at}
	}
	h.rejectHas(RotationResumeType, resume("rot_1", 3, "node-2"), tokens.CodeConflict, "term 3 already")
	h.rejectHas(RotationResumeType, resume("rot_1", 2, "node-2"), tokens.CodeConflict, "not before 2")
	h.rejectHas(RotationResumeType, resume("rot_1", 0, "node-2"), tokens.CodeConflict, "term 3")
	h.rejectHas(RotationResumeType, resume("rot_9", 4, "node-2"), tokens.CodeConflict, `"rot_9" is not open`)
	h.rejectHas(RotationResumeType, RotationResumeRequest{Pool: "nope", ID: "rot_1", Term: 4, At: at}, tokens.CodePoolNotFound, `"nope"`)
	statusBefore := h.pool("p").Status

	h.mustApply(RotationResumeType, resume("rot_1", 4, "node-2"))
	want := rotation("p", "rot_1", "tok_a", 1)
	want.Term, want.Leader, want.StartedAt, want.Attempts = 4, "node-2", begun, 2
	if got, _ := h.pool("p").Rotation("rot_1"); !reflect.DeepEqual(*got, want) {
		t.Fatalf("resumed rotation %+v, want %+v", *got, want)
	}
	if got := h.pool("p").Status; got != statusBefore {
		t.Errorf("resume changed the status to %+v", got)
	}
	h.expectEvents("resume", tokens.Event{
		Index: h.index, At: at, Type: tokens.EventRotationResumed, Pool: "p", Token: "tok_a", Reporter: "node-2", Rotation: "rot_1",
		Reason: "attempt 2; attempt 1 by node-1 may have issued a credential that was never recorded, unless the issuer honours idempotency keys",
	})
	// Terms only go up, and each resume is one more attempt.
	h.rejectHas(RotationResumeType, resume("rot_1", 4, "node-3"), tokens.CodeConflict, "term 4 already")
	h.mustApply(RotationResumeType, resume("rot_1", 9, "node-3"))
	if got, _ := h.pool("p").Rotation("rot_1"); got.Attempts != 3 || got.Term != 9 || got.Leader != "node-3" || !got.StartedAt.Equal(begun) || got.Generation != 1 {
		t.Errorf("rotation resumed twice = %+v", *got)
	}
	if ev := h.last; len(ev) != 1 || !strings.HasPrefix(ev[0].Reason, "attempt 3; attempt 2 by node-2 may have issued") {
		t.Errorf("second resume recorded %+v", ev)
	}
	// A top-up rotation's event names no token; the other rotation is
	// untouched.
	h.mustApply(RotationResumeType, resume("rot_2", 4, "node-2"))
	if ev := h.last; len(ev) != 1 || ev[0].Token != "" || ev[0].Rotation != "rot_2" {
		t.Errorf("top-up resume recorded %+v", ev)
	}
	// A closed rotation cannot be resumed.
	h.mustApply(RotationAbandonType, RotationAbandonRequest{Pool: "p", ID: "rot_2", At: at})
	h.rejectHas(RotationResumeType, resume("rot_2", 10, "node-2"), tokens.CodeConflict, "finished or abandoned")
	checkRotationRules(t, h.f.State())
}

func TestRotationCommit(t *testing.T) {
	h := rotationHarness(t)
	h.mustApply(TokenAddType, tokenReq("p", "tok_c", "value-c", 0, t0))
	// A failure first, so the commit has a status to reset.
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_0", "tok_a", 1), t0))
	h.mustApply(RotationFailType, RotationFailRequest{Pool: "p", ID: "rot_0", Term: 3, Error: "issuer down", NextAttempt: t0.Add(time.Second), At: t0})
	begun := t0.Add(time.Minute)
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_1", "tok_a", 2), begun))
	at := t0.Add(time.Hour)
	oldA := *h.token("p", "tok_a")

	good := issuedToken("p", "tok_n", "value-n", func(tk *tokens.Token) {
		tk.Priority = 2
		tk.Labels = map[string]string{"scope": "repo"}
		tk.Metadata = map[string]string{"issuer": "vault", "client_id": "c1"}
		tk.ExpiresAt = at.Add(30 * 24 * time.Hour)
	})
	with := func(mod func(*RotationCommitRequest)) RotationCommitRequest {
		req := commitReq("p", "rot_1", 3, good, at)
		req.Token.Labels = cloneLabels(good.Labels)
		mod(&req)
		return req
	}
	for _, c := range []struct {
		name, code, has string
		req             RotationCommitRequest
	}{
		{"older term", tokens.CodeConflict, "its leader was deposed", with(func(r *RotationCommitRequest) { r.Term = 2 })},
		{"newer term", tokens.CodeConflict, "term 3, not 4", with(func(r *RotationCommitRequest) { r.Term = 4 })},
		{"closed rotation", tokens.CodeConflict, `"rot_0" is not open`, with(func(r *RotationCommitRequest) { r.ID = "rot_0" })},
		{"unknown rotation", tokens.CodeConflict, "not open", with(func(r *RotationCommitRequest) { r.ID = "rot_9" })},
		{"unknown pool", tokens.CodePoolNotFound, `"nope"`, with(func(r *RotationCommitRequest) { r.Pool = "nope" })},
		{"token of another pool", tokens.CodeInvalid, `belongs to pool "q"`, with(func(r *RotationCommitRequest) { r.Token.Pool = "q" })},
		{"token without pool", tokens.CodeInvalid, "belongs to pool", with(func(r *RotationCommitRequest) { r.Token.Pool = "" })},
		{"expires at once", tokens.CodeInvalid, "expires_at", with(func(r *RotationCommitRequest) { r.Token.ExpiresAt = at })},
		{"expires within the margin", tokens.CodeInvalid, "expires_at", with(func(r *RotationCommitRequest) { r.Token.ExpiresAt = at.Add(tokens.ExpiryMargin) })},
		{"expired", tokens.CodeInvalid, "expires_at", with(func(r *RotationCommitRequest) { r.Token.ExpiresAt = at.Add(-time.Hour) })},
		{"invalid id", tokens.CodeInvalid, "token id", with(func(r *RotationCommitRequest) { r.Token.ID = "Tok N" })},
		{"empty value", tokens.CodeInvalid, "value is required", with(func(r *RotationCommitRequest) { r.Token.Value = nil })},
		{"no fingerprint", tokens.CodeInvalid, "fingerprint", with(func(r *RotationCommitRequest) { r.Token.Fingerprint = "" })},
		{"bad labels", tokens.CodeInvalid, "label", with(func(r *RotationCommitRequest) { r.Token.Labels["BAD"] = "x" })},
		{"bad priority", tokens.CodeInvalid, "priority", with(func(r *RotationCommitRequest) { r.Token.Priority = tokens.MaxPriority + 1 })},
		{"not_before after expiry", tokens.CodeInvalid, "not_before", with(func(r *RotationCommitRequest) { r.Token.NotBefore = r.Token.ExpiresAt })},
		{"id taken", tokens.CodeConflict, `"tok_b" already exists`, with(func(r *RotationCommitRequest) { r.Token.ID = "tok_b" })},
		{"id of the replaced token", tokens.CodeConflict, `"tok_a" already exists`, with(func(r *RotationCommitRequest) { r.Token.ID = "tok_a" })},
		{"value held", tokens.CodeConflict, `already holds this value as token "tok_c"`, with(func(r *RotationCommitRequest) {
			r.Token.Value, r.Token.Fingerprint = tokens.Sealed("value-c"), legacyFingerprint([]byte("value-c"))
		})},
	} {
		t.Run(c.name, func(t *testing.T) {
			defer h.use(t)()
			h.rejectHas(RotationCommitType, c.req, c.code, c.has)
		})
	}
	if _, open := h.pool("p").Rotation("rot_1"); !open {
		t.Fatal("rejected commits closed the rotation")
	}

	// The proposer cannot choose the bookkeeping fields.
	req := with(func(r *RotationCommitRequest) {
		tk := &r.Token
		tk.Lifecycle = tokens.LifecycleRevoked
		tk.Health = tokens.Health{State: tokens.Failed, Reason: "made up", Since: t0}
		tk.CreatedAt, tk.CreateIndex, tk.ModifyIndex = t0, 99, 99
		tk.RotationID, tk.Generation = "rot_other", 77
		tk.RetireAt = at.Add(time.Minute)
	})
	h.mustApply(RotationCommitType, req)
	idx := h.index
	wantNew := good
	wantNew.Lifecycle = tokens.LifecycleActive
	wantNew.Health = tokens.Health{State: tokens.Healthy, Since: at}
	wantNew.CreatedAt, wantNew.CreateIndex, wantNew.ModifyIndex = at, idx, idx
	wantNew.RotationID, wantNew.Generation = "rot_1", 2
	if got := h.token("p", "tok_n"); !reflect.DeepEqual(*got, wantNew) {
		t.Errorf("committed token = %+v\nwant %+v", *got, wantNew)
	}
	// The replaced token retires after the default grace of a minute, and
	// keeps everything else.
	wantOld := oldA
	wantOld.Lifecycle, wantOld.ModifyIndex, wantOld.RetireAt = tokens.LifecycleRetiring, idx, at.Add(tokens.DefaultGrace)
	if got := h.token("p", "tok_a"); !reflect.DeepEqual(*got, wantOld) {
		t.Errorf("replaced token = %+v\nwant %+v", *got, wantOld)
	}
	if got := h.openRotations("p"); len(got) != 0 {
		t.Errorf("rotations open after commit: %+v", got)
	}
	// A success ends the backoff; the generation stays the rotation's.
	if got, want := h.pool("p").Status, (tokens.RotationStatus{Generation: 2, LastSuccess: at}); got != want {
		t.Errorf("status after commit = %+v, want %+v", got, want)
	}
	h.expectEvents("commit",
		tokens.Event{Index: idx, At: at, Type: tokens.EventRotationCommitted, Pool: "p", Token: "tok_n", To: tokens.Healthy, Reason: tokens.ReasonManual, Reporter: "node-1", Rotation: "rot_1"},
		tokens.Event{Index: idx, At: at, Type: tokens.EventTokenRetiring, Pool: "p", Token: "tok_a", Reason: "replaced by tok_n", Rotation: "rot_1"},
	)
	// Once committed, the rotation is closed: a retried commit is refused.
	h.rejectHas(RotationCommitType, req, tokens.CodeConflict, "finished or abandoned")

	// A top-up rotation adds a token and retires nothing; its token may
	// expire just past the margin.
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_2", "", 3), at))
	h.mustApply(RotationCommitType, commitReq("p", "rot_2", 3, issuedToken("p", "tok_m", "value-m", func(tk *tokens.Token) {
		tk.ExpiresAt = at.Add(tokens.ExpiryMargin + time.Nanosecond)
	}), at))
	h.expectEvents("top-up commit", tokens.Event{Index: h.index, At: at, Type: tokens.EventRotationCommitted, Pool: "p", Token: "tok_m", To: tokens.Healthy, Reason: tokens.ReasonManual, Reporter: "node-1", Rotation: "rot_2"})
	if got := h.token("p", "tok_b"); got.Lifecycle != tokens.LifecycleActive {
		t.Errorf("top-up commit changed tok_b to %s", got.Lifecycle)
	}
	checkInvariants(t, h.f.State())
	checkRotationRules(t, h.f.State())
}

// A commit into a full pool is refused like an operator's add.
func TestRotationCommitPoolFull(t *testing.T) {
	h := rotationHarness(t)
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_1", "", 1), t0))
	ps := h.pool("p")
	full := ps.shallow()
	full.Tokens = nil
	for i := range tokens.MaxTokensPerPool {
		full.Tokens = append(full.Tokens, &tokens.Token{ID: fmt.Sprintf("tok_%05d", i), Pool: "p", Fingerprint: fmt.Sprint(i), Lifecycle: tokens.LifecycleActive})
	}
	h.f.state.Store(h.f.State().withPool("p", full))
	h.rejectHas(RotationCommitType, commitReq("p", "rot_1", 3, issuedToken("p", "tok_new", "value-new"), t0), tokens.CodeConflict, "full")
	h.rejectHas(TokenOrphanType, TokenOrphanRequest{Token: issuedToken("p", "tok_new", "value-new"), At: t0}, tokens.CodeConflict, "full")
	h.mustApply(TokenRemoveType, TokenRemoveRequest{Pool: "p", ID: "tok_00000", At: t0})
	h.mustApply(RotationCommitType, commitReq("p", "rot_1", 3, issuedToken("p", "tok_new", "value-new"), t0))
}

// The replaced token stays valid, as retiring, for the pool's grace, but
// never past its own expiry.
func TestRotationCommitGrace(t *testing.T) {
	at := t0.Add(time.Hour)
	for _, c := range []struct {
		name    string
		grace   time.Duration // 0: the default
		expires time.Time     // the replaced token's; zero: never
		want    time.Time
	}{
		{"default grace", 0, at.Add(24 * time.Hour), at.Add(time.Minute)},
		{"default grace, no expiry", 0, time.Time{}, at.Add(time.Minute)},
		{"pool's grace", 10 * time.Minute, at.Add(24 * time.Hour), at.Add(10 * time.Minute)},
		{"capped by expiry", 10 * time.Minute, at.Add(3 * time.Minute), at.Add(3 * time.Minute)},
		{"default grace capped by expiry", 0, at.Add(30 * time.Second), at.Add(30 * time.Second)},
		{"expiry at the end of grace", 10 * time.Minute, at.Add(10 * time.Minute), at.Add(10 * time.Minute)},
		{"expiry just after grace", 10 * time.Minute, at.Add(10*time.Minute + time.Nanosecond), at.Add(10 * time.Minute)},
		{"expired already", time.Hour, at.Add(-time.Minute), at.Add(-time.Minute)},
		{"longest grace", 7 * 24 * time.Hour, time.Time{}, at.Add(7 * 24 * time.Hour)},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			h.mustApply(PoolUpsertType, issuingPool("p", t0, func(p *tokens.Pool) { p.Rotation.Grace = tokens.Duration(c.grace) }))
			h.mustApply(TokenAddType, tokenReq("p", "tok_a", "value-a", 0, t0, func(tk *tokens.Token) { tk.ExpiresAt = c.expires }))
			h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_1", "tok_a", 1), t0))
			h.mustApply(RotationCommitType, commitReq("p", "rot_1", 3, issuedToken("p", "tok_n", "value-n"), at))
			if got := h.token("p", "tok_a"); got.Lifecycle != tokens.LifecycleRetiring || !got.RetireAt.Equal(c.want) || !got.ExpiresAt.Equal(c.expires) {
				t.Errorf("replaced token is %s until %s (expires %s), want retiring until %s", got.Lifecycle, got.RetireAt, got.ExpiresAt, c.want)
			}
			checkRotationRules(t, h.f.State())
		})
	}
	// The grace is the pool's when the rotation commits, not when it began.
	h := newHarness(t)
	h.mustApply(PoolUpsertType, issuingPool("p", t0))
	h.mustApply(TokenAddType, tokenReq("p", "tok_a", "value-a", 0, t0))
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_1", "tok_a", 1), t0))
	h.mustApply(PoolUpsertType, issuingPool("p", t0, func(p *tokens.Pool) { p.Rotation.Grace = tokens.Duration(5 * time.Minute) }))
	if ps := h.pool("p"); len(ps.Rotations) != 1 || ps.Status.Generation != 1 {
		t.Fatalf("a pool update lost its rotations or status: %+v, %+v", ps.Rotations, ps.Status)
	}
	h.mustApply(RotationCommitType, commitReq("p", "rot_1", 3, issuedToken("p", "tok_n", "value-n"), at))
	if got := h.token("p", "tok_a").RetireAt; !got.Equal(at.Add(5 * time.Minute)) {
		t.Errorf("retire at %s, want the updated grace's %s", got, at.Add(5*time.Minute))
	}
}

// A replaced token that is gone by the time its rotation commits is not
// brought back, and a new token that takes its id is not retired.
func TestRotationCommitReplacedTokenGone(t *testing.T) {
	h := rotationHarness(t)
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_1", "tok_a", 1), t0))
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_2", "tok_b", 2), t0))
	h.mustApply(TokenRemoveType, TokenRemoveRequest{Pool: "p", ID: "tok_a", At: t0})
	h.mustApply(TokenRemoveType, TokenRemoveRequest{Pool: "p", ID: "tok_b", At: t0})
	at := t0.Add(time.Hour)
	h.mustApply(RotationCommitType, commitReq("p", "rot_1", 3, issuedToken("p", "tok_n", "value-n"), at))
	h.expectEvents("commit replacing a removed token", tokens.Event{Index: h.index, At: at, Type: tokens.EventRotationCommitted, Pool: "p", Token: "tok_n", To: tokens.Healthy, Reason: tokens.ReasonManual, Reporter: "node-1", Rotation: "rot_1"})
	if _, ok := h.f.State().Token("p", "tok_a"); ok {
		t.Error("the removed token is back")
	}
	h.mustApply(RotationCommitType, commitReq("p", "rot_2", 3, issuedToken("p", "tok_b", "value-b2"), at))
	if got := h.token("p", "tok_b"); got.Lifecycle != tokens.LifecycleActive || !got.RetireAt.IsZero() || got.RotationID != "rot_2" {
		t.Errorf("the new token that took the removed one's id is %s until %s", got.Lifecycle, got.RetireAt)
	}
	h.expectEvents("commit of a token with the removed one's id", tokens.Event{Index: h.index, At: at, Type: tokens.EventRotationCommitted, Pool: "p", Token: "tok_b", To: tokens.Healthy, Reason: tokens.ReasonManual, Reporter: "node-1", Rotation: "rot_2"})
	checkRotationRules(t, h.f.State())
}

func TestRotationFail(t *testing.T) {
	h := rotationHarness(t)
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_1", "tok_a", 1), t0))
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_2", "", 2), t0))
	at := t0.Add(time.Hour)
	fail := func(id string, term uint64, msg string, next time.Time) RotationFailRequest {
		return RotationFailRequest{Pool: "p", ID: id, Term: term, Error: msg, NextAttempt: next, At: at}
	}
	h.rejectHas(RotationFailType, fail("rot_1", 2, "boom", at), tokens.CodeConflict, "its leader was deposed")
	h.rejectHas(RotationFailType, fail("rot_1", 4, "boom", at), tokens.CodeConflict, "term 3, not 4")
	h.rejectHas(RotationFailType, fail("rot_9", 3, "boom", at), tokens.CodeConflict, `"rot_9" is not open`)
	h.rejectHas(RotationFailType, RotationFailRequest{Pool: "nope", ID: "rot_1", Term: 3, At: at}, tokens.CodePoolNotFound, `"nope"`)

	tokensBefore := h.pool("p").Tokens
	h.mustApply(RotationFailType, fail("rot_1", 3, "issuer: 503 Service Unavailable", at.Add(time.Second)))
	want := tokens.RotationStatus{Generation: 2, Failures: 1, NextAttempt: at.Add(time.Second), LastError: "issuer: 503 Service Unavailable"}
	if got := h.pool("p").Status; got != want {
		t.Errorf("status after a failure = %+v, want %+v", got, want)
	}
	if got := h.openRotations("p"); len(got) != 1 || got[0].ID != "rot_2" {
		t.Errorf("open rotations after a failure: %+v", got)
	}
	if got := h.pool("p").Tokens; !reflect.DeepEqual(got, tokensBefore) || got[0] != tokensBefore[0] {
		t.Error("a failure changed the pool's tokens")
	}
	h.expectEvents("fail", tokens.Event{Index: h.index, At: at, Type: tokens.EventRotationFailed, Pool: "p", Token: "tok_a", Reason: "issuer: 503 Service Unavailable", Reporter: "node-1", Rotation: "rot_1"})
	h.rejectHas(RotationFailType, fail("rot_1", 3, "again", at), tokens.CodeConflict, "finished or abandoned")

	// Failures add up; each sets the next attempt, even an earlier one.
	h.mustApply(RotationFailType, fail("rot_2", 3, "", at.Add(-time.Minute)))
	want = tokens.RotationStatus{Generation: 2, Failures: 2, NextAttempt: at.Add(-time.Minute)}
	if got := h.pool("p").Status; got != want {
		t.Errorf("status after two failures = %+v, want %+v", got, want)
	}
	h.expectEvents("fail without a message", tokens.Event{Index: h.index, At: at, Type: tokens.EventRotationFailed, Pool: "p", Reporter: "node-1", Rotation: "rot_2"})

	// A long error is cut to 512 bytes, in the status and the event.
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_3", "tok_a", 3), at))
	long := strings.Repeat("x", 600)
	h.mustApply(RotationFailType, fail("rot_3", 3, long, at.Add(time.Minute)))
	if got := h.pool("p").Status.LastError; got != long[:512]+"..." {
		t.Errorf("long error kept as %d bytes: %q", len(got), got)
	}
	if ev := h.last; len(ev) != 1 || ev[0].Reason != long[:512]+"..." {
		t.Errorf("long error recorded %+v", ev)
	}
	// Exactly 512 bytes is kept whole.
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_4", "tok_a", 4), at))
	h.mustApply(RotationFailType, fail("rot_4", 3, long[:512], at.Add(time.Minute)))
	if got := h.pool("p").Status; got.LastError != long[:512] || got.Failures != 4 || got.Generation != 4 {
		t.Errorf("status after a 512-byte error = %+v", got)
	}
	checkRotationRules(t, h.f.State())
}

// An error is cut between characters, never inside one: a cut that leaves
// invalid UTF-8 in the state is written to snapshots as U+FFFD, so an agent
// that restored one would hold a different state from one that replayed
// the log.
func TestRotationFailErrorCutBetweenCharacters(t *testing.T) {
	for _, prefix := range []int{0, 1, 2} {
		t.Run(fmt.Sprintf("cut %d bytes into a character", (512-prefix)%3), func(t *testing.T) {
			h := rotationHarness(t)
			h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_1", "tok_a", 1), t0))
			msg := strings.Repeat("x", prefix) + strings.Repeat("€", 300) // 3 bytes each
			h.mustApply(RotationFailType, RotationFailRequest{Pool: "p", ID: "rot_1", Term: 3, Error: msg, At: t0})
			got := h.pool("p").Status.LastError
			if !utf8.ValidString(got) || !strings.HasSuffix(got, "...") || len(got) > 512+3 || len(got) < 512-3 || !strings.HasPrefix(msg, strings.TrimSuffix(got, "...")) {
				t.Errorf("error cut to %d bytes, valid UTF-8 %v: %q", len(got), utf8.ValidString(got), got)
			}
			if ev := h.last; len(ev) != 1 || ev[0].Reason != got {
				t.Errorf("event reason %q, want %q", ev[0].Reason, got)
			}
			g := restoreInto(t, snapshotBytes(t, h.f))
			if !reflect.DeepEqual(freeze(g.State()), freeze(h.f.State())) || !reflect.DeepEqual(eventsOf(g), eventsOf(h.f)) {
				t.Errorf("the cut error changed across a snapshot: %q", h.pool("p").Status.LastError)
			}
		})
	}
}

func TestRotationAbandon(t *testing.T) {
	h := rotationHarness(t)
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_1", "tok_a", 1), t0))
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_2", "", 2), t0))
	h.mustApply(RotationResumeType, RotationResumeRequest{Pool: "p", ID: "rot_2", Term: 5, Leader: "node-2", At: t0})
	at := t0.Add(time.Hour)
	h.rejectHas(RotationAbandonType, RotationAbandonRequest{Pool: "p", ID: "rot_9", At: at}, tokens.CodeConflict, `"rot_9" is not open`)
	h.rejectHas(RotationAbandonType, RotationAbandonRequest{Pool: "nope", ID: "rot_1", At: at}, tokens.CodePoolNotFound, `"nope"`)

	before := h.pool("p")
	reason := "leader node-1 lost its term mid-call; a credential may exist untracked"
	h.mustApply(RotationAbandonType, RotationAbandonRequest{Pool: "p", ID: "rot_1", Reason: reason, At: at})
	after := h.pool("p")
	if after.Status != before.Status || !reflect.DeepEqual(after.Tokens, before.Tokens) {
		t.Errorf("abandon changed the status (%+v) or the tokens", after.Status)
	}
	if got := h.openRotations("p"); len(got) != 1 || got[0].ID != "rot_2" {
		t.Errorf("open rotations after abandon: %+v", got)
	}
	h.expectEvents("abandon", tokens.Event{Index: h.index, At: at, Type: tokens.EventRotationAbandoned, Pool: "p", Token: "tok_a", Reason: reason, Rotation: "rot_1"})
	h.rejectHas(RotationAbandonType, RotationAbandonRequest{Pool: "p", ID: "rot_1", At: at}, tokens.CodeConflict, "finished or abandoned")
	// Any leader may abandon, whatever its term: no term is checked.
	long := strings.Repeat("y", 1000)
	h.mustApply(RotationAbandonType, RotationAbandonRequest{Pool: "p", ID: "rot_2", Reason: long, At: at})
	h.expectEvents("abandon with a long reason", tokens.Event{Index: h.index, At: at, Type: tokens.EventRotationAbandoned, Pool: "p", Reason: long[:512] + "...", Rotation: "rot_2"})
	if got := h.openRotations("p"); len(got) != 0 {
		t.Errorf("open rotations: %+v", got)
	}
	// The token can be rotated again.
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_3", "tok_a", 3), at))
	checkRotationRules(t, h.f.State())
}

func TestTokenOrphan(t *testing.T) {
	h := rotationHarness(t)
	at := t0.Add(time.Hour)
	// An orphan is kept whatever its expiry: it is to be revoked, not
	// served. The proposer cannot choose its lifecycle or bookkeeping.
	tk := issuedToken("p", "tok_o", "value-o", func(tk *tokens.Token) {
		tk.ExpiresAt, tk.NotBefore = at.Add(-time.Hour), at
		tk.Metadata = map[string]string{"client_id": "c2"}
		tk.RotationID, tk.Generation = "rot_1", 1
		tk.Lifecycle, tk.RetireAt = tokens.LifecycleActive, at.Add(time.Hour)
		tk.Health = tokens.Health{State: tokens.Failed, Since: t0}
		tk.CreatedAt, tk.CreateIndex, tk.ModifyIndex = t0, 99, 99
	})
	h.mustApply(TokenOrphanType, TokenOrphanRequest{Token: tk, Reason: "rotation rot_1 is not open", At: at})
	want := tk
	want.Lifecycle, want.RetireAt = tokens.LifecycleOrphaned, at
	want.Health = tokens.Health{State: tokens.Healthy, Since: at}
	want.CreatedAt, want.CreateIndex, want.ModifyIndex = at, h.index, h.index
	if got := h.token("p", "tok_o"); !reflect.DeepEqual(*got, want) {
		t.Errorf("orphan = %+v\nwant %+v", *got, want)
	}
	h.expectEvents("orphan", tokens.Event{Index: h.index, At: at, Type: tokens.EventTokenOrphaned, Pool: "p", Token: "tok_o", Reason: "rotation rot_1 is not open", Rotation: "rot_1"})

	// A value the pool holds already, in any lifecycle, is tracked: the
	// orphan is accepted and changes nothing, whatever else it says.
	for _, c := range []struct{ name, value string }{{"held by an active token", "value-a"}, {"held by an orphan", "value-o"}} {
		t.Run(c.name, func(t *testing.T) {
			defer h.use(t)()
			before, events := h.f.State(), eventsOf(h.f)
			dup := issuedToken("p", "Not An Id", c.value, func(tk *tokens.Token) { tk.Value = nil })
			h.mustApply(TokenOrphanType, TokenOrphanRequest{Token: dup, Reason: "retried", At: at})
			if h.f.State() != before || !reflect.DeepEqual(eventsOf(h.f), events) {
				t.Error("an orphan of a value the pool holds changed the state or recorded events")
			}
		})
	}

	orphan := func(mod func(*tokens.Token)) TokenOrphanRequest {
		tk := issuedToken("p", "tok_q", "value-q")
		mod(&tk)
		return TokenOrphanRequest{Token: tk, Reason: "late", At: at}
	}
	for _, c := range []struct {
		name, code, has string
		req             TokenOrphanRequest
	}{
		{"unknown pool", tokens.CodePoolNotFound, `"nope"`, orphan(func(tk *tokens.Token) { tk.Pool = "nope" })},
		{"no pool", tokens.CodePoolNotFound, "does not exist", orphan(func(tk *tokens.Token) { tk.Pool = "" })},
		{"id taken", tokens.CodeConflict, `"tok_a" already exists`, orphan(func(tk *tokens.Token) { tk.ID = "tok_a" })},
		{"invalid id", tokens.CodeInvalid, "token id", orphan(func(tk *tokens.Token) { tk.ID = "Tok Q" })},
		{"empty value", tokens.CodeInvalid, "value is required", orphan(func(tk *tokens.Token) { tk.Value = nil })},
		{"no fingerprint", tokens.CodeInvalid, "fingerprint", orphan(func(tk *tokens.Token) { tk.Fingerprint = "" })},
		{"bad labels", tokens.CodeInvalid, "label", orphan(func(tk *tokens.Token) { tk.Labels = map[string]string{"BAD": "x"} })},
	} {
		t.Run(c.name, func(t *testing.T) {
			defer h.use(t)()
			h.rejectHas(TokenOrphanType, c.req, c.code, c.has)
		})
	}
	// Without a rotation id, the event names none; a long reason is cut.
	long := strings.Repeat("z", 700)
	h.mustApply(TokenOrphanType, orphan(func(tk *tokens.Token) { tk.ExpiresAt = at }))
	if got := h.token("p", "tok_q"); got.Lifecycle != tokens.LifecycleOrphaned || !got.RetireAt.Equal(at) || !got.ExpiresAt.Equal(at) {
		t.Errorf("orphan that expires as it is recorded = %+v", *got)
	}
	h.mustApply(TokenOrphanType, TokenOrphanRequest{Token: issuedToken("p", "tok_r", "value-r"), Reason: long, At: at})
	h.expectEvents("orphan without a rotation", tokens.Event{Index: h.index, At: at, Type: tokens.EventTokenOrphaned, Pool: "p", Token: "tok_r", Reason: long[:512] + "..."})
	// An orphan cannot be rotated; the reaper removes it.
	h.rejectHas(RotationBeginType, beginReq(rotation("p", "rot_2", "tok_r", 1), at), tokens.CodeConflict, "orphaned")
	h.mustApply(TokenRemoveType, TokenRemoveRequest{Pool: "p", ID: "tok_r", Reason: "revoked at the provider", At: at})
	h.expectEvents("reaping an orphan", tokens.Event{Index: h.index, At: at, Type: tokens.EventTokenRemoved, Pool: "p", Token: "tok_r", Reason: "revoked at the provider"})
	checkInvariants(t, h.f.State())
	checkRotationRules(t, h.f.State())
}

// An operator adds tokens: a rotation's marks are not the proposer's to set.
func TestTokenAddIsNoRotation(t *testing.T) {
	h := rotationHarness(t)
	h.mustApply(TokenAddType, tokenReq("p", "tok_c", "value-c", 0, t0, func(tk *tokens.Token) {
		tk.RotationID, tk.Generation, tk.RetireAt = "rot_1", 4, t0.Add(time.Minute)
		tk.Metadata = map[string]string{"issuer": "operator"}
	}))
	got := h.token("p", "tok_c")
	if got.RotationID != "" || got.Generation != 0 || !got.RetireAt.IsZero() || got.Lifecycle != tokens.LifecycleActive {
		t.Errorf("operator's token = %+v, want no rotation marks", *got)
	}
	if got.Metadata["issuer"] != "operator" {
		t.Errorf("operator's token lost its metadata: %+v", got.Metadata)
	}
	checkRotationRules(t, h.f.State())
}

// The whole protocol, from the plan to the replaced token retiring.
func TestRotationHappyPath(t *testing.T) {
	h := newHarness(t)
	h.mustApply(PoolUpsertType, issuingPool("p", t0, func(p *tokens.Pool) { p.Size = 1 }))
	h.mustApply(TokenAddType, tokenReq("p", "tok_a", "value-a", 0, t0, func(tk *tokens.Token) { tk.ExpiresAt = t0.Add(30 * time.Minute) }))
	// Twenty minutes in, tok_a is within renew_before (a third of its
	// life) of its expiry.
	now := t0.Add(20 * time.Minute)
	plan := func(now time.Time) []tokens.RotationNeed {
		ps := h.pool("p")
		return tokens.PlanRotations(ps.Pool, ps.Tokens, ps.Rotations, ps.Status, now)
	}
	needs := plan(now)
	if want := []tokens.RotationNeed{{Replaces: "tok_a", Reason: tokens.ReasonRenewBefore}}; !reflect.DeepEqual(needs, want) {
		t.Fatalf("plan = %+v, want %+v", needs, want)
	}
	r := tokens.Rotation{ID: "rot_1", Pool: "p", Replaces: "tok_a", Reason: needs[0].Reason, Generation: h.pool("p").Status.Generation + 1, Term: 2, Leader: "node-1"}
	h.mustApply(RotationBeginType, beginReq(r, now))
	if needs := plan(now); len(needs) != 0 {
		t.Fatalf("plan with the rotation open = %+v, want nothing", needs)
	}
	at := now.Add(2 * time.Second)
	h.mustApply(RotationCommitType, commitReq("p", "rot_1", 2, issuedToken("p", "tok_b", "value-b", func(tk *tokens.Token) {
		tk.ExpiresAt = at.Add(30 * time.Minute)
	}), at))
	ps := h.pool("p")
	if len(ps.Tokens) != 2 || len(ps.Rotations) != 0 {
		t.Fatalf("after commit: %d tokens, rotations %+v", len(ps.Tokens), ps.Rotations)
	}
	a, b := h.token("p", "tok_a"), h.token("p", "tok_b")
	if a.Lifecycle != tokens.LifecycleRetiring || !a.RetireAt.Equal(at.Add(time.Minute)) {
		t.Errorf("tok_a is %s until %s, want retiring until %s", a.Lifecycle, a.RetireAt, at.Add(time.Minute))
	}
	if b.Lifecycle != tokens.LifecycleActive || b.Generation != 1 || b.RotationID != "rot_1" {
		t.Errorf("tok_b = %+v", *b)
	}
	if needs := plan(at); len(needs) != 0 {
		t.Errorf("plan after the commit = %+v, want nothing", needs)
	}
	// The reaper removes the retired token.
	h.mustApply(TokenRemoveType, TokenRemoveRequest{Pool: "p", ID: "tok_a", Reason: "revoked at the provider", At: a.RetireAt})
	var types []tokens.EventType
	all, _ := h.f.Events(2, tokens.MaxEvents)
	for _, ev := range all {
		types = append(types, ev.Type)
	}
	if want := []tokens.EventType{tokens.EventRotationBegun, tokens.EventRotationCommitted, tokens.EventTokenRetiring, tokens.EventTokenRemoved}; !reflect.DeepEqual(types, want) {
		t.Errorf("events %v, want %v", types, want)
	}
	checkRotationRules(t, h.f.State())
}

// A failed rotation holds the pool off until its next attempt.
func TestRotationBeginFailBackoff(t *testing.T) {
	h := newHarness(t)
	h.mustApply(PoolUpsertType, issuingPool("p", t0, func(p *tokens.Pool) { p.Size = 1 }))
	plan := func(now time.Time) []tokens.RotationNeed {
		ps := h.pool("p")
		return tokens.PlanRotations(ps.Pool, ps.Tokens, ps.Rotations, ps.Status, now)
	}
	now := t0
	for attempt := 1; attempt <= 3; attempt++ {
		if needs := plan(now); !reflect.DeepEqual(needs, []tokens.RotationNeed{{Reason: tokens.ReasonSize}}) {
			t.Fatalf("attempt %d: plan = %+v", attempt, needs)
		}
		id := fmt.Sprintf("rot_%d", attempt)
		h.mustApply(RotationBeginType, beginReq(rotation("p", id, "", uint64(attempt)), now))
		delay := h.pool("p").Pool.Rotation.RetryDelay(attempt, 0)
		h.mustApply(RotationFailType, RotationFailRequest{Pool: "p", ID: id, Term: 3, Error: "issuer down", NextAttempt: now.Add(delay), At: now})
		st := h.pool("p").Status
		if st.Failures != attempt || !st.NextAttempt.Equal(now.Add(delay)) || st.Generation != uint64(attempt) {
			t.Fatalf("attempt %d: status %+v", attempt, st)
		}
		if needs := plan(now.Add(delay - time.Nanosecond)); len(needs) != 0 {
			t.Fatalf("attempt %d: plan during the backoff = %+v", attempt, needs)
		}
		now = now.Add(delay)
	}
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_4", "", 4), now))
	h.mustApply(RotationCommitType, commitReq("p", "rot_4", 3, issuedToken("p", "tok_a", "value-a"), now))
	if st := h.pool("p").Status; st != (tokens.RotationStatus{Generation: 4, LastSuccess: now}) {
		t.Errorf("status after a success = %+v", st)
	}
	if needs := plan(now); len(needs) != 0 {
		t.Errorf("plan after a success = %+v", needs)
	}
}

// A new leader resumes the rotation; the old leader's late result is
// refused, the new leader's accepted.
func TestRotationResumeThenCommit(t *testing.T) {
	h := rotationHarness(t)
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_1", "tok_a", 1), t0))
	h.mustApply(RotationResumeType, RotationResumeRequest{Pool: "p", ID: "rot_1", Term: 4, Leader: "node-2", At: t0.Add(time.Minute)})
	at := t0.Add(2 * time.Minute)
	h.rejectHas(RotationCommitType, commitReq("p", "rot_1", 3, issuedToken("p", "tok_old", "value-old"), at), tokens.CodeConflict, "belongs to term 4, not 3")
	h.rejectHas(RotationFailType, RotationFailRequest{Pool: "p", ID: "rot_1", Term: 3, Error: "late", At: at}, tokens.CodeConflict, "belongs to term 4, not 3")
	h.mustApply(RotationCommitType, commitReq("p", "rot_1", 4, issuedToken("p", "tok_new", "value-new"), at))
	h.expectEvents("commit by the new leader",
		tokens.Event{Index: h.index, At: at, Type: tokens.EventRotationCommitted, Pool: "p", Token: "tok_new", To: tokens.Healthy, Reason: tokens.ReasonManual, Reporter: "node-2", Rotation: "rot_1"},
		tokens.Event{Index: h.index, At: at, Type: tokens.EventTokenRetiring, Pool: "p", Token: "tok_a", Reason: "replaced by tok_new", Rotation: "rot_1"},
	)
	if got := h.token("p", "tok_new"); got.Generation != 1 || got.RotationID != "rot_1" {
		t.Errorf("committed token = %+v", *got)
	}
	// The old leader's credential is kept as an orphan, to be revoked.
	h.mustApply(TokenOrphanType, TokenOrphanRequest{Token: issuedToken("p", "tok_old", "value-old", func(tk *tokens.Token) { tk.RotationID = "rot_1" }), Reason: "refused", At: at})
	if got := h.token("p", "tok_old"); got.Lifecycle != tokens.LifecycleOrphaned {
		t.Errorf("old leader's credential is %s", got.Lifecycle)
	}
	// An issuer that honoured the idempotency key gave the old leader the
	// value the new one committed: it is tracked already.
	before := h.f.State()
	h.mustApply(TokenOrphanType, TokenOrphanRequest{Token: issuedToken("p", "tok_dup", "value-new"), Reason: "refused", At: at})
	if h.f.State() != before {
		t.Error("an orphan of the committed value changed the state")
	}
	checkRotationRules(t, h.f.State())
}

// A deposed leader's rotation is abandoned by its successor; the deposed
// leader's late result is refused and recorded as an orphan instead.
func TestRotationDeposedLeaderOrphan(t *testing.T) {
	h := rotationHarness(t)
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_1", "tok_a", 1), t0))
	h.mustApply(RotationAbandonType, RotationAbandonRequest{Pool: "p", ID: "rot_1", Reason: "leader node-1 is gone", At: t0.Add(time.Minute)})
	at := t0.Add(2 * time.Minute)
	late := issuedToken("p", "tok_late", "value-late", func(tk *tokens.Token) {
		tk.RotationID, tk.Generation = "rot_1", 1
		tk.ExpiresAt = at.Add(time.Hour)
	})
	e := h.reject(RotationCommitType, commitReq("p", "rot_1", 3, late, at), tokens.CodeConflict)
	if !errors.Is(e, tokens.ErrConflict) || !strings.Contains(e.Message, "not open") {
		t.Fatalf("late commit: %v", e)
	}
	if _, ok := h.f.State().Token("p", "tok_late"); ok {
		t.Fatal("a refused commit recorded its token")
	}
	h.mustApply(TokenOrphanType, TokenOrphanRequest{Token: late, Reason: e.Error(), At: at})
	got := h.token("p", "tok_late")
	if got.Lifecycle != tokens.LifecycleOrphaned || !got.RetireAt.Equal(at) || got.RotationID != "rot_1" {
		t.Errorf("orphan = %+v", *got)
	}
	h.expectEvents("orphan", tokens.Event{Index: h.index, At: at, Type: tokens.EventTokenOrphaned, Pool: "p", Token: "tok_late", Reason: truncateError(e.Error()), Rotation: "rot_1"})
	// tok_a was never replaced.
	if a := h.token("p", "tok_a"); a.Lifecycle != tokens.LifecycleActive || !a.RetireAt.IsZero() {
		t.Errorf("tok_a = %s until %s", a.Lifecycle, a.RetireAt)
	}
	// A retried orphan is a no-op, and the new leader rotates tok_a afresh.
	before := h.f.State()
	h.mustApply(TokenOrphanType, TokenOrphanRequest{Token: late, Reason: "retried", At: at})
	if h.f.State() != before || len(h.last) != 0 {
		t.Error("a retried orphan changed the state")
	}
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_2", "tok_a", 2), at))
	checkRotationRules(t, h.f.State())
}

// Rotations of a pool that does not exist, or no longer does.
func TestRotationUnknownPool(t *testing.T) {
	h := rotationHarness(t)
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_1", "", 1), t0))
	h.mustApply(PoolDeleteType, PoolDeleteRequest{Name: "p", Force: true, At: t0})
	for typ, req := range map[MessageType]any{
		RotationBeginType:   beginReq(rotation("p", "rot_2", "", 1), t0),
		RotationResumeType:  RotationResumeRequest{Pool: "p", ID: "rot_1", Term: 4, At: t0},
		RotationCommitType:  commitReq("p", "rot_1", 3, issuedToken("p", "tok_n", "value-n"), t0),
		RotationFailType:    RotationFailRequest{Pool: "p", ID: "rot_1", Term: 3, At: t0},
		RotationAbandonType: RotationAbandonRequest{Pool: "p", ID: "rot_1", At: t0},
		TokenOrphanType:     TokenOrphanRequest{Token: issuedToken("p", "tok_n", "value-n"), At: t0},
	} {
		h.rejectHas(typ, req, tokens.CodePoolNotFound, `pool "p" does not exist`)
	}
	// A pool created again starts afresh: no rotations, generation 0.
	h.mustApply(PoolUpsertType, issuingPool("p", t0))
	if ps := h.pool("p"); len(ps.Rotations) != 0 || ps.Status != (tokens.RotationStatus{}) {
		t.Fatalf("recreated pool has rotations %+v and status %+v", ps.Rotations, ps.Status)
	}
	h.rejectHas(RotationCommitType, commitReq("p", "rot_1", 3, issuedToken("p", "tok_n", "value-n"), t0), tokens.CodeConflict, "not open")
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_1", "", 1), t0))
}

// A pool update keeps the pool's rotations and status; a pool that stops
// issuing keeps its open rotations, which may still finish, but opens no
// more.
func TestRotationPoolUpdate(t *testing.T) {
	h := rotationHarness(t)
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_1", "tok_a", 1), t0))
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_2", "tok_b", 2), t0))
	h.mustApply(RotationFailType, RotationFailRequest{Pool: "p", ID: "rot_2", Term: 3, Error: "boom", NextAttempt: t0.Add(time.Minute), At: t0})
	before := h.pool("p")
	h.mustApply(PoolUpsertType, poolReq("p", t0.Add(time.Hour)))
	after := h.pool("p")
	if after.Pool.Provider.Issues() || after.Status != before.Status || !reflect.DeepEqual(after.Rotations, before.Rotations) || after.Rotations[0] != before.Rotations[0] {
		t.Fatalf("pool update: status %+v, rotations %+v", after.Status, after.Rotations)
	}
	h.rejectHas(RotationBeginType, beginReq(rotation("p", "rot_3", "tok_b", 3), t0), tokens.CodeConflict, "cannot issue")
	h.mustApply(RotationResumeType, RotationResumeRequest{Pool: "p", ID: "rot_1", Term: 4, Leader: "node-2", At: t0})
	h.mustApply(RotationCommitType, commitReq("p", "rot_1", 4, issuedToken("p", "tok_n", "value-n"), t0.Add(time.Hour)))
	checkRotationRules(t, h.f.State())
}

// Every event the rotation commands record, in one history.
func TestRotationEvents(t *testing.T) {
	h := applyAll(t, version3Commands(t))
	at := func(d time.Duration) time.Time { return t0.Add(6*time.Hour + d) }
	all, _ := h.f.Events(0, tokens.MaxEvents)
	var got []tokens.Event
	for _, ev := range all {
		if ev.Pool == "vault" {
			ev.Index = 0 // the history decides them; the order is checked
			got = append(got, ev)
		}
	}
	want := []tokens.Event{
		{At: at(0), Type: tokens.EventPoolApplied, Pool: "vault"},
		{At: at(time.Second), Type: tokens.EventTokenAdded, Pool: "vault", Token: "tok_v1", To: tokens.Healthy},
		{At: at(time.Second), Type: tokens.EventTokenAdded, Pool: "vault", Token: "tok_v2", To: tokens.Healthy},
		{At: at(time.Minute), Type: tokens.EventRotationBegun, Pool: "vault", Token: "tok_v1", Reason: tokens.ReasonRenewBefore, Reporter: "node-1", Rotation: "rot_1"},
		{At: at(time.Minute), Type: tokens.EventRotationBegun, Pool: "vault", Reason: tokens.ReasonSize, Reporter: "node-1", Rotation: "rot_2"},
		{At: at(time.Minute), Type: tokens.EventRotationBegun, Pool: "vault", Token: "tok_v2", Reason: tokens.ReasonMaxAge, Reporter: "node-1", Rotation: "rot_3"},
		{At: at(2 * time.Minute), Type: tokens.EventRotationResumed, Pool: "vault", Reporter: "node-2", Rotation: "rot_2",
			Reason: "attempt 2; attempt 1 by node-1 may have issued a credential that was never recorded, unless the issuer honours idempotency keys"},
		{At: at(3 * time.Minute), Type: tokens.EventRotationCommitted, Pool: "vault", Token: "tok_v3", To: tokens.Healthy, Reason: tokens.ReasonRenewBefore, Reporter: "node-1", Rotation: "rot_1"},
		{At: at(3 * time.Minute), Type: tokens.EventTokenRetiring, Pool: "vault", Token: "tok_v1", Reason: "replaced by tok_v3", Rotation: "rot_1"},
		{At: at(3 * time.Minute), Type: tokens.EventRotationFailed, Pool: "vault", Token: "tok_v2", Reason: "issuer: 503 Service Unavailable", Reporter: "node-1", Rotation: "rot_3"},
		{At: at(5 * time.Minute), Type: tokens.EventRotationBegun, Pool: "vault", Token: "tok_v2", Reason: tokens.ReasonMaxAge, Reporter: "node-2", Rotation: "rot_4"},
		{At: at(5 * time.Minute), Type: tokens.EventRotationBegun, Pool: "vault", Reason: tokens.ReasonSize, Reporter: "node-2", Rotation: "rot_5"},
		{At: at(6 * time.Minute), Type: tokens.EventRotationAbandoned, Pool: "vault", Reason: "its leader's term ended; a credential may have been issued", Rotation: "rot_5"},
		{At: at(7 * time.Minute), Type: tokens.EventTokenOrphaned, Pool: "vault", Token: "tok_v5", Reason: "rotation rot_5 is not open", Rotation: "rot_5"},
		{At: at(8 * time.Minute), Type: tokens.EventTokenOrphaned, Pool: "vault", Token: "tok_v8", Reason: "rotation rot_9 is not open"},
		{At: at(9 * time.Minute), Type: tokens.EventTokenRemoved, Pool: "vault", Token: "tok_v8", Reason: "revoked at the provider"},
		{At: at(9 * time.Minute), Type: tokens.EventTokenHealth, Pool: "vault", Token: "tok_v1", From: tokens.Healthy, To: tokens.Failed, Reason: "unauthorized", Reporter: "node-1"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("vault's events:\n%s\nwant\n%s", eventLines(got), eventLines(want))
	}
	// What the history leaves: two open rotations, every status field.
	ps := h.pool("vault")
	var open []string
	for _, r := range ps.Rotations {
		open = append(open, fmt.Sprintf("%s@%d/%d", r.ID, r.Term, r.Attempts))
	}
	if want := []string{"rot_2@3/2", "rot_4@3/1"}; !reflect.DeepEqual(open, want) {
		t.Errorf("open rotations %v, want %v", open, want)
	}
	if want := (tokens.RotationStatus{Generation: 5, Failures: 1, NextAttempt: at(4 * time.Minute), LastError: "issuer: 503 Service Unavailable", LastSuccess: at(3 * time.Minute)}); ps.Status != want {
		t.Errorf("status %+v, want %+v", ps.Status, want)
	}
	checkRotationRules(t, h.f.State())
}

func eventLines(events []tokens.Event) string {
	var b strings.Builder
	for _, ev := range events {
		fmt.Fprintf(&b, "%+v\n", ev)
	}
	return b.String()
}

// Open rotations and pool status survive a snapshot, and an agent that
// restored one goes on exactly like one that applied the log.
func TestRotationSnapshotRoundTrip(t *testing.T) {
	build := func(t *testing.T) *harness {
		h := rotationHarness(t)
		h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_1", "tok_a", 1), t0))
		h.mustApply(RotationFailType, RotationFailRequest{Pool: "p", ID: "rot_1", Term: 3, Error: "boom", NextAttempt: t0.Add(time.Second), At: t0})
		h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_2", "tok_a", 2), t0.Add(time.Minute)))
		h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_3", "", 3), t0.Add(time.Minute)))
		h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_4", "tok_b", 4), t0.Add(time.Minute)))
		h.mustApply(RotationResumeType, RotationResumeRequest{Pool: "p", ID: "rot_2", Term: 5, Leader: "node-2", At: t0.Add(2 * time.Minute)})
		h.mustApply(RotationCommitType, commitReq("p", "rot_3", 3, issuedToken("p", "tok_c", "value-c", func(tk *tokens.Token) {
			tk.Metadata = map[string]string{"client_id": "c1"}
		}), t0.Add(3*time.Minute)))
		h.mustApply(RotationFailType, RotationFailRequest{Pool: "p", ID: "rot_4", Term: 3, Error: "issuer: timeout", NextAttempt: t0.Add(time.Hour), At: t0.Add(4 * time.Minute)})
		h.mustApply(TokenOrphanType, TokenOrphanRequest{Token: issuedToken("p", "tok_o", "value-o", func(tk *tokens.Token) { tk.RotationID, tk.Generation = "rot_0", 9 }), At: t0.Add(5 * time.Minute)})
		h.mustApply(PoolUpsertType, issuingPool("q", t0))
		return h
	}
	h := build(t)
	st := h.pool("p").Status
	if st.Generation == 0 || st.Failures == 0 || st.NextAttempt.IsZero() || st.LastError == "" || st.LastSuccess.IsZero() || len(h.pool("p").Rotations) != 1 {
		t.Fatalf("the history should leave every status field set and a rotation open: %+v, %+v", st, h.openRotations("p"))
	}
	snap := snapshotBytes(t, h.f)
	for _, part := range []string{`"type":"rotation"`, `"status":{"generation":4,"failures":1,`, `"rotation_id":"rot_3","generation":3`, `"lifecycle":"orphaned"`} {
		if !bytes.Contains(snap, []byte(part)) {
			t.Errorf("snapshot does not hold %s:\n%s", part, snap)
		}
	}
	// Pool q has no status to write.
	if n := bytes.Count(snap, []byte(`"status":`)); n != 1 {
		t.Errorf("snapshot holds %d statuses, want p's only:\n%s", n, snap)
	}
	g := newHarness(t)
	if err := g.f.Restore(bytes.NewReader(snap), 0); err != nil {
		t.Fatal(err)
	}
	g.index = g.f.AppliedIndex()
	if !reflect.DeepEqual(freeze(g.f.State()), freeze(h.f.State())) {
		t.Fatalf("restored state differs:\n got %+v\nwant %+v", freeze(g.f.State()), freeze(h.f.State()))
	}
	checkInvariants(t, g.f.State())
	checkRotationRules(t, g.f.State())
	if again := snapshotBytes(t, g.f); !bytes.Equal(again, snap) {
		t.Fatalf("snapshot of the restored state differs:\n%s\nwant\n%s", again, snap)
	}
	// Both go on alike: the generation fences, the open rotation commits.
	for _, x := range []*harness{h, g} {
		x.rejectHas(RotationBeginType, beginReq(rotation("p", "rot_5", "", 4), t0), tokens.CodeConflict, "generation 4 does not follow")
		x.rejectHas(RotationBeginType, beginReq(rotation("p", "rot_2", "", 5), t0), tokens.CodeConflict, "open already")
		x.rejectHas(RotationCommitType, commitReq("p", "rot_2", 3, issuedToken("p", "tok_d", "value-d"), t0.Add(time.Hour)), tokens.CodeConflict, "term 5")
		x.mustApply(RotationCommitType, commitReq("p", "rot_2", 5, issuedToken("p", "tok_d", "value-d"), t0.Add(time.Hour)))
		x.mustApply(RotationBeginType, beginReq(rotation("p", "rot_5", "tok_b", 5), t0.Add(time.Hour)))
	}
	if a, b := snapshotBytes(t, h.f), snapshotBytes(t, g.f); !bytes.Equal(a, b) {
		t.Fatalf("after the same entries, the restored agent differs:\n%s\nwant\n%s", b, a)
	}
}

// Every new command type is decoded strictly enough that a malformed body
// is rejected as malformed.
func TestRotationCorruptEntries(t *testing.T) {
	h := rotationHarness(t)
	h.mustApply(RotationBeginType, beginReq(rotation("p", "rot_1", "tok_a", 1), t0))
	for _, typ := range []MessageType{RotationBeginType, RotationResumeType, RotationCommitType, RotationFailType, RotationAbandonType, TokenOrphanType} {
		for _, body := range []string{
			"", "{", "not json", "[]", "{}garbage", "\xff\xfe", "null null",
			`{"rotation":[],"pool":5,"id":7,"term":"x","token":"x","at":"yesterday"}`,
			`{"rotation":{"generation":-1},"term":-1,"token":{"expires_at":"soon"},"next_attempt":"later","at":"later"}`,
		} {
			t.Run(fmt.Sprintf("%s %q", typ, body), func(t *testing.T) {
				defer h.use(t)()
				e := h.rejectRaw(append([]byte{byte(typ)}, body...), tokens.CodeInvalid)
				if !strings.Contains(e.Message, "malformed") || !strings.Contains(e.Message, typ.String()) {
					t.Errorf("error %v, want a malformed %s entry", e, typ)
				}
			})
		}
	}
	if len(h.openRotations("p")) != 1 {
		t.Fatal("corrupt entries changed the rotations")
	}
}

func TestRotationTypeNames(t *testing.T) {
	for typ, want := range map[MessageType]string{
		RotationBeginType: "RotationBegin", RotationResumeType: "RotationResume", RotationCommitType: "RotationCommit",
		RotationFailType: "RotationFail", RotationAbandonType: "RotationAbandon", TokenOrphanType: "TokenOrphan",
		KeyringUseType: "KeyringUse", SecretsResealType: "SecretsReseal", ACLBootstrapType: "ACLBootstrap",
		ACLPolicyUpsertType: "ACLPolicyUpsert", ACLPolicyDeleteType: "ACLPolicyDelete", ACLTokenCreateType: "ACLTokenCreate",
		ACLTokenDeleteType: "ACLTokenDelete", AuthorizedType: "Authorized", AuthorizedType + 1: "MessageType(21)",
	} {
		if got := typ.String(); got != want {
			t.Errorf("MessageType(%d) = %q, want %q", uint8(typ), got, want)
		}
	}
	// Numbers are only ever appended.
	if RotationBeginType != 7 || RotationResumeType != 8 || RotationCommitType != 9 || RotationFailType != 10 || RotationAbandonType != 11 || TokenOrphanType != 12 || KeyringUseType != 13 || SecretsResealType != 14 ||
		ACLBootstrapType != 15 || ACLPolicyUpsertType != 16 || ACLPolicyDeleteType != 17 || ACLTokenCreateType != 18 || ACLTokenDeleteType != 19 || AuthorizedType != 20 {
		t.Fatal("a rotation command's type number changed")
	}
}

// An issuer that honours idempotency keys gives a resumed rotation the
// credential the deposed leader got, which was kept as an orphan: the
// commit promotes it instead of being refused as a duplicate (and the
// reaper then revoking the credential the pool wanted).
func TestRotationCommitPromotesItsOwnOrphan(t *testing.T) {
	h := newHarness(t)
	h.mustApply(PoolUpsertType, PoolUpsertRequest{Pool: tokens.Pool{Name: "p", Provider: tokens.ProviderSpec{Type: tokens.ProviderExec, Command: []string{"/bin/true"}}}, At: t0})
	rot := tokens.Rotation{ID: "rot_a", Pool: "p", Reason: tokens.ReasonSize, Generation: 1, Term: 2, Leader: "old"}
	h.mustApply(RotationBeginType, RotationBeginRequest{Rotation: rot, At: t0})
	h.mustApply(RotationResumeType, RotationResumeRequest{Pool: "p", ID: "rot_a", Term: 3, Leader: "new", At: t0.Add(time.Second)})
	value := tokens.Sealed("same-credential")
	late := tokens.Token{ID: "tok_late", Pool: "p", Value: value, Fingerprint: legacyFingerprint(value), RotationID: "rot_a", ExpiresAt: t0.Add(time.Hour)}
	// The deposed leader's commit is refused; its credential becomes an orphan.
	h.reject(RotationCommitType, RotationCommitRequest{Pool: "p", ID: "rot_a", Term: 2, Token: late, At: t0.Add(2 * time.Second)}, tokens.CodeConflict)
	h.mustApply(TokenOrphanType, TokenOrphanRequest{Token: late, Reason: "deposed", At: t0.Add(2 * time.Second)})
	if tk := h.token("p", "tok_late"); tk.Lifecycle != tokens.LifecycleOrphaned {
		t.Fatalf("late credential is %s, want orphaned", tk.Lifecycle)
	}
	// The new leader gets the same credential back and commits it.
	again := tokens.Token{ID: "tok_new", Pool: "p", Value: value, Fingerprint: legacyFingerprint(value), ExpiresAt: t0.Add(time.Hour)}
	h.mustApply(RotationCommitType, RotationCommitRequest{Pool: "p", ID: "rot_a", Term: 3, Token: again, At: t0.Add(3 * time.Second)})
	ps := h.pool("p")
	if len(ps.Tokens) != 1 || ps.Tokens[0].ID != "tok_new" || ps.Tokens[0].Lifecycle != tokens.LifecycleActive || len(ps.Rotations) != 0 {
		t.Fatalf("after the commit: tokens %+v, rotations %+v; want only tok_new, active", ps.Tokens, ps.Rotations)
	}
	// An orphan of another rotation with the same value still blocks.
	h.mustApply(RotationBeginType, RotationBeginRequest{Rotation: tokens.Rotation{ID: "rot_b", Pool: "p", Reason: tokens.ReasonSize, Generation: 2, Term: 3, Leader: "new"}, At: t0.Add(4 * time.Second)})
	dup := tokens.Token{ID: "tok_dup", Pool: "p", Value: value, Fingerprint: legacyFingerprint(value), ExpiresAt: t0.Add(time.Hour)}
	h.reject(RotationCommitType, RotationCommitRequest{Pool: "p", ID: "rot_b", Term: 3, Token: dup, At: t0.Add(5 * time.Second)}, tokens.CodeConflict)
}
