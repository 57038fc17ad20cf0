package chaos

import (
	"cmp"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// The checks, by name.
const (
	// CheckLinearizable: writes and consistent reads are linearizable,
	// checked by porcupine against a model of each token.
	CheckLinearizable = "linearizable"
	// CheckLostWrites: after the faults are healed and the agents have
	// converged, every acknowledged add not deleted since is on every
	// agent (failed, if a failure was acknowledged), and every
	// acknowledged delete holds on every agent.
	CheckLostWrites = "no-lost-writes"
	// CheckMonotonic: on one agent, the index of each answer is at least
	// that of every answer it gave before the request was made, across
	// concurrent clients and across restarts (not across a wiped data
	// dir). A committed report's index is only a floor for what follows:
	// it names the commit that holds the failure, which may be older.
	CheckMonotonic = "monotonic-reads"
	// CheckDeadTokens: no fetch returns a token deleted or failed at an
	// index at or below the fetch's index; no fetch on the agent that
	// acknowledged a delete or a report returns the token after the
	// acknowledgement; no fetch returns a token past its expires_at.
	CheckDeadTokens = "no-dead-tokens"
	// CheckAvailability: fetches never fail on an agent that holds an
	// eligible token (the stable token, always), except during that
	// agent's own process faults.
	CheckAvailability = "fetch-availability"
	// CheckConvergence: every agent ends with the same pools and tokens.
	CheckConvergence = "convergence"
)

// CheckInput is what the checks look at.
type CheckInput struct {
	Ops    []Op
	Faults []Window
	// Final is every agent's state after convergence; nil skips the
	// lost-write and convergence checks.
	Final []NodeState
	// ArtifactDir receives porcupine's visualization of each token whose
	// history is not linearizable; empty means a new temporary directory.
	ArtifactDir string
	// Timeout bounds porcupine on each token (default 30 s); a token not
	// decided in time is noted, not failed.
	Timeout time.Duration
}

// CheckResult is one check's verdict.
type CheckResult struct {
	Name string
	// Checked counts what the check looked at (operations, tokens).
	Checked int
	// Violations are what it found wrong; empty means it passed.
	Violations []string
	// Notes say what it could not decide.
	Notes []string
}

// maxListed bounds the violations a check lists.
const maxListed = 20

func (c *CheckResult) violate(format string, args ...any) {
	if len(c.Violations) == maxListed {
		c.Violations = append(c.Violations, "… (more left out)")
	}
	if len(c.Violations) > maxListed {
		return
	}
	c.Violations = append(c.Violations, fmt.Sprintf(format, args...))
}

func (c CheckResult) String() string {
	var b strings.Builder
	verdict := "ok"
	if len(c.Violations) > 0 {
		verdict = "FAILED"
	}
	fmt.Fprintf(&b, "check %s: %s (%d checked)\n", c.Name, verdict, c.Checked)
	for _, v := range c.Violations {
		fmt.Fprintf(&b, "  violation: %s\n", v)
	}
	for _, n := range c.Notes {
		fmt.Fprintf(&b, "  note: %s\n", n)
	}
	return b.String()
}

// Check runs every check on a history and returns the verdicts and the
// artifacts written.
func Check(in CheckInput) ([]CheckResult, []string) {
	if in.Timeout == 0 {
		in.Timeout = 30 * time.Second
	}
	lin, artifacts := checkLinearizable(in)
	results := []CheckResult{
		lin,
		checkLostWrites(in),
		checkMonotonic(in),
		checkDeadTokens(in),
		checkAvailability(in),
		checkConvergence(in),
	}
	return results, artifacts
}

type tokenKey struct{ pool, key string }

func (k tokenKey) String() string { return k.pool + "/" + k.key }

func isWrite(k Kind) bool { return k == KindAdd || k == KindDelete || k == KindReport }

// deleted reports whether op is a delete that removed a token.
func (o *Op) deleted() bool { return o.Kind == KindDelete && o.Outcome == OK && o.Code == "" }

// notFound reports whether op is a delete that found no token.
func (o *Op) notFound() bool {
	return o.Kind == KindDelete && o.Outcome == OK && o.Code == "token_not_found"
}

// span is what the writes of one token say about when its state can
// change, so that only the reads that can tell something go to porcupine.
type span struct {
	// added is the earliest call of its add: before it the token is absent.
	added time.Time
	// writes are the intervals of its adds, deletes and reports that may
	// have taken effect (an unknown one's has no end).
	writes []Op
}

// expect says what a read over [call, ret] must see when it overlaps no
// write of the token, and false when it overlaps one. Every such write
// then took effect before the read began or after it ended, so one answer
// is right: healthy once the add returned, failed once a report answered
// committed returned, absent again once a delete removed it.
func (sp *span) expect(call, ret time.Time) (st mState, ok bool) {
	for _, w := range sp.writes {
		unknown := w.Outcome != OK
		if !ret.Before(w.Call) && (unknown || !call.After(w.Return)) {
			return mAbsent, false // overlaps
		}
	}
	added, deleted, failed := false, false, false
	for _, w := range sp.writes {
		if w.Return.Before(call) {
			added = added || w.Kind == KindAdd
			deleted = deleted || w.deleted()
			failed = failed || w.Kind == KindReport
		}
	}
	switch {
	case !added || deleted:
		return mAbsent, true
	case failed:
		return mFailed, true
	}
	return mHealthy, true
}

// checkOperations is porcupine's checker; tests replace it to play a
// search that times out.
var checkOperations = porcupine.CheckOperationsTimeout

func checkLinearizable(in CheckInput) (CheckResult, []string) {
	res := CheckResult{Name: CheckLinearizable}
	if len(in.Ops) == 0 {
		return res, nil
	}
	base := in.Ops[0].Call
	for _, op := range in.Ops {
		if op.Call.Before(base) {
			base = op.Call
		}
	}
	ts := func(t time.Time) int64 { return t.Sub(base).Nanoseconds() }

	parts := map[tokenKey][]porcupine.Operation{}
	writes := map[tokenKey][]Op{}
	spans := map[tokenKey]*span{}
	keysOf := map[string][]string{}
	for _, op := range in.Ops {
		if !isWrite(op.Kind) {
			continue
		}
		k := tokenKey{op.Pool, op.Key}
		sp := spans[k]
		if sp == nil {
			sp = &span{}
			spans[k] = sp
		}
		if op.Kind == KindAdd && (sp.added.IsZero() || op.Call.Before(sp.added)) {
			if sp.added.IsZero() {
				keysOf[op.Pool] = append(keysOf[op.Pool], op.Key)
			}
			sp.added = op.Call
		}
		if op.Outcome == Fail {
			continue // certainly no effect
		}
		out := mOutput{known: op.Outcome == OK, notFound: op.notFound()}
		ret := ts(op.Return)
		if !out.known {
			ret = math.MaxInt64
		}
		sp.writes = append(sp.writes, op)
		parts[k] = append(parts[k], porcupine.Operation{ClientId: op.Process, Input: mInput{kind: op.Kind, op: op.ID}, Call: ts(op.Call), Output: out, Return: ret})
		writes[k] = append(writes[k], op)
		res.Checked++
	}
	reads := 0
	for _, op := range in.Ops {
		if op.Kind != KindRead || op.Outcome != OK {
			continue
		}
		reads++
		for _, id := range op.Foreign {
			res.violate("read %s returned token %s, which no writer added", op.String(), id)
		}
		for key := range op.Tokens {
			if sp := spans[tokenKey{op.Pool, key}]; sp == nil || sp.added.IsZero() {
				res.violate("read %s returned key %s, which no writer added", op.String(), key)
			}
		}
		for _, key := range keysOf[op.Pool] {
			k := tokenKey{op.Pool, key}
			sp := spans[k]
			saw, present := op.Tokens[key]
			if !present {
				saw = StateAbsent
			}
			got := modelState(saw)
			if op.Return.Before(sp.added) {
				// Before its add was called the token cannot exist.
				if present {
					res.violate("read %s saw %s before its add was called", op.String(), k)
				}
				continue
			}
			switch want, ok := sp.expect(op.Call, op.Return); {
			case ok && got != want:
				res.violate("read %s saw %s %s, though no write of it was in flight, so it was %s (%s)", op.String(), k, got, want, describeWrites(writes[k]))
			case !ok:
				parts[k] = append(parts[k], porcupine.Operation{ClientId: op.Process, Input: mInput{kind: KindRead, op: op.ID}, Call: ts(op.Call), Output: mOutput{known: true, read: got}, Return: ts(op.Return)})
			}
		}
	}
	res.Checked += reads

	keys := make([]tokenKey, 0, len(parts))
	for k := range parts {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b tokenKey) int { return cmp.Or(strings.Compare(a.pool, b.pool), strings.Compare(a.key, b.key)) })
	verdicts := make([]porcupine.CheckResult, len(keys))
	var wg sync.WaitGroup
	next := make(chan int)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range next {
				verdicts[i] = checkOperations(tokenModel, parts[keys[i]], in.Timeout)
			}
		})
	}
	for i := range keys {
		next <- i
	}
	close(next)
	wg.Wait()

	var artifacts []string
	undecided := map[tokenKey]bool{}
	for i, k := range keys {
		switch verdicts[i] {
		case porcupine.Unknown:
			res.Notes = append(res.Notes, fmt.Sprintf("%s: porcupine did not decide within %s; checked its failures in real time only", k, in.Timeout))
			undecided[k] = true
		case porcupine.Illegal:
			msg := fmt.Sprintf("%s is not linearizable; its writes: %s", k, describeWrites(writes[k]))
			if len(artifacts) < 5 {
				// Checked again, verbosely, for the visualization only.
				_, info := porcupine.CheckOperationsVerbose(tokenModel, parts[k], in.Timeout)
				if path, err := visualize(in.ArtifactDir, k, info); err != nil {
					msg += fmt.Sprintf(" (visualization failed: %v)", err)
				} else {
					artifacts = append(artifacts, path)
					msg += "; visualization: " + path
				}
			}
			res.violate("%s", msg)
		}
	}
	if len(undecided) > 0 {
		checkFailures(in.Ops, undecided, &res)
	}
	return res, artifacts
}

func describeWrites(ops []Op) string {
	var ws []string
	for _, op := range ops {
		ws = append(ws, op.String())
	}
	return strings.Join(ws, "; ")
}

// checkFailures checks, in real time, what consistent reads say of the
// failures of the tokens in only (those porcupine did not decide in time):
// a read shows a token failed only if a report of it was made before the
// read returned, and never shows it active once a report acknowledged as
// committed returned before the read was made. The model implies both;
// this keeps them for a token the model could not be checked on.
func checkFailures(ops []Op, only map[tokenKey]bool, res *CheckResult) {
	firstReport := map[tokenKey]*Op{} // the earliest call
	committed := map[tokenKey][]*Op{} // acknowledged as committed
	for i := range ops {
		op := &ops[i]
		if op.Kind != KindReport || op.Outcome == Fail {
			continue
		}
		k := tokenKey{op.Pool, op.Key}
		if f := firstReport[k]; f == nil || op.Call.Before(f.Call) {
			firstReport[k] = op
		}
		if op.Outcome == OK && op.Committed {
			committed[k] = append(committed[k], op)
		}
	}
	for i := range ops {
		r := &ops[i]
		if r.Kind != KindRead || r.Outcome != OK {
			continue
		}
		for key, st := range r.Tokens {
			k := tokenKey{r.Pool, key}
			if !only[k] {
				continue
			}
			switch st {
			case StateFailed:
				if f := firstReport[k]; f == nil || f.Call.After(r.Return) {
					res.violate("read %s shows %s failed, but no report of it was made before the read returned", r, k)
				}
			case StateActive:
				for _, c := range committed[k] {
					if c.Return.Before(r.Call) {
						res.violate("read %s shows %s active after its failure was acknowledged as committed by %s", r, k, c)
						break
					}
				}
			}
		}
	}
}

func visualize(dir string, k tokenKey, info porcupine.LinearizationInfo) (string, error) {
	if dir == "" {
		d, err := os.MkdirTemp("", "tokend-chaos-")
		if err != nil {
			return "", err
		}
		dir = d
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, fmt.Sprintf("linearizability-%s-%s.html", k.pool, k.key))
	return path, porcupine.VisualizePath(tokenModel, info, path)
}

func checkLostWrites(in CheckInput) CheckResult {
	res := CheckResult{Name: CheckLostWrites}
	if in.Final == nil {
		res.Notes = append(res.Notes, "no final state: not checked")
		return res
	}
	type fate struct {
		acked     *Op // the acknowledged add
		deleted   *Op // an acknowledged delete that removed it
		maybeGone bool
		failed    *Op // an acknowledged (committed) failure
	}
	fates := map[tokenKey]*fate{}
	get := func(k tokenKey) *fate {
		if fates[k] == nil {
			fates[k] = &fate{}
		}
		return fates[k]
	}
	for i := range in.Ops {
		op := &in.Ops[i]
		k := tokenKey{op.Pool, op.Key}
		switch {
		case op.Kind == KindAdd && op.Outcome == OK:
			get(k).acked = op
		case op.deleted():
			get(k).deleted = op
		case op.Kind == KindDelete && op.Outcome == Info:
			get(k).maybeGone = true
		case op.Kind == KindReport && op.Outcome == OK && op.Committed:
			get(k).failed = op
		}
	}
	for k, f := range fates {
		for _, st := range in.Final {
			got, present := st.Tokens[k.pool][k.key]
			switch {
			case f.deleted != nil:
				res.Checked++
				if present {
					res.violate("%s holds %s (%s), deleted by %s", st.Node, k, got.State, f.deleted)
				}
			case f.acked != nil && !f.maybeGone:
				res.Checked++
				if !present {
					res.violate("%s lost %s, added by %s", st.Node, k, f.acked)
				} else if f.failed != nil && got.State != StateFailed {
					res.violate("%s holds %s as %s, failed by %s", st.Node, k, got.State, f.failed)
				}
			}
		}
	}
	return res
}

func checkMonotonic(in CheckInput) CheckResult {
	res := CheckResult{Name: CheckMonotonic}
	wipes := map[string][]Window{}
	for _, w := range in.Faults {
		if w.Kind == FaultWiped {
			wipes[w.Node] = append(wipes[w.Node], w)
		}
	}
	type group struct {
		node  string
		epoch int
	}
	groups := map[group][]*Op{}
	for i := range in.Ops {
		op := &in.Ops[i]
		if op.Index == 0 {
			continue
		}
		switch {
		case op.Kind == KindFetch || op.Kind == KindRead:
		case op.Kind == KindAdd && op.Status == 201, op.Kind == KindDelete && op.Status == 200, op.Kind == KindReport && op.Committed:
			// An acknowledged write: the agent had applied its index. (A
			// report's names the commit that holds its failure, which may
			// be older than the report: later answers must not go below
			// it, but it need not be above earlier ones.)
		default:
			continue
		}
		epoch, skip := 0, false
		for _, w := range wipes[op.Node] {
			if w.overlaps(op.Call, op.Return) {
				skip = true
			}
			if w.Start.Before(op.Call) {
				epoch++
			}
		}
		if !skip {
			groups[group{op.Node, epoch}] = append(groups[group{op.Node, epoch}], op)
		}
	}
	for g, ops := range groups {
		res.Checked += len(ops)
		byCall := slices.Clone(ops)
		slices.SortFunc(byCall, func(a, b *Op) int { return a.Call.Compare(b.Call) })
		byReturn := slices.Clone(ops)
		slices.SortFunc(byReturn, func(a, b *Op) int { return a.Return.Compare(b.Return) })
		// Each answer below the highest one before it is a violation; one
		// is listed per highest answer, with how many more followed.
		type drop struct {
			first *Op
			more  int
		}
		drops := map[*Op]*drop{}
		var order []*Op
		var highest *Op
		j := 0
		for _, b := range byCall {
			for j < len(byReturn) && byReturn[j].Return.Before(b.Call) {
				if highest == nil || byReturn[j].Index > highest.Index {
					highest = byReturn[j]
				}
				j++
			}
			if highest == nil || b.Index >= highest.Index || b.Kind == KindReport {
				continue
			}
			if d := drops[highest]; d != nil {
				d.more++
				continue
			}
			drops[highest] = &drop{first: b}
			order = append(order, highest)
		}
		for _, a := range order {
			d := drops[a]
			res.violate("on %s the index went back from %d to %d (and %d more answers below %d followed): %s answered before %s was made", g.node, a.Index, d.first.Index, d.more, a.Index, a, d.first)
		}
	}
	return res
}

// wipedBetween reports whether node lost its data dir between from and to:
// it is a new server since, which acknowledged nothing yet.
func wipedBetween(windows []Window, node string, from, to time.Time) bool {
	for _, w := range windows {
		if w.Node == node && w.Kind == FaultWiped && w.overlaps(from, to) {
			return true
		}
	}
	return false
}

func checkDeadTokens(in CheckInput) CheckResult {
	res := CheckResult{Name: CheckDeadTokens}
	type end struct {
		op *Op
		// why: "deleted" or "failed"; committed: known to be in the
		// replicated state at op.Index (when not 0).
		why       string
		committed bool
	}
	ends := map[tokenKey][]end{}
	for i := range in.Ops {
		op := &in.Ops[i]
		k := tokenKey{op.Pool, op.Key}
		switch {
		case op.deleted():
			ends[k] = append(ends[k], end{op, "deleted", true})
		case op.Kind == KindReport && (op.Status == 200 || op.Status == 202):
			ends[k] = append(ends[k], end{op, "failed", op.Committed})
		}
	}
	for i := range in.Ops {
		f := &in.Ops[i]
		if f.Kind != KindFetch || f.Outcome != OK {
			continue
		}
		res.Checked++
		if !f.ExpiresAt.IsZero() && !f.Call.Before(f.ExpiresAt) {
			res.violate("%s returned a token that expired at %s, before the fetch", f, f.ExpiresAt.Format("15:04:05.000"))
		}
		if f.Key == "" {
			continue
		}
		for _, e := range ends[tokenKey{f.Pool, f.Key}] {
			switch {
			case e.committed && e.op.Index != 0 && f.Index >= e.op.Index:
				res.violate("%s returned %s, %s at index %d by %s", f, f.Key, e.why, e.op.Index, e.op)
			case f.Node == e.op.Node && f.Call.After(e.op.Return) && !wipedBetween(in.Faults, f.Node, e.op.Return, f.Return) &&
				(e.committed || !faultedDuring(in.Faults, f.Node, e.op.Return, f.Call)):
				// The acknowledging agent applied the change (or, for a
				// report, its overlay) before it answered; an overlay
				// not committed yet does not survive a restart.
				res.violate("%s returned %s after this agent acknowledged it %s: %s", f, f.Key, e.why, e.op)
			}
		}
	}
	return res
}

func checkAvailability(in CheckInput) CheckResult {
	res := CheckResult{Name: CheckAvailability}
	for i := range in.Ops {
		f := &in.Ops[i]
		if f.Kind != KindFetch {
			continue
		}
		res.Checked++
		if f.Outcome != OK && !faultedDuring(in.Faults, f.Node, f.Call, f.Return) {
			res.violate("%s failed while %s held the stable token and had no process fault", f, f.Node)
		}
	}
	return res
}

func checkConvergence(in CheckInput) CheckResult {
	res := CheckResult{Name: CheckConvergence}
	if in.Final == nil {
		res.Notes = append(res.Notes, "no final state: not checked")
		return res
	}
	res.Checked = len(in.Final)
	if err := divergence(in.Final); err != nil {
		res.violate("%v", err)
	}
	return res
}
