package chaos

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// Nemesis injects one kind of fault. The package never touches processes,
// containers or networks itself: the suite that owns the agents implements
// its nemeses (signals to processes on loopback, docker commands for
// containers) and tells the checks about process faults through a FaultLog.
type Nemesis interface {
	// Name names the fault in logs and reports: "kill-leader".
	Name() string
	// Start injects the fault. The returned heal ends it; the schedule
	// calls it once, after holding the fault for a random time (see
	// Holder). A nemesis that does all its work in Start (a rolling
	// restart) returns a heal that does nothing.
	Start(ctx context.Context, rng *rand.Rand) (heal func(context.Context) error, err error)
}

// Holder is implemented by a nemesis that needs the fault held for a
// certain time, such as a pause that must outlast the election timeout;
// Run draws the hold from [min, max] instead of Config.Hold.
type Holder interface {
	HoldRange() (min, max time.Duration)
}

// Fault kinds, for FaultLog.Begin.
const (
	// FaultKilled: the process is dead (SIGKILL, SIGTERM, container killed
	// or stopped) until it is restarted and answers again.
	FaultKilled = "killed"
	// FaultPaused: the process is frozen (SIGSTOP, docker pause) and
	// answers nothing until it is resumed.
	FaultPaused = "paused"
	// FaultWiped: the agent lost its data dir and comes back as a new
	// server; its index starts over, so the monotonic-read check compares
	// its reads before and after separately.
	FaultWiped = "wiped"
)

// Window is one process fault of one node: from the moment the fault began
// until the node answered again (for a wipe: until it caught up). Fetch
// failures on that node during the window are expected.
type Window struct {
	Node       string
	Kind       string
	Start, End time.Time
}

// overlaps reports whether [from, to] meets the window.
func (w Window) overlaps(from, to time.Time) bool {
	return !from.After(w.endOr(to)) && !to.Before(w.Start)
}

func (w Window) endOr(t time.Time) time.Time {
	if w.End.IsZero() {
		return t
	}
	return w.End
}

// FaultLog records which nodes were process-faulted, and when. Its zero
// value is ready to use; it is safe for concurrent use.
type FaultLog struct {
	mu      sync.Mutex
	windows []*Window
}

// Begin records that node's process fault of kind begins now; call the
// returned end once the node answers again (or, for FaultWiped, has caught
// up). Calling end more than once keeps the first end.
func (l *FaultLog) Begin(node, kind string) (end func()) {
	w := &Window{Node: node, Kind: kind, Start: time.Now()}
	l.mu.Lock()
	l.windows = append(l.windows, w)
	l.mu.Unlock()
	return func() {
		now := time.Now()
		l.mu.Lock()
		if w.End.IsZero() {
			w.End = now
		}
		l.mu.Unlock()
	}
}

// Add records a finished window, for histories built by hand.
func (l *FaultLog) Add(w Window) {
	l.mu.Lock()
	l.windows = append(l.windows, &w)
	l.mu.Unlock()
}

// Windows returns a copy of every window; a window not ended yet has a zero
// End.
func (l *FaultLog) Windows() []Window {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Window, len(l.windows))
	for i, w := range l.windows {
		out[i] = *w
	}
	return out
}

// faultedDuring reports whether node had a process fault that meets
// [from, to].
func faultedDuring(windows []Window, node string, from, to time.Time) bool {
	for _, w := range windows {
		if w.Node == node && w.overlaps(from, to) {
			return true
		}
	}
	return false
}
