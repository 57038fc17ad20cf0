package fsm

import (
	"slices"
	"sort"
	"sync"

	"github.com/tokend/tokend/tokens"
)

// eventLog keeps the latest tokens.MaxEvents events in index order. Only
// Apply and Restore write it; its readers are the event API and snapshots,
// never the token fetch path, so a lock is fine here.
type eventLog struct {
	mu     sync.RWMutex
	events []tokens.Event
	// dropped is the index of the newest event trimmed from events.
	dropped uint64
}

func (l *eventLog) append(events []tokens.Event) {
	if len(events) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, events...)
	// Trim in bulk once the log is twice its size, so appends stay O(1)
	// amortized.
	if n := len(l.events) - tokens.MaxEvents; n >= tokens.MaxEvents {
		l.dropped = l.events[n-1].Index
		l.events = slices.Clone(l.events[n:])
	}
}

// kept is the visible part of the log: the last MaxEvents events.
func (l *eventLog) kept() []tokens.Event {
	return l.events[max(0, len(l.events)-tokens.MaxEvents):]
}

// droppedIndex is the index of the newest event no longer visible.
func (l *eventLog) droppedIndex() uint64 {
	if n := len(l.events) - tokens.MaxEvents; n > 0 {
		return l.events[n-1].Index
	}
	return l.dropped
}

// since returns up to limit of the oldest visible events with an index
// above index, and whether some events above index are no longer kept. A
// page does not end inside the events of one entry: it takes the rest of
// them, beyond limit, because a reader resumes from the index of the last
// event it got and would miss them otherwise.
func (l *eventLog) since(index uint64, limit int) (events []tokens.Event, truncated bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	kept := l.kept()
	i := sort.Search(len(kept), func(i int) bool { return kept[i].Index > index })
	end := i
	if limit > 0 {
		// Not i+limit: it overflows for a limit near math.MaxInt.
		end = i + min(limit, len(kept)-i)
		for end > i && end < len(kept) && kept[end].Index == kept[end-1].Index {
			end++
		}
	}
	return slices.Clone(kept[i:end]), index < l.droppedIndex()
}

func (l *eventLog) snapshot() (events []tokens.Event, dropped uint64) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return slices.Clone(l.kept()), l.droppedIndex()
}

func (l *eventLog) reset(events []tokens.Event, dropped uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events, l.dropped = events, dropped
}

// Events returns up to limit events with an index above index, oldest
// first, and whether some events above index were already dropped from the
// log, so the caller has missed them. It returns more than limit only to
// finish the events of the last entry it returns, so that the caller can
// page on from that entry's index. A limit of 0 or less returns none.
func (f *FSM) Events(index uint64, limit int) ([]tokens.Event, bool) {
	return f.events.since(index, limit)
}
