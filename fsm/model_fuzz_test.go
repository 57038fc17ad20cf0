package fsm

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tokend/tokend/tokens"
)

// FuzzApplyCommands drives the FSM with well-formed commands built from the
// fuzz input, so the fuzzer explores sequences of writes rather than JSON
// syntax, and checks every answer, every token's health and lifecycle,
// every open rotation, every pool's rotation status and every event against
// a small model of the rules.
//
// Each command is 4 bytes: kind, a, b, c.
func FuzzApplyCommands(f *testing.F) {
	f.Add([]byte{0, 0, 0, 8, 2, 0, 0, 1, 2, 0, 1, 1, 4, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1, 0})
	f.Add([]byte{0, 1, 1, 13, 2, 1, 2, 3, 2, 1, 3, 3, 4, 1, 2, 3, 4, 1, 3, 1, 3, 1, 2, 0, 5, 1, 2, 3, 6, 1, 2, 0, 6, 1, 3, 1})
	f.Add([]byte{0, 2, 0, 8, 2, 2, 0, 0, 2, 2, 1, 0, 2, 2, 2, 0, 4, 2, 0, 4, 4, 2, 0, 3, 0, 2, 2, 200, 7, 2, 0, 1, 7, 2, 0, 0, 6, 0, 0, 0})
	// A cooldown extended by a later decision (found by the fuzzer: the
	// event was stamped with the cooldown's start, not the decision's time).
	f.Add([]byte("01B000002120$12\x8b$01\xa6"))
	// A decision made before an operator's reset and applied after it (found
	// by the fuzzer: the model did not know such a decision is stale).
	f.Add([]byte("01B02110&110$1700"))
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
	// Rotations, in an issuing pool (c odd) with a grace of 30s: tok_a
	// replaced by tok_c; tok_b's rotation resumed, its old term's commit
	// refused, failed with a long error; a top-up begun and abandoned; an
	// orphan, and its value again; tok_a reaped; tok_b rotated again,
	// resumed and committed, retiring at its expiry, which has passed.
	rot := []byte{
		0, 0, 0, 9, 2, 0, 0, 0, 2, 0, 0x61, 0x81,
		8, 0, 0, 4, 10, 0, 8, 2,
		8, 0, 5, 4, 9, 0, 1, 2, 10, 0, 13, 27, 11, 0, 1, 2,
		8, 0, 30, 20, 12, 0, 2, 1,
		13, 0, 22, 8, 13, 0, 5, 8, 14, 0, 0, 1,
		8, 0, 5, 4, 9, 0, 1, 3, 10, 0, 21, 225,
	}
	f.Add(rot)
	// The same with a grace of 2h, then the default; errors cut inside a
	// character.
	for _, c := range []byte{11, 13} {
		variant := slices.Clone(rot)
		variant[3], variant[35] = c, c-8
		f.Add(variant)
	}
	// Two pools, rotations interleaved, a pool deleted with rotations
	// open, and commands about it afterwards.
	f.Add([]byte{
		0, 0, 0, 9, 0, 1, 0, 11, 2, 0, 0, 0, 2, 1, 0, 0,
		8, 0, 0, 4, 8, 1, 0, 4, 8, 0, 30, 4, 1, 1, 1, 0,
		10, 1, 0, 1, 10, 0, 1, 1, 10, 0, 8, 1, 13, 1, 0, 0, 12, 0, 2, 0,
	})

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
		checkRotationRules(t, h.f.State())
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
	// Rotations: three ids and one that is not valid, the reasons and one
	// missing, the leaders, and the graces of pools (0: the default).
	modelRotIDs  = []string{"rot_1", "rot_2", "rot_3", "Rot 4"}
	modelReasons = []string{tokens.ReasonManual, tokens.ReasonRenewBefore, tokens.ReasonMaxAge, tokens.ReasonFailed, tokens.ReasonSize, ""}
	modelLeaders = []string{"node-1", "node-2", "node-3"}
	modelGraces  = []time.Duration{0, 30 * time.Second, 2 * time.Hour}
	// modelErrors are provider errors and abandon reasons: none, short,
	// and longer than the 512 bytes kept, cut between characters or
	// inside one.
	modelErrors = []string{"", "issuer: 503 Service Unavailable", strings.Repeat("x", 600), "x" + strings.Repeat("€", 300), "xx" + strings.Repeat("€", 300), strings.Repeat("€", 300)}
)

type modelToken struct {
	fingerprint string
	health      tokens.Health
	modify      uint64
	lifecycle   tokens.Lifecycle
	expires     time.Time
	retireAt    time.Time
	rotationID  string
	generation  uint64
}

type modelPool struct {
	tokens map[string]*modelToken
	issues bool
	grace  time.Duration
	// rotations are the open rotations, in the order the FSM keeps them:
	// a begin appends one, a resume moves it to the end.
	rotations []tokens.Rotation
	status    tokens.RotationStatus
}

func (p *modelPool) rotation(id string) (tokens.Rotation, bool) {
	for _, r := range p.rotations {
		if r.ID == id {
			return r, true
		}
	}
	return tokens.Rotation{}, false
}

func (p *modelPool) closeRotation(id string) {
	p.rotations = slices.DeleteFunc(p.rotations, func(r tokens.Rotation) bool { return r.ID == id })
}

func (p *modelPool) holds(fingerprint string) bool {
	for _, t := range p.tokens {
		if t.fingerprint == fingerprint {
			return true
		}
	}
	return false
}

type model struct {
	pools  map[string]*modelPool
	events []tokens.Event
}

func newModel() *model { return &model{pools: map[string]*modelPool{}} }

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
	if cur.State == tokens.Healthy && cur.Reason == tokens.ResetReason && next.Since.Before(cur.Since) {
		return cur, false // decided before an operator's reset: stale
	}
	now := effective(cur, next.Since)
	if now == tokens.Failed {
		if next.State == tokens.Healthy && next.Reporter == tokens.ProbeReporter {
			return next, true // a passing probe ends a failure
		}
		return cur, false // otherwise only an operator's reset does
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

// cut restates how errors and reasons are kept: at most 512 bytes, cut
// between characters, marked with "...".
func cut(s string) string {
	if len(s) <= 512 {
		return s
	}
	n := 512
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

// termFor is the term a command about rotation r carries: usually r's,
// sometimes one more or one less, by two bits of x.
func termFor(r tokens.Rotation, open bool, x byte) uint64 {
	term := uint64(3)
	if open {
		term = r.Term
	}
	switch x & 3 {
	case 2:
		term++
	case 3:
		term--
	}
	return term
}

// command turns op into a command, applies it to the model, and returns the
// error code the FSM must answer with ("" for success) and the events it
// must record at index. A nil request means: send op's last three bytes as
// the body of an entry of type typ.
func (m *model) command(op []byte, index uint64, at time.Time) (MessageType, any, string, []tokens.Event) {
	kind, a, b, c := op[0]%16, op[1], op[2], op[3]
	pool := modelPools[int(a)%len(modelPools)]
	p, exists := m.pools[pool]
	var toks map[string]*modelToken
	if exists {
		toks = p.tokens
	}
	record := func(evs ...tokens.Event) []tokens.Event {
		m.events = append(m.events, evs...)
		return evs
	}
	switch kind {
	case 0:
		policy := modelPolicy[int(b)%len(modelPolicy)]
		health := int(b>>4) % 4
		// An odd c makes a pool whose provider issues, with one of the
		// graces.
		issues, grace := c%2 == 1, time.Duration(0)
		if issues {
			grace = modelGraces[int(c>>1)%len(modelGraces)]
		}
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
			if issues {
				p.Provider = tokens.ProviderSpec{Type: tokens.ProviderExec, Command: []string{"issue"}}
				p.Rotation.Grace = tokens.Duration(grace)
			}
		})
		if policy == "fastest" || c < 8 || health == 3 {
			return PoolUpsertType, req, tokens.CodeInvalid, nil
		}
		if !exists {
			p = &modelPool{tokens: map[string]*modelToken{}}
			m.pools[pool] = p
		}
		// An update keeps the tokens, the open rotations and the status.
		p.issues, p.grace = issues, grace
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
		case p.holds(fp):
			return TokenAddType, req, tokens.CodeConflict, nil
		}
		toks[id] = &modelToken{fingerprint: fp, health: tokens.Health{State: tokens.Healthy, Since: at}, modify: index, lifecycle: tokens.LifecycleActive, expires: req.Token.ExpiresAt}
		return TokenAddType, req, "", record(tokens.Event{Index: index, At: at, Type: tokens.EventTokenAdded, Pool: pool, Token: id, To: tokens.Healthy})
	case 3, 14:
		// Removed by an operator (3), or by the reaper, which says why.
		id := modelIDs[int(b)%len(modelIDs)]
		req := TokenRemoveRequest{Pool: pool, ID: id, At: at}
		if kind == 14 {
			req.Reason = modelErrors[int(c)%len(modelErrors)]
		}
		switch {
		case !exists:
			return TokenRemoveType, req, tokens.CodePoolNotFound, nil
		case toks[id] == nil:
			return TokenRemoveType, req, tokens.CodeTokenNotFound, nil
		}
		delete(toks, id)
		return TokenRemoveType, req, "", record(tokens.Event{Index: index, At: at, Type: tokens.EventTokenRemoved, Pool: pool, Token: id, Reason: cut(req.Reason)})
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
				Reporter: []string{"node-0", "node-1", "node-2", tokens.ProbeReporter}[(int(a)+k)%4],
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
			var t *modelToken
			if mp := m.pools[ch.Pool]; mp != nil {
				t = mp.tokens[ch.TokenID]
			}
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
	case 8, 15:
		return m.begin(p, pool, a, b, c, index, at, record)
	case 9:
		id := modelRotIDs[int(b)%len(modelRotIDs)]
		req := RotationResumeRequest{Pool: pool, ID: id, Term: uint64(c % 8), Leader: modelLeaders[int(c>>3)%len(modelLeaders)], At: at}
		if !exists {
			return RotationResumeType, req, tokens.CodePoolNotFound, nil
		}
		r, open := p.rotation(id)
		switch {
		case !open:
			return RotationResumeType, req, tokens.CodeConflict, nil
		case req.Term <= r.Term:
			return RotationResumeType, req, tokens.CodeConflict, nil
		}
		ev := tokens.Event{
			Index: index, At: at, Type: tokens.EventRotationResumed, Pool: pool, Token: r.Replaces, Reporter: req.Leader, Rotation: id,
			Reason: fmt.Sprintf("attempt %d; attempt %d by %s may have issued a credential that was never recorded, unless the issuer honours idempotency keys", r.Attempts+1, r.Attempts, r.Leader),
		}
		p.closeRotation(id)
		r.Term, r.Leader, r.Attempts = req.Term, req.Leader, r.Attempts+1
		p.rotations = append(p.rotations, r)
		return RotationResumeType, req, "", record(ev)
	case 10:
		return m.commit(p, pool, a, b, c, index, at, record)
	case 11:
		id := modelRotIDs[int(b)%len(modelRotIDs)]
		var r tokens.Rotation
		open := false
		if exists {
			r, open = p.rotation(id)
		}
		req := RotationFailRequest{Pool: pool, ID: id, Term: termFor(r, open, c>>3), Error: modelErrors[int(c)%len(modelErrors)], NextAttempt: at.Add(time.Duration(c>>5) * time.Second), At: at}
		switch {
		case !exists:
			return RotationFailType, req, tokens.CodePoolNotFound, nil
		case !open, req.Term != r.Term:
			return RotationFailType, req, tokens.CodeConflict, nil
		}
		p.closeRotation(id)
		p.status.Failures++
		p.status.NextAttempt, p.status.LastError = req.NextAttempt, cut(req.Error)
		return RotationFailType, req, "", record(tokens.Event{Index: index, At: at, Type: tokens.EventRotationFailed, Pool: pool, Token: r.Replaces, Reason: cut(req.Error), Reporter: r.Leader, Rotation: id})
	case 12:
		id := modelRotIDs[int(b)%len(modelRotIDs)]
		req := RotationAbandonRequest{Pool: pool, ID: id, Reason: modelErrors[int(c)%len(modelErrors)], At: at}
		if !exists {
			return RotationAbandonType, req, tokens.CodePoolNotFound, nil
		}
		r, open := p.rotation(id)
		if !open {
			return RotationAbandonType, req, tokens.CodeConflict, nil
		}
		p.closeRotation(id)
		return RotationAbandonType, req, "", record(tokens.Event{Index: index, At: at, Type: tokens.EventRotationAbandoned, Pool: pool, Token: r.Replaces, Reason: cut(req.Reason), Rotation: id})
	case 13:
		// A credential no rotation could record, with an expiry in the
		// past at times: it is kept to be revoked, whatever its expiry.
		id := modelIDs[int(b)%len(modelIDs)]
		rotID := ""
		if k := int(b>>3) % (len(modelRotIDs) + 1); k < len(modelRotIDs) {
			rotID = modelRotIDs[k]
		}
		req := TokenOrphanRequest{Token: tokenReq(pool, id, modelValues[int(c)%len(modelValues)], 0, at, func(tk *tokens.Token) {
			tk.RotationID, tk.Generation = rotID, uint64(c>>4)
			if c&8 != 0 {
				tk.ExpiresAt = at.Add(-time.Hour)
			}
		}).Token, Reason: modelErrors[int(c>>1)%len(modelErrors)], At: at}
		switch {
		case !exists:
			return TokenOrphanType, req, tokens.CodePoolNotFound, nil
		case p.holds(req.Token.Fingerprint):
			return TokenOrphanType, req, "", nil // tracked already: nothing changes
		case toks[id] != nil:
			return TokenOrphanType, req, tokens.CodeConflict, nil
		}
		toks[id] = &modelToken{
			fingerprint: req.Token.Fingerprint, health: tokens.Health{State: tokens.Healthy, Since: at}, modify: index,
			lifecycle: tokens.LifecycleOrphaned, expires: req.Token.ExpiresAt, retireAt: at, rotationID: rotID, generation: req.Token.Generation,
		}
		return TokenOrphanType, req, "", record(tokens.Event{Index: index, At: at, Type: tokens.EventTokenOrphaned, Pool: pool, Token: id, Reason: cut(req.Reason), Rotation: rotID})
	}
	// Entries that are not commands: rejected, or ignored with the flag.
	typ := MessageType(13 + b%100)
	if c%2 == 1 {
		return typ | IgnoreUnknownTypeFlag, nil, "", nil
	}
	return typ, nil, tokens.CodeInvalid, nil
}

// begin opens a rotation: of a token (one of modelIDs) or to top the pool
// up, in a term from 0 (not valid) to 3, with the generation after the
// pool's, or a stale or skipped one.
func (m *model) begin(p *modelPool, pool string, a, b, c byte, index uint64, at time.Time, record func(...tokens.Event) []tokens.Event) (MessageType, any, string, []tokens.Event) {
	r := tokens.Rotation{
		ID: modelRotIDs[int(b)%len(modelRotIDs)], Pool: pool, Reason: modelReasons[int(c>>4)%len(modelReasons)],
		Term: uint64(c>>2) % 4, Leader: modelLeaders[int(a>>2)%len(modelLeaders)],
		// What the proposer says here is not used.
		StartedAt: at.Add(-time.Hour), Attempts: 5,
	}
	if k := int(b>>2) % (len(modelIDs) + 2); k < len(modelIDs) {
		r.Replaces = modelIDs[k]
	}
	if p != nil {
		r.Generation = p.status.Generation
	}
	r.Generation += []uint64{1, 1, 2, 0}[c%4]
	req := RotationBeginRequest{Rotation: r, At: at}
	switch {
	case !tokens.ValidName(r.ID) || r.Term == 0 || r.Reason == "":
		return RotationBeginType, req, tokens.CodeInvalid, nil
	case p == nil:
		return RotationBeginType, req, tokens.CodePoolNotFound, nil
	case !p.issues, r.Generation != p.status.Generation+1, len(p.rotations) >= tokens.MaxPoolSize:
		return RotationBeginType, req, tokens.CodeConflict, nil
	}
	if _, open := p.rotation(r.ID); open {
		return RotationBeginType, req, tokens.CodeConflict, nil
	}
	if r.Replaces != "" {
		t := p.tokens[r.Replaces]
		if t == nil {
			return RotationBeginType, req, tokens.CodeTokenNotFound, nil
		}
		rotating := slices.ContainsFunc(p.rotations, func(o tokens.Rotation) bool { return o.Replaces == r.Replaces })
		if t.lifecycle != tokens.LifecycleActive || rotating {
			return RotationBeginType, req, tokens.CodeConflict, nil
		}
	}
	r.StartedAt, r.Attempts = at, 1
	p.rotations = append(p.rotations, r)
	p.status.Generation = r.Generation
	return RotationBeginType, req, "", record(tokens.Event{Index: index, At: at, Type: tokens.EventRotationBegun, Pool: pool, Token: r.Replaces, Reason: r.Reason, Reporter: r.Leader, Rotation: r.ID})
}

// commit records the token a rotation issued: in its term or another, of
// the pool or another, expiring too soon or not, and with an id or a value
// the pool may hold.
func (m *model) commit(p *modelPool, pool string, a, b, c byte, index uint64, at time.Time, record func(...tokens.Event) []tokens.Event) (MessageType, any, string, []tokens.Event) {
	id := modelRotIDs[int(b)%len(modelRotIDs)]
	var r tokens.Rotation
	open := false
	if p != nil {
		r, open = p.rotation(id)
	}
	tokPool := pool
	if b&0xc0 == 0xc0 {
		tokPool = modelPools[(int(a)+1)%len(modelPools)]
	}
	expires := []time.Time{{}, {}, {}, {}, at, at.Add(tokens.ExpiryMargin), at.Add(tokens.ExpiryMargin + time.Second), at.Add(time.Hour)}[c>>5]
	tk := tokenReq(tokPool, modelIDs[int(b>>2)%len(modelIDs)], modelValues[int(c)%len(modelValues)], 0, at, func(tk *tokens.Token) {
		tk.ExpiresAt = expires
		// What the proposer says here is not used.
		tk.Lifecycle, tk.RetireAt, tk.RotationID, tk.Generation = tokens.LifecycleRetiring, at, "rot_x", 99
	}).Token
	req := RotationCommitRequest{Pool: pool, ID: id, Term: termFor(r, open, c>>3), Token: tk, At: at}
	switch {
	case p == nil:
		return RotationCommitType, req, tokens.CodePoolNotFound, nil
	case !open, req.Term != r.Term:
		return RotationCommitType, req, tokens.CodeConflict, nil
	case tokPool != pool, !expires.IsZero() && !expires.After(at.Add(tokens.ExpiryMargin)):
		return RotationCommitType, req, tokens.CodeInvalid, nil
	}
	// An orphan of this rotation holding this value is the credential
	// being committed: it gives way instead of blocking the commit.
	promoted := ""
	for oid, o := range p.tokens {
		if o.lifecycle == tokens.LifecycleOrphaned && o.rotationID == id && o.fingerprint == tk.Fingerprint {
			promoted = oid
		}
	}
	var saved *modelToken
	if promoted != "" {
		saved = p.tokens[promoted]
		delete(p.tokens, promoted)
	}
	if p.tokens[tk.ID] != nil || p.holds(tk.Fingerprint) {
		if saved != nil {
			p.tokens[promoted] = saved
		}
		return RotationCommitType, req, tokens.CodeConflict, nil
	}
	var events []tokens.Event
	if promoted != "" {
		events = append(events, tokens.Event{Index: index, At: at, Type: tokens.EventTokenRemoved, Pool: pool, Token: promoted, Reason: "the orphan is the credential its rotation committed", Rotation: id})
	}
	p.closeRotation(id)
	p.status.Failures, p.status.NextAttempt, p.status.LastError, p.status.LastSuccess = 0, time.Time{}, "", at
	events = append(events, tokens.Event{Index: index, At: at, Type: tokens.EventRotationCommitted, Pool: pool, Token: tk.ID, To: tokens.Healthy, Reason: r.Reason, Reporter: r.Leader, Rotation: id})
	// The replaced token, if it is still there and active, retires after
	// the pool's grace, or at its expiry if that is sooner.
	if old := p.tokens[r.Replaces]; old != nil && old.lifecycle == tokens.LifecycleActive {
		grace := p.grace
		if grace == 0 {
			grace = time.Minute
		}
		old.lifecycle, old.modify, old.retireAt = tokens.LifecycleRetiring, index, at.Add(grace)
		if !old.expires.IsZero() && old.expires.Before(old.retireAt) {
			old.retireAt = old.expires
		}
		events = append(events, tokens.Event{Index: index, At: at, Type: tokens.EventTokenRetiring, Pool: pool, Token: r.Replaces, Reason: "replaced by " + tk.ID, Rotation: id})
	}
	p.tokens[tk.ID] = &modelToken{
		fingerprint: tk.Fingerprint, health: tokens.Health{State: tokens.Healthy, Since: at}, modify: index,
		lifecycle: tokens.LifecycleActive, expires: expires, rotationID: id, generation: r.Generation,
	}
	return RotationCommitType, req, "", record(events...)
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
	for name, mp := range m.pools {
		ps, _ := s.Pool(name)
		if ps.Pool.Provider.Issues() != mp.issues {
			t.Fatalf("pool %s issues: %v, model says %v", name, ps.Pool.Provider.Issues(), mp.issues)
		}
		var got []string
		for _, tk := range ps.Tokens {
			got = append(got, tk.ID)
			mt := mp.tokens[tk.ID]
			if mt == nil {
				continue
			}
			if tk.Health != mt.health || tk.ModifyIndex != mt.modify {
				t.Fatalf("%s/%s health %+v (modify index %d), model says %+v (%d)", name, tk.ID, tk.Health, tk.ModifyIndex, mt.health, mt.modify)
			}
			if tk.Fingerprint != mt.fingerprint || tk.Lifecycle != mt.lifecycle || !tk.ExpiresAt.Equal(mt.expires) || !tk.RetireAt.Equal(mt.retireAt) || tk.RotationID != mt.rotationID || tk.Generation != mt.generation {
				t.Fatalf("%s/%s is %s until %s (expires %s), of rotation %q generation %d; model says %s until %s (expires %s), %q, %d",
					name, tk.ID, tk.Lifecycle, tk.RetireAt, tk.ExpiresAt, tk.RotationID, tk.Generation, mt.lifecycle, mt.retireAt, mt.expires, mt.rotationID, mt.generation)
			}
		}
		slices.Sort(got)
		if want := slices.Sorted(maps.Keys(mp.tokens)); !slices.Equal(got, want) {
			t.Fatalf("pool %s holds %v, model has %v", name, got, want)
		}
		var rotations []tokens.Rotation
		for _, r := range ps.Rotations {
			rotations = append(rotations, *r)
		}
		if !sameRotations(rotations, mp.rotations) {
			t.Fatalf("pool %s has open rotations\n%+v\nmodel has\n%+v", name, rotations, mp.rotations)
		}
		if ps.Status != mp.status {
			t.Fatalf("pool %s status %+v, model has %+v", name, ps.Status, mp.status)
		}
	}
}

func sameRotations(a, b []tokens.Rotation) bool {
	return len(a) == 0 && len(b) == 0 || reflect.DeepEqual(a, b)
}
