package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
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
	// Health changes and resets after the history: each its own entry, or
	// all in one entry with the history before it.
	extra := [][]byte{
		append([]byte{byte(TokenHealthType)}, `{"changes":[{"pool":"openai","token_id":"tok_e","health":{"state":"cooldown","since":"2030-01-02T03:04:05+23:59","until":"9999-12-31T23:59:59-23:59"}}]}`...),
		append([]byte{byte(TokenHealthType)}, `{"changes":[{"pool":"github","token_id":"tok_b","health":{"state":"degraded","reason":"errors","since":"2030-01-02T09:00:00Z"}},{"pool":"github","token_id":"tok_b","health":{"state":"healthy","since":"2030-01-02T09:00:01Z"}},{"pool":"github","token_id":"tok_f","health":{"state":"cooldown","since":"2030-01-02T09:00:00Z","until":"2030-01-02T09:00:00Z"}}]}`...),
		append([]byte{byte(TokenHealthType)}, `{"changes":[{"pool":"github","token_id":"tok_f","health":{"state":"failed","since":"0001-01-01T00:00:00Z","until":"2030-01-02T09:00:00Z"}},{"pool":"github","token_id":"tok_f","health":{"state":"unknown"}}]}`...),
		append([]byte{byte(TokenHealthType)}, `{"changes":[{"pool":"github","token_id":"tok_b","health":{"state":"cooldown","since":"0000-01-01T00:00:00+01:00","until":"0000-01-01T00:00:01+01:00"}}]}`...),
		append([]byte{byte(TokenResetType)}, `{"pool":"github","id":"tok_b","by":"alice","at":"2030-01-02T03:04:05-23:59"}`...),
		append([]byte{byte(TokenResetType)}, `{"pool":"openai","id":"tok_e","by":"\u0000\ud800","at":"2030-01-02T10:00:00.123456789Z"}`...),
		append([]byte{byte(TokenResetType)}, `{"pool":"github","id":"tok_gone","by":"alice","at":"2030-01-02T10:00:00Z"}`...),
		// The rotation commands, against what everyCommand leaves in
		// pool vault: rot_2 open in term 3 (top-up), rot_4 open in term
		// 3 replacing tok_v2, generation 5.
		append([]byte{byte(RotationBeginType)}, `{"rotation":{"id":"rot_6","pool":"vault","replaces":"tok_v3","reason":"failed","generation":6,"term":18446744073709551615,"leader":"\u0000","started_at":"9999-12-31T23:59:59Z","attempts":-5},"at":"2030-01-02T03:04:05+23:59"}`...),
		append([]byte{byte(RotationBeginType)}, `{"rotation":{"id":"rot_6","pool":"vault","reason":"size","generation":18446744073709551615,"term":1},"at":"2030-01-02T10:00:00Z"}`...),
		append([]byte{byte(RotationBeginType)}, `{"rotation":{"id":"rot_2","pool":"vault","replaces":"tok_v1","reason":"x","generation":6,"term":1}}`...),
		append([]byte{byte(RotationResumeType)}, `{"pool":"vault","id":"rot_2","term":18446744073709551615,"leader":"node-9","at":"0001-01-01T00:00:00Z"}`...),
		append([]byte{byte(RotationResumeType)}, `{"pool":"vault","id":"rot_4","term":4}`...),
		append([]byte{byte(RotationCommitType)}, `{"pool":"vault","id":"rot_4","term":3,"token":{"id":"tok_v2","pool":"vault","value":"dmFsdWUtbmV3","fingerprint":"f","expires_at":"2030-01-02T12:04:06Z","retire_at":"2030-01-02T12:00:00Z","lifecycle":"orphaned","rotation_id":"rot_x","generation":7},"at":"2030-01-02T12:04:05Z"}`...),
		append([]byte{byte(RotationCommitType)}, `{"pool":"vault","id":"rot_2","term":3,"token":{"id":"tok_v9","pool":"vault","value":"dmFsdWUtbmV3","fingerprint":"f","expires_at":"2030-01-02T12:04:06Z"},"at":"2030-01-02T12:04:05Z"}`...),
		append([]byte{byte(RotationCommitType)}, `{"pool":"vault","id":"rot_2","term":3,"token":{"id":"tok_v9","pool":"vault","value":"dmFsdWUtbmV3","fingerprint":"f","metadata":{"a":"\ud800"}},"at":"2030-01-02T12:04:05-12:00"}`...),
		append([]byte{byte(RotationFailType)}, `{"pool":"vault","id":"rot_4","term":3,"error":"`+strings.Repeat("€", 200)+`","next_attempt":"0001-01-01T00:00:00Z","at":"2030-01-02T12:00:00Z"}`...),
		append([]byte{byte(RotationFailType)}, `{"pool":"vault","id":"rot_2","term":3,"error":"x`+strings.Repeat(`\u00e9`, 300)+`","next_attempt":"9999-12-31T23:59:59+14:00"}`...),
		append([]byte{byte(RotationAbandonType)}, `{"pool":"vault","id":"rot_4","reason":"`+strings.Repeat(`\ud83d\ude00`, 200)+`"}`...),
		append([]byte{byte(TokenOrphanType)}, `{"token":{"id":"tok_v9","pool":"vault","value":"dmFsdWUtdjM=","fingerprint":"`+legacyFingerprint([]byte("value-v3"))+`"},"reason":"held"}`...),
		append([]byte{byte(TokenOrphanType)}, `{"token":{"id":"tok_v9","pool":"vault","value":"eA==","fingerprint":"g","expires_at":"0001-01-01T00:00:01Z","not_before":"9999-01-01T00:00:00Z","lifecycle":"active","rotation_id":"Not Valid","generation":18446744073709551615},"reason":"late","at":"2030-01-02T12:00:00+05:30"}`...),
		append([]byte{byte(TokenRemoveType)}, `{"pool":"vault","id":"tok_v1","reason":"`+strings.Repeat("ü", 300)+`","at":"2030-01-02T12:00:00Z"}`...),
		append([]byte{byte(TokenAddType)}, `{"token":{"id":"tok_v9","pool":"vault","value":"eA==","fingerprint":"h","rotation_id":"rot_2","generation":3,"retire_at":"2030-01-02T12:00:00Z","lifecycle":"retiring"},"at":"2030-01-02T12:00:00Z"}`...),
		append([]byte{byte(PoolDeleteType)}, `{"name":"vault","force":true}`...),
		// Keyring and reseal, against everyCommand's tok_v7 (sealed with
		// key B at index 65) and tok_v8 (key A, index 61).
		append([]byte{byte(KeyringUseType)}, `{"key_id":"00000000","by":"\u0000","at":"0001-01-01T00:00:00Z"}`...),
		append([]byte{byte(KeyringUseType)}, `{"key_id":["x"]}`...),
		append([]byte{byte(SecretsResealType)}, `{"tokens":[{"pool":"vault","id":"tok_v8","modify_index":61,"value":"9QEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","fingerprint":"x"},{"pool":"vault","id":"tok_v8","modify_index":61,"value":"9QEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","fingerprint":"y"}],"pools":[{"name":"oauth","modify_index":65,"provider":{"type":"oauth2","token_url":"https://auth.example.com/token","client_id":"client-1","client_secret":"9QEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}]}`...),
		append([]byte{byte(SecretsResealType)}, `{"pools":[{"name":"oauth","modify_index":65,"provider":{"type":"exec"}}]}`...),
	}
	for _, e := range extra {
		f.Add(joinEntries(append(slices.Clone(entries), e)))
	}
	f.Add(joinEntries(append(slices.Clone(entries), extra...)))

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
			mark := markOf(a)
			if errC := a.Check(e); markOf(a) != mark || a.State() != before {
				t.Fatalf("Check(%d) (%v) changed the state or recorded events", index, errC)
			}
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
				if markOf(a) != mark {
					t.Fatalf("entry %d was rejected (%v) but recorded events", index, errA)
				}
			} else if events, _ := a.Events(index-1, tokens.MaxEvents); len(events) == 0 && markOf(a) != mark {
				t.Fatalf("entry %d changed the event log without an event at its index", index)
			} else {
				for _, ev := range events {
					if ev.Index != index {
						t.Fatalf("entry %d recorded an event at index %d", index, ev.Index)
					}
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
		checkRotationRules(t, a.State())
		checkEvents(t, a)
		snapA, snapB := snapshotBytes(t, a), snapshotBytes(t, b)
		if !bytes.Equal(snapA, snapB) {
			t.Fatalf("same entries, different snapshots:\n%s\n%s", snapA, snapB)
		}
		// Whatever Apply accepted must survive a snapshot: an agent that
		// cannot write or restore its snapshot cannot compact its log.
		c := New(nil)
		if err := c.Restore(bytes.NewReader(snapA), 0); err != nil {
			t.Fatalf("Restore of the snapshot: %v\n%s", err, snapA)
		}
		if snapC := snapshotBytes(t, c); !bytes.Equal(snapC, snapA) {
			t.Fatalf("snapshot changed across a restore:\n%s\nwant\n%s", snapC, snapA)
		}
		if !reflect.DeepEqual(eventsOf(c), eventsOf(a)) {
			t.Fatalf("events changed across a restore:\n%+v\nwant\n%+v", eventsOf(c), eventsOf(a))
		}
	})
}

// checkEvents fails if f's event log breaks what readers rely on: at most
// MaxEvents events, in index order, none at or below the dropped index
// except ones that share it, and Events pages through all of them.
func checkEvents(t testing.TB, f *FSM) {
	t.Helper()
	ev := eventsOf(f)
	if len(ev.Events) > tokens.MaxEvents {
		t.Fatalf("the log shows %d events", len(ev.Events))
	}
	for i, e := range ev.Events {
		if e.Index < ev.Dropped || (i > 0 && e.Index < ev.Events[i-1].Index) || e.Index > f.AppliedIndex() {
			t.Fatalf("event %d of %d has index %d (dropped %d, applied %d): %+v", i, len(ev.Events), e.Index, ev.Dropped, f.AppliedIndex(), ev.Events)
		}
	}
	var paged []tokens.Event
	since := uint64(0)
	for {
		page, truncated := f.Events(since, 2)
		if truncated != (since < ev.Dropped) {
			t.Fatalf("Events(%d) truncated = %v with events dropped up to %d", since, truncated, ev.Dropped)
		}
		if len(page) == 0 {
			break
		}
		paged = append(paged, page...)
		since = page[len(page)-1].Index
	}
	// A page never ends inside an entry's events, so resuming after the
	// last index of a page loses none: paging gives every event.
	if !reflect.DeepEqual(paged, ev.Events) {
		t.Fatalf("paging through Events with limit 2 gave\n%+v\nwant\n%+v", paged, ev.Events)
	}
}

func FuzzRestore(f *testing.F) {
	good := snapshotBytes(f, applyAll(f, everyCommand(f)).f)
	v1, err := os.ReadFile(filepath.Join("testdata", "snapshot-v1.jsonl"))
	if err != nil {
		f.Fatal(err)
	}
	// A log that dropped events, one of them sharing an index with kept
	// ones. (A snapshot of a real one holds MaxEvents events: too big an
	// input to mutate and minimize quickly.)
	dropped := []byte(`{"format":"tokend-state","version":2,"applied_index":1030,"events_dropped":1027}
{"type":"pool","pool":{"name":"p","selection":"priority","provider":{"type":"static"},"create_index":1,"modify_index":1}}
{"type":"event","event":{"index":1027,"at":"2030-01-02T03:04:05Z","type":"token_health","pool":"p","token":"tok_b","from":"healthy","to":"failed","reason":"unauthorized","reporter":"node-1"}}
{"type":"event","event":{"index":1029,"at":"2030-01-02T03:04:05Z","type":"pool_applied","pool":"p"}}
{"type":"end","count":3}
`)
	f.Add(good)
	f.Add(v1)
	f.Add(dropped)
	f.Add(snapshotBytes(f, New(nil)))
	f.Add(good[:len(good)/2])
	f.Add(good[:len(good)-20])
	f.Add(bytes.Replace(good, []byte(`"count":`), []byte(`"count":1`), 1))
	v2, err := os.ReadFile(filepath.Join("testdata", "snapshot-v2.jsonl"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(v2)
	current := fmt.Appendf(nil, `"version":%d`, snapshotVersion)
	if !bytes.Contains(good, current) || !bytes.Contains(good, []byte(`"type":"rotation"`)) || !bytes.Contains(good, []byte(`"status":{`)) {
		f.Fatalf("everyCommand's snapshot is not of version %d with rotations and status:\n%s", snapshotVersion, good)
	}
	// Older and newer versions of the current stream: its rotation
	// records and status are not valid before version 3.
	for _, v := range []int{1, 2, snapshotVersion + 1} {
		f.Add(bytes.Replace(good, current, fmt.Appendf(nil, `"version":%d`, v), 1))
	}
	f.Add(bytes.Replace(v2, []byte(`"version":2`), current, 1))
	// Rotations and status edited: a rotation twice, in another pool, in
	// an unknown pool, without a rotation; a status that is not one.
	f.Add(bytes.Replace(good, []byte(`{"type":"rotation","rotation":{"id":"rot_4"`), []byte(`{"type":"rotation","rotation":{"id":"rot_2"`), 1))
	f.Add(bytes.Replace(good, []byte(`"rotation":{"id":"rot_4","pool":"vault"`), []byte(`"rotation":{"id":"rot_4","pool":"github"`), 1))
	f.Add(bytes.Replace(good, []byte(`"rotation":{"id":"rot_4","pool":"vault"`), []byte(`"rotation":{"id":"rot_4","pool":"nope"`), 1))
	f.Add(bytes.Replace(good, []byte(`{"type":"rotation","rotation":{`), []byte(`{"type":"rotation","pool":{`), 1))
	f.Add(bytes.Replace(good, []byte(`"status":{`), []byte(`"status":{"generation":-1,`), 1))
	f.Add(bytes.Replace(good, []byte(`"status":{`), []byte(`"status":{},"x":{`), 1))
	f.Add(bytes.Replace(good, []byte(`"applied_index":`), []byte(`"events_dropped":30,"applied_index":`), 1))
	f.Add(bytes.Replace(good, []byte(`"index":1,`), []byte(`"index":100,`), 1))
	f.Add(bytes.Replace(v1, []byte(`"version":1`), []byte(`"version":2`), 1))
	f.Add(bytes.Replace(good, []byte(`"type":"token"`), []byte(`"type":"pool"`), 1))
	f.Add(bytes.Replace(good, []byte(`"type":"token"`), []byte(`"type":"event"`), 1))
	f.Add([]byte(`{"format":"tokend-state","version":1}` + "\n" + `{"type":"end"}`))
	f.Add([]byte(`{"format":"tokend-state","version":1}{"type":"pool","pool":{"name":"a"}}{"type":"token","token":{"pool":"a"}}{"type":"end","count":2}`))
	f.Add([]byte(`{"format":"tokend-state","version":2,"events_dropped":5}{"type":"event","event":{"index":5}}{"type":"event","event":{"index":5,"type":"x"}}{"type":"end","count":2}`))
	f.Add([]byte{})
	f.Add([]byte("null"))

	f.Fuzz(func(t *testing.T, data []byte) {
		sm := restoreInto(t, good) // an agent that holds some state
		before, frozen, index := sm.State(), freeze(sm.State()), sm.AppliedIndex()
		events := eventsOf(sm)
		if err := sm.Restore(bytes.NewReader(data), 0); err != nil {
			if sm.State() != before || !reflect.DeepEqual(freeze(before), frozen) {
				t.Fatalf("rejected Restore (%v) changed the state", err)
			}
			if sm.AppliedIndex() != index {
				t.Fatalf("rejected Restore (%v) changed AppliedIndex to %d", err, sm.AppliedIndex())
			}
			if !reflect.DeepEqual(eventsOf(sm), events) {
				t.Fatalf("rejected Restore (%v) changed the event log", err)
			}
			return
		}
		checkInvariants(t, sm.State())
		if n := len(eventsOf(sm).Events); n > tokens.MaxEvents {
			t.Fatalf("Restore accepted %d events", n)
		}
		// A restored state snapshots and restores to itself.
		snap := snapshotBytes(t, sm)
		g := New(nil)
		if err := g.Restore(bytes.NewReader(snap), 0); err != nil {
			t.Fatalf("Restore of a restored state's snapshot: %v\n%s", err, snap)
		}
		if again := snapshotBytes(t, g); !bytes.Equal(again, snap) {
			t.Fatalf("snapshot changed across a restore:\n%s\nwant\n%s", again, snap)
		}
		if g.AppliedIndex() != sm.AppliedIndex() {
			t.Fatalf("AppliedIndex %d became %d across a restore", sm.AppliedIndex(), g.AppliedIndex())
		}
		if !reflect.DeepEqual(eventsOf(g), eventsOf(sm)) {
			t.Fatalf("events changed across a restore:\n%+v\nwant\n%+v", eventsOf(g), eventsOf(sm))
		}
	})
}
