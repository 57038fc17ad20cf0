// Package stats holds the arithmetic of the load driver: exact percentiles
// over every latency sample of a run, and medians over rounds.
//
// Percentiles are exact, not estimated: a run keeps every sample, sorts
// them and takes the nearest rank. A run of a few seconds holds at most a
// few hundred thousand samples, which costs a few megabytes and one sort.
package stats

import (
	"math"
	"slices"
	"time"
)

// Percentile returns the p-quantile (0 < p ≤ 1) of sorted by the
// nearest-rank method: the smallest sample such that at least p of all
// samples are at or below it. It returns 0 for no samples.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	return sorted[rank(n, p)]
}

// rank is the 0-based index of the p-quantile among n sorted samples:
// ceil(p·n) − 1, clamped to the samples. The small epsilon keeps float
// products such as 0.999·1000 = 999.0000000000001 from rounding up a rank.
func rank(n int, p float64) int {
	i := int(math.Ceil(p*float64(n)-1e-9)) - 1
	return min(max(i, 0), n-1)
}

// Summary describes the latencies of one run.
type Summary struct {
	N    int           `json:"n"`
	Min  time.Duration `json:"min_ns"`
	Mean time.Duration `json:"mean_ns"`
	P50  time.Duration `json:"p50_ns"`
	P90  time.Duration `json:"p90_ns"`
	P99  time.Duration `json:"p99_ns"`
	P999 time.Duration `json:"p999_ns"`
	Max  time.Duration `json:"max_ns"`
}

// Summarize sorts samples in place and summarizes them.
func Summarize(samples []time.Duration) Summary {
	slices.Sort(samples)
	s := Summary{N: len(samples)}
	if s.N == 0 {
		return s
	}
	var sum float64
	for _, d := range samples {
		sum += float64(d)
	}
	s.Min, s.Max = samples[0], samples[s.N-1]
	s.Mean = time.Duration(sum / float64(s.N))
	s.P50 = Percentile(samples, 0.50)
	s.P90 = Percentile(samples, 0.90)
	s.P99 = Percentile(samples, 0.99)
	s.P999 = Percentile(samples, 0.999)
	return s
}

// Median returns the median of xs (the mean of the two middle values for
// an even count), without changing xs. It returns NaN for none.
func Median(xs []float64) float64 {
	n := len(xs)
	if n == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
