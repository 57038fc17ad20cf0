package stats

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestPercentileNearestRank(t *testing.T) {
	// 1..1000 µs: the p-quantile by nearest rank is exactly p·1000 µs.
	var s []time.Duration
	for i := 1000; i >= 1; i-- {
		s = append(s, time.Duration(i)*time.Microsecond)
	}
	sum := Summarize(s)
	for _, c := range []struct {
		name string
		got  time.Duration
		want time.Duration
	}{
		{"p50", sum.P50, 500 * time.Microsecond},
		{"p90", sum.P90, 900 * time.Microsecond},
		{"p99", sum.P99, 990 * time.Microsecond},
		{"p99.9", sum.P999, 999 * time.Microsecond},
		{"min", sum.Min, time.Microsecond},
		{"max", sum.Max, 1000 * time.Microsecond},
		{"mean", sum.Mean, 500500 * time.Nanosecond},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if sum.N != 1000 {
		t.Errorf("N = %d", sum.N)
	}
	if !slices.IsSorted(s) {
		t.Error("Summarize did not sort its samples")
	}
}

func TestPercentileSmallCounts(t *testing.T) {
	for _, c := range []struct {
		samples []time.Duration
		p       float64
		want    time.Duration
	}{
		{nil, 0.5, 0},
		{[]time.Duration{7}, 0.5, 7},
		{[]time.Duration{7}, 0.999, 7},
		{[]time.Duration{1, 2}, 0.5, 1}, // nearest rank: ceil(0.5·2) = 1st
		{[]time.Duration{1, 2}, 0.51, 2},
		{[]time.Duration{1, 2, 3}, 0.5, 2},
		{[]time.Duration{1, 2, 3, 4}, 0.75, 3},
		{[]time.Duration{1, 2, 3, 4}, 0.76, 4},
		{[]time.Duration{1, 2, 3, 4}, 1, 4},
		{[]time.Duration{1, 2, 3, 4}, 0.0001, 1},
		// With fewer than 1000 samples, p99.9 is the maximum.
		{[]time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.999, 10},
		{[]time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.9, 9},
	} {
		if got := Percentile(c.samples, c.p); got != c.want {
			t.Errorf("Percentile(%v, %v) = %v, want %v", c.samples, c.p, got, c.want)
		}
	}
}

// TestPercentileMatchesDefinition checks the rank against its definition on
// random data: at least p of the samples are ≤ the answer, and fewer than p
// are < it.
func TestPercentileMatchesDefinition(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		n := 1 + r.IntN(3000)
		s := make([]time.Duration, n)
		for i := range s {
			s[i] = time.Duration(r.IntN(500))
		}
		slices.Sort(s)
		for _, p := range []float64{0.5, 0.9, 0.99, 0.999} {
			v := Percentile(s, p)
			atOrBelow, below := 0, 0
			for _, x := range s {
				if x <= v {
					atOrBelow++
				}
				if x < v {
					below++
				}
			}
			if float64(atOrBelow) < p*float64(n)-1e-9 || float64(below) >= p*float64(n)-1e-9 {
				t.Fatalf("n=%d p=%v: %v has %d at or below, %d below", n, p, v, atOrBelow, below)
			}
		}
	}
}

func TestMedian(t *testing.T) {
	in := []float64{5, 1, 3}
	if got := Median(in); got != 3 {
		t.Errorf("Median odd = %v", got)
	}
	if in[0] != 5 {
		t.Error("Median changed its input")
	}
	if got := Median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Errorf("Median even = %v", got)
	}
	if got := Median([]float64{42}); got != 42 {
		t.Errorf("Median one = %v", got)
	}
	if got := Median(nil); !math.IsNaN(got) {
		t.Errorf("Median none = %v", got)
	}
}
