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
		Name: "github", Selection: tokens.SelectPriority, Provider: tokens.Provider{Type: tokens.ProviderStatic},
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
		p.CreatedAt, p.CreateIndex = at, 77
	}))
	ps := h.pool("github")
	want = tokens.Pool{
		Name: "github", Selection: tokens.SelectRoundRobin, MinHealthy: 2, Provider: tokens.Provider{Type: tokens.ProviderStatic},
		Labels:    map[string]string{"team": "payments"},
		CreatedAt: t0, UpdatedAt: at, CreateIndex: 1, ModifyIndex: 3,
	}
	if !reflect.DeepEqual(*ps.Pool, want) {
		t.Fatalf("updated pool = %+v, want %+v", *ps.Pool, want)
	}
	if len(ps.Tokens) != 1 || ps.Tokens[0] != tokensBefore[0] {
		t.Fatalf("update lost or copied the pool's tokens: %v", ps.Tokens)
	}

	for name, mod := range map[string]func(*tokens.Pool){
		"bad selection":  func(p *tokens.Pool) { p.Selection = "fastest" },
		"bad labels":     func(p *tokens.Pool) { p.Labels = map[string]string{"BAD": "x"} },
		"bad provider":   func(p *tokens.Pool) { p.Provider.Type = "oauth3" },
		"bad minhealthy": func(p *tokens.Pool) { p.MinHealthy = -1 },
	} {
		e := h.reject(PoolUpsertType, poolReq("github", at.Add(time.Hour), mod), tokens.CodeInvalid)
		if !errors.Is(e, tokens.ErrInvalid) {
			t.Errorf("%s: errors.Is(%v, ErrInvalid) = false", name, e)
		}
	}
	h.reject(PoolUpsertType, poolReq("Not A Name", t0), tokens.CodeInvalid)
	h.reject(PoolUpsertType, poolReq("", t0), tokens.CodeInvalid)
	if got := h.pool("github").Pool; got.ModifyIndex != 3 || got.Selection != tokens.SelectRoundRobin {
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
		ID: "tok_a", Pool: "github", Value: tokens.Secret("value-a"), Fingerprint: tokens.Fingerprint([]byte("value-a")),
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

func TestTokenReport(t *testing.T) {
	h := newHarness(t)
	h.mustApply(PoolUpsertType, poolReq("p", t0))
	for _, id := range []string{"tok_a", "tok_b", "tok_c", "tok_d"} {
		h.mustApply(TokenAddType, tokenReq("p", id, "value-"+id, 0, t0))
	}
	at := t0.Add(time.Minute)
	reports := func(rs ...tokens.Report) TokenReportRequest { return TokenReportRequest{Reports: rs} }

	h.mustApply(TokenReportType, reports(
		report("p", "tok_a", tokens.OutcomeUnauthorized, at, time.Time{}),
		report("p", "tok_b", tokens.OutcomeRateLimited, at, at.Add(time.Hour)),
		report("p", "tok_c", tokens.OutcomeRateLimited, at, at.Add(time.Minute)),
		report("p", "tok_c", tokens.OutcomeForbidden, at.Add(time.Second), time.Time{}), // same entry, same token: both apply
		report("p", "tok_gone", tokens.OutcomeForbidden, at, time.Time{}),               // unknown token: skipped
		report("nope", "tok_d", tokens.OutcomeForbidden, at, time.Time{}),               // unknown pool: skipped
	))
	idx := h.index
	checks := []struct {
		id   string
		want tokens.Health
		mod  uint64
	}{
		{"tok_a", tokens.Health{State: tokens.Failed, Reason: "unauthorized", Since: at, Reporter: "node-1"}, idx},
		{"tok_b", tokens.Health{State: tokens.Cooldown, Reason: "rate_limited", Since: at, Until: at.Add(time.Hour), Reporter: "node-1"}, idx},
		{"tok_c", tokens.Health{State: tokens.Failed, Reason: "forbidden", Since: at.Add(time.Second), Reporter: "node-1"}, idx},
		{"tok_d", tokens.Health{State: tokens.Healthy, Since: t0}, 5},
	}
	for _, c := range checks {
		got := h.token("p", c.id)
		if got.Health != c.want || got.ModifyIndex != c.mod {
			t.Errorf("%s: health %+v (modify index %d), want %+v (%d)", c.id, got.Health, got.ModifyIndex, c.want, c.mod)
		}
	}

	// Reports that change nothing are accepted and leave the tokens as
	// they are: the same pointers.
	before := h.f.State()
	h.mustApply(TokenReportType, reports(
		report("p", "tok_a", tokens.OutcomeRateLimited, at.Add(time.Minute), at.Add(time.Hour)), // failed stays failed
		report("p", "tok_b", tokens.OutcomeRateLimited, at.Add(time.Minute), at.Add(time.Minute*2)),
		report("p", "tok_d", tokens.OutcomeOK, at, time.Time{}),
		report("p", "tok_d", tokens.OutcomeError, at, time.Time{}),
		report("p", "tok_d", tokens.OutcomeTimeout, at, time.Time{}),
	))
	for _, id := range []string{"tok_a", "tok_b", "tok_d"} {
		if b, _ := before.Token("p", id); b != h.token("p", id) {
			t.Errorf("%s was replaced by a report that changes nothing", id)
		}
	}
	h.mustApply(TokenReportType, reports())

	// A later deadline extends the cooldown.
	h.mustApply(TokenReportType, reports(report("p", "tok_b", tokens.OutcomeRateLimited, at.Add(time.Minute), at.Add(2*time.Hour))))
	if got := h.token("p", "tok_b").Health; got.Until != at.Add(2*time.Hour) || got.Since != at {
		t.Errorf("extended cooldown = %+v", got)
	}

	// One unknown outcome rejects the whole entry: its valid reports too.
	e := h.reject(TokenReportType, reports(
		report("p", "tok_d", tokens.OutcomeUnauthorized, at, time.Time{}),
		report("p", "tok_d", "exploded", at, time.Time{}),
	), tokens.CodeInvalid)
	if !strings.Contains(e.Message, "exploded") {
		t.Errorf("unknown outcome error %q does not name it", e.Message)
	}
	if got := h.token("p", "tok_d").Health.State; got != tokens.Healthy {
		t.Errorf("rejected entry changed tok_d to %s", got)
	}
	h.reject(TokenReportType, reports(report("p", "tok_d", "", at, time.Time{})), tokens.CodeInvalid)
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
		{"unknown type", append([]byte{6}, `{"name":"p"}`...)},
		{"highest type without the ignore flag", append([]byte{127}, `{}`...)},
	}
	for _, typ := range []MessageType{PoolUpsertType, PoolDeleteType, TokenAddType, TokenRemoveType, TokenReportType} {
		for _, body := range []string{"", "{", "not json", "[]", `{"pool":5,"name":[],"token":"x","reports":{}}`, `{"at":"yesterday","reports":[{"at":"yesterday"}]}`, "{}garbage", "\xff\xfe"} {
			tests = append(tests, struct {
				name  string
				entry []byte
			}{fmt.Sprintf("%s body %q", typ, body), append([]byte{byte(typ)}, body...)})
		}
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

// panicOnDebug is a logger whose Debug panics. applyTokenReport logs a
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
	before := f.State()
	err := f.Apply(3, encode(t, TokenReportType, TokenReportRequest{Reports: []tokens.Report{report("p", "tok_a", tokens.OutcomeForbidden, t0, time.Time{})}}))
	var e *tokens.Error
	if !errors.As(err, &e) || e.Code != tokens.CodeInvalid || !strings.Contains(e.Message, "could not be applied") {
		t.Fatalf("Apply that panics returned %v, want an invalid_request rejection", err)
	}
	if f.State() != before {
		t.Fatal("Apply that panicked replaced the state")
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
		encode(t, TokenReportType, TokenReportRequest{Reports: []tokens.Report{report("p", "tok_a", tokens.OutcomeForbidden, t0, time.Time{})}}),
	} {
		if err := f.Apply(uint64(4+i), e); err != nil {
			t.Fatal(err)
		}
	}
	if f.AppliedIndex() != 6 {
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
	empty := snapshotBytes(t, New(nil))
	for range 20 {
		if err := h.f.Restore(bytes.NewReader(empty)); err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			h.index++
			_ = h.f.Apply(h.index, e)
		}
	}
	close(done)
	wg.Wait()
}
