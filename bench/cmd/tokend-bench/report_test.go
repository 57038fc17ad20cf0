package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/bench/internal/load"
	"github.com/tokend/tokend/bench/internal/stats"
	"github.com/tokend/tokend/bench/internal/suite"
)

// TestReportRendersAgain checks that a suite's JSON holds what it takes to
// render its table again, with or without its groups (older reports).
func TestReportRendersAgain(t *testing.T) {
	res := func(tput float64, p50 time.Duration) load.Result {
		return load.Result{Throughput: tput, Latency: stats.Summary{N: 100, P50: p50, P99: 2 * p50, P999: 3 * p50}}
	}
	groups := suite.Groups(nil, []int{16}, true)
	rep := report{
		Started: time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC),
		Command: "tokend-bench suite -write-c 16",
		Config:  map[string]any{"duration": "2s", "warmup": "500ms", "rounds": 1, "fetch_clients": []int{}, "write_clients": []int{16}, "etcd_version": "3.4.23", "write_to": "leader", "fetch_path": "/v1/pools/bench/token", "value_size": 40, "body_bytes": 149},
		Groups:  groups,
		Samples: []suite.Sample{
			{Step: suite.Step{Round: 0, Group: 0, Target: suite.TokendAdd}, Result: res(3000, 5*time.Millisecond)},
			{Step: suite.Step{Round: 0, Group: 0, Target: suite.EtcdPut}, Result: res(2000, 8*time.Millisecond)},
		},
	}
	for _, withGroups := range []bool{true, false} {
		r := rep
		if !withGroups {
			r.Groups = nil
		}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		md, err := renderReport(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			"| write | 16 | tokend token add | 3 000 | 3 000–3 000 | 5 000 | 10 000 | 15 000 | 0 |  | 1.50×, 0.62× |",
			"| writes, 16 clients: ≥ 1.3× etcd puts | 1.50× | met |",
			"| writes, 16 clients: ≥ 4,000/s | 3 000/s | missed |",
			"149-byte body",
			"etcd 3.4.23",
		} {
			if !strings.Contains(md, want) {
				t.Errorf("groups stored %v: no %q in\n%s", withGroups, want, md)
			}
		}
	}
}

// Reports of the same groups merge: their rounds add up, medians and
// per-round ratios are over all of them; reports of other groups do not.
func TestReportMergesSuites(t *testing.T) {
	res := func(tput float64) load.Result {
		return load.Result{Throughput: tput, Latency: stats.Summary{N: 100, P50: time.Millisecond, P99: time.Millisecond, P999: time.Millisecond}}
	}
	one := func(tokend, etcd float64) []byte {
		rep := report{
			Command: "suite",
			Config:  map[string]any{"rounds": 1, "write_clients": []int{1}, "etcd_version": "3.4.23"},
			Groups:  suite.Groups(nil, []int{1}, true),
			Samples: []suite.Sample{
				{Step: suite.Step{Round: 0, Group: 0, Target: suite.TokendAdd}, Result: res(tokend)},
				{Step: suite.Step{Round: 0, Group: 0, Target: suite.EtcdPut}, Result: res(etcd)},
			},
		}
		b, err := json.Marshal(rep)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	md, err := renderReport(one(1000, 1000), one(2000, 1000), one(3000, 1000))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| write | 1 | tokend token add | 2 000 | 1 000–3 000 |",
		"2.00×", // median of the per-round ratios 1, 2, 3
		"3 rounds interleaved",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("no %q in\n%s", want, md)
		}
	}
	other, err := json.Marshal(report{Groups: suite.Groups(nil, []int{16}, true)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := renderReport(one(1000, 1000), other); err == nil {
		t.Error("merged reports of different groups")
	}
}
