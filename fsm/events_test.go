package fsm

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/tokend/tokend/tokens"
)

// Every accepted command records what it did, at its entry's index.
func TestEventsPerCommand(t *testing.T) {
	h := newHarness(t)
	var all []tokens.Event
	expect := func(what string, want ...tokens.Event) {
		t.Helper()
		if !sameEvents(h.last, want) {
			t.Errorf("%s recorded\n%+v\nwant\n%+v", what, h.last, want)
		}
		all = append(all, h.last...)
	}
	at := func(d time.Duration) time.Time { return t0.Add(d) }

	h.mustApply(PoolUpsertType, poolReq("p", at(0)))
	expect("creating a pool", tokens.Event{Index: 1, At: at(0), Type: tokens.EventPoolApplied, Pool: "p"})
	h.mustApply(PoolUpsertType, poolReq("p", at(time.Second), func(p *tokens.Pool) { p.MinHealthy = 1 }))
	expect("updating a pool", tokens.Event{Index: 2, At: at(time.Second), Type: tokens.EventPoolApplied, Pool: "p"})
	for i, id := range []string{"tok_a", "tok_b", "tok_c"} {
		h.mustApply(TokenAddType, tokenReq("p", id, "value-"+id, 0, at(2*time.Second)))
		expect("adding "+id, tokens.Event{Index: uint64(3 + i), At: at(2 * time.Second), Type: tokens.EventTokenAdded, Pool: "p", Token: id, To: tokens.Healthy})
	}

	// A health entry records one event per change that changed something,
	// in the entry's order, all at its index; At is the decision's time.
	h.mustApply(TokenHealthType, changes(
		change("p", "tok_a", by("node-2", failed("unauthorized", at(time.Minute)))),
		change("p", "tok_gone", failed("unauthorized", at(time.Minute))),
		change("p", "tok_b", cooldown(at(2*time.Minute), at(time.Hour))),
		change("p", "tok_a", failed("forbidden", at(3*time.Minute))), // changes nothing
		change("p", "tok_c", by("node-3", degraded("errors", at(4*time.Minute)))),
		change("p", "tok_c", healthy("recovered", at(5*time.Minute))),
	))
	expect("a health entry",
		tokens.Event{Index: 6, At: at(time.Minute), Type: tokens.EventTokenHealth, Pool: "p", Token: "tok_a", From: tokens.Healthy, To: tokens.Failed, Reason: "unauthorized", Reporter: "node-2"},
		tokens.Event{Index: 6, At: at(2 * time.Minute), Type: tokens.EventTokenHealth, Pool: "p", Token: "tok_b", From: tokens.Healthy, To: tokens.Cooldown, Reason: "rate_limited", Reporter: "node-1"},
		tokens.Event{Index: 6, At: at(4 * time.Minute), Type: tokens.EventTokenHealth, Pool: "p", Token: "tok_c", From: tokens.Healthy, To: tokens.Degraded, Reason: "errors", Reporter: "node-3"},
		tokens.Event{Index: 6, At: at(5 * time.Minute), Type: tokens.EventTokenHealth, Pool: "p", Token: "tok_c", From: tokens.Degraded, To: tokens.Healthy, Reason: "recovered", Reporter: "node-1"},
	)
	// Extending a cooldown keeps its start in the token's health, but the
	// event is the decision's: its time, reason and reporter.
	ext := tokens.Health{State: tokens.Cooldown, Reason: "retry_after", Since: at(10 * time.Minute), Until: at(2 * time.Hour), Reporter: "node-4"}
	h.mustApply(TokenHealthType, changes(change("p", "tok_b", ext)))
	if got := h.token("p", "tok_b").Health; !got.Since.Equal(at(2*time.Minute)) || !got.Until.Equal(at(2*time.Hour)) {
		t.Errorf("extended cooldown = %+v", got)
	}
	expect("extending a cooldown", tokens.Event{Index: 7, At: at(10 * time.Minute), Type: tokens.EventTokenHealth, Pool: "p", Token: "tok_b", From: tokens.Cooldown, To: tokens.Cooldown, Reason: "retry_after", Reporter: "node-4"})
	h.mustApply(TokenHealthType, changes(change("p", "tok_a", healthy("recovered", at(11*time.Minute)))))
	expect("a health entry that changes nothing")
	h.mustApply(IgnoreUnknownTypeFlag|3, map[string]int{"x": 1})
	expect("an ignored entry")

	h.mustApply(TokenResetType, TokenResetRequest{Pool: "p", ID: "tok_a", By: "alice", At: at(time.Hour)})
	expect("resetting a failed token", tokens.Event{Index: 10, At: at(time.Hour), Type: tokens.EventTokenReset, Pool: "p", Token: "tok_a", From: tokens.Failed, To: tokens.Healthy, Reason: tokens.ResetHealth(at(time.Hour), "alice").Reason, Reporter: "alice"})
	h.mustApply(TokenResetType, TokenResetRequest{Pool: "p", ID: "tok_b", By: "bob", At: at(time.Hour)})
	expect("resetting a cooling-down token", tokens.Event{Index: 11, At: at(time.Hour), Type: tokens.EventTokenReset, Pool: "p", Token: "tok_b", From: tokens.Cooldown, To: tokens.Healthy, Reason: tokens.ResetHealth(at(time.Hour), "bob").Reason, Reporter: "bob"})

	h.mustApply(TokenRemoveType, TokenRemoveRequest{Pool: "p", ID: "tok_c", At: at(2 * time.Hour)})
	expect("removing a token", tokens.Event{Index: 12, At: at(2 * time.Hour), Type: tokens.EventTokenRemoved, Pool: "p", Token: "tok_c"})
	h.mustApply(PoolDeleteType, PoolDeleteRequest{Name: "p", Force: true, At: at(3 * time.Hour)})
	expect("force-deleting a pool with tokens", tokens.Event{Index: 13, At: at(3 * time.Hour), Type: tokens.EventPoolDeleted, Pool: "p", Reason: "forced, with 2 tokens"})
	h.mustApply(PoolUpsertType, poolReq("q", at(4*time.Hour)))
	expect("creating another pool", tokens.Event{Index: 14, At: at(4 * time.Hour), Type: tokens.EventPoolApplied, Pool: "q"})
	h.mustApply(PoolDeleteType, PoolDeleteRequest{Name: "q", At: at(5 * time.Hour)})
	expect("deleting an empty pool", tokens.Event{Index: 15, At: at(5 * time.Hour), Type: tokens.EventPoolDeleted, Pool: "q"})
	// Force on an empty pool deletes no token: nothing was forced.
	h.mustApply(PoolUpsertType, poolReq("q", at(6*time.Hour)))
	all = append(all, h.last...)
	h.mustApply(PoolDeleteType, PoolDeleteRequest{Name: "q", Force: true, At: at(7 * time.Hour)})
	expect("force-deleting an empty pool", tokens.Event{Index: 17, At: at(7 * time.Hour), Type: tokens.EventPoolDeleted, Pool: "q"})

	got, truncated := h.f.Events(0, tokens.MaxEvents)
	if !reflect.DeepEqual(got, all) || truncated {
		t.Errorf("Events(0) = %+v (truncated %v)\nwant %+v", got, truncated, all)
	}
	if got, _ := h.f.Events(h.index, tokens.MaxEvents); len(got) != 0 {
		t.Errorf("Events(last index) = %+v, want none", got)
	}
}

// Rejected entries, entries that panic, and Check record nothing.
func TestEventsRejectedAndCheck(t *testing.T) {
	h := newHarness(t)
	h.mustApply(PoolUpsertType, poolReq("p", t0))
	h.mustApply(TokenAddType, tokenReq("p", "tok_a", "value-a", 0, t0))
	want := eventsOf(h.f)
	valid := [][]byte{
		encode(t, PoolUpsertType, poolReq("q", t0)),
		encode(t, PoolDeleteType, PoolDeleteRequest{Name: "p", Force: true, At: t0}),
		encode(t, TokenAddType, tokenReq("p", "tok_b", "value-b", 0, t0)),
		encode(t, TokenRemoveType, TokenRemoveRequest{Pool: "p", ID: "tok_a", At: t0}),
		encode(t, TokenHealthType, changes(change("p", "tok_a", failed("unauthorized", t0)))),
		encode(t, TokenResetType, TokenResetRequest{Pool: "p", ID: "tok_a", By: "alice", At: t0}),
	}
	for _, e := range valid {
		if err := h.f.Check(e); err != nil {
			t.Fatalf("Check(%s) = %v", MessageType(e[0]), err)
		}
	}
	rejected := []struct {
		typ  MessageType
		req  any
		code string
	}{
		{PoolUpsertType, poolReq("Bad Name", t0), tokens.CodeInvalid},
		{PoolDeleteType, PoolDeleteRequest{Name: "nope", At: t0}, tokens.CodePoolNotFound},
		{PoolDeleteType, PoolDeleteRequest{Name: "p", At: t0}, tokens.CodeConflict},
		{TokenAddType, tokenReq("p", "tok_a", "value-x", 0, t0), tokens.CodeConflict},
		{TokenRemoveType, TokenRemoveRequest{Pool: "p", ID: "tok_x", At: t0}, tokens.CodeTokenNotFound},
		{TokenHealthType, changes(change("p", "tok_a", failed("unauthorized", t0)), change("p", "tok_a", tokens.Health{State: "x"})), tokens.CodeInvalid},
		{TokenResetType, TokenResetRequest{Pool: "p", ID: "tok_x", At: t0}, tokens.CodeTokenNotFound},
		{TokenResetType, TokenResetRequest{Pool: "nope", ID: "tok_a", At: t0}, tokens.CodePoolNotFound},
	}
	for _, r := range rejected {
		h.reject(r.typ, r.req, r.code)
	}
	h.rejectRaw([]byte{byte(TokenHealthType), '{'}, tokens.CodeInvalid)
	h.rejectRaw([]byte{99}, tokens.CodeInvalid)
	if got := eventsOf(h.f); !reflect.DeepEqual(got, want) {
		t.Fatalf("Check and rejected entries changed the event log:\n%+v\nwant\n%+v", got, want)
	}
}

// Changes in one entry share its index, and a reader gets all of them
// whatever limit it pages with: a page never ends inside an entry's events,
// or a reader resuming after the page's last index would miss the rest.
func TestEventsOneEntryManyChanges(t *testing.T) {
	h := newHarness(t)
	h.mustApply(PoolUpsertType, poolReq("p", t0))
	var cs []HealthChange
	for i := range 5 {
		id := fmt.Sprintf("tok_%d", i)
		h.mustApply(TokenAddType, tokenReq("p", id, "value-"+id, 0, t0))
		cs = append(cs, change("p", id, failed("unauthorized", t0.Add(time.Duration(i)*time.Second))))
	}
	h.mustApply(TokenHealthType, changes(cs...))
	group := h.index
	h.mustApply(PoolUpsertType, poolReq("q", t0))
	if len(h.last) != 1 {
		t.Fatalf("upsert recorded %+v", h.last)
	}

	all, _ := h.f.Events(group-1, tokens.MaxEvents)
	if len(all) != 6 {
		t.Fatalf("Events(%d) = %+v, want 5 health events and an upsert", group-1, all)
	}
	for i, ev := range all[:5] {
		if ev.Index != group || ev.Token != cs[i].TokenID || ev.Type != tokens.EventTokenHealth || !ev.At.Equal(cs[i].Health.Since) {
			t.Errorf("event %d = %+v, want %s's change at index %d", i, ev, cs[i].TokenID, group)
		}
	}
	for limit := 1; limit <= 7; limit++ {
		page, _ := h.f.Events(group-1, limit)
		switch {
		case limit <= 5 && !reflect.DeepEqual(page, all[:5]):
			t.Errorf("Events(%d, %d) = %d events, want the entry's 5", group-1, limit, len(page))
		case limit > 5 && !reflect.DeepEqual(page, all):
			t.Errorf("Events(%d, %d) = %d events, want 6", group-1, limit, len(page))
		}
	}
	// From before the group, a page that reaches into it takes all of it.
	before, _ := h.f.Events(group-2, tokens.MaxEvents) // tok_4 added, the group, the upsert
	for limit := 1; limit <= 8; limit++ {
		want := before
		switch {
		case limit == 1:
			want = before[:1]
		case limit <= 6:
			want = before[:6]
		}
		if page, _ := h.f.Events(group-2, limit); !reflect.DeepEqual(page, want) {
			t.Errorf("Events(%d, %d) = %d events, want %d", group-2, limit, len(page), len(want))
		}
	}
	if page, _ := h.f.Events(group, 1); len(page) != 1 || page[0].Pool != "q" {
		t.Errorf("Events(%d, 1) = %+v, want the upsert after the group", group, page)
	}
}

// Pagination: pages of any size, resumed after the last index of the page
// before, give every event once, in order.
func TestEventsPagination(t *testing.T) {
	h := applyAll(t, everyCommand(t))
	all, truncated := h.f.Events(0, tokens.MaxEvents)
	if truncated || len(all) < 30 {
		t.Fatalf("Events(0) = %d events, truncated %v", len(all), truncated)
	}
	for _, limit := range []int{1, 2, 3, 5, 8, len(all) - 1, len(all), tokens.MaxEvents, math.MaxInt} {
		var got []tokens.Event
		var since uint64
		for pages := 0; ; pages++ {
			if pages > len(all) {
				t.Fatalf("limit %d: paging does not end", limit)
			}
			page, truncated := h.f.Events(since, limit)
			if truncated {
				t.Fatalf("Events(%d, %d) truncated with nothing dropped", since, limit)
			}
			if len(page) == 0 {
				break
			}
			// Beyond limit only to finish the last entry's events.
			if len(page) > limit && page[limit-1].Index != page[len(page)-1].Index {
				t.Fatalf("Events(%d, %d) = %d events, past the end of an entry", since, limit, len(page))
			}
			if page[0].Index <= since {
				t.Fatalf("Events(%d, %d) starts at index %d", since, limit, page[0].Index)
			}
			got = append(got, page...)
			since = page[len(page)-1].Index
		}
		if !reflect.DeepEqual(got, all) {
			t.Errorf("limit %d: paging gave %d events, want %d", limit, len(got), len(all))
		}
	}
	// Odd arguments: nothing, and no panic.
	last := all[len(all)-1].Index
	for _, c := range []struct {
		since uint64
		limit int
		want  int
	}{
		{0, 0, 0}, {3, 0, 0}, {0, -1, 0}, {5, -1, 0}, {5, math.MinInt, 0},
		{last, 10, 0}, {last + 100, 10, 0}, {math.MaxUint64, math.MaxInt, 0},
		{all[1].Index - 1, math.MaxInt, len(all) - 1},
	} {
		page, truncated := h.f.Events(c.since, c.limit)
		if len(page) != c.want || truncated {
			t.Errorf("Events(%d, %d) = %d events, truncated %v; want %d", c.since, c.limit, len(page), truncated, c.want)
		}
	}
	// The slice is the caller's.
	page, _ := h.f.Events(0, 3)
	page[0].Pool = "scribbled"
	if again, _ := h.f.Events(0, 3); again[0].Pool == "scribbled" {
		t.Error("Events returned the log's own memory")
	}
}

// The log keeps the last MaxEvents events, and tells a reader that asks
// from before them that it missed some.
func TestEventsTruncation(t *testing.T) {
	const total = 2*tokens.MaxEvents + 5
	h := newHarness(t)
	for i := 1; i <= total; i++ {
		h.mustApply(PoolUpsertType, poolReq(fmt.Sprintf("p%d", i%7), t0.Add(time.Duration(i)*time.Second)))
		first := uint64(max(1, i-tokens.MaxEvents+1))
		page, truncated := h.f.Events(0, 1)
		if len(page) != 1 || page[0].Index != first || truncated != (i > tokens.MaxEvents) {
			t.Fatalf("after %d upserts Events(0, 1) = %+v, truncated %v; want index %d", i, page, truncated, first)
		}
		switch i {
		case tokens.MaxEvents - 1, tokens.MaxEvents, tokens.MaxEvents + 1, 2*tokens.MaxEvents - 1, 2 * tokens.MaxEvents, 2*tokens.MaxEvents + 1, total:
			all, _ := h.f.Events(0, 4*tokens.MaxEvents)
			if len(all) != min(i, tokens.MaxEvents) || all[0].Index != first || all[len(all)-1].Index != uint64(i) {
				t.Fatalf("after %d upserts the log shows %d events, %d to %d", i, len(all), all[0].Index, all[len(all)-1].Index)
			}
			for k, ev := range all {
				if ev.Index != first+uint64(k) {
					t.Fatalf("after %d upserts event %d has index %d", i, k, ev.Index)
				}
			}
		}
	}
	lastDropped := uint64(total - tokens.MaxEvents)
	all, truncated := h.f.Events(0, 4*tokens.MaxEvents)
	if len(all) != tokens.MaxEvents || all[0].Index != lastDropped+1 || !truncated {
		t.Fatalf("Events(0) = %d events from %d, truncated %v", len(all), all[0].Index, truncated)
	}
	for _, c := range []struct {
		since     uint64
		n         int
		truncated bool
	}{
		{0, tokens.MaxEvents, true},
		{lastDropped - 1, tokens.MaxEvents, true},
		{lastDropped, tokens.MaxEvents, false},
		{lastDropped + 1, tokens.MaxEvents - 1, false},
		{total - 1, 1, false},
		{total, 0, false},
	} {
		page, truncated := h.f.Events(c.since, 4*tokens.MaxEvents)
		if len(page) != c.n || truncated != c.truncated {
			t.Errorf("Events(%d) = %d events, truncated %v; want %d, %v", c.since, len(page), truncated, c.n, c.truncated)
		}
	}
	// The snapshot carries the kept events and the dropped index.
	snap := snapshotBytes(t, h.f)
	if want := fmt.Sprintf(`{"format":"tokend-state","version":%d,"applied_index":%d,"events_dropped":%d}`+"\n", snapshotVersion, total, lastDropped); !slices.Equal(snap[:len(want)], []byte(want)) {
		t.Errorf("snapshot header %q, want %q", snap[:len(want)], want)
	}
	g := restoreInto(t, snap)
	if !reflect.DeepEqual(eventsOf(g), eventsOf(h.f)) {
		t.Error("events changed across snapshot and restore")
	}
	if _, truncated := g.Events(lastDropped-1, 1); !truncated {
		t.Error("restored log forgot the dropped events")
	}
}

// When trimming cuts through the events of one entry, a reader positioned
// before that entry learns that it missed some of them.
func TestEventsTruncationInsideAnEntry(t *testing.T) {
	h := newHarness(t)
	h.mustApply(PoolUpsertType, poolReq("p", t0))
	for _, id := range []string{"tok_a", "tok_b", "tok_c"} {
		h.mustApply(TokenAddType, tokenReq("p", id, "value-"+id, 0, t0))
	}
	h.mustApply(TokenHealthType, changes(
		change("p", "tok_a", failed("unauthorized", t0)),
		change("p", "tok_b", failed("unauthorized", t0)),
		change("p", "tok_c", failed("unauthorized", t0)),
	))
	group := h.index
	// 7 events so far; MaxEvents-2 more make MaxEvents+5, which drops the
	// first 5: the upsert, the three adds, and the first of the group's
	// three.
	for i := range tokens.MaxEvents - 2 {
		h.mustApply(PoolUpsertType, poolReq(fmt.Sprintf("q%d", i%3), t0))
	}
	all, truncated := h.f.Events(group-1, 4*tokens.MaxEvents)
	if len(all) != tokens.MaxEvents || all[0].Index != group || all[1].Index != group || all[2].Index == group || !truncated {
		t.Fatalf("Events(%d) = %d events from %+v, truncated %v", group-1, len(all), all[:3], truncated)
	}
	if all[0].Token != "tok_b" || all[1].Token != "tok_c" {
		t.Fatalf("kept the group's %s and %s, want tok_b and tok_c", all[0].Token, all[1].Token)
	}
	if page, truncated := h.f.Events(group, 1); truncated || len(page) != 1 || page[0].Index != group+1 {
		t.Fatalf("Events(%d, 1) = %+v, truncated %v", group, page, truncated)
	}
	g := restoreInto(t, snapshotBytes(t, h.f))
	if !reflect.DeepEqual(eventsOf(g), eventsOf(h.f)) || eventsOf(g).Dropped != group {
		t.Fatalf("restored log %+v", eventsOf(g).Dropped)
	}
}
