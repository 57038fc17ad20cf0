package fsm

import (
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/tokend/tokend/tokens"
)

// FuzzApplyCommands drives the FSM with well-formed commands built from the
// fuzz input, so the fuzzer explores sequences of writes rather than JSON
// syntax, and checks every answer against a small model of the rules.
//
// Each command is 4 bytes: kind, a, b, c.
func FuzzApplyCommands(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 2, 0, 0, 0, 2, 0, 1, 1, 4, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1, 0})
	f.Add([]byte{0, 1, 1, 5, 2, 1, 2, 3, 2, 1, 3, 3, 4, 1, 2, 3, 4, 1, 3, 1, 3, 1, 2, 0, 5, 1, 2, 3})
	f.Add([]byte{0, 2, 0, 0, 2, 2, 0, 0, 2, 2, 1, 0, 2, 2, 2, 0, 4, 2, 0, 4, 4, 2, 0, 3, 0, 2, 2, 200})
	f.Fuzz(func(t *testing.T, program []byte) {
		m := newModel()
		h := newHarness(t)
		for i := 0; i+4 <= len(program) && i < 4*200; i += 4 {
			op := program[i : i+4]
			at := t0.Add(time.Duration(i/4) * time.Minute)
			typ, req, want := m.command(op, at)
			var err error
			if req == nil {
				err = h.applyRaw(append([]byte{byte(typ)}, op[1:]...))
			} else {
				err = h.apply(typ, req)
			}
			got := ""
			if err != nil {
				got = tokens.AsError(err).Code
			}
			if got != want {
				t.Fatalf("command %d (%s %+v): got %q (%v), model says %q", i/4, typ, req, got, err, want)
			}
			m.check(t, h.f.State())
		}
		checkInvariants(t, h.f.State())
		snap := snapshotBytes(t, h.f)
		g := restoreInto(t, snap)
		if !reflect.DeepEqual(freeze(g.State()), freeze(h.f.State())) {
			t.Fatal("state changed across snapshot and restore")
		}
	})
}

var (
	modelPools  = []string{"github", "openai", "stripe"}
	modelIDs    = []string{"tok_a", "tok_b", "tok_c", "tok_d", "tok_e", "tok_f"}
	modelValues = []string{"v1", "v2", "v3", "v4", "v5"}
	modelOut    = []tokens.Outcome{tokens.OutcomeOK, tokens.OutcomeUnauthorized, tokens.OutcomeForbidden, tokens.OutcomeRateLimited, tokens.OutcomeError, tokens.OutcomeTimeout, "melted"}
)

type modelToken struct {
	fingerprint string
	failed      bool
	until       time.Time // cooldown end, zero if none
}

type model struct {
	pools map[string]map[string]*modelToken
}

func newModel() *model { return &model{pools: map[string]map[string]*modelToken{}} }

// command turns op into a command, applies it to the model, and returns the
// error code the FSM must answer with ("" for success). A nil request
// means: send op's last three bytes as the body of an entry of type typ.
func (m *model) command(op []byte, at time.Time) (MessageType, any, string) {
	kind, a, b, c := op[0]%7, op[1], op[2], op[3]
	pool := modelPools[int(a)%len(modelPools)]
	toks, exists := m.pools[pool]
	switch kind {
	case 0:
		req := poolReq(pool, at, func(p *tokens.Pool) {
			p.Selection = []tokens.SelectionPolicy{"", tokens.SelectPriority, tokens.SelectRoundRobin, "random"}[b%4]
			p.MinHealthy = int(c) - 8
		})
		if b%4 == 3 || c < 8 {
			return PoolUpsertType, req, tokens.CodeInvalid
		}
		if !exists {
			m.pools[pool] = map[string]*modelToken{}
		}
		return PoolUpsertType, req, ""
	case 1:
		req := PoolDeleteRequest{Name: pool, Force: b%2 == 1, At: at}
		switch {
		case !exists:
			return PoolDeleteType, req, tokens.CodePoolNotFound
		case len(toks) > 0 && !req.Force:
			return PoolDeleteType, req, tokens.CodeConflict
		}
		delete(m.pools, pool)
		return PoolDeleteType, req, ""
	case 2:
		id := modelIDs[int(b)%len(modelIDs)]
		value := modelValues[int(c)%len(modelValues)]
		req := tokenReq(pool, id, value, int(c>>3)%3-1, at, func(tk *tokens.Token) {
			if c&0x80 != 0 {
				tk.ExpiresAt = at.Add(time.Duration(int(b>>4)-4) * time.Minute)
			}
		})
		fp := req.Token.Fingerprint
		switch {
		case c&0x80 != 0 && !req.Token.ExpiresAt.After(at):
			return TokenAddType, req, tokens.CodeInvalid
		case !exists:
			return TokenAddType, req, tokens.CodePoolNotFound
		case toks[id] != nil:
			return TokenAddType, req, tokens.CodeConflict
		}
		for _, t := range toks {
			if t.fingerprint == fp {
				return TokenAddType, req, tokens.CodeConflict
			}
		}
		toks[id] = &modelToken{fingerprint: fp}
		return TokenAddType, req, ""
	case 3:
		id := modelIDs[int(b)%len(modelIDs)]
		req := TokenRemoveRequest{Pool: pool, ID: id, At: at}
		switch {
		case !exists:
			return TokenRemoveType, req, tokens.CodePoolNotFound
		case toks[id] == nil:
			return TokenRemoveType, req, tokens.CodeTokenNotFound
		}
		delete(toks, id)
		return TokenRemoveType, req, ""
	case 4, 5:
		// One to three reports about tokens that may or may not exist.
		var req TokenReportRequest
		for k := range 1 + int(c)%3 {
			rp := modelPools[(int(a)+k)%len(modelPools)]
			id := modelIDs[(int(b)+k)%len(modelIDs)]
			o := modelOut[(int(c>>2)+k)%len(modelOut)]
			rAt := at.Add(-time.Duration(b%4) * time.Minute) // reports arrive late
			until := rAt.Add(time.Duration(1+int(c>>4)) * time.Minute)
			r := report(rp, id, o, rAt, time.Time{})
			if o == tokens.OutcomeRateLimited {
				r.Until = until
			}
			req.Reports = append(req.Reports, r)
		}
		for _, r := range req.Reports {
			if r.Outcome == "melted" {
				return TokenReportType, req, tokens.CodeInvalid
			}
		}
		for _, r := range req.Reports {
			t := m.pools[r.Pool][r.TokenID]
			if t == nil || t.failed {
				continue
			}
			switch r.Outcome {
			case tokens.OutcomeUnauthorized, tokens.OutcomeForbidden:
				t.failed, t.until = true, time.Time{}
			case tokens.OutcomeRateLimited:
				if !r.At.Before(t.until) || r.Until.After(t.until) {
					t.until = r.Until
				}
			}
		}
		return TokenReportType, req, ""
	}
	// Entries that are not commands: rejected, or ignored with the flag.
	typ := MessageType(6 + b%100)
	if c%2 == 1 {
		return typ | IgnoreUnknownTypeFlag, nil, ""
	}
	return typ, nil, tokens.CodeInvalid
}

// check compares the FSM's state with the model.
func (m *model) check(t *testing.T, s *State) {
	t.Helper()
	var gotPools []string
	for _, ps := range s.Pools() {
		gotPools = append(gotPools, ps.Pool.Name)
	}
	if want := slices.Sorted(maps.Keys(m.pools)); !slices.Equal(gotPools, want) {
		t.Fatalf("pools %v, model has %v", gotPools, want)
	}
	for name, toks := range m.pools {
		ps, _ := s.Pool(name)
		var got []string
		for _, tk := range ps.Tokens {
			got = append(got, tk.ID)
			mt := toks[tk.ID]
			if mt == nil {
				continue
			}
			if failed := tk.Health.State == tokens.Failed; failed != mt.failed {
				t.Fatalf("%s/%s health %+v, model says failed=%v", name, tk.ID, tk.Health, mt.failed)
			}
			if !mt.failed && !mt.until.IsZero() && (tk.Health.State != tokens.Cooldown || !tk.Health.Until.Equal(mt.until)) {
				t.Fatalf("%s/%s health %+v, model says cooldown until %v", name, tk.ID, tk.Health, mt.until)
			}
		}
		slices.Sort(got)
		if want := slices.Sorted(maps.Keys(toks)); !slices.Equal(got, want) {
			t.Fatalf("pool %s holds %v, model has %v", name, got, want)
		}
	}
}
