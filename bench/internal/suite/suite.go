// Package suite is the comparative part of the benchmark: which runs make
// up a suite, the interleaved order they run in, and how rounds become
// one table — medians, ratios to the floor and to etcd, and issue 7's
// targets.
//
// Runs are grouped by workload and concurrency ("fetch at 16 clients");
// the systems compared in a group run back to back, A B C A B C …, once
// per round, the order rotated by one each round so that no system always
// runs first or after the same neighbour. Drift on a shared machine (other
// work starting, thermal or frequency changes) then hits every system of a
// group alike. A row reports the median over rounds of each statistic on
// its own; a ratio is the median over rounds of the ratio between two
// systems' runs of the same round, which pairs runs taken seconds apart.
package suite

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/tokend/tokend/bench/internal/load"
	"github.com/tokend/tokend/bench/internal/stats"
)

// The systems the suite measures.
const (
	TokendUnix = "tokend fetch, unix socket"
	// TokendCache is the Go client's cache (client.NewCache) in front of
	// the agent's unix socket: a repeat fetch served from memory.
	TokendCache = "tokend fetch, client cache"
	FloorUnix   = "floor, unix socket"
	TokendTCP   = "tokend fetch, TCP"
	FloorTCP    = "floor, TCP"
	EtcdGet     = "etcd get, serializable"
	TokendAdd   = "tokend token add"
	EtcdPut     = "etcd put"
)

// Workloads.
const (
	Fetch = "fetch"
	Write = "write"
)

// Ratio columns.
const (
	VsFloor = "floor"
	VsEtcd  = "etcd"
)

// Group is the systems compared at one workload and concurrency.
type Group struct {
	Workload    string    `json:"workload"`
	Concurrency int       `json:"concurrency"`
	Targets     []string  `json:"targets"`
	Compare     []Compare `json:"compare,omitempty"`
}

// Name is how progress lines and tables name g.
func (g Group) Name() string {
	return fmt.Sprintf("%s c=%d", g.Workload, g.Concurrency)
}

// Compare asks for the ratio of Target to Baseline in column Column.
type Compare struct {
	Target   string `json:"target"`
	Baseline string `json:"baseline"`
	Column   string `json:"column"`
}

// Groups is the standard suite: fetches at each of fetchC and writes at
// each of writeC, with etcd's rows only when withEtcd.
func Groups(fetchC, writeC []int, withEtcd bool) []Group {
	var gs []Group
	for _, c := range fetchC {
		g := Group{Workload: Fetch, Concurrency: c,
			Targets: []string{TokendUnix, FloorUnix, TokendTCP, FloorTCP, TokendCache},
			Compare: []Compare{{TokendUnix, FloorUnix, VsFloor}, {TokendTCP, FloorTCP, VsFloor}, {TokendCache, FloorUnix, VsFloor}},
		}
		if withEtcd {
			// The floor's ratio to etcd is the most any HTTP server in Go
			// could show here.
			g.Targets = append(g.Targets, EtcdGet)
			g.Compare = append(g.Compare, Compare{TokendUnix, EtcdGet, VsEtcd}, Compare{TokendTCP, EtcdGet, VsEtcd}, Compare{TokendCache, EtcdGet, VsEtcd},
				Compare{FloorUnix, EtcdGet, VsEtcd}, Compare{FloorTCP, EtcdGet, VsEtcd})
		}
		gs = append(gs, g)
	}
	for _, c := range writeC {
		g := Group{Workload: Write, Concurrency: c, Targets: []string{TokendAdd}}
		if withEtcd {
			g.Targets = append(g.Targets, EtcdPut)
			g.Compare = []Compare{{TokendAdd, EtcdPut, VsEtcd}}
		}
		gs = append(gs, g)
	}
	return gs
}

// Step is one run: a system of a group, in a round.
type Step struct {
	Round  int    `json:"round"` // from 0
	Group  int    `json:"group"` // index into the groups
	Target string `json:"target"`
}

// Schedule is the order of every run: round by round, group by group, and
// within a group the systems in turn, starting one later each round.
func Schedule(groups []Group, rounds int) []Step {
	var steps []Step
	for r := range rounds {
		for gi, g := range groups {
			n := len(g.Targets)
			for i := range n {
				steps = append(steps, Step{Round: r, Group: gi, Target: g.Targets[(i+r)%n]})
			}
		}
	}
	return steps
}

// Sample is the result of one step.
type Sample struct {
	Step
	Result load.Result `json:"result"`
}

// Row is one system of one group, over every round.
type Row struct {
	Workload    string `json:"workload"`
	Concurrency int    `json:"concurrency"`
	Target      string `json:"target"`
	Rounds      int    `json:"rounds"`
	// Medians over rounds.
	Throughput float64       `json:"ops_per_sec"`
	P50        time.Duration `json:"p50_ns"`
	P99        time.Duration `json:"p99_ns"`
	P999       time.Duration `json:"p999_ns"`
	// The spread of throughput over rounds.
	ThroughputMin float64 `json:"ops_per_sec_min"`
	ThroughputMax float64 `json:"ops_per_sec_max"`
	// Operations that failed, over every round; any is suspicious.
	Errors int        `json:"errors"`
	Ratios []RowRatio `json:"ratios,omitempty"`
}

// RowRatio is a row compared with another system of its group: medians
// over rounds of this row's throughput and p50 divided by the baseline's
// in the same round.
type RowRatio struct {
	Column     string  `json:"column"`
	Baseline   string  `json:"baseline"`
	Throughput float64 `json:"ops_per_sec_ratio"`
	P50        float64 `json:"p50_ratio"`
}

// Ratio returns r's ratio in column, if it has one.
func (r Row) Ratio(column string) (RowRatio, bool) {
	for _, x := range r.Ratios {
		if x.Column == column {
			return x, true
		}
	}
	return RowRatio{}, false
}

// Aggregate makes one row per system of each group, in the groups' order.
func Aggregate(groups []Group, samples []Sample) []Row {
	type key struct {
		group  int
		target string
	}
	byKey := map[key][]Sample{}
	for _, s := range samples {
		k := key{s.Group, s.Target}
		byKey[k] = append(byKey[k], s)
	}
	var rows []Row
	for gi, g := range groups {
		for _, t := range g.Targets {
			ss := byKey[key{gi, t}]
			row := Row{Workload: g.Workload, Concurrency: g.Concurrency, Target: t, Rounds: len(ss)}
			if len(ss) == 0 {
				rows = append(rows, row)
				continue
			}
			var tput, p50, p99, p999 []float64
			for _, s := range ss {
				tput = append(tput, s.Result.Throughput)
				p50 = append(p50, float64(s.Result.Latency.P50))
				p99 = append(p99, float64(s.Result.Latency.P99))
				p999 = append(p999, float64(s.Result.Latency.P999))
				row.Errors += s.Result.Errors
			}
			row.Throughput = stats.Median(tput)
			row.ThroughputMin, row.ThroughputMax = slices.Min(tput), slices.Max(tput)
			row.P50 = time.Duration(stats.Median(p50))
			row.P99 = time.Duration(stats.Median(p99))
			row.P999 = time.Duration(stats.Median(p999))
			for _, c := range g.Compare {
				if c.Target != t {
					continue
				}
				base := map[int]load.Result{}
				for _, s := range byKey[key{gi, c.Baseline}] {
					base[s.Round] = s.Result
				}
				var rt, rp []float64
				for _, s := range ss {
					b, ok := base[s.Round]
					if !ok || b.Throughput == 0 || b.Latency.P50 == 0 {
						continue
					}
					rt = append(rt, s.Result.Throughput/b.Throughput)
					rp = append(rp, float64(s.Result.Latency.P50)/float64(b.Latency.P50))
				}
				if len(rt) > 0 {
					row.Ratios = append(row.Ratios, RowRatio{Column: c.Column, Baseline: c.Baseline, Throughput: stats.Median(rt), P50: stats.Median(rp)})
				}
			}
			rows = append(rows, row)
		}
	}
	return rows
}

// Check is one of issue 7's targets, against what a suite measured.
type Check struct {
	Target   string `json:"target"`
	Measured string `json:"measured"`
	// Known is false when the suite did not measure what the target needs.
	Known bool `json:"known"`
	Met   bool `json:"met"`
}

// Checks holds rows against issue 7's targets for this 2-core machine.
func Checks(rows []Row) []Check {
	find := func(workload string, c int, target string) (Row, bool) {
		for _, r := range rows {
			if r.Workload == workload && r.Concurrency == c && r.Target == target && r.Rounds > 0 {
				return r, true
			}
		}
		return Row{}, false
	}
	var checks []Check
	latency := func(name string, c int, get func(Row) time.Duration, limit time.Duration) {
		r, ok := find(Fetch, c, TokendUnix)
		ch := Check{Target: name, Known: ok}
		if ok {
			ch.Measured = fmtUS(get(r)) + " µs"
			ch.Met = get(r) <= limit
		}
		checks = append(checks, ch)
	}
	ratio := func(name, workload string, c int, target, column string, get func(RowRatio) float64, atLeast bool, limit float64) {
		r, ok := find(workload, c, target)
		var x RowRatio
		if ok {
			x, ok = r.Ratio(column)
		}
		ch := Check{Target: name, Known: ok}
		if ok {
			v := get(x)
			ch.Measured = fmt.Sprintf("%.2f×", v)
			ch.Met = (atLeast && v >= limit) || (!atLeast && v <= limit)
		}
		checks = append(checks, ch)
	}
	rate := func(name string, c int, limit float64) {
		r, ok := find(Write, c, TokendAdd)
		ch := Check{Target: name, Known: ok}
		if ok {
			ch.Measured = fmtRate(r.Throughput) + "/s"
			ch.Met = r.Throughput >= limit
		}
		checks = append(checks, ch)
	}
	tput := func(x RowRatio) float64 { return x.Throughput }
	latency("unix fetch, 1 client: p50 ≤ 100 µs", 1, func(r Row) time.Duration { return r.P50 }, 100*time.Microsecond)
	latency("unix fetch, 1 client: p99 ≤ 400 µs", 1, func(r Row) time.Duration { return r.P99 }, 400*time.Microsecond)
	ratio("unix fetch, 1 client: p50 ≤ 1.25× the floor's", Fetch, 1, TokendUnix, VsFloor, func(x RowRatio) float64 { return x.P50 }, false, 1.25)
	ratio("unix fetch, 16 clients: throughput ≥ 0.85× the floor's", Fetch, 16, TokendUnix, VsFloor, tput, true, 0.85)
	ratio("unix fetch, 16 clients: throughput ≥ 4× etcd serializable reads", Fetch, 16, TokendUnix, VsEtcd, tput, true, 4)
	rate("writes, 1 client: ≥ 1,000/s", 1, 1000)
	rate("writes, 16 clients: ≥ 4,000/s", 16, 4000)
	ratio("writes, 1 client: ≥ 1.3× etcd puts", Write, 1, TokendAdd, VsEtcd, tput, true, 1.3)
	ratio("writes, 16 clients: ≥ 1.3× etcd puts", Write, 16, TokendAdd, VsEtcd, tput, true, 1.3)
	return checks
}

// Markdown renders rows and checks as two tables.
func Markdown(rows []Row, checks []Check) string {
	var b strings.Builder
	b.WriteString("| workload | clients | system | ops/s | ops/s, min–max of rounds | p50 µs | p99 µs | p99.9 µs | errors | vs floor: ops/s, p50 | vs etcd: ops/s, p50 |\n")
	b.WriteString("|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, r := range rows {
		if r.Rounds == 0 {
			fmt.Fprintf(&b, "| %s | %d | %s | — | — | — | — | — | — | | |\n", r.Workload, r.Concurrency, r.Target)
			continue
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s–%s | %s | %s | %s | %d | %s | %s |\n",
			r.Workload, r.Concurrency, r.Target, fmtRate(r.Throughput), fmtRate(r.ThroughputMin), fmtRate(r.ThroughputMax),
			fmtUS(r.P50), fmtUS(r.P99), fmtUS(r.P999), r.Errors, ratioCell(r, VsFloor), ratioCell(r, VsEtcd))
	}
	if len(checks) > 0 {
		b.WriteString("\n| target (issue 7) | measured | |\n|---|--:|---|\n")
		for _, c := range checks {
			verdict, measured := "missed", c.Measured
			switch {
			case !c.Known:
				verdict, measured = "not measured", "—"
			case c.Met:
				verdict = "met"
			}
			fmt.Fprintf(&b, "| %s | %s | %s |\n", c.Target, measured, verdict)
		}
	}
	return b.String()
}

func ratioCell(r Row, column string) string {
	x, ok := r.Ratio(column)
	if !ok {
		return ""
	}
	return fmt.Sprintf("%.2f×, %.2f×", x.Throughput, x.P50)
}

// fmtUS formats d in microseconds: one decimal below 100 µs, none above.
func fmtUS(d time.Duration) string {
	us := float64(d) / float64(time.Microsecond)
	if us < 100 {
		return fmt.Sprintf("%.1f", us)
	}
	return groupDigits(int64(math.Round(us)))
}

// fmtRate formats a rate as a whole number with thin groups: 12 345.
func fmtRate(x float64) string {
	return groupDigits(int64(math.Round(x)))
}

func groupDigits(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + groupDigits(-n)
	}
	var out []string
	for len(s) > 3 {
		out = append([]string{s[len(s)-3:]}, out...)
		s = s[:len(s)-3]
	}
	out = append([]string{s}, out...)
	return strings.Join(out, " ")
}
