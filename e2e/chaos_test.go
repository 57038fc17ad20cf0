package e2e

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tokend/tokend/e2e/chaos"
	"github.com/tokend/tokend/internal/testutil"
)

// Environment variables of the chaos suite.
const (
	// envChaosDuration turns TestChaos into a soak: faults drawn at random
	// for that long (a Go duration), with a larger write budget.
	envChaosDuration = "TOKEND_CHAOS_DURATION"
	// envChaosReads chooses the readers: "consistent" (the default) reads
	// with ?consistent, "local" without (stale by design: the
	// linearizability check must fail), "off" reads nothing.
	envChaosReads = "TOKEND_CHAOS_READS"
	// envChaosArtifacts is where a run leaves agent logs and porcupine
	// visualizations; without it only a failing run leaves them, in a new
	// directory under $TMPDIR.
	envChaosArtifacts = "TOKEND_CHAOS_ARTIFACTS"
)

// TestChaos runs the chaos workload against three agent processes while
// every process fault of issue 6 is injected: the leader SIGKILLed and
// restarted, the leader SIGSTOPped past the election timeout, a follower
// killed and restarted, every agent killed and restarted, a rolling
// restart, and an agent rejoining with a wiped data dir. In `make test`
// each runs once, in an order and with timings drawn from the seed; with
// TOKEND_CHAOS_DURATION they are drawn at random for that long.
func TestChaos(t *testing.T) {
	seed, err := chaos.Seed(t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	var duration time.Duration
	if s := os.Getenv(envChaosDuration); s != "" {
		if duration, err = time.ParseDuration(s); err != nil {
			t.Fatalf("%s: %v", envChaosDuration, err)
		}
	}
	procs := newCluster(t, 3)
	for _, p := range procs {
		p.start()
	}
	leader(t, procs)

	faults := &chaos.FaultLog{}
	f := &procFaults{procs: procs, faults: faults, hc: &http.Client{Timeout: 5 * time.Second}}
	for _, p := range procs {
		f.targets = append(f.targets, chaos.Target{Name: p.name, URL: "http://" + p.http})
	}
	cfg := chaos.Config{
		Seed:     seed,
		Targets:  f.targets,
		Nemeses:  f.nemeses(),
		Duration: duration,
		Faults:   faults,
		// Writes are bounded so that porcupine stays fast.
		MaxWrites:   1000,
		ArtifactDir: os.Getenv(envChaosArtifacts),
		Logf:        t.Logf,
	}
	if duration > 0 {
		cfg.MaxWrites = max(1000, int(duration/time.Second)*15)
	}
	switch r := os.Getenv(envChaosReads); r {
	case "off":
	case "", "consistent", "local":
		cfg.ConsistentReaders, cfg.LocalReads = 2, r == "local"
	default:
		t.Fatalf("%s=%q: want consistent, local or off", envChaosReads, r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute+2*duration)
	defer cancel()
	rep, err := chaos.Run(ctx, cfg)
	if rep == nil {
		t.Fatal(err)
	}
	t.Logf("%s", rep)
	failed := err != nil || !rep.OK()
	if dir := cmp.Or(cfg.ArtifactDir, rep.ArtifactDir); failed || dir != "" {
		// Stop the agents first, so that their logs are complete.
		for _, p := range procs {
			p.stop()
		}
		dir = saveLogs(t, procs, dir)
		t.Logf("agent logs, history and any visualizations in %s", dir)
	}
	if failed {
		t.Fatalf("chaos seed=%d failed (replay with %s=%d): %v", seed, chaos.EnvSeed, seed, err)
	}
}

// saveLogs copies every agent's log where it outlives the test.
func saveLogs(t *testing.T, procs []*agentProc, dir string) string {
	if dir == "" {
		d, err := os.MkdirTemp("", "tokend-chaos-")
		if err != nil {
			t.Log(err)
			return ""
		}
		dir = d
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Log(err)
		return ""
	}
	for _, p := range procs {
		b, err := os.ReadFile(p.logPath)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, p.name+".log"), b, 0o644)
		}
		if err != nil {
			t.Log(err)
		}
	}
	return dir
}

// procFaults injects faults into agent processes on loopback.
type procFaults struct {
	procs   []*agentProc
	targets []chaos.Target
	faults  *chaos.FaultLog
	hc      *http.Client
}

// nemesis adapts functions to chaos.Nemesis.
type nemesis struct {
	name     string
	min, max time.Duration // hold; zero: the run's
	start    func(ctx context.Context, rng *rand.Rand) (func(context.Context) error, error)
}

func (n nemesis) Name() string { return n.name }
func (n nemesis) Start(ctx context.Context, rng *rand.Rand) (func(context.Context) error, error) {
	return n.start(ctx, rng)
}

// heldNemesis is a nemesis that sets its own hold.
type heldNemesis struct{ nemesis }

func (n heldNemesis) HoldRange() (time.Duration, time.Duration) { return n.min, n.max }

// electionTimeout is the agents' (production timing: the e2e agents run
// with the defaults).
const electionTimeout = time.Second

func (f *procFaults) nemeses() []chaos.Nemesis {
	return []chaos.Nemesis{
		nemesis{name: "kill-leader", start: f.killLeader},
		heldNemesis{nemesis{name: "pause-leader", min: 2*electionTimeout + 500*time.Millisecond, max: 4 * electionTimeout, start: f.pauseLeader}},
		nemesis{name: "kill-follower", start: f.killFollower},
		nemesis{name: "restart-all", start: f.restartAll},
		heldNemesis{nemesis{name: "rolling-restart", start: f.rollingRestart}},
		nemesis{name: "wipe-rejoin", start: f.wipeRejoin},
	}
}

func (f *procFaults) proc(name string) *agentProc {
	for _, p := range f.procs {
		if p.name == name {
			return p
		}
	}
	panic("no agent " + name)
}

func (f *procFaults) leader(ctx context.Context) (*agentProc, error) {
	t, err := chaos.Leader(ctx, f.hc, "", f.targets, 30*time.Second)
	if err != nil {
		return nil, err
	}
	return f.proc(t.Name), nil
}

// restart starts p again and ends its fault window once it answers.
func (f *procFaults) restart(p *agentProc, end func()) error {
	err := p.launch()
	end()
	return err
}

func (f *procFaults) kill(p *agentProc) func(context.Context) error {
	end := f.faults.Begin(p.name, chaos.FaultKilled)
	p.kill()
	return func(context.Context) error { return f.restart(p, end) }
}

func (f *procFaults) killLeader(ctx context.Context, _ *rand.Rand) (func(context.Context) error, error) {
	l, err := f.leader(ctx)
	if err != nil {
		return nil, err
	}
	return f.kill(l), nil
}

func (f *procFaults) killFollower(ctx context.Context, rng *rand.Rand) (func(context.Context) error, error) {
	l, err := f.leader(ctx)
	if err != nil {
		return nil, err
	}
	var followers []*agentProc
	for _, p := range f.procs {
		if p != l {
			followers = append(followers, p)
		}
	}
	return f.kill(followers[rng.IntN(len(followers))]), nil
}

// pauseLeader freezes the leader with SIGSTOP; the others elect a new one
// while it is held. SIGCONT brings it back as a stale leader that must step
// down.
func (f *procFaults) pauseLeader(ctx context.Context, _ *rand.Rand) (func(context.Context) error, error) {
	l, err := f.leader(ctx)
	if err != nil {
		return nil, err
	}
	end := f.faults.Begin(l.name, chaos.FaultPaused)
	if err := l.signal(syscall.SIGSTOP); err != nil {
		end()
		return nil, err
	}
	return func(context.Context) error {
		defer end()
		if err := l.signal(syscall.SIGCONT); err != nil {
			return err
		}
		return testutil.Poll(10*time.Second, func() error {
			_, err := l.health()
			return err
		})
	}, nil
}

// restartAll SIGKILLs every agent at once; heal starts them all again.
func (f *procFaults) restartAll(ctx context.Context, _ *rand.Rand) (func(context.Context) error, error) {
	ends := make([]func(), len(f.procs))
	for i, p := range f.procs {
		ends[i] = f.faults.Begin(p.name, chaos.FaultKilled)
		p.kill()
	}
	return func(context.Context) error {
		for i, p := range f.procs {
			if err := f.restart(p, ends[i]); err != nil {
				return err
			}
		}
		return nil
	}, nil
}

// rollingRestart stops each agent with SIGTERM and starts it again, one at
// a time, waiting for the cluster to be whole before the next: an upgrade.
func (f *procFaults) rollingRestart(ctx context.Context, rng *rand.Rand) (func(context.Context) error, error) {
	for _, i := range rng.Perm(len(f.procs)) {
		p := f.procs[i]
		end := f.faults.Begin(p.name, chaos.FaultKilled)
		p.terminate()
		if err := f.restart(p, end); err != nil {
			return nil, err
		}
		if err := chaos.Ready(ctx, f.hc, "", f.targets, 60*time.Second); err != nil {
			return nil, fmt.Errorf("after restarting %s: %w", p.name, err)
		}
	}
	return func(context.Context) error { return nil }, nil
}

// wipeRejoin stops an agent, deletes its data dir and starts it again with
// the same name, addresses and --join: a host replaced, or a disk lost. It
// comes back with a new Raft id (the id lives in the data dir); the leader
// replaces the old server, which used the same address, with the new one
// and promotes it once it has caught up. Its fault window ends when it
// serves what the cluster had committed when it started.
func (f *procFaults) wipeRejoin(ctx context.Context, rng *rand.Rand) (func(context.Context) error, error) {
	p := f.procs[rng.IntN(len(f.procs))]
	end := f.faults.Begin(p.name, chaos.FaultWiped)
	p.terminate()
	if err := os.RemoveAll(p.dataDir); err != nil {
		end()
		return nil, err
	}
	return func(ctx context.Context) error {
		defer end()
		if err := p.launch(); err != nil {
			return err
		}
		var others []chaos.Target
		for _, t := range f.targets {
			if t.Name != p.name {
				others = append(others, t)
			}
		}
		l, err := chaos.Leader(ctx, f.hc, "", others, 30*time.Second)
		if err != nil {
			return err
		}
		want, err := appliedIndex(f.proc(l.Name))
		if err != nil {
			return err
		}
		return testutil.Poll(60*time.Second, func() error {
			got, err := appliedIndex(p)
			if err == nil && got < want {
				err = fmt.Errorf("%s applied %d of %d", p.name, got, want)
			}
			return err
		})
	}, nil
}

func appliedIndex(p *agentProc) (uint64, error) {
	h, err := p.health()
	return h.AppliedIndex, err
}

// terminate stops the agent with SIGTERM and waits for it to exit.
func (p *agentProc) terminate() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}
