package cluster

import (
	"context"
	"testing"
)

// BenchmarkApply measures a write committed by three agents with their
// logs on disk and applied by the leader, one writer at a time and 16 at
// once.
func BenchmarkApply(b *testing.B) {
	tc := newTestCluster(b)
	for range 3 {
		tc.add(3, nil)
	}
	l := tc.leader()
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if _, err := l.Apply(context.Background(), entry(1)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel16", func(b *testing.B) {
		b.SetParallelism(8) // 8 × GOMAXPROCS(2) = 16 writers
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := l.Apply(context.Background(), entry(1)); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
