package client

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
)

// BenchmarkCacheFetch compares a token fetch through the Go client over the
// unix socket — a round trip to the agent, JSON decoded — with the same
// fetch through a Cache, served from memory (the pool of 10 tokens under
// the priority policy of agent.BenchmarkFetch). One fetch at a time, so
// ns/op is the latency a caller sees; the parallel run is the cached fetch
// from GOMAXPROCS goroutines at once.
func BenchmarkCacheFetch(b *testing.B) {
	a := testutil.StartAgent(b, nil)
	ctx := context.Background()
	c, err := New("unix://" + a.SocketPath())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := c.ApplyPool(ctx, "bench", api.PoolRequest{}); err != nil {
		b.Fatal(err)
	}
	for i := range 10 {
		if _, err := c.AddToken(ctx, "bench", api.TokenRequest{Value: fmt.Sprintf("value-%d", i), Priority: i}); err != nil {
			b.Fatal(err)
		}
	}
	k := NewCache(c, CacheOptions{})
	b.Cleanup(func() { _ = k.Close() })
	testutil.WaitFor(b, 10*time.Second, func() error {
		if !k.Stats().Fresh {
			return fmt.Errorf("the cache's watch has not confirmed freshness")
		}
		return nil
	})

	b.Run("uncached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := c.FetchToken(ctx, "bench", FetchOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		before := k.Stats()
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := k.FetchToken(ctx, "bench", FetchOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		after := k.Stats()
		hits, misses := after.Hits-before.Hits, after.Misses-before.Misses
		b.ReportMetric(float64(hits)/float64(hits+misses), "hit-ratio")
	})
	b.Run("cached-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, _, err := k.FetchToken(ctx, "bench", FetchOptions{}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
