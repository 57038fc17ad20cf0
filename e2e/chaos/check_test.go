package chaos

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/api"
)

// Hand-made histories, each violating one check, prove that the checks can
// fail; a valid history full of faults and unknown outcomes proves they do
// not fail for nothing.

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// ms is t0 plus n milliseconds.
func ms(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }

const pool = "chaos-priority"

// history builds ops in the order given, numbering them.
type history struct{ ops []Op }

func (h *history) op(o Op) *history {
	o.ID = len(h.ops)
	if o.Pool == "" {
		o.Pool = pool
	}
	if o.Node == "" {
		o.Node = "n1"
	}
	h.ops = append(h.ops, o)
	return h
}

func (h *history) add(proc int, key, id string, call, ret int, outcome Outcome, index uint64) *history {
	status := 201
	if outcome == Info {
		status = 0
	}
	return h.op(Op{Process: proc, Kind: KindAdd, Key: key, TokenID: id, Call: ms(call), Return: ms(ret), Outcome: outcome, Status: status, Index: index})
}

func (h *history) del(proc int, node, key, id string, call, ret int, index uint64) *history {
	return h.op(Op{Process: proc, Node: node, Kind: KindDelete, Key: key, TokenID: id, Call: ms(call), Return: ms(ret), Outcome: OK, Status: 200, Index: index})
}

func (h *history) read(proc int, call, ret int, tokens map[string]string) *history {
	return h.op(Op{Process: proc, Node: "n2", Kind: KindRead, Call: ms(call), Return: ms(ret), Outcome: OK, Status: 200, Tokens: tokens})
}

func (h *history) fetch(proc int, node, key, id string, call, ret int, index uint64) *history {
	return h.op(Op{Process: proc, Node: node, Kind: KindFetch, Key: key, TokenID: id, Call: ms(call), Return: ms(ret), Outcome: OK, Status: 200, Index: index})
}

// final is a converged final state in which every node holds tokens.
func final(tokens map[string]TokenState, nodes ...string) []NodeState {
	var out []NodeState
	for _, n := range nodes {
		out = append(out, NodeState{Node: n, Digest: "d", Tokens: map[string]map[string]TokenState{pool: tokens}})
	}
	return out
}

func run(t *testing.T, in CheckInput) map[string]CheckResult {
	t.Helper()
	if in.ArtifactDir == "" {
		in.ArtifactDir = t.TempDir()
	}
	results, artifacts := Check(in)
	byName := map[string]CheckResult{}
	for _, r := range results {
		byName[r.Name] = r
		t.Logf("%s", r)
	}
	for _, a := range artifacts {
		if fi, err := os.Stat(a); err != nil || fi.Size() == 0 {
			t.Errorf("artifact %s: %v", a, err)
		}
	}
	return byName
}

// expect checks that exactly the named checks failed, each with a violation
// mentioning want.
func expect(t *testing.T, results map[string]CheckResult, failing map[string]string) {
	t.Helper()
	for name, r := range results {
		want, shouldFail := failing[name]
		switch {
		case shouldFail && len(r.Violations) == 0:
			t.Errorf("check %s passed; it must flag %q", name, want)
		case shouldFail && !strings.Contains(strings.Join(r.Violations, "\n"), want):
			t.Errorf("check %s flagged %v, want a violation mentioning %q", name, r.Violations, want)
		case !shouldFail && len(r.Violations) > 0:
			t.Errorf("check %s flagged %v on a history that does not violate it", name, r.Violations)
		}
	}
	for name := range failing {
		if _, ok := results[name]; !ok {
			t.Errorf("no check named %s ran", name)
		}
	}
}

func TestValidHistoryPasses(t *testing.T) {
	h := &history{}
	h.add(0, StableKey, "tok_s", 0, 5, OK, 3)
	h.add(1, "k1", "tok_1", 10, 20, OK, 10)
	// A consistent read concurrent with the add may see it or not.
	h.read(2, 12, 18, map[string]string{StableKey: StateActive})
	h.read(2, 19, 25, map[string]string{StableKey: StateActive, "k1": StateActive})
	h.fetch(3, "n1", "k1", "tok_1", 21, 22, 10)
	// Reported: committed at 12.
	h.op(Op{Process: 1, Kind: KindReport, Key: "k1", TokenID: "tok_1", Call: ms(30), Return: ms(40), Outcome: OK, Status: 200, Committed: true, Index: 12})
	h.fetch(3, "n1", StableKey, "tok_s", 41, 42, 12)
	h.read(2, 45, 50, map[string]string{StableKey: StateActive, "k1": StateFailed})
	// An add that timed out, seen later: it took effect.
	h.add(1, "k2", "", 50, 60, Info, 0)
	h.read(2, 70, 80, map[string]string{StableKey: StateActive, "k1": StateFailed, "k2": StateActive})
	// An add that timed out and was never seen: it never took effect.
	h.add(1, "k3", "", 81, 90, Info, 0)
	// A delete that timed out, and one of a token already gone.
	h.op(Op{Process: 1, Kind: KindDelete, Key: "k1", TokenID: "tok_1", Call: ms(91), Return: ms(95), Outcome: Info, Err: "timeout"})
	h.read(2, 96, 97, map[string]string{StableKey: StateActive, "k2": StateActive})
	h.op(Op{Process: 1, Kind: KindDelete, Key: "k1", TokenID: "tok_1", Call: ms(98), Return: ms(99), Outcome: OK, Status: 404, Code: "token_not_found"})
	// A write refused by a dead agent never happened.
	h.op(Op{Process: 1, Node: "n3", Kind: KindAdd, Key: "k4", Call: ms(100), Return: ms(101), Outcome: Fail, Err: "connection refused"})
	// n3 was killed and restarted: its fetches failed meanwhile.
	h.op(Op{Process: 4, Node: "n3", Kind: KindFetch, Call: ms(100), Return: ms(101), Outcome: Fail, Err: "connection refused"})
	h.fetch(4, "n3", StableKey, "tok_s", 120, 121, 14)
	// Concurrent fetches on one agent may see indexes out of order.
	h.fetch(3, "n1", StableKey, "tok_s", 130, 140, 15)
	h.fetch(5, "n1", StableKey, "tok_s", 131, 135, 14)
	// n2 lost its data dir: its index starts over.
	h.fetch(6, "n2", StableKey, "tok_s", 130, 131, 15)
	h.fetch(6, "n2", StableKey, "tok_s", 150, 151, 2)
	faults := []Window{
		{Node: "n3", Kind: FaultKilled, Start: ms(100), End: ms(110)},
		{Node: "n2", Kind: FaultWiped, Start: ms(140), End: ms(149)},
	}
	fin := final(map[string]TokenState{StableKey: {"tok_s", StateActive}, "k2": {"tok_2", StateActive}}, "n1", "n2", "n3")
	results := run(t, CheckInput{Ops: h.ops, Faults: faults, Final: fin})
	expect(t, results, nil)
	for name, r := range results {
		if r.Checked == 0 {
			t.Errorf("check %s checked nothing", name)
		}
	}
}

func TestStaleConsistentReadIsNotLinearizable(t *testing.T) {
	// While a write is in flight, porcupine decides: here a read saw the
	// delete take effect, and a later one saw the token again.
	h := &history{}
	h.add(1, "k1", "tok_1", 0, 10, OK, 5)
	h.del(1, "n1", "k1", "tok_1", 20, 40, 6)
	h.read(2, 25, 30, map[string]string{})
	h.read(3, 32, 35, map[string]string{"k1": StateActive})
	expect(t, run(t, CheckInput{Ops: h.ops}), map[string]string{CheckLinearizable: pool + "/k1 is not linearizable"})
	// With no add or delete in flight, one answer is right.
	h = &history{}
	h.add(1, "k1", "tok_1", 0, 10, OK, 5)
	h.read(2, 20, 30, map[string]string{}) // misses an add acknowledged before it began
	expect(t, run(t, CheckInput{Ops: h.ops}), map[string]string{CheckLinearizable: "saw " + pool + "/k1 absent, though no add or delete of it was in flight"})
	// Unless one's outcome is unknown: it may still take effect.
	h = &history{}
	h.add(1, "k1", "tok_1", 0, 10, OK, 5)
	h.read(2, 11, 12, map[string]string{"k1": StateActive})
	h.op(Op{Process: 1, Kind: KindDelete, Key: "k1", TokenID: "tok_1", Call: ms(15), Return: ms(16), Outcome: Info, Err: "timeout"})
	h.read(2, 20, 30, map[string]string{"k1": StateActive})
	h.read(2, 40, 50, map[string]string{})
	expect(t, run(t, CheckInput{Ops: h.ops}), nil)
	h.read(2, 60, 70, map[string]string{"k1": StateActive}) // back from the dead
	expect(t, run(t, CheckInput{Ops: h.ops}), map[string]string{CheckLinearizable: pool + "/k1 is not linearizable"})
}

func TestFailureUndoneIsFlagged(t *testing.T) {
	h := &history{}
	h.add(1, "k1", "tok_1", 0, 10, OK, 5)
	h.op(Op{Process: 1, Kind: KindReport, Key: "k1", TokenID: "tok_1", Call: ms(20), Return: ms(30), Outcome: OK, Status: 200, Committed: true, Index: 6})
	h.read(2, 25, 28, map[string]string{"k1": StateActive}) // concurrent: fine
	h.read(2, 40, 50, map[string]string{"k1": StateActive})
	expect(t, run(t, CheckInput{Ops: h.ops}), map[string]string{CheckLinearizable: "active after its failure was acknowledged as committed"})
}

func TestFailureBeforeAnyReportIsFlagged(t *testing.T) {
	h := &history{}
	h.add(1, "k1", "tok_1", 0, 10, OK, 5)
	h.read(2, 20, 30, map[string]string{"k1": StateFailed})
	h.op(Op{Process: 1, Kind: KindReport, Key: "k1", TokenID: "tok_1", Call: ms(31), Return: ms(40), Outcome: Info, Status: 202})
	expect(t, run(t, CheckInput{Ops: h.ops}), map[string]string{CheckLinearizable: "no report of it was made before the read returned"})
}

func TestOverlayInConsistentReadsIsNotAViolation(t *testing.T) {
	// The reporting agent (n1) shows the token failed while its report is
	// pending; another agent's consistent read shows it active; then the
	// failure commits.
	h := &history{}
	h.add(1, "k1", "tok_1", 0, 10, OK, 5)
	h.op(Op{Process: 1, Node: "n1", Kind: KindReport, Key: "k1", TokenID: "tok_1", Call: ms(20), Return: ms(30), Outcome: Info, Status: 202})
	h.op(Op{Process: 2, Node: "n1", Kind: KindRead, Call: ms(31), Return: ms(32), Outcome: OK, Status: 200, Tokens: map[string]string{"k1": StateFailed}})
	h.op(Op{Process: 3, Node: "n2", Kind: KindRead, Call: ms(33), Return: ms(34), Outcome: OK, Status: 200, Tokens: map[string]string{"k1": StateActive}})
	h.op(Op{Process: 3, Node: "n2", Kind: KindRead, Call: ms(50), Return: ms(51), Outcome: OK, Status: 200, Tokens: map[string]string{"k1": StateFailed}})
	expect(t, run(t, CheckInput{Ops: h.ops}), nil)
}

func TestCommittedReportOfAbsentTokenIsNotLinearizable(t *testing.T) {
	h := &history{}
	h.add(1, "k1", "tok_1", 0, 10, OK, 5)
	h.del(1, "n1", "k1", "tok_1", 20, 30, 6)
	h.op(Op{Process: 1, Kind: KindReport, Key: "k1", TokenID: "tok_1", Call: ms(40), Return: ms(50), Outcome: OK, Status: 200, Committed: true, Index: 7})
	expect(t, run(t, CheckInput{Ops: h.ops}), map[string]string{CheckLinearizable: "k1 is not linearizable"})
}

func TestDeleteNotFoundAfterAddIsNotLinearizable(t *testing.T) {
	// A leader that checks a delete against state it has not caught up on
	// answers token_not_found for a token whose add was acknowledged.
	h := &history{}
	h.add(1, "k1", "tok_1", 0, 10, OK, 5)
	h.op(Op{Process: 1, Kind: KindDelete, Key: "k1", TokenID: "tok_1", Call: ms(20), Return: ms(30), Outcome: OK, Status: 404, Code: "token_not_found"})
	expect(t, run(t, CheckInput{Ops: h.ops}), map[string]string{CheckLinearizable: "k1 is not linearizable"})
}

func TestUnknownAddSeenThenGoneIsNotLinearizable(t *testing.T) {
	h := &history{}
	h.add(1, "k1", "", 0, 10, Info, 0)
	h.read(2, 20, 30, map[string]string{"k1": StateActive})
	h.read(2, 40, 50, map[string]string{})
	expect(t, run(t, CheckInput{Ops: h.ops}), map[string]string{CheckLinearizable: "k1 is not linearizable"})
}

func TestPhantomTokenInRead(t *testing.T) {
	h := &history{}
	h.read(2, 20, 30, map[string]string{"nobody-added-me": StateActive})
	h.add(1, "k9", "tok_9", 40, 50, OK, 5)
	h.read(2, 0, 10, map[string]string{"k9": StateActive}) // before its add was called
	expect(t, run(t, CheckInput{Ops: h.ops}), map[string]string{CheckLinearizable: "which no writer added"})
	results := run(t, CheckInput{Ops: h.ops})
	if v := strings.Join(results[CheckLinearizable].Violations, "\n"); !strings.Contains(v, "before its add was called") {
		t.Errorf("a read before the add was called that saw the token is not flagged: %s", v)
	}
}

func TestLostWrites(t *testing.T) {
	h := &history{}
	h.add(1, "k1", "tok_1", 0, 10, OK, 5)
	h.add(1, "k2", "tok_2", 0, 10, OK, 6)
	h.add(1, "k3", "tok_3", 0, 10, OK, 7)
	h.del(1, "n1", "k2", "tok_2", 20, 30, 8)
	h.op(Op{Process: 1, Kind: KindReport, Key: "k3", TokenID: "tok_3", Call: ms(20), Return: ms(30), Outcome: OK, Status: 200, Committed: true, Index: 9})
	ok := map[string]TokenState{"k1": {"tok_1", StateActive}, "k3": {"tok_3", StateFailed}}
	cases := []struct {
		name  string
		final []NodeState
		want  string
	}{
		{"acknowledged add lost", append(final(ok, "n1"), final(map[string]TokenState{"k3": {"tok_3", StateFailed}}, "n2")...), "n2 lost " + pool + "/k1"},
		{"acknowledged delete undone", final(map[string]TokenState{"k1": {"tok_1", StateActive}, "k2": {"tok_2", StateActive}, "k3": {"tok_3", StateFailed}}, "n1", "n2"), "holds " + pool + "/k2"},
		{"acknowledged failure lost", final(map[string]TokenState{"k1": {"tok_1", StateActive}, "k3": {"tok_3", StateActive}}, "n1"), "holds " + pool + "/k3 as active"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			expect(t, run(t, CheckInput{Ops: h.ops, Final: c.final}), map[string]string{CheckLostWrites: c.want})
		})
	}
	expect(t, run(t, CheckInput{Ops: h.ops, Final: final(ok, "n1", "n2")}), nil)
}

func TestNonMonotonicReads(t *testing.T) {
	t.Run("fetches", func(t *testing.T) {
		h := &history{}
		h.fetch(1, "n1", StableKey, "tok_s", 0, 5, 10)
		h.fetch(2, "n1", StableKey, "tok_s", 6, 7, 8) // another client, after the first returned
		expect(t, run(t, CheckInput{Ops: h.ops}), map[string]string{CheckMonotonic: "index went back from 10 to 8"})
	})
	t.Run("across a restart", func(t *testing.T) {
		h := &history{}
		h.fetch(1, "n1", StableKey, "tok_s", 0, 5, 10)
		h.op(Op{Process: 1, Node: "n1", Kind: KindFetch, Call: ms(6), Return: ms(7), Outcome: Fail, Err: "connection refused"})
		h.fetch(1, "n1", StableKey, "tok_s", 30, 31, 9)
		faults := []Window{{Node: "n1", Kind: FaultKilled, Start: ms(6), End: ms(20)}}
		expect(t, run(t, CheckInput{Ops: h.ops, Faults: faults}), map[string]string{CheckMonotonic: "index went back from 10 to 9"})
		// Until restarts are fresh, a kill may be excused: noted, not failed.
		results := run(t, CheckInput{Ops: h.ops, Faults: faults, ExcuseStaleRestarts: true})
		expect(t, results, nil)
		if n := results[CheckMonotonic].Notes; len(n) != 1 || !strings.Contains(n[0], "excused") {
			t.Errorf("notes %v, want the excused regression", n)
		}
		// A pause is not a restart: nothing excuses it.
		faults[0].Kind = FaultPaused
		expect(t, run(t, CheckInput{Ops: h.ops, Faults: faults, ExcuseStaleRestarts: true}), map[string]string{CheckMonotonic: "index went back from 10 to 9"})
	})
	t.Run("committed report", func(t *testing.T) {
		// A report committed by a commit older than the agent's last
		// answer (the state already held the failure, or it waited on
		// another report's commit) names that commit: no violation...
		report := Op{Process: 1, Node: "n1", Kind: KindReport, Key: "k1", TokenID: "tok_1", Call: ms(8), Return: ms(9), Outcome: OK, Status: 200, Committed: true, Index: 12}
		h := &history{}
		h.add(1, "k1", "tok_1", 0, 5, OK, 10)
		h.fetch(2, "n1", StableKey, "tok_s", 6, 7, 20)
		h.op(report)
		expect(t, run(t, CheckInput{Ops: h.ops}), nil)
		// ...but the agent applied it: later answers are not below it.
		h = &history{}
		h.add(1, "k1", "tok_1", 0, 5, OK, 10)
		h.op(report)
		h.fetch(2, "n1", StableKey, "tok_s", 10, 11, 11)
		expect(t, run(t, CheckInput{Ops: h.ops}), map[string]string{CheckMonotonic: "index went back from 12 to 11"})
	})
	t.Run("read your write", func(t *testing.T) {
		h := &history{}
		h.add(1, "k1", "tok_1", 0, 5, OK, 10)
		h.op(Op{Process: 2, Node: "n1", Kind: KindFetch, Call: ms(6), Return: ms(7), Outcome: Fail, Status: 503, Code: "pool_empty", Index: 9})
		expect(t, run(t, CheckInput{Ops: h.ops}), map[string]string{CheckMonotonic: "index went back from 10 to 9", CheckAvailability: "failed while n1 held"})
	})
}

func TestDeadTokensServed(t *testing.T) {
	base := func() *history {
		h := &history{}
		h.add(1, "k1", "tok_1", 0, 10, OK, 10)
		return h
	}
	t.Run("deleted, fetched at a later index elsewhere", func(t *testing.T) {
		h := base().del(1, "n1", "k1", "tok_1", 20, 30, 20)
		h.fetch(2, "n2", "k1", "tok_1", 25, 26, 19) // before the delete reached n2: fine
		h.fetch(2, "n2", "k1", "tok_1", 40, 41, 21)
		expect(t, run(t, CheckInput{Ops: h.ops}), map[string]string{CheckDeadTokens: "deleted at index 20"})
	})
	t.Run("deleted, fetched after the ack on the acknowledging agent", func(t *testing.T) {
		h := base().del(1, "n1", "k1", "tok_1", 20, 30, 20)
		h.fetch(2, "n1", "k1", "tok_1", 31, 32, 0) // no index header
		expect(t, run(t, CheckInput{Ops: h.ops}), map[string]string{CheckDeadTokens: "after this agent acknowledged it deleted"})
		// Even across a restart: the delete was committed and applied.
		faults := []Window{{Node: "n1", Kind: FaultKilled, Start: ms(30), End: ms(31)}}
		expect(t, run(t, CheckInput{Ops: h.ops, Faults: faults}), map[string]string{CheckDeadTokens: "after this agent acknowledged it deleted"})
		results := run(t, CheckInput{Ops: h.ops, Faults: faults, ExcuseStaleRestarts: true})
		expect(t, results, nil)
		if n := results[CheckDeadTokens].Notes; len(n) != 1 {
			t.Errorf("notes %v, want the excused fetch", n)
		}
		// An agent that lost its data dir is a new server: what the old
		// one acknowledged binds only the index rule.
		faults[0].Kind = FaultWiped
		expect(t, run(t, CheckInput{Ops: h.ops, Faults: faults}), nil)
	})
	t.Run("failed, fetched at a later index", func(t *testing.T) {
		h := base().op(Op{Process: 1, Node: "n3", Kind: KindReport, Key: "k1", TokenID: "tok_1", Call: ms(20), Return: ms(30), Outcome: OK, Status: 200, Committed: true, Index: 15})
		h.fetch(2, "n2", "k1", "tok_1", 40, 41, 15)
		expect(t, run(t, CheckInput{Ops: h.ops}), map[string]string{CheckDeadTokens: "failed at index 15"})
	})
	t.Run("reported, still pending, fetched on the reporting agent", func(t *testing.T) {
		h := base().op(Op{Process: 1, Node: "n1", Kind: KindReport, Key: "k1", TokenID: "tok_1", Call: ms(20), Return: ms(30), Outcome: Info, Status: 202})
		h.fetch(2, "n1", "k1", "tok_1", 40, 41, 12)
		h.fetch(2, "n2", "k1", "tok_1", 40, 41, 12) // other agents may serve it until it commits
		expect(t, run(t, CheckInput{Ops: h.ops}), map[string]string{CheckDeadTokens: "after this agent acknowledged it failed"})
		// A restart of the reporting agent forgets a report not committed.
		faults := []Window{{Node: "n1", Kind: FaultKilled, Start: ms(32), End: ms(35)}}
		expect(t, run(t, CheckInput{Ops: h.ops, Faults: faults}), nil)
	})
	t.Run("expired", func(t *testing.T) {
		h := &history{}
		h.op(Op{Process: 1, Kind: KindAdd, Key: "k1", TokenID: "tok_1", ExpiresAt: ms(100), Call: ms(0), Return: ms(10), Outcome: OK, Status: 201, Index: 10})
		h.op(Op{Process: 2, Node: "n2", Kind: KindFetch, Key: "k1", TokenID: "tok_1", ExpiresAt: ms(100), Call: ms(50), Return: ms(51), Outcome: OK, Status: 200, Index: 10})
		h.op(Op{Process: 2, Node: "n2", Kind: KindFetch, Key: "k1", TokenID: "tok_1", ExpiresAt: ms(100), Call: ms(100), Return: ms(101), Outcome: OK, Status: 200, Index: 10})
		expect(t, run(t, CheckInput{Ops: h.ops}), map[string]string{CheckDeadTokens: "expired at"})
	})
}

func TestFetchFailuresOutsideFaults(t *testing.T) {
	h := &history{}
	h.op(Op{Process: 1, Node: "n1", Kind: KindFetch, Call: ms(10), Return: ms(20), Outcome: Fail, Status: 503, Code: "no_healthy_token", Index: 5})
	h.op(Op{Process: 2, Node: "n2", Kind: KindFetch, Call: ms(10), Return: ms(20), Outcome: Fail, Err: "timeout"})
	// n2 was paused; n1 was, but not then.
	faults := []Window{{Node: "n2", Kind: FaultPaused, Start: ms(15), End: ms(30)}, {Node: "n1", Kind: FaultPaused, Start: ms(21), End: ms(30)}}
	results := run(t, CheckInput{Ops: h.ops, Faults: faults})
	expect(t, results, map[string]string{CheckAvailability: "#0"})
	if v := results[CheckAvailability].Violations; len(v) != 1 {
		t.Errorf("violations %v, want only n1's fetch", v)
	}
}

func TestDivergence(t *testing.T) {
	fin := []NodeState{
		{Node: "n1", Digest: "aaa", Canonical: "[\n pool\n token tok_1 active\n]"},
		{Node: "n2", Digest: "bbb", Canonical: "[\n pool\n token tok_1 failed\n]"},
	}
	expect(t, run(t, CheckInput{Final: fin}), map[string]string{CheckConvergence: "token tok_1 active"})
}

func TestCanonicalLeavesOutAgentFields(t *testing.T) {
	now := time.Now()
	pools := func(eligible int) []api.Pool {
		return []api.Pool{{Name: "p", Selection: "priority", Tokens: 1, Eligible: eligible, ModifyIndex: 7}}
	}
	tok := func(reports uint64, state, reporter string) map[string][]api.TokenInfo {
		return map[string][]api.TokenInfo{"p": {{
			ID: "tok_1", Pool: "p", Lifecycle: "active", CreatedAt: now, CreateIndex: 5, ModifyIndex: 7,
			Health:  api.Health{State: state, Reporter: reporter, Since: &now},
			Reports: &api.ReportStats{Unauthorized: reports},
		}}}
	}
	a := Canonical(pools(1), tok(3, "failed", "n1"))
	if b := Canonical(pools(0), tok(0, "failed", "")); a != b {
		t.Errorf("agent-local fields change the canonical state:\n%s\n%s", a, b)
	}
	if b := Canonical(pools(1), tok(3, "healthy", "n1")); a == b {
		t.Error("a different health state gives the same canonical state")
	}
	p := pools(1)
	p[0].ModifyIndex = 8
	if b := Canonical(p, tok(3, "failed", "n1")); a == b {
		t.Error("a different modify index gives the same canonical state")
	}
}

func TestModelStep(t *testing.T) {
	cases := []struct {
		from  mState
		in    Kind
		out   mOutput
		ok    bool
		state mState
	}{
		{mAbsent, KindAdd, mOutput{known: true}, true, mPresent},
		{mPresent, KindAdd, mOutput{known: true}, false, mPresent},
		{mPresent, KindAdd, mOutput{}, true, mPresent},
		{mPresent, KindDelete, mOutput{known: true}, true, mAbsent},
		{mAbsent, KindDelete, mOutput{known: true}, false, mAbsent},
		{mAbsent, KindDelete, mOutput{known: true, notFound: true}, true, mAbsent},
		{mPresent, KindDelete, mOutput{known: true, notFound: true}, false, mAbsent},
		{mPresent, KindDelete, mOutput{}, true, mAbsent},
		{mPresent, KindReport, mOutput{known: true}, true, mPresent},
		{mAbsent, KindReport, mOutput{known: true}, false, mAbsent},
		{mAbsent, KindReport, mOutput{}, true, mAbsent},
		{mPresent, KindRead, mOutput{known: true, read: mPresent}, true, mPresent},
		{mPresent, KindRead, mOutput{known: true, read: mAbsent}, false, mPresent},
	}
	for _, c := range cases {
		ok, s := step(c.from, mInput{kind: c.in}, c.out)
		if ok != c.ok || (ok && s.(mState) != c.state) {
			t.Errorf("%s %s %+v = %v %v, want %v %v", c.from, c.in, c.out, ok, s, c.ok, c.state)
		}
	}
}
