package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/cluster"
)

func TestRaftMultiplierSetsTiming(t *testing.T) {
	fast := cluster.FastTiming()
	for _, c := range []struct {
		name           string
		cfg            Config
		want           cluster.Timing
		wantMultiplier int
	}{
		{"production default", Config{}, cluster.DefaultTiming(), DefaultRaftMultiplier},
		{"production 1", Config{RaftMultiplier: 1}, cluster.DefaultTiming().WithRaftMultiplier(1), 1},
		{"production 10", Config{RaftMultiplier: 10}, cluster.DefaultTiming().WithRaftMultiplier(10), 10},
		{"dev keeps its test timing", Config{Dev: true}, fast, 0},
		{"dev with a multiplier", Config{Dev: true, RaftMultiplier: 2}, fast.WithRaftMultiplier(2), 2},
		{"timing given (tests)", Config{Timing: fast}, fast, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.cfg
			cfg.NodeName, cfg.DataDir = "n1", t.TempDir()
			if err := cfg.normalize(); err != nil {
				t.Fatal(err)
			}
			if cfg.Timing != c.want {
				t.Errorf("timing = %+v, want %+v", cfg.Timing, c.want)
			}
			if cfg.RaftMultiplier != c.wantMultiplier {
				t.Errorf("multiplier = %d, want %d", cfg.RaftMultiplier, c.wantMultiplier)
			}
		})
	}
	cfg := Config{NodeName: "n1", DataDir: t.TempDir(), RaftMultiplier: 1}
	if err := cfg.normalize(); err != nil {
		t.Fatal(err)
	}
	if cfg.Timing.RaftHeartbeat != 200*time.Millisecond || cfg.Timing.RaftCommit != cluster.DefaultTiming().RaftCommit {
		t.Fatalf("multiplier 1: heartbeat %s, commit %s; want 200ms and the default commit timeout", cfg.Timing.RaftHeartbeat, cfg.Timing.RaftCommit)
	}
}

func TestRaftMultiplierOutOfRange(t *testing.T) {
	for _, m := range []int{-1, 11, 100} {
		cfg := Config{NodeName: "n1", DataDir: t.TempDir(), RaftMultiplier: m}
		err := cfg.normalize()
		if err == nil || !strings.Contains(err.Error(), "--raft-multiplier") || !strings.Contains(err.Error(), "1 to 10") {
			t.Errorf("multiplier %d: error %v, want one naming --raft-multiplier and 1 to 10", m, err)
		}
	}
	if err := CheckRaftMultiplier(0); err == nil {
		t.Error("CheckRaftMultiplier(0) = nil, want an error")
	}
}
