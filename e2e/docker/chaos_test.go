//go:build docker

package docker

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokend/tokend/e2e/chaos"
)

// TestChaos runs e2e/chaos's workload and checks on five agent containers
// while every fault of this suite runs once, in an order and with holds
// drawn from the seed: the leader cut off the network, 2|3 splits with and
// without the leader, the leader paused past the election timeout,
// latency on the leader and on a follower, the leader killed, every agent
// killed. The checks: writes and ?consistent reads linearizable, no
// acknowledged write lost, no agent's index going back, no deleted, failed
// or expired token served, fetches failing only on killed or paused
// agents, every agent converged.
func TestChaos(t *testing.T) {
	c := NewCluster(t, 5)
	faults := &chaos.FaultLog{}
	c.LogFaults(faults.Begin)
	// The run's seed comes from the suite's (TOKEND_E2E_SEED replays the
	// whole suite), unless TOKEND_CHAOS_SEED names one, as the report says.
	chaosSeed := int64(testRand(t).Uint64() >> 1)
	if os.Getenv(chaos.EnvSeed) != "" {
		var err error
		if chaosSeed, err = chaos.Seed(t.Logf); err != nil {
			t.Fatal(err)
		}
	}
	cfg := chaos.Config{
		Seed:    chaosSeed,
		Targets: chaosTargets(c),
		Nemeses: []chaos.Nemesis{
			held(c.IsolateLeader(), 2*time.Second, 5*time.Second),
			held(c.Split(2, true), 2*time.Second, 5*time.Second),
			held(c.Split(2, false), 2*time.Second, 5*time.Second),
			held(c.PauseLeader(), 2*electionTimeout+500*time.Millisecond, 4*electionTimeout),
			c.Delay(true, Netem{Delay: 100 * time.Millisecond, Jitter: 20 * time.Millisecond}),
			c.Delay(false, Netem{Delay: 100 * time.Millisecond, Jitter: 20 * time.Millisecond, Loss: 0.02}),
			c.KillLeader(),
			c.KillAll(),
		},
		Faults:            faults,
		ConsistentReaders: 2,
		MaxWrites:         1000,
		ArtifactDir:       os.Getenv("TOKEND_CHAOS_ARTIFACTS"),
		Logf:              t.Logf,
	}
	// TOKEND_CHAOS_DURATION makes it a soak, as for the process suite:
	// faults drawn at random for that long.
	if d := os.Getenv("TOKEND_CHAOS_DURATION"); d != "" {
		var err error
		if cfg.Duration, err = time.ParseDuration(d); err != nil {
			t.Fatalf("TOKEND_CHAOS_DURATION: %v", err)
		}
		cfg.MaxWrites = max(1000, int(cfg.Duration/time.Second)*15)
	}
	t.Logf("chaos seed %d: replay with %s=%d, or the whole suite with %s=%d", chaosSeed, chaos.EnvSeed, chaosSeed, envSeed, seed)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute+2*cfg.Duration)
	defer cancel()
	rep, err := chaos.Run(ctx, cfg)
	if rep == nil {
		t.Fatal(err)
	}
	t.Logf("%s", rep)
	if err != nil || !rep.OK() {
		if dir := rep.ArtifactDir; dir != "" {
			for _, n := range c.Nodes {
				_ = os.WriteFile(filepath.Join(dir, n.Name+".log"), []byte(c.logs(n, "all")), 0o644)
			}
			t.Logf("history, visualizations and agent logs in %s", dir)
		}
		t.Fatalf("chaos failed (replay with %s=%d): %v", chaos.EnvSeed, chaosSeed, err)
	}
}

func chaosTargets(c *Cluster) []chaos.Target {
	var ts []chaos.Target
	for _, t := range c.Targets() {
		ts = append(ts, chaos.Target{Name: t.Name, URL: t.URL})
	}
	return ts
}

// heldFault is a fault held for a range of times of its own (chaos.Holder).
type heldFault struct {
	*Fault
	min, max time.Duration
}

func (h heldFault) HoldRange() (time.Duration, time.Duration) { return h.min, h.max }

func held(f *Fault, min, max time.Duration) chaos.Nemesis { return heldFault{f, min, max} }
