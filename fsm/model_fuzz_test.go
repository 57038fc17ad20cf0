package fsm

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/tokend/tokend/tokens"
)

// FuzzApplyCommands drives the FSM with well-formed commands built from the
// fuzz input, so the fuzzer explores sequences of writes rather than JSON
// syntax, and checks every answer, every token's health and every event
// against a small model of the rules.
//
// Each command is 4 bytes: kind, a, b, c.
func FuzzApplyCommands(f *testing.F) {
	f.Add([]byte{0, 0, 0, 8, 2, 0, 0, 1, 2, 0, 1, 1, 4, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1, 0})
	f.Add([]byte{0, 1, 1, 13, 2, 1, 2, 3, 2, 1, 3, 3, 4, 1, 2, 3, 4, 1, 3, 1, 3, 1, 2, 0, 5, 1, 2, 3, 6, 1, 2, 0, 6, 1, 3, 1})
	f.Add([]byte{0, 2, 0, 8, 2, 2, 0, 0, 2, 2, 1, 0, 2, 2, 2, 0, 4, 2, 0, 4, 4, 2, 0, 3, 0, 2, 2, 200, 7, 2, 0, 1, 7, 2, 0, 0, 6, 0, 0, 0})
	// A cooldown extended by a later decision (found by the fuzzer: the
	// event was stamped with the cooldown's start, not the decision's time).
	f.Add([]byte("01B000002120$12\x8b$01\xa6"))
	// Every pool and token, then a health entry for every c and a reset
	// now and then: every state, deadline, and number of changes.
	var all []byte
	for a := range byte(len(modelPools)) {
		all = append(all, 0, a, 0, 8)
		for b := range byte(len(modelIDs)) {
			all = append(all, 2, a, b, b)
		}
	}
	for c := range byte(160) {
		all = append(all, 4+c%2, c%3, c/3, c)
		if c%16 == 15 {
			all = append(all, 6, c%3, c/16, c)
		}
	}
	f.Add(all)

	f.Fuzz(func(t *testing.T, program []byte) {
		m := newModel()
		h := newHarness(t)
		for i := 0; i+4 <= len(program) && i < 4*200; i += 4 {
			op := program[i : i+4]
			at := t0.Add(time.Duration(i/4) * time.Minute)
			typ, req, want, events := m.command(op, h.index+1, at)
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
			if !sameEvents(h.last, events) {
				t.Fatalf("command %d (%s %+v) recorded\n%+v\nmodel says\n%+v", i/4, typ, req, h.last, events)
			}
			m.check(t, h.f.State())
		}
		checkInvariants(t, h.f.State())
		// The model's history holds fewer than MaxEvents events: all are
		// kept.
		logged, truncated := h.f.Events(0, tokens.MaxEvents)
		if !sameEvents(logged, m.events) || truncated {
			t.Fatalf("event log (truncated %v)\n%+v\nmodel says\n%+v", truncated, logged, m.events)
		}
		snap := snapshotBytes(t, h.f)
		g := restoreInto(t, snap)
		if !reflect.DeepEqual(freeze(g.State()), freeze(h.f.State())) {
			t.Fatal("state changed across snapshot and restore")
		}
		if !reflect.DeepEqual(eventsOf(g), eventsOf(h.f)) {
			t.Fatal("events changed across snapshot and restore")
		}
	})
}

func sameEvents(a, b []tokens.Event) bool {
	return len(a) == 0 && len(b) == 0 || reflect.DeepEqual(a, b)
}

var (
	modelPools  = []string{"github", "openai", "stripe"}
	modelIDs    = []string{"tok_a", "tok_b", "tok_c", "tok_d", "tok_e", "tok_f"}
	modelValues = []string{"v1", "v2", "v3", "v4", "v5"}
	// modelStates are the states of health changes: every valid one, and
	// two that are not.
	modelStates = []tokens.HealthState{tokens.Healthy, tokens.Degraded, tokens.Cooldown, tokens.Failed, tokens.Degraded, tokens.Cooldown, "melted", ""}
	modelPolicy = []tokens.SelectionPolicy{"", tokens.SelectPriority, tokens.SelectRoundRobin, tokens.SelectLeastUsed, tokens.SelectRandom, "fastest"}
	modelBy     = []string{"alice", "bob", ""}
)

type modelToken struct {
	fingerprint string
	health      tokens.Health
	modify      uint64
}

type model struct {
	pools  map[string]map[string]*modelToken
	events []tokens.Event
}

func newModel() *model { return &model{pools: map[string]map[string]*modelToken{}} }

// effective is the state h stands for at now: no state yet is healthy, and
// a cooldown ends by itself at its deadline.
func effective(h tokens.Health, now time.Time) tokens.HealthState {
	if h.State == "" || (h.State == tokens.Cooldown && !now.Before(h.Until)) {
		return tokens.Healthy
	}
	return h.State
}

// merge restates the rules a health decision next is applied to a token's
// health cur with, and says whether it changes anything.
func merge(cur, next tokens.Health) (tokens.Health, bool) {
	now := effective(cur, next.Since)
	if now == tokens.Failed {
		return cur, false // only an operator's reset ends a failure
	}
	switch next.State {
	case tokens.Failed:
		return next, true
	case tokens.Cooldown:
		switch {
		case !next.Until.After(next.Since):
			return cur, false // a cooldown that ends before it starts
		case now != tokens.Cooldown:
			return next, true
		case !next.Until.After(cur.Until):
			return cur, false // a cooldown never shortens
		}
		next.Since = cur.Since // it extends the cooldown the token is in
		return next, true
	case tokens.Degraded:
		if now == tokens.Healthy {
			return next, true
		}
	case tokens.Healthy:
		if now == tokens.Degraded {
			return next, true
		}
	}
	return cur, false
}

// command turns op into a command, applies it to the model, and returns the
// error code the FSM must answer with ("" for success) and the events it
// must record at index. A nil request means: send op's last three bytes as
// the body of an entry of type typ.
func (m *model) command(op []byte, index uint64, at time.Time) (MessageType, any, string, []tokens.Event) {
	kind, a, b, c := op[0]%8, op[1], op[2], op[3]
	pool := modelPools[int(a)%len(modelPools)]
	toks, exists := m.pools[pool]
	record := func(evs ...tokens.Event) []tokens.Event {
		m.events = append(m.events, evs...)
		return evs
	}
	switch kind {
	case 0:
		policy := modelPolicy[int(b)%len(modelPolicy)]
		health := int(b>>4) % 4
		req := poolReq(pool, at, func(p *tokens.Pool) {
			p.Selection = policy
			p.MinHealthy = int(c) - 8
			switch health {
			case 1:
				p.Health = tokens.HealthPolicy{Window: 10, DefaultCooldown: tokens.Duration(30 * time.Second)}
			case 2:
				p.Health = tokens.HealthPolicy{ReportQuorum: 3, ReportWindow: tokens.Duration(time.Minute)}
			case 3:
				p.Health = tokens.HealthPolicy{Window: tokens.MaxWindow + 1}
			}
		})
		if policy == "fastest" || c < 8 || health == 3 {
			return PoolUpsertType, req, tokens.CodeInvalid, nil
		}
		if !exists {
			m.pools[pool] = map[string]*modelToken{}
		}
		return PoolUpsertType, req, "", record(tokens.Event{Index: index, At: at, Type: tokens.EventPoolApplied, Pool: pool})
	case 1:
		req := PoolDeleteRequest{Name: pool, Force: b%2 == 1, At: at}
		switch {
		case !exists:
			return PoolDeleteType, req, tokens.CodePoolNotFound, nil
		case len(toks) > 0 && !req.Force:
			return PoolDeleteType, req, tokens.CodeConflict, nil
		}
		ev := tokens.Event{Index: index, At: at, Type: tokens.EventPoolDeleted, Pool: pool}
		if len(toks) > 0 {
			ev.Reason = fmt.Sprintf("forced, with %d tokens", len(toks))
		}
		delete(m.pools, pool)
		return PoolDeleteType, req, "", record(ev)
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
			return TokenAddType, req, tokens.CodeInvalid, nil
		case !exists:
			return TokenAddType, req, tokens.CodePoolNotFound, nil
		case toks[id] != nil:
			return TokenAddType, req, tokens.CodeConflict, nil
		}
		for _, t := range toks {
			if t.fingerprint == fp {
				return TokenAddType, req, tokens.CodeConflict, nil
			}
		}
		toks[id] = &modelToken{fingerprint: fp, health: tokens.Health{State: tokens.Healthy, Since: at}, modify: index}
		return TokenAddType, req, "", record(tokens.Event{Index: index, At: at, Type: tokens.EventTokenAdded, Pool: pool, Token: id, To: tokens.Healthy})
	case 3:
		id := modelIDs[int(b)%len(modelIDs)]
		req := TokenRemoveRequest{Pool: pool, ID: id, At: at}
		switch {
		case !exists:
			return TokenRemoveType, req, tokens.CodePoolNotFound, nil
		case toks[id] == nil:
			return TokenRemoveType, req, tokens.CodeTokenNotFound, nil
		}
		delete(toks, id)
		return TokenRemoveType, req, "", record(tokens.Event{Index: index, At: at, Type: tokens.EventTokenRemoved, Pool: pool, Token: id})
	case 4, 5:
		// One to three decisions about tokens that may or may not exist,
		// made a little before the entry, in any order.
		var req TokenHealthRequest
		for k := range 1 + int(c)%3 {
			since := at.Add(-time.Duration((int(b)+k)%4) * time.Minute)
			hl := tokens.Health{
				State:    modelStates[(int(c>>2)+k)%len(modelStates)],
				Reason:   fmt.Sprintf("reason-%d", k),
				Since:    since,
				Reporter: fmt.Sprintf("node-%d", (int(a)+k)%3),
			}
			if hl.State == tokens.Cooldown || kind == 5 {
				// Some cooldowns end before they start. Other states
				// carry a deadline at times; it means nothing to them.
				hl.Until = since.Add(time.Duration(int(c>>4)-3) * time.Minute)
			}
			req.Changes = append(req.Changes, change(modelPools[(int(a)+k)%len(modelPools)], modelIDs[(int(b)+k)%len(modelIDs)], hl))
		}
		for _, ch := range req.Changes {
			switch ch.Health.State {
			case tokens.Healthy, tokens.Degraded, tokens.Cooldown, tokens.Failed:
			default:
				return TokenHealthType, req, tokens.CodeInvalid, nil
			}
		}
		var events []tokens.Event
		for _, ch := range req.Changes {
			t := m.pools[ch.Pool][ch.TokenID]
			if t == nil {
				continue
			}
			next, changed := merge(t.health, ch.Health)
			if !changed {
				continue
			}
			events = append(events, tokens.Event{
				Index: index, At: ch.Health.Since, Type: tokens.EventTokenHealth, Pool: ch.Pool, Token: ch.TokenID,
				From: effective(t.health, ch.Health.Since), To: next.State, Reason: next.Reason, Reporter: next.Reporter,
			})
			t.health, t.modify = next, index
		}
		return TokenHealthType, req, "", record(events...)
	case 6:
		id := modelIDs[int(b)%len(modelIDs)]
		who := modelBy[int(c)%len(modelBy)]
		req := TokenResetRequest{Pool: pool, ID: id, By: who, At: at}
		switch {
		case !exists:
			return TokenResetType, req, tokens.CodePoolNotFound, nil
		case toks[id] == nil:
			return TokenResetType, req, tokens.CodeTokenNotFound, nil
		}
		t := toks[id]
		reason := tokens.ResetHealth(at, who).Reason
		ev := tokens.Event{Index: index, At: at, Type: tokens.EventTokenReset, Pool: pool, Token: id, From: effective(t.health, at), To: tokens.Healthy, Reason: reason, Reporter: who}
		t.health, t.modify = tokens.Health{State: tokens.Healthy, Reason: reason, Since: at, Reporter: who}, index
		return TokenResetType, req, "", record(ev)
	}
	// Entries that are not commands: rejected, or ignored with the flag.
	typ := MessageType(7 + b%100)
	if c%2 == 1 {
		return typ | IgnoreUnknownTypeFlag, nil, "", nil
	}
	return typ, nil, tokens.CodeInvalid, nil
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
			if tk.Health != mt.health || tk.ModifyIndex != mt.modify {
				t.Fatalf("%s/%s health %+v (modify index %d), model says %+v (%d)", name, tk.ID, tk.Health, tk.ModifyIndex, mt.health, mt.modify)
			}
		}
		slices.Sort(got)
		if want := slices.Sorted(maps.Keys(toks)); !slices.Equal(got, want) {
			t.Fatalf("pool %s holds %v, model has %v", name, got, want)
		}
	}
}
