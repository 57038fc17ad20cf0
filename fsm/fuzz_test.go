package fsm

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/tokend/tokend/tokens"
)

// splitEntries cuts fuzz input into log entries at newlines. Encoded
// commands never contain a raw newline (JSON escapes it), so a seed made of
// real entries joined by newlines is a real log.
func splitEntries(data []byte) [][]byte { return bytes.Split(data, []byte("\n")) }

func joinEntries(entries [][]byte) []byte { return bytes.Join(entries, []byte("\n")) }

func FuzzApply(f *testing.F) {
	entries := everyCommand(f)
	f.Add(joinEntries(entries))
	for _, e := range entries {
		f.Add(e)
		f.Add(e[:len(e)/2]) // truncated
		f.Add(e[:1])        // type byte only
	}
	for _, cut := range []int{7, 200, 1000} {
		all := joinEntries(entries)
		f.Add(all[:min(cut, len(all))])
	}
	f.Add([]byte{})
	f.Add([]byte{0})
	f.Add([]byte{byte(IgnoreUnknownTypeFlag | 9), '{', '}'})
	f.Add([]byte{99, '{', '}'})
	f.Add(append([]byte{byte(TokenReportType)}, `{"reports":[{"pool":"github","token_id":"tok_a","outcome":"rate_limited","at":"2030-01-02T03:04:05+23:59","until":"9999-12-31T23:59:59-23:59"}]}`...))

	f.Fuzz(func(t *testing.T, data []byte) {
		entries := splitEntries(data)
		if len(entries) > 64 {
			entries = entries[:64]
		}
		var logsA, logsB logBuffer
		a, b := New(newLogger(&logsA)), New(newLogger(&logsB))
		for i, e := range entries {
			index := uint64(i + 1)
			before := a.State()
			frozen := freeze(before)
			errA := a.Apply(index, e)
			errB := b.Apply(index, bytes.Clone(e))
			for _, logs := range []string{logsA.String(), logsB.String()} {
				if strings.Contains(logs, "panicked") {
					t.Fatalf("entry %d panicked in apply:\n%s", index, logs)
				}
			}
			if (errA == nil) != (errB == nil) || (errA != nil && errA.Error() != errB.Error()) {
				t.Fatalf("entry %d: two agents answered %v and %v", index, errA, errB)
			}
			if errA != nil {
				var e *tokens.Error
				if !errors.As(errA, &e) || e.Code == "" {
					t.Fatalf("entry %d: rejection %v (%T) has no code", index, errA, errA)
				}
				if a.State() != before {
					t.Fatalf("entry %d was rejected (%v) but replaced the state", index, errA)
				}
			}
			if a.AppliedIndex() != index {
				t.Fatalf("entry %d: AppliedIndex = %d", index, a.AppliedIndex())
			}
			if !reflect.DeepEqual(freeze(before), frozen) {
				t.Fatalf("entry %d modified the state that was current before it", index)
			}
		}
		checkInvariants(t, a.State())
		snapA, snapB := snapshotBytes(t, a), snapshotBytes(t, b)
		if !bytes.Equal(snapA, snapB) {
			t.Fatalf("same entries, different snapshots:\n%s\n%s", snapA, snapB)
		}
		// Whatever Apply accepted must survive a snapshot: an agent that
		// cannot write or restore its snapshot cannot compact its log.
		c := New(nil)
		if err := c.Restore(bytes.NewReader(snapA)); err != nil {
			t.Fatalf("Restore of the snapshot: %v\n%s", err, snapA)
		}
		if snapC := snapshotBytes(t, c); !bytes.Equal(snapC, snapA) {
			t.Fatalf("snapshot changed across a restore:\n%s\nwant\n%s", snapC, snapA)
		}
	})
}

func FuzzRestore(f *testing.F) {
	good := snapshotBytes(f, applyAll(f, everyCommand(f)).f)
	f.Add(good)
	f.Add(snapshotBytes(f, New(nil)))
	f.Add(good[:len(good)/2])
	f.Add(good[:len(good)-20])
	f.Add(bytes.Replace(good, []byte(`"count":6`), []byte(`"count":5`), 1))
	f.Add(bytes.Replace(good, []byte(`"version":1`), []byte(`"version":2`), 1))
	f.Add(bytes.Replace(good, []byte(`"type":"token"`), []byte(`"type":"pool"`), 1))
	f.Add([]byte(`{"format":"tokend-state","version":1}` + "\n" + `{"type":"end"}`))
	f.Add([]byte(`{"format":"tokend-state","version":1}{"type":"pool","pool":{"name":"a"}}{"type":"token","token":{"pool":"a"}}{"type":"end","count":2}`))
	f.Add([]byte{})
	f.Add([]byte("null"))

	f.Fuzz(func(t *testing.T, data []byte) {
		sm := restoreInto(t, good) // an agent that holds some state
		before, frozen, index := sm.State(), freeze(sm.State()), sm.AppliedIndex()
		if err := sm.Restore(bytes.NewReader(data)); err != nil {
			if sm.State() != before || !reflect.DeepEqual(freeze(before), frozen) {
				t.Fatalf("rejected Restore (%v) changed the state", err)
			}
			if sm.AppliedIndex() != index {
				t.Fatalf("rejected Restore (%v) changed AppliedIndex to %d", err, sm.AppliedIndex())
			}
			return
		}
		checkInvariants(t, sm.State())
		// A restored state snapshots and restores to itself.
		snap := snapshotBytes(t, sm)
		g := New(nil)
		if err := g.Restore(bytes.NewReader(snap)); err != nil {
			t.Fatalf("Restore of a restored state's snapshot: %v\n%s", err, snap)
		}
		if again := snapshotBytes(t, g); !bytes.Equal(again, snap) {
			t.Fatalf("snapshot changed across a restore:\n%s\nwant\n%s", again, snap)
		}
		if g.AppliedIndex() != sm.AppliedIndex() {
			t.Fatalf("AppliedIndex %d became %d across a restore", sm.AppliedIndex(), g.AppliedIndex())
		}
	})
}
