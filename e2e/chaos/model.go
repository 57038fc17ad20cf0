package chaos

import (
	"fmt"

	"github.com/anishathalye/porcupine"
)

// The linearizability model is one token, absent or present. The history
// is partitioned by token (pool and key) — tokens are independent objects,
// and linearizability is compositional — which keeps porcupine's search
// small. A consistent read of a pool becomes one read of each token in the
// partition of that token: whether it held the token.
//
// Writes whose outcome is unknown (Info) get an infinite return time, as in
// Jepsen: they may take effect at any point after their call, or never
// (linearized after everything else, where nothing observes them).
//
// A token's failure is not in this model: a consistent read answers with
// the reading agent's own health overlay on top of the replicated state
// (README: "the plain read's body"), so the agent that took a report shows
// the token failed before the failure commits while the others do not, and
// no single order explains both. Failures are checked in real time instead
// (checkFailures): a read never shows a token failed before a report of it
// was made, nor active once a report of it was acknowledged as committed.

// mState is a token's state in the model.
type mState uint8

const (
	mAbsent mState = iota
	mPresent
)

func (s mState) String() string {
	return [...]string{StateAbsent, "present"}[s]
}

type mInput struct {
	kind Kind
	op   int // Op.ID, for messages
}

type mOutput struct {
	known bool // false: the outcome is unknown (Info)
	// notFound: a delete found no such token.
	notFound bool
	// read: whether a read saw the token.
	read mState
}

func step(state, input, output any) (bool, any) {
	s, in, out := state.(mState), input.(mInput), output.(mOutput)
	switch in.kind {
	case KindAdd:
		if !out.known {
			return true, mPresent
		}
		return s == mAbsent, mPresent
	case KindDelete:
		switch {
		case !out.known:
			return true, mAbsent
		case out.notFound:
			return s == mAbsent, mAbsent
		default:
			return s == mPresent, mAbsent
		}
	case KindReport:
		// A report changes no presence. One acknowledged as committed
		// found the token in the replicated state.
		return !out.known || s == mPresent, s
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
		}
		return fmt.Sprintf("#%d %s → ok", in.op, in.kind)
	},
	DescribeState: func(state any) string { return state.(mState).String() },
}
