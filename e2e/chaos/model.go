package chaos

import (
	"fmt"

	"github.com/anishathalye/porcupine"
)

// The linearizability model is one token: absent, active or failed. The
// history is partitioned by token (pool and key) — tokens are independent
// objects, and linearizability is compositional — which keeps porcupine's
// search small. A consistent read of a pool becomes one read of each token
// in the partition of that token: what it said about that token.
//
// Writes whose outcome is unknown (Info) get an infinite return time, as in
// Jepsen: they may take effect at any point after their call, or never
// (linearized after everything else, where nothing observes them).

// mState is a token's state in the model.
type mState uint8

const (
	mAbsent mState = iota
	mActive
	mFailed
)

func (s mState) String() string {
	return [...]string{StateAbsent, StateActive, StateFailed}[s]
}

func parseState(s string) mState {
	switch s {
	case StateActive:
		return mActive
	case StateFailed:
		return mFailed
	}
	return mAbsent
}

type mInput struct {
	kind Kind
	op   int // Op.ID, for messages
}

type mOutput struct {
	known bool // false: the outcome is unknown (Info)
	// notFound: a delete found no such token.
	notFound bool
	// read: the state a read saw.
	read mState
}

func step(state, input, output any) (bool, any) {
	s, in, out := state.(mState), input.(mInput), output.(mOutput)
	switch in.kind {
	case KindAdd:
		if !out.known {
			if s == mAbsent {
				return true, mActive
			}
			return true, s
		}
		return s == mAbsent, mActive
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
		if !out.known {
			if s == mActive {
				return true, mFailed
			}
			return true, s
		}
		// Committed: the token is failed in the replicated state.
		return s != mAbsent, mFailed
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
