package suite

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/bench/internal/load"
	"github.com/tokend/tokend/bench/internal/stats"
)

func TestScheduleInterleavesAndRotates(t *testing.T) {
	groups := []Group{
		{Workload: Fetch, Concurrency: 1, Targets: []string{"A", "B", "C"}},
		{Workload: Write, Concurrency: 1, Targets: []string{"X", "Y"}},
	}
	var got []string
	for _, s := range Schedule(groups, 3) {
		got = append(got, s.Target)
	}
	want := "A B C X Y " + // round 0
		"B C A Y X " + // round 1: one later
		"C A B X Y" // round 2
	if strings.Join(got, " ") != want {
		t.Errorf("schedule\n got %s\nwant %s", strings.Join(got, " "), want)
	}
	steps := Schedule(groups, 3)
	if steps[0].Round != 0 || steps[5].Round != 1 || steps[5].Group != 0 || steps[8].Group != 1 {
		t.Errorf("rounds and groups: %+v", steps)
	}
	if len(Schedule(groups, 0)) != 0 {
		t.Error("zero rounds scheduled something")
	}
}

// result is a run with the given throughput and latencies.
func result(tput float64, p50, p99 time.Duration, errs int) load.Result {
	return load.Result{Throughput: tput, Errors: errs, Latency: stats.Summary{N: 1, P50: p50, P99: p99, P999: 2 * p99}}
}

func TestAggregateMediansAndPairedRatios(t *testing.T) {
	g := []Group{{Workload: Fetch, Concurrency: 1, Targets: []string{TokendUnix, FloorUnix, EtcdGet},
		Compare: []Compare{{TokendUnix, FloorUnix, VsFloor}, {TokendUnix, EtcdGet, VsEtcd}}}}
	µs := time.Microsecond
	samples := []Sample{
		// Round 0: the machine is fast; tokend is 0.9× the floor.
		{Step{0, 0, TokendUnix}, result(900, 10*µs, 40*µs, 0)},
		{Step{0, 0, FloorUnix}, result(1000, 8*µs, 30*µs, 0)},
		{Step{0, 0, EtcdGet}, result(300, 30*µs, 90*µs, 0)},
		// Round 1: everything is half as fast (other work on the host);
		// the ratio holds.
		{Step{1, 0, FloorUnix}, result(500, 16*µs, 60*µs, 0)},
		{Step{1, 0, TokendUnix}, result(450, 20*µs, 80*µs, 1)},
		{Step{1, 0, EtcdGet}, result(100, 60*µs, 200*µs, 0)},
		// Round 2: in between.
		{Step{2, 0, EtcdGet}, result(200, 40*µs, 100*µs, 0)},
		{Step{2, 0, TokendUnix}, result(720, 12*µs, 50*µs, 2)},
		{Step{2, 0, FloorUnix}, result(800, 10*µs, 35*µs, 0)},
	}
	rows := Aggregate(g, samples)
	if len(rows) != 3 {
		t.Fatalf("%d rows", len(rows))
	}
	tk := rows[0]
	if tk.Target != TokendUnix || tk.Rounds != 3 || tk.Errors != 3 {
		t.Errorf("row %+v", tk)
	}
	if tk.Throughput != 720 || tk.ThroughputMin != 450 || tk.ThroughputMax != 900 {
		t.Errorf("throughput %v (%v–%v), want median 720 of 450–900", tk.Throughput, tk.ThroughputMin, tk.ThroughputMax)
	}
	if tk.P50 != 12*µs || tk.P99 != 50*µs || tk.P999 != 100*µs {
		t.Errorf("latency medians %v %v %v", tk.P50, tk.P99, tk.P999)
	}
	floor, ok := tk.Ratio(VsFloor)
	// Per round: 0.9, 0.9, 0.9 (throughput); 1.25, 1.25, 1.2 (p50).
	if !ok || floor.Baseline != FloorUnix || !near(floor.Throughput, 0.9) || !near(floor.P50, 1.25) {
		t.Errorf("vs floor %+v", floor)
	}
	etcd, ok := tk.Ratio(VsEtcd)
	// Per round: 3, 4.5, 3.6 → 3.6; p50: 1/3, 1/3, 0.3 → 1/3. A ratio of
	// the medians would say 720/200 = 3.6 too, but p50 12/40 = 0.3.
	if !ok || !near(etcd.Throughput, 3.6) || !near(etcd.P50, 1.0/3) {
		t.Errorf("vs etcd %+v", etcd)
	}
	if len(rows[1].Ratios) != 0 || len(rows[2].Ratios) != 0 {
		t.Errorf("baselines have ratios: %+v %+v", rows[1].Ratios, rows[2].Ratios)
	}
}

func TestAggregateSkipsUnpairedRoundsAndEmptyRows(t *testing.T) {
	g := []Group{{Workload: Write, Concurrency: 16, Targets: []string{TokendAdd, EtcdPut}, Compare: []Compare{{TokendAdd, EtcdPut, VsEtcd}}}}
	samples := []Sample{
		{Step{0, 0, TokendAdd}, result(2000, time.Millisecond, 2*time.Millisecond, 0)},
		{Step{1, 0, TokendAdd}, result(3000, time.Millisecond, 2*time.Millisecond, 0)},
		{Step{1, 0, EtcdPut}, result(1000, time.Millisecond, 2*time.Millisecond, 0)},
	}
	rows := Aggregate(g, samples)
	x, ok := rows[0].Ratio(VsEtcd)
	if !ok || x.Throughput != 3 {
		t.Errorf("ratio %+v: only round 1 pairs, 3000/1000", x)
	}
	if rows[0].Throughput != 2500 {
		t.Errorf("median of two = %v", rows[0].Throughput)
	}
	rows = Aggregate(g, nil)
	if rows[0].Rounds != 0 || len(rows[0].Ratios) != 0 {
		t.Errorf("empty row %+v", rows[0])
	}
	if !strings.Contains(Markdown(rows, nil), "| write | 16 | tokend token add | — |") {
		t.Errorf("empty row rendered as\n%s", Markdown(rows, nil))
	}
}

func TestChecks(t *testing.T) {
	µs := time.Microsecond
	rows := []Row{
		{Workload: Fetch, Concurrency: 1, Target: TokendUnix, Rounds: 3, P50: 90 * µs, P99: 401 * µs,
			Ratios: []RowRatio{{Column: VsFloor, P50: 1.25}}},
		{Workload: Fetch, Concurrency: 16, Target: TokendUnix, Rounds: 3,
			Ratios: []RowRatio{{Column: VsFloor, Throughput: 0.84}, {Column: VsEtcd, Throughput: 4}}},
		{Workload: Write, Concurrency: 1, Target: TokendAdd, Rounds: 3, Throughput: 1000,
			Ratios: []RowRatio{{Column: VsEtcd, Throughput: 1.29}}},
		{Workload: Write, Concurrency: 16, Target: TokendAdd, Rounds: 3, Throughput: 3999.6},
	}
	want := []struct {
		known, met bool
		measured   string
	}{
		{true, true, "90.0 µs"},
		{true, false, "401 µs"},
		{true, true, "1.25×"},
		{true, false, "0.84×"},
		{true, true, "4.00×"},
		{true, true, "1 000/s"},
		{true, false, "4 000/s"}, // rounded for show, but 3999.6 < 4000
		{true, false, "1.29×"},
		{false, false, ""}, // no etcd row at 16 clients
	}
	got := Checks(rows)
	if len(got) != len(want) {
		t.Fatalf("%d checks", len(got))
	}
	for i, w := range want {
		if got[i].Known != w.known || got[i].Met != w.met || got[i].Measured != w.measured {
			t.Errorf("%s: %+v, want %+v", got[i].Target, got[i], w)
		}
	}
	md := Markdown(rows, got)
	for _, s := range []string{"| unix fetch, 1 client: p99 ≤ 400 µs | 401 µs | missed |", "| writes, 16 clients: ≥ 1.3× etcd puts | — | not measured |", "| unix fetch, 1 client: p50 ≤ 100 µs | 90.0 µs | met |"} {
		if !strings.Contains(md, s) {
			t.Errorf("markdown lacks %q:\n%s", s, md)
		}
	}
}

func TestGroups(t *testing.T) {
	gs := Groups([]int{1, 16}, []int{1, 16}, true)
	if len(gs) != 4 || gs[0].Name() != "fetch c=1" || gs[3].Name() != "write c=16" {
		t.Fatalf("groups %+v", gs)
	}
	if len(gs[1].Targets) != 6 || len(gs[1].Compare) != 8 || len(gs[2].Targets) != 2 {
		t.Errorf("with etcd: %+v", gs)
	}
	gs = Groups([]int{1}, []int{16}, false)
	for _, g := range gs {
		for _, t2 := range g.Targets {
			if t2 == EtcdGet || t2 == EtcdPut {
				t.Errorf("etcd without etcd: %+v", g)
			}
		}
		for _, c := range g.Compare {
			if c.Column == VsEtcd {
				t.Errorf("etcd ratio without etcd: %+v", g)
			}
		}
	}
}

func TestFormatting(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{fmtRate(1234567.4), "1 234 567"},
		{fmtRate(999.5), "1 000"},
		{fmtRate(12), "12"},
		{fmtRate(-1234), "-1 234"},
		{fmtUS(52340 * time.Nanosecond), "52.3"},
		{fmtUS(1234567 * time.Nanosecond), "1 235"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
