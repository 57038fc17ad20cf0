package chaos

import (
	"fmt"

	"github.com/anishathalye/porcupine"
)

// The linearizability model is one token: absent, present and healthy, or
// present and failed. The history is partitioned by token (pool and key) —
// tokens are independent objects, and linearizability is compositional —
// which keeps porcupine's search small. A consistent read of a pool becomes
// one read of each token in the partition of that token: whether it held
// the token, and whether failed. Consistent reads answer from the
// replicated state alone (README, "Consistent reads"), so every agent's
// answer fits one order.
//
// An add makes the token healthy; a delete makes it absent, from healthy
// or failed. A report (unauthorized) answered committed found the token in
// the replicated state and left it failed there (ReportResponse.Committed:
// its index holds the failure, whether this report's change, another
// report's that it waited for, or one already applied). A report answered
// pending (202), or not answered, may fail the token at any point after its
// call while the token exists, or never: the reporting agent keeps
// forwarding it, and a leader that finds the token gone changes nothing.
// Nothing in the workload makes a failed token healthy again (no resets,
// probes or rotations).
//
// Writes whose outcome is unknown (Info) get an infinite return time, as in
// Jepsen: they may take effect at any point after their call, or never
// (linearized after everything else, where nothing observes them).

// mState is a token's state in the model.
type mState uint8

const (
	mAbsent mState = iota
	mHealthy
	mFailed
)

func (s mState) String() string {
	return [...]string{StateAbsent, StateActive, StateFailed}[s]
}

// modelState maps a state a read returned (StateActive or StateFailed, or
// StateAbsent for a token missing from the answer) to the model's.
func modelState(st string) mState {
	switch st {
	case StateFailed:
		return mFailed
	case StateAbsent:
		return mAbsent
	}
	return mHealthy
}

type mInput struct {
	kind Kind
	op   int // Op.ID, for messages
}

type mOutput struct {
	known bool // false: the outcome is unknown (Info)
	// notFound: a delete found no such token.
	notFound bool
	// read: what a read saw of the token.
	read mState
}

func step(state, input, output any) (bool, any) {
	s, in, out := state.(mState), input.(mInput), output.(mOutput)
	switch in.kind {
	case KindAdd:
		switch {
		case s == mAbsent:
			return true, mHealthy
		case !out.known:
			// Each key is added once: an add of a token that exists
			// would have been refused (409), and changed nothing.
			return true, s
		}
		return false, s
	case KindDelete:
		switch {
		case !out.known:
			return true, mAbsent
		case out.notFound:
			return s == mAbsent, mAbsent
		default:
			return s != mAbsent, mAbsent
		}
	case KindReport:
		switch {
		case s != mAbsent:
			return true, mFailed
		case !out.known:
			// Taking effect once the token is gone, it changes nothing.
			return true, s
		}
		// A report answered committed found the token.
		return false, s
	case KindRead:
		return s == out.read, s
	}
	return false, s
}

var tokenModel = porcupine.Model{
	Init: func() any { return mAbsent },
	Step: step,
	DescribeOperation: func(input, output any) string {
		in, out := input.(mInput), output.(mOutput)
		switch {
		case in.kind == KindRead:
			return fmt.Sprintf("#%d read → %s", in.op, out.read)
		case !out.known:
			return fmt.Sprintf("#%d %s → ?", in.op, in.kind)
		case out.notFound:
			return fmt.Sprintf("#%d %s → not found", in.op, in.kind)
		case in.kind == KindReport:
			return fmt.Sprintf("#%d %s → committed", in.op, in.kind)
		}
		return fmt.Sprintf("#%d %s → ok", in.op, in.kind)
	},
	DescribeState: func(state any) string { return state.(mState).String() },
}
