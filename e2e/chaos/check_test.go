package chaos

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

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
	expect(t, run(t, CheckInput{Ops: h.ops}), map[string]string{CheckLinearizable: "saw " + pool + "/k1 absent, though no write of it was in flight, so it was active"})
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

// report adds a report of k1 (tok_1) on node, answered committed (OK) or
// pending (Info, 202).
func (h *history) report(proc int, node string, call, ret int, outcome Outcome, index uint64) *history {
	status := 200
	if outcome != OK {
		status = 202
	}
	return h.op(Op{Process: proc, Node: node, Kind: KindReport, Key: "k1", TokenID: "tok_1", Call: ms(call), Return: ms(ret), Outcome: outcome, Status: status, Committed: outcome == OK, Index: index})
}

// readOn is read on a given node.
func (h *history) readOn(proc int, node string, call, ret int, tokens map[string]string) *history {
	return h.op(Op{Process: proc, Node: node, Kind: KindRead, Call: ms(call), Return: ms(ret), Outcome: OK, Status: 200, Tokens: tokens})
}

var (
	k1Active = map[string]string{"k1": StateActive}
	k1Failed = map[string]string{"k1": StateFailed}
	k1Absent = map[string]string{}
)

func TestHealthyAfterCommittedReportIsFlagged(t *testing.T) {
	// With nothing in flight, one answer is right.
	h := &history{}
	h.add(1, "k1", "tok_1", 0, 10, OK, 5)
	h.report(1, "n1", 20, 30, OK, 6)
	h.read(2, 25, 28, k1Active) // concurrent: fine
	h.read(2, 40, 50, k1Active)
	expect(t, run(t, CheckInput{Ops: h.ops}), map[string]string{CheckLinearizable: "saw " + pool + "/k1 active, though no write of it was in flight, so it was failed"})
	// While the report is in flight, porcupine decides: a read saw it
	// take effect, and a later one saw the token healthy again.
	h = &history{}
	h.add(1, "k1", "tok_1", 0, 10, OK, 5)
	h.report(1, "n1", 20, 60, OK, 6)
	h.readOn(2, "n2", 25, 30, k1Failed)
	h.readOn(3, "n3", 35, 40, k1Active)
	expect(t, run(t, CheckInput{Ops: h.ops}), map[string]string{CheckLinearizable: pool + "/k1 is not linearizable"})
	// The same with a report still pending: once a read saw it take
	// effect, it has, everywhere.
	h = &history{}
	h.add(1, "k1", "tok_1", 0, 10, OK, 5)
	h.report(1, "n1", 20, 30, Info, 0)
	h.readOn(2, "n1", 31, 32, k1Failed)
	h.readOn(3, "n2", 33, 34, k1Active)
	expect(t, run(t, CheckInput{Ops: h.ops}), map[string]string{CheckLinearizable: pool + "/k1 is not linearizable"})
	// A read after the acknowledgement must see failed even while a
	// delete is in flight: failed or absent, never healthy.
	h = &history{}
	h.add(1, "k1", "tok_1", 0, 10, OK, 5)
	h.report(1, "n1", 20, 30, OK, 6)
	h.del(1, "n1", "k1", "tok_1", 35, 60, 7)
	h.read(2, 40, 45, k1Failed)
	h.read(2, 46, 50, k1Absent)
	expect(t, run(t, CheckInput{Ops: h.ops}), nil)
	h.read(2, 51, 55, k1Active)
	expect(t, run(t, CheckInput{Ops: h.ops}), map[string]string{CheckLinearizable: pool + "/k1 is not linearizable"})
}

func TestFailedBeforeAnyReportIsFlagged(t *testing.T) {
	h := &history{}
	h.add(1, "k1", "tok_1", 0, 10, OK, 5)
	h.read(2, 20, 30, k1Failed)
	h.report(1, "n1", 31, 40, Info, 0)
	expect(t, run(t, CheckInput{Ops: h.ops}), map[string]string{CheckLinearizable: "saw " + pool + "/k1 failed, though no write of it was in flight, so it was active"})
	// The same while the add is in flight: only porcupine can tell.
	h = &history{}
	h.add(1, "k1", "tok_1", 0, 30, OK, 5)
	h.read(2, 10, 20, k1Failed)
	h.report(1, "n1", 31, 40, OK, 6)
	expect(t, run(t, CheckInput{Ops: h.ops}), map[string]string{CheckLinearizable: pool + "/k1 is not linearizable"})
	// A failure a report answered committed never showed, seen after a
	// delete removed the token, is no less wrong.
	h = &history{}
	h.add(1, "k1", "tok_1", 0, 10, OK, 5)
	h.del(1, "n1", "k1", "tok_1", 20, 40, 6)
	h.read(2, 25, 30, k1Failed)
	expect(t, run(t, CheckInput{Ops: h.ops}), map[string]string{CheckLinearizable: pool + "/k1 is not linearizable"})
}

func TestPendingReportMayTakeEffectLateOrNever(t *testing.T) {
	// Pending on n1; other agents' consistent reads see the token healthy,
	// then failed once the reporting agent's forward commits; no read sees
	// it failed and then healthy.
	h := &history{}
	h.add(1, "k1", "tok_1", 0, 10, OK, 5)
	h.report(1, "n1", 20, 30, Info, 0)
	h.readOn(2, "n1", 31, 32, k1Active)
	h.readOn(3, "n2", 33, 34, k1Active)
	h.readOn(3, "n2", 50, 51, k1Failed)
	h.readOn(2, "n3", 60, 61, k1Failed)
	expect(t, run(t, CheckInput{Ops: h.ops}), nil)
	// Or never: the token stays healthy until deleted.
	h = &history{}
	h.add(1, "k1", "tok_1", 0, 10, OK, 5)
	h.op(Op{Process: 1, Node: "n1", Kind: KindReport, Key: "k1", TokenID: "tok_1", Call: ms(20), Return: ms(30), Outcome: Info, Err: "timeout"})
	h.read(2, 40, 41, k1Active)
	h.del(1, "n1", "k1", "tok_1", 50, 60, 6)
	h.read(2, 70, 71, k1Absent)
	expect(t, run(t, CheckInput{Ops: h.ops}), nil)
	// Taking effect after the delete changes nothing: the token does not
	// come back failed.
	h.read(2, 80, 81, k1Failed)
	expect(t, run(t, CheckInput{Ops: h.ops}), map[string]string{CheckLinearizable: pool + "/k1 is not linearizable"})
	// A report refused (Fail) never took effect.
	h = &history{}
	h.add(1, "k1", "tok_1", 0, 10, OK, 5)
	h.op(Op{Process: 1, Node: "n1", Kind: KindReport, Key: "k1", TokenID: "tok_1", Call: ms(20), Return: ms(30), Outcome: Fail, Status: 404, Code: "token_not_found"})
	h.read(2, 25, 28, k1Failed)
	expect(t, run(t, CheckInput{Ops: h.ops}), map[string]string{CheckLinearizable: "saw " + pool + "/k1 failed"})
}

// When porcupine cannot decide a token in time, its failures are still
// checked in real time.
func TestUndecidedTokenFailuresCheckedInRealTime(t *testing.T) {
	real := checkOperations
	t.Cleanup(func() { checkOperations = real })
	checkOperations = func(porcupine.Model, []porcupine.Operation, time.Duration) porcupine.CheckResult {
		return porcupine.Unknown
	}
	h := &history{}
	h.add(1, "k1", "tok_1", 0, 10, OK, 5)
	h.report(1, "n1", 20, 30, OK, 6)
	h.del(1, "n1", "k1", "tok_1", 35, 90, 7) // in flight: the reads go to porcupine
	h.read(2, 40, 45, k1Active)
	results := run(t, CheckInput{Ops: h.ops})
	expect(t, results, map[string]string{CheckLinearizable: "active after its failure was acknowledged as committed"})
	if n := results[CheckLinearizable].Notes; len(n) != 1 || !strings.Contains(n[0], "did not decide") {
		t.Errorf("notes %v, want the undecided token", n)
	}
	h = &history{}
	h.add(1, "k1", "tok_1", 0, 10, OK, 5)
	h.del(1, "n1", "k1", "tok_1", 15, 90, 6)
	h.read(2, 20, 30, k1Failed)
	h.report(1, "n1", 31, 40, Info, 0)
	expect(t, run(t, CheckInput{Ops: h.ops}), map[string]string{CheckLinearizable: "no report of it was made before the read returned"})
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
		// Nor across a pause.
		faults[0].Kind = FaultPaused
		expect(t, run(t, CheckInput{Ops: h.ops, Faults: faults}), map[string]string{CheckMonotonic: "index went back from 10 to 9"})
	})
	t.Run("committed report", func(t *testing.T) {
		// A report committed by a commit older than the agent's last
		// answer (the state already held the failure, or it waited on
		// another report's commit) names that commit: no violation...
		h := &history{}
		h.add(1, "k1", "tok_1", 0, 5, OK, 10)
		h.fetch(2, "n1", StableKey, "tok_s", 6, 7, 20)
		h.report(1, "n1", 8, 9, OK, 12)
		expect(t, run(t, CheckInput{Ops: h.ops}), nil)
		// ...but the agent applied it: later answers are not below it.
		h = &history{}
		h.add(1, "k1", "tok_1", 0, 5, OK, 10)
		h.report(1, "n1", 8, 9, OK, 12)
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
	known, unknown := mOutput{known: true}, mOutput{}
	cases := []struct {
		from  mState
		in    Kind
		out   mOutput
		ok    bool
		state mState
	}{
		{mAbsent, KindAdd, known, true, mHealthy},
		{mHealthy, KindAdd, known, false, mHealthy},
		{mFailed, KindAdd, known, false, mFailed},
		{mAbsent, KindAdd, unknown, true, mHealthy},
		{mHealthy, KindAdd, unknown, true, mHealthy},
		{mFailed, KindAdd, unknown, true, mFailed}, // a duplicate add fails nothing back to healthy
		{mHealthy, KindDelete, known, true, mAbsent},
		{mFailed, KindDelete, known, true, mAbsent},
		{mAbsent, KindDelete, known, false, mAbsent},
		{mAbsent, KindDelete, mOutput{known: true, notFound: true}, true, mAbsent},
		{mHealthy, KindDelete, mOutput{known: true, notFound: true}, false, mAbsent},
		{mFailed, KindDelete, mOutput{known: true, notFound: true}, false, mAbsent},
		{mHealthy, KindDelete, unknown, true, mAbsent},
		{mFailed, KindDelete, unknown, true, mAbsent},
		{mHealthy, KindReport, known, true, mFailed},
		{mFailed, KindReport, known, true, mFailed},
		{mAbsent, KindReport, known, false, mAbsent},
		{mHealthy, KindReport, unknown, true, mFailed},
		{mFailed, KindReport, unknown, true, mFailed},
		{mAbsent, KindReport, unknown, true, mAbsent},
		{mHealthy, KindRead, mOutput{known: true, read: mHealthy}, true, mHealthy},
		{mHealthy, KindRead, mOutput{known: true, read: mFailed}, false, mHealthy},
		{mHealthy, KindRead, mOutput{known: true, read: mAbsent}, false, mHealthy},
		{mFailed, KindRead, mOutput{known: true, read: mFailed}, true, mFailed},
		{mFailed, KindRead, mOutput{known: true, read: mHealthy}, false, mFailed},
		{mAbsent, KindRead, mOutput{known: true, read: mAbsent}, true, mAbsent},
		{mAbsent, KindRead, mOutput{known: true, read: mFailed}, false, mAbsent},
	}
	for _, c := range cases {
		ok, s := step(c.from, mInput{kind: c.in}, c.out)
		if ok != c.ok || (ok && s.(mState) != c.state) {
			t.Errorf("%s %s %+v = %v %v, want %v %v", c.from, c.in, c.out, ok, s, c.ok, c.state)
		}
	}
}
