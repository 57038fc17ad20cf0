package fsm

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/tokend/tokend/tokens"
)

// Issue 7's size target: "10,000 tokens in 100 pools ... snapshot + restore
// ≤ 1 s". These benchmarks time the state machine's part of a Raft
// snapshot at that size: Snapshot (the pointer capture) and Persist
// (WriteTo), then Restore of the stream, on values sealed as agents seal
// them (40-byte values). tokend-bench scale measures the operator's
// backup round trip through the API.

const (
	scalePools   = 100
	scalePerPool = 100
)

// scaleFSM is an FSM holding scalePools pools of scalePerPool tokens, with
// the keyring in use and a full event log, built through Apply.
func scaleFSM(b *testing.B) *FSM {
	b.Helper()
	kr := testKeyring(b)
	key := kr.Default()
	f := New(nil)
	index := uint64(0)
	apply := func(typ MessageType, req any) {
		index++
		if err := f.Apply(index, encode(b, typ, req)); err != nil {
			b.Fatalf("apply %s at %d: %v", typ, index, err)
		}
	}
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	apply(KeyringUseType, KeyringUseRequest{KeyID: key, At: t0})
	for p := range scalePools {
		pool := fmt.Sprintf("scale-%03d", p)
		apply(PoolUpsertType, poolReq(pool, t0))
		for i := range scalePerPool {
			id := fmt.Sprintf("tok_%016x", p*scalePerPool+i)
			plain := tokens.Secret(fmt.Sprintf("%040d", p*scalePerPool+i))
			sealed, err := kr.Seal(key, plain, tokens.TokenAAD(pool, id))
			if err != nil {
				b.Fatal(err)
			}
			fp, err := kr.Fingerprint(key, plain)
			if err != nil {
				b.Fatal(err)
			}
			apply(TokenAddType, TokenAddRequest{Token: tokens.Token{ID: id, Pool: pool, Value: sealed, Fingerprint: fp}, At: t0.Add(time.Duration(index) * time.Millisecond)})
		}
	}
	return f
}

func persist(b *testing.B, f *FSM) []byte {
	b.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkSnapshot10k is one Raft snapshot and restore at 10,000 tokens:
// Snapshot + Persist into memory, then Restore into another FSM.
func BenchmarkSnapshot10k(b *testing.B) {
	f := scaleFSM(b)
	to := New(nil)
	size := 0
	for b.Loop() {
		stream := persist(b, f)
		if err := to.Restore(bytes.NewReader(stream), 0); err != nil {
			b.Fatal(err)
		}
		size = len(stream)
	}
	b.ReportMetric(float64(size), "stream-bytes")
	if got := len(to.State().Pools()); got != scalePools {
		b.Fatalf("restored %d pools", got)
	}
}

// BenchmarkPersist10k is the Persist half alone (what runs while Apply
// goes on).
func BenchmarkPersist10k(b *testing.B) {
	f := scaleFSM(b)
	for b.Loop() {
		snap, err := f.Snapshot()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := snap.WriteTo(io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRestore10k is the Restore half alone.
func BenchmarkRestore10k(b *testing.B) {
	f := scaleFSM(b)
	stream := persist(b, f)
	to := New(nil)
	for b.Loop() {
		if err := to.Restore(bytes.NewReader(stream), 0); err != nil {
			b.Fatal(err)
		}
	}
}
