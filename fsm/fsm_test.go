package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tokend/tokend/tokens"
)

func TestNewIsEmpty(t *testing.T) {
	f := New(hclog.NewNullLogger())
	if n := len(f.State().Pools()); n != 0 {
		t.Fatalf("new FSM has %d pools", n)
	}
	if f.AppliedIndex() != 0 {
		t.Fatalf("new FSM has AppliedIndex %d", f.AppliedIndex())
	}
}

func TestPoolUpsert(t *testing.T) {
	h := newHarness(t)
	// The proposer cannot choose the bookkeeping fields.
	h.mustApply(PoolUpsertType, poolReq("github", t0, func(p *tokens.Pool) {
		p.CreatedAt, p.UpdatedAt = t0.Add(-time.Hour), t0.Add(-time.Hour)
		p.CreateIndex, p.ModifyIndex = 99, 99
	}))
	p := h.pool("github").Pool
	want := tokens.Pool{
		Name: "github", Selection: tokens.SelectPriority, Provider: tokens.ProviderSpec{Type: tokens.ProviderStatic},
		CreatedAt: t0, UpdatedAt: t0, CreateIndex: 1, ModifyIndex: 1,
	}
	if !reflect.DeepEqual(*p, want) {
		t.Fatalf("created pool = %+v, want %+v", *p, want)
	}

	h.mustApply(TokenAddType, tokenReq("github", "tok_a", "value-a", 0, t0))
	tokensBefore := h.pool("github").Tokens

	at := t0.Add(time.Hour)
	h.mustApply(PoolUpsertType, poolReq("github", at, func(p *tokens.Pool) {
		p.Selection = tokens.SelectRoundRobin
		p.MinHealthy = 2
		p.Labels = map[string]string{"team": "payments"}
		p.Health = tokens.HealthPolicy{Window: 10, ReportQuorum: 2, DefaultCooldown: tokens.Duration(90 * time.Second)}
		p.CreatedAt, p.CreateIndex = at, 77
	}))
	ps := h.pool("github")
	want = tokens.Pool{
		Name: "github", Selection: tokens.SelectRoundRobin, MinHealthy: 2, Provider: tokens.ProviderSpec{Type: tokens.ProviderStatic},
		Labels: map[string]string{"team": "payments"},
		// Stored as written: zero fields mean the defaults.
		Health:    tokens.HealthPolicy{Window: 10, ReportQuorum: 2, DefaultCooldown: tokens.Duration(90 * time.Second)},
		CreatedAt: t0, UpdatedAt: at, CreateIndex: 1, ModifyIndex: 3,
	}
	if !reflect.DeepEqual(*ps.Pool, want) {
		t.Fatalf("updated pool = %+v, want %+v", *ps.Pool, want)
	}
	if len(ps.Tokens) != 1 || ps.Tokens[0] != tokensBefore[0] {
		t.Fatalf("update lost or copied the pool's tokens: %v", ps.Tokens)
	}

	for name, mod := range map[string]func(*tokens.Pool){
		"bad selection":     func(p *tokens.Pool) { p.Selection = "fastest" },
		"bad labels":        func(p *tokens.Pool) { p.Labels = map[string]string{"BAD": "x"} },
		"bad provider":      func(p *tokens.Pool) { p.Provider.Type = "oauth3" },
		"bad minhealthy":    func(p *tokens.Pool) { p.MinHealthy = -1 },
		"bad health window": func(p *tokens.Pool) { p.Health.Window = tokens.MaxWindow + 1 },
		"bad health ratio":  func(p *tokens.Pool) { p.Health.DegradedRatio = 1.5 },
		"bad health quorum": func(p *tokens.Pool) { p.Health.ReportQuorum = -1 },
	} {
		e := h.reject(PoolUpsertType, poolReq("github", at.Add(time.Hour), mod), tokens.CodeInvalid)
		if !errors.Is(e, tokens.ErrInvalid) {
			t.Errorf("%s: errors.Is(%v, ErrInvalid) = false", name, e)
		}
	}
	h.reject(PoolUpsertType, poolReq("Not A Name", t0), tokens.CodeInvalid)
	h.reject(PoolUpsertType, poolReq("", t0), tokens.CodeInvalid)
	if got := h.pool("github").Pool; got.ModifyIndex != 3 || got.Selection != tokens.SelectRoundRobin || got.Health.Window != 10 {
		t.Fatalf("rejected updates changed the pool: %+v", got)
	}
}

func TestPoolDelete(t *testing.T) {
	h := newHarness(t)
	h.mustApply(PoolUpsertType, poolReq("empty", t0))
	h.mustApply(PoolUpsertType, poolReq("full", t0))
	h.mustApply(TokenAddType, tokenReq("full", "tok_a", "value-a", 0, t0))
	h.mustApply(TokenAddType, tokenReq("full", "tok_b", "value-b", 0, t0))

	h.mustApply(PoolDeleteType, PoolDeleteRequest{Name: "empty", At: t0})
	if _, ok := h.f.State().Pool("empty"); ok {
		t.Fatal("deleted pool still exists")
	}

	e := h.reject(PoolDeleteType, PoolDeleteRequest{Name: "empty", At: t0}, tokens.CodePoolNotFound)
	if !errors.Is(e, tokens.ErrNotFound) {
		t.Errorf("errors.Is(%v, ErrNotFound) = false", e)
	}

	e = h.reject(PoolDeleteType, PoolDeleteRequest{Name: "full", At: t0}, tokens.CodeConflict)
	if !errors.Is(e, tokens.ErrConflict) || !strings.Contains(e.Message, "2 tokens") {
		t.Errorf("delete of a pool with tokens: %v, want a conflict naming 2 tokens", e)
	}
	if n := len(h.pool("full").Tokens); n != 2 {
		t.Fatalf("rejected delete left %d tokens, want 2", n)
	}

	h.mustApply(PoolDeleteType, PoolDeleteRequest{Name: "full", Force: true, At: t0})
	if _, ok := h.f.State().Pool("full"); ok {
		t.Fatal("force-deleted pool still exists")
	}
	if _, ok := h.f.State().Token("full", "tok_a"); ok {
		t.Fatal("force delete left a token behind")
	}

	// A pool created again under the same name starts afresh.
	h.mustApply(PoolUpsertType, poolReq("full", t0.Add(time.Hour)))
	if ps := h.pool("full"); len(ps.Tokens) != 0 || ps.Pool.CreateIndex != h.index || !ps.Pool.CreatedAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("recreated pool = %+v with %d tokens", ps.Pool, len(ps.Tokens))
	}
	// The value of a force-deleted token may be added again.
	h.mustApply(TokenAddType, tokenReq("full", "tok_a", "value-a", 0, t0.Add(time.Hour)))
}

func TestTokenAdd(t *testing.T) {
	h := newHarness(t)
	h.mustApply(PoolUpsertType, poolReq("github", t0))
	at := t0.Add(time.Minute)
	req := tokenReq("github", "tok_a", "value-a", 7, at, func(tk *tokens.Token) {
		tk.Labels = map[string]string{"scope": "repo"}
		tk.ExpiresAt = t0.Add(24 * time.Hour)
		tk.NotBefore = t0.Add(-time.Hour)
		// The proposer cannot choose these.
		tk.Lifecycle = tokens.LifecycleRevoked
		tk.Health = tokens.Health{State: tokens.Failed, Reason: "made up", Since: t0.Add(-time.Hour)}
		tk.CreatedAt, tk.CreateIndex, tk.ModifyIndex = t0.Add(-time.Hour), 99, 99
	})
	h.mustApply(TokenAddType, req)
	want := tokens.Token{
		ID: "tok_a", Pool: "github", Value: tokens.Sealed("value-a"), Fingerprint: legacyFingerprint([]byte("value-a")),
		Priority: 7, Labels: map[string]string{"scope": "repo"}, ExpiresAt: t0.Add(24 * time.Hour), NotBefore: t0.Add(-time.Hour),
		Lifecycle: tokens.LifecycleActive,
		Health:    tokens.Health{State: tokens.Healthy, Since: at},
		CreatedAt: at, CreateIndex: 2, ModifyIndex: 2,
	}
	if got := h.token("github", "tok_a"); !reflect.DeepEqual(*got, want) {
		t.Fatalf("added token = %+v\nwant %+v", *got, want)
	}
	if got := h.pool("github").Pool.ModifyIndex; got != 1 {
		t.Errorf("adding a token changed the pool's ModifyIndex to %d", got)
	}

	e := h.reject(TokenAddType, tokenReq("nope", "tok_b", "value-b", 0, at), tokens.CodePoolNotFound)
	if !errors.Is(e, tokens.ErrNotFound) {
		t.Errorf("errors.Is(%v, ErrNotFound) = false", e)
	}
	e = h.reject(TokenAddType, tokenReq("github", "tok_a", "value-other", 0, at), tokens.CodeConflict)
	if !errors.Is(e, tokens.ErrConflict) || !strings.Contains(e.Message, "tok_a") {
		t.Errorf("duplicate id: %v", e)
	}
	e = h.reject(TokenAddType, tokenReq("github", "tok_b", "value-a", 0, at), tokens.CodeConflict)
	if !errors.Is(e, tokens.ErrConflict) || !strings.Contains(e.Message, "tok_a") || strings.Contains(e.Message, "value-a") {
		t.Errorf("duplicate value: %v, want a conflict naming tok_a and not the value", e)
	}
	invalid := map[string]TokenAddRequest{
		"bad id":         tokenReq("github", "TOK B", "value-b", 0, at),
		"empty value":    tokenReq("github", "tok_b", "", 0, at),
		"expired":        tokenReq("github", "tok_b", "value-b", 0, at, func(tk *tokens.Token) { tk.ExpiresAt = at }),
		"no fingerprint": tokenReq("github", "tok_b", "value-b", 0, at, func(tk *tokens.Token) { tk.Fingerprint = "" }),
		"bad priority":   tokenReq("github", "tok_b", "value-b", tokens.MaxPriority+1, at),
		"bad labels":     tokenReq("github", "tok_b", "value-b", 0, at, func(tk *tokens.Token) { tk.Labels = map[string]string{"k": "\x00"} }),
		"bad pool name":  tokenReq("Git Hub", "tok_b", "value-b", 0, at),
	}
	for name, req := range invalid {
		t.Run(name, func(t *testing.T) {
			defer h.use(t)()
			e := h.reject(TokenAddType, req, tokens.CodeInvalid)
			if !errors.Is(e, tokens.ErrInvalid) {
				t.Errorf("errors.Is(%v, ErrInvalid) = false", e)
			}
		})
	}
	// Expiry is judged by the proposer's time in the command, not a clock:
	// a token that expires in 2000 is valid in a command stamped 1999.
	old := time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC)
	h.mustApply(TokenAddType, tokenReq("github", "tok_old", "value-old", 0, old, func(tk *tokens.Token) { tk.ExpiresAt = old.AddDate(1, 0, 0) }))
}

func TestTokenAddKeepsLessOrder(t *testing.T) {
	h := newHarness(t)
	h.mustApply(PoolUpsertType, poolReq("p", t0))
	for i, c := range []struct {
		id   string
		prio int
	}{{"tok_e", 5}, {"tok_a", 1}, {"tok_d", 3}, {"tok_c", 3}, {"tok_b", -2}, {"tok_f", 1}} {
		h.mustApply(TokenAddType, tokenReq("p", c.id, "value-"+c.id, c.prio, t0.Add(time.Duration(i)*time.Second)))
	}
	var got []string
	for _, tk := range h.pool("p").Tokens {
		got = append(got, tk.ID)
	}
	// Priority first, then creation (tok_d before tok_c, tok_a before tok_f).
	want := []string{"tok_b", "tok_a", "tok_f", "tok_d", "tok_c", "tok_e"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("tokens in order %v, want %v", got, want)
	}
	checkInvariants(t, h.f.State())
}

func TestTokenAddPoolFull(t *testing.T) {
	h := newHarness(t)
	h.mustApply(PoolUpsertType, poolReq("p", t0))
	// Fill the pool directly: ten thousand Applies would be slow.
	ps := h.pool("p")
	full := &PoolState{Pool: ps.Pool}
	for i := range tokens.MaxTokensPerPool {
		full.Tokens = append(full.Tokens, &tokens.Token{ID: fmt.Sprintf("tok_%05d", i), Pool: "p", Fingerprint: fmt.Sprint(i), Lifecycle: tokens.LifecycleActive})
	}
	h.f.state.Store(h.f.State().withPool("p", full))
	e := h.reject(TokenAddType, tokenReq("p", "tok_new", "value-new", 0, t0), tokens.CodeConflict)
	if !strings.Contains(e.Message, "full") {
		t.Errorf("pool full: %v", e)
	}
	h.mustApply(TokenRemoveType, TokenRemoveRequest{Pool: "p", ID: "tok_00000", At: t0})
	h.mustApply(TokenAddType, tokenReq("p", "tok_new", "value-new", 0, t0))
}

func TestTokenRemove(t *testing.T) {
	h := newHarness(t)
	h.mustApply(PoolUpsertType, poolReq("p", t0))
	for i, id := range []string{"tok_a", "tok_b", "tok_c"} {
		h.mustApply(TokenAddType, tokenReq("p", id, "value-"+id, i, t0))
	}
	a, c := h.token("p", "tok_a"), h.token("p", "tok_c")
	h.mustApply(TokenRemoveType, TokenRemoveRequest{Pool: "p", ID: "tok_b", At: t0})
	if _, ok := h.f.State().Token("p", "tok_b"); ok {
		t.Fatal("removed token still exists")
	}
	if toks := h.pool("p").Tokens; len(toks) != 2 || toks[0] != a || toks[1] != c {
		t.Fatalf("after removal the pool holds %v, want tok_a, tok_c unchanged", toks)
	}

	e := h.reject(TokenRemoveType, TokenRemoveRequest{Pool: "p", ID: "tok_b", At: t0}, tokens.CodeTokenNotFound)
	if !errors.Is(e, tokens.ErrNotFound) {
		t.Errorf("errors.Is(%v, ErrNotFound) = false", e)
	}
	h.reject(TokenRemoveType, TokenRemoveRequest{Pool: "nope", ID: "tok_a", At: t0}, tokens.CodePoolNotFound)

	// The removed token's value may be added again, under a new id.
	h.mustApply(TokenAddType, tokenReq("p", "tok_b2", "value-tok_b", 1, t0))
}

func TestTokenHealth(t *testing.T) {
	h := newHarness(t)
	h.mustApply(PoolUpsertType, poolReq("p", t0))
	for _, id := range []string{"tok_a", "tok_b", "tok_c", "tok_d", "tok_e"} {
		h.mustApply(TokenAddType, tokenReq("p", id, "value-"+id, 0, t0))
	}
	at := t0.Add(time.Minute)

	h.mustApply(TokenHealthType, changes(
		change("p", "tok_a", failed("unauthorized", at)),
		change("p", "tok_b", cooldown(at, at.Add(time.Hour))),
		change("p", "tok_c", cooldown(at, at.Add(time.Minute))),
		change("p", "tok_c", failed("forbidden", at.Add(time.Second))), // same entry, same token: both apply
		change("p", "tok_gone", failed("forbidden", at)),               // unknown token: skipped
		change("nope", "tok_d", failed("forbidden", at)),               // unknown pool: skipped
	))
	idx := h.index
	checks := []struct {
		id   string
		want tokens.Health
		mod  uint64
	}{
		{"tok_a", failed("unauthorized", at), idx},
		{"tok_b", cooldown(at, at.Add(time.Hour)), idx},
		{"tok_c", failed("forbidden", at.Add(time.Second)), idx},
		{"tok_d", tokens.Health{State: tokens.Healthy, Since: t0}, 5},
		{"tok_e", tokens.Health{State: tokens.Healthy, Since: t0}, 6},
	}
	for _, c := range checks {
		got := h.token("p", c.id)
		if got.Health != c.want || got.ModifyIndex != c.mod {
			t.Errorf("%s: health %+v (modify index %d), want %+v (%d)", c.id, got.Health, got.ModifyIndex, c.want, c.mod)
		}
	}
	if got, want := len(h.last), 4; got != want {
		t.Errorf("entry with 4 effective changes recorded %d events: %+v", got, h.last)
	}

	// Changes that change nothing are accepted, record nothing, and leave
	// the tokens as they are: the same pointers.
	before := h.f.State()
	h.mustApply(TokenHealthType, changes(
		change("p", "tok_a", cooldown(at.Add(time.Minute), at.Add(time.Hour))),     // failed stays failed
		change("p", "tok_a", healthy("recovered", at.Add(time.Minute))),            // healthy does not override failed
		change("p", "tok_a", degraded("errors", at.Add(time.Minute))),              // nor does degraded
		change("p", "tok_a", failed("forbidden", at.Add(time.Minute))),             // already failed: the first reason stays
		change("p", "tok_b", cooldown(at.Add(time.Minute), at.Add(2*time.Minute))), // a cooldown never shortens
		change("p", "tok_b", cooldown(at.Add(time.Minute), at.Add(time.Hour))),     // same deadline
		change("p", "tok_b", healthy("recovered", at.Add(time.Minute))),            // healthy does not end a cooldown
		change("p", "tok_b", degraded("errors", at.Add(time.Minute))),              // degraded replaces only healthy
		change("p", "tok_d", healthy("recovered", at)),                             // already healthy
		change("p", "tok_d", cooldown(at, at)),                                     // Until not after Since: ignored
		change("p", "tok_d", cooldown(at, at.Add(-time.Minute))),                   // Until before Since: ignored
		change("p", "tok_gone", cooldown(at, at.Add(time.Hour))),
	))
	for _, id := range []string{"tok_a", "tok_b", "tok_d"} {
		if b, _ := before.Token("p", id); b != h.token("p", id) {
			t.Errorf("%s was replaced by a change that changes nothing", id)
		}
	}
	if len(h.last) != 0 {
		t.Errorf("changes that change nothing recorded events: %+v", h.last)
	}
	h.mustApply(TokenHealthType, changes())
	h.mustApply(TokenHealthType, TokenHealthRequest{})

	// A later deadline extends the cooldown, across entries: the cooldown
	// keeps its start, the rest is the new decision's.
	h.mustApply(TokenHealthType, changes(change("p", "tok_b", by("node-2", cooldown(at.Add(time.Minute), at.Add(2*time.Hour))))))
	if got, want := h.token("p", "tok_b").Health, by("node-2", cooldown(at, at.Add(2*time.Hour))); got != want {
		t.Errorf("extended cooldown = %+v, want %+v", got, want)
	}
	// And within one entry, whatever the order: the latest deadline wins,
	// and a shorter one in between changes nothing.
	h.mustApply(TokenHealthType, changes(
		change("p", "tok_b", cooldown(at.Add(2*time.Minute), at.Add(3*time.Hour))),
		change("p", "tok_b", cooldown(at.Add(2*time.Minute), at.Add(150*time.Minute))),
		change("p", "tok_b", cooldown(at.Add(3*time.Minute), at.Add(4*time.Hour))),
		change("p", "tok_e", cooldown(at.Add(2*time.Minute), at.Add(4*time.Hour))),
		change("p", "tok_e", cooldown(at.Add(3*time.Minute), at.Add(3*time.Hour))),
	))
	if got := h.token("p", "tok_b").Health; got != cooldown(at, at.Add(4*time.Hour)) {
		t.Errorf("cooldown extended twice in one entry = %+v", got)
	}
	if got := h.token("p", "tok_e").Health; got != cooldown(at.Add(2*time.Minute), at.Add(4*time.Hour)) {
		t.Errorf("longer cooldown then shorter one in one entry = %+v", got)
	}
	if len(h.last) != 3 {
		t.Errorf("two extensions and one new cooldown recorded %d events: %+v", len(h.last), h.last)
	}

	// degraded <-> healthy.
	h.mustApply(TokenHealthType, changes(change("p", "tok_d", by("node-2", degraded("errors", at)))))
	if got := h.token("p", "tok_d"); got.Health != by("node-2", degraded("errors", at)) || got.ModifyIndex != h.index {
		t.Errorf("degraded healthy token = %+v (modify index %d)", got.Health, got.ModifyIndex)
	}
	before = h.f.State()
	h.mustApply(TokenHealthType, changes(change("p", "tok_d", degraded("timeouts", at.Add(time.Minute)))))
	if b, _ := before.Token("p", "tok_d"); b != h.token("p", "tok_d") || len(h.last) != 0 {
		t.Errorf("degraded on a degraded token changed it to %+v", h.token("p", "tok_d").Health)
	}
	h.mustApply(TokenHealthType, changes(change("p", "tok_d", healthy("recovered", at.Add(2*time.Minute)))))
	if got := h.token("p", "tok_d").Health; got != healthy("recovered", at.Add(2*time.Minute)) {
		t.Errorf("recovered degraded token = %+v", got)
	}
	// A cooldown and a failure replace degraded.
	h.mustApply(TokenHealthType, changes(
		change("p", "tok_d", degraded("errors", at.Add(3*time.Minute))),
		change("p", "tok_d", cooldown(at.Add(4*time.Minute), at.Add(5*time.Minute))),
	))
	if got := h.token("p", "tok_d").Health; got != cooldown(at.Add(4*time.Minute), at.Add(5*time.Minute)) {
		t.Errorf("cooldown of a degraded token = %+v", got)
	}
	// A cooldown whose deadline has passed is healthy: degraded replaces
	// it, a healthy decision does not, and a new cooldown starts afresh.
	after := at.Add(5 * time.Minute)
	before = h.f.State()
	h.mustApply(TokenHealthType, changes(change("p", "tok_d", healthy("recovered", after))))
	if b, _ := before.Token("p", "tok_d"); b != h.token("p", "tok_d") {
		t.Errorf("healthy on an ended cooldown changed it to %+v", h.token("p", "tok_d").Health)
	}
	h.mustApply(TokenHealthType, changes(change("p", "tok_d", degraded("errors", after))))
	if got := h.token("p", "tok_d").Health; got != degraded("errors", after) {
		t.Errorf("degraded after an ended cooldown = %+v", got)
	}
	if len(h.last) != 1 || h.last[0].From != tokens.Healthy {
		t.Errorf("degraded after an ended cooldown recorded %+v, want one event from healthy", h.last)
	}
	h.mustApply(TokenHealthType, changes(change("p", "tok_b", cooldown(at.Add(5*time.Hour), at.Add(6*time.Hour)))))
	if got := h.token("p", "tok_b").Health; got != cooldown(at.Add(5*time.Hour), at.Add(6*time.Hour)) {
		t.Errorf("cooldown after an ended one = %+v, want a fresh one", got)
	}

	// One unknown state rejects the whole entry: its valid changes too,
	// and even a change for a token that does not exist.
	for _, bad := range []tokens.HealthState{"exploded", "", "Healthy", "failed "} {
		for _, target := range []string{"tok_e", "tok_gone"} {
			before := h.f.State()
			e := h.reject(TokenHealthType, changes(
				change("p", "tok_e", failed("unauthorized", at)),
				change("p", target, tokens.Health{State: bad, Since: at}),
			), tokens.CodeInvalid)
			if !errors.Is(e, tokens.ErrInvalid) || !strings.Contains(e.Message, fmt.Sprintf("%q", bad)) {
				t.Errorf("unknown state %q: error %v does not name it", bad, e)
			}
			if b, _ := before.Token("p", "tok_e"); b != h.token("p", "tok_e") {
				t.Errorf("rejected entry changed tok_e to %s", h.token("p", "tok_e").Health.State)
			}
		}
	}
	checkInvariants(t, h.f.State())
}

func TestTokenReset(t *testing.T) {
	h := newHarness(t)
	h.mustApply(PoolUpsertType, poolReq("p", t0))
	for i, id := range []string{"tok_a", "tok_b", "tok_c", "tok_d", "tok_e"} {
		h.mustApply(TokenAddType, tokenReq("p", id, "value-"+id, i%2, t0, func(tk *tokens.Token) { tk.Labels = map[string]string{"n": id} }))
	}
	h.mustApply(TokenHealthType, changes(
		change("p", "tok_a", failed("unauthorized", t0.Add(time.Minute))),
		change("p", "tok_b", cooldown(t0.Add(time.Minute), t0.Add(time.Hour))),
		change("p", "tok_c", degraded("errors", t0.Add(time.Minute))),
		change("p", "tok_e", cooldown(t0.Add(time.Minute), t0.Add(2*time.Minute))),
	))
	at := t0.Add(10 * time.Minute)
	for _, c := range []struct {
		id   string
		from tokens.HealthState
	}{
		{"tok_a", tokens.Failed},
		{"tok_b", tokens.Cooldown},
		{"tok_c", tokens.Degraded},
		{"tok_d", tokens.Healthy},
		{"tok_e", tokens.Healthy}, // its cooldown ended before the reset
	} {
		old := *h.token("p", c.id)
		h.mustApply(TokenResetType, TokenResetRequest{Pool: "p", ID: c.id, By: "alice", At: at})
		got := *h.token("p", c.id)
		want := tokens.ResetHealth(at, "alice")
		if got.Health != want || got.Health.State != tokens.Healthy || !got.Health.Since.Equal(at) || got.Health.Reporter != "alice" || !got.Health.Until.IsZero() {
			t.Errorf("%s: reset health %+v, want %+v", c.id, got.Health, want)
		}
		if got.ModifyIndex != h.index {
			t.Errorf("%s: modify index %d after reset at %d", c.id, got.ModifyIndex, h.index)
		}
		got.Health, got.ModifyIndex = old.Health, old.ModifyIndex
		if !reflect.DeepEqual(got, old) {
			t.Errorf("%s: reset changed more than health:\n got %+v\nwant %+v", c.id, got, old)
		}
		wantEv := []tokens.Event{{
			Index: h.index, At: at, Type: tokens.EventTokenReset, Pool: "p", Token: c.id,
			From: c.from, To: tokens.Healthy, Reason: want.Reason, Reporter: "alice",
		}}
		if !reflect.DeepEqual(h.last, wantEv) {
			t.Errorf("%s: reset recorded %+v\nwant %+v", c.id, h.last, wantEv)
		}
	}
	checkInvariants(t, h.f.State())

	// A reset token is an ordinary healthy one again: it can fail anew.
	h.mustApply(TokenHealthType, changes(change("p", "tok_a", failed("forbidden", at.Add(time.Minute)))))
	if got := h.token("p", "tok_a").Health; got != failed("forbidden", at.Add(time.Minute)) {
		t.Errorf("reset token did not fail again: %+v", got)
	}

	e := h.reject(TokenResetType, TokenResetRequest{Pool: "nope", ID: "tok_a", By: "alice", At: at}, tokens.CodePoolNotFound)
	if !errors.Is(e, tokens.ErrNotFound) {
		t.Errorf("errors.Is(%v, ErrNotFound) = false", e)
	}
	e = h.reject(TokenResetType, TokenResetRequest{Pool: "p", ID: "tok_gone", By: "alice", At: at}, tokens.CodeTokenNotFound)
	if !errors.Is(e, tokens.ErrNotFound) || !strings.Contains(e.Message, "tok_gone") {
		t.Errorf("reset of a missing token: %v", e)
	}
	if got := h.token("p", "tok_a").Health.State; got != tokens.Failed {
		t.Errorf("rejected resets changed tok_a to %s", got)
	}
}

func TestApplyCorruptEntries(t *testing.T) {
	h := newHarness(t)
	h.mustApply(PoolUpsertType, poolReq("p", t0))
	h.mustApply(TokenAddType, tokenReq("p", "tok_a", "value-a", 0, t0))

	tests := []struct {
		name  string
		entry []byte
	}{
		{"nil entry", nil},
		{"empty entry", []byte{}},
		{"type zero", []byte{0}},
		{"unknown type", append([]byte{99}, `{"name":"p"}`...)},
		{"highest type without the ignore flag", append([]byte{127}, `{}`...)},
	}
	for _, typ := range []MessageType{PoolUpsertType, PoolDeleteType, TokenAddType, TokenRemoveType, TokenHealthType, TokenResetType} {
		for _, body := range []string{
			"", "{", "not json", "[]", "{}garbage", "\xff\xfe", "null null",
			`{"pool":5,"name":[],"token":"x","id":7,"changes":{}}`,
			`{"at":"yesterday","changes":[{"health":{"since":"yesterday"}}]}`,
		} {
			tests = append(tests, struct {
				name  string
				entry []byte
			}{fmt.Sprintf("%s body %q", typ, body), append([]byte{byte(typ)}, body...)})
		}
	}
	// Bodies that are malformed only for one type, where the common ones
	// above would fail on another field first.
	for typ, body := range map[MessageType]string{
		TokenHealthType: `{"changes":[{"pool":"p","token_id":"tok_a","health":{"state":"failed","until":5}}]}`,
		TokenResetType:  `{"pool":"p","id":"tok_a","by":["alice"],"at":"2030-01-02T03:04:05Z"}`,
	} {
		tests = append(tests, struct {
			name  string
			entry []byte
		}{fmt.Sprintf("%s body %q", typ, body), append([]byte{byte(typ)}, body...)})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer h.use(t)()
			e := h.rejectRaw(tt.entry, tokens.CodeInvalid)
			if !errors.Is(e, tokens.ErrInvalid) || !strings.Contains(e.Message, "malformed") {
				t.Fatalf("error %v, want a malformed entry", e)
			}
		})
	}
	if !strings.Contains(h.logs.String(), "cannot be decoded") {
		t.Errorf("corrupt entries were not logged:\n%s", h.logs)
	}
	if h.token("p", "tok_a").Health.State != tokens.Healthy {
		t.Fatal("corrupt entries changed state")
	}
}

func TestApplyIgnoresFlaggedUnknownTypes(t *testing.T) {
	h := newHarness(t)
	h.mustApply(PoolUpsertType, poolReq("p", t0))
	for _, typ := range []byte{128, 128 | 6, 128 | byte(PoolUpsertType), 255} {
		before := h.f.State()
		for _, body := range []string{`{"anything":1}`, "", "not json"} {
			if err := h.applyRaw(append([]byte{typ}, body...)); err != nil {
				t.Fatalf("type %d: %v, want it ignored", typ, err)
			}
			if h.f.State() != before {
				t.Fatalf("type %d changed the state", typ)
			}
		}
	}
	if !strings.Contains(h.logs.String(), "unknown type") {
		t.Errorf("ignored entries were not logged:\n%s", h.logs)
	}
}

// panicOnDebug is a logger whose Debug panics. applyTokenHealth logs each
// health change at debug level from inside apply, which makes it the one
// place a test can make apply panic without changing the FSM.
type panicOnDebug struct{ hclog.Logger }

func (panicOnDebug) Debug(string, ...any) { panic("logger exploded") }

func TestApplyRecoversFromPanic(t *testing.T) {
	buf := &logBuffer{}
	f := New(panicOnDebug{newLogger(buf)})
	for i, e := range [][]byte{
		encode(t, PoolUpsertType, poolReq("p", t0)),
		encode(t, TokenAddType, tokenReq("p", "tok_a", "value-a", 0, t0)),
	} {
		if err := f.Apply(uint64(i+1), e); err != nil {
			t.Fatal(err)
		}
	}
	before, events := f.State(), eventsOf(f)
	if len(events.Events) != 2 {
		t.Fatalf("pool and token recorded %+v", events)
	}
	err := f.Apply(3, encode(t, TokenHealthType, changes(change("p", "tok_a", failed("forbidden", t0)))))
	var e *tokens.Error
	if !errors.As(err, &e) || e.Code != tokens.CodeInvalid || !strings.Contains(e.Message, "could not be applied") {
		t.Fatalf("Apply that panics returned %v, want an invalid_request rejection", err)
	}
	if f.State() != before {
		t.Fatal("Apply that panicked replaced the state")
	}
	if got := eventsOf(f); !reflect.DeepEqual(got, events) {
		t.Fatalf("Apply that panicked recorded events: %+v", got)
	}
	if f.AppliedIndex() != 3 {
		t.Fatalf("AppliedIndex = %d after a panic at 3", f.AppliedIndex())
	}
	if logs := buf.String(); !strings.Contains(logs, "panicked") || !strings.Contains(logs, "logger exploded") {
		t.Fatalf("the panic was not logged:\n%s", logs)
	}
	if tk, _ := f.State().Token("p", "tok_a"); tk.Health.State != tokens.Healthy {
		t.Fatalf("token health %s after the rejected entry", tk.Health.State)
	}
	// The FSM goes on applying.
	if err := f.Apply(4, encode(t, TokenRemoveType, TokenRemoveRequest{Pool: "p", ID: "tok_a", At: t0})); err != nil {
		t.Fatal(err)
	}
}

// With no logger, the recovery path itself must not crash.
func TestNilLogger(t *testing.T) {
	f := New(nil)
	if err := f.Apply(1, []byte{99}); err == nil {
		t.Fatal("unknown type accepted")
	}
	if err := f.Apply(2, nil); err == nil {
		t.Fatal("empty entry accepted")
	}
	if err := f.Apply(3, []byte{128}); err != nil {
		t.Fatal(err)
	}
	for i, e := range [][]byte{
		encode(t, PoolUpsertType, poolReq("p", t0)),
		encode(t, TokenAddType, tokenReq("p", "tok_a", "value-a", 0, t0)),
		encode(t, TokenHealthType, changes(change("p", "tok_a", failed("forbidden", t0)))),
		encode(t, TokenResetType, TokenResetRequest{Pool: "p", ID: "tok_a", By: "alice", At: t0}),
	} {
		if err := f.Apply(uint64(4+i), e); err != nil {
			t.Fatal(err)
		}
	}
	if f.AppliedIndex() != 7 {
		t.Fatalf("AppliedIndex = %d", f.AppliedIndex())
	}
}

// Every State a reader got stays exactly as it was while Apply goes on.
func TestStateImmutable(t *testing.T) {
	h := newHarness(t)
	var held []*State
	var frozen []map[string]frozenPool
	for _, e := range everyCommand(t) {
		held = append(held, h.f.State())
		frozen = append(frozen, freeze(h.f.State()))
		_ = h.applyRaw(e) // applyRaw checks the state just before
	}
	for i, s := range held {
		if !reflect.DeepEqual(freeze(s), frozen[i]) {
			t.Fatalf("state held before entry %d changed later", i+1)
		}
		checkInvariants(t, s)
	}
}

// Readers use states while Apply runs; the race detector checks that no
// write reaches memory they can see.
func TestConcurrentReaders(t *testing.T) {
	h := newHarness(t)
	entries := everyCommand(t)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				for _, ps := range h.f.State().Pools() {
					_ = len(ps.Pool.Labels["team"]) + int(ps.Pool.ModifyIndex)
					for _, tk := range ps.Tokens {
						_ = tk.Health.State == tokens.Failed && tk.Labels["scope"] == "" && len(tk.Value) > 0
					}
				}
			}
		})
	}
	// Event readers page through the log while Apply appends to it and
	// Restore replaces it.
	errs := make(chan error, 2)
	for range 2 {
		wg.Go(func() {
			var since uint64
			for {
				select {
				case <-done:
					return
				default:
				}
				events, _ := h.f.Events(since, 3)
				for i, ev := range events {
					if ev.Index <= since || (i > 0 && ev.Index < events[i-1].Index) {
						errs <- fmt.Errorf("Events(%d, 3) = %+v: not above %d in order", since, events, since)
						return
					}
				}
				if len(events) == 0 {
					since = 0
				} else {
					since = events[len(events)-1].Index
				}
			}
		})
	}
	empty := snapshotBytes(t, New(nil))
	for range 20 {
		if err := h.f.Restore(bytes.NewReader(empty), 0); err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			h.index++
			_ = h.f.Apply(h.index, e)
		}
	}
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
