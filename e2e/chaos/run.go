package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tokend/tokend/api"
)

// EnvSeed names the variable that replays a run's seed.
const EnvSeed = "TOKEND_CHAOS_SEED"

// Seed returns the seed in TOKEND_CHAOS_SEED, or a new one, and logs it
// with how to replay it.
func Seed(logf func(format string, args ...any)) (int64, error) {
	seed := time.Now().UnixNano()
	if s := os.Getenv(EnvSeed); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s=%q is not an integer", EnvSeed, s)
		}
		seed = n
	}
	logf("chaos seed=%d; replay with %s=%d", seed, EnvSeed, seed)
	return seed, nil
}

// Range is a closed range of durations, drawn uniformly.
type Range struct{ Min, Max time.Duration }

func (r Range) draw(rng *rand.Rand) time.Duration {
	if r.Max <= r.Min {
		return r.Min
	}
	return r.Min + time.Duration(rng.Int64N(int64(r.Max-r.Min)+1))
}

// Config is one run: the agents, the faults, the workload and the checks.
type Config struct {
	// Seed drives the schedule (which fault when, held how long) and the
	// workload's choices. Take it from Seed so that it is printed and can
	// be replayed.
	Seed    int64
	Targets []Target
	// HTTPClient sends every request (set TLS here); nil uses a plain one
	// with a 15 s timeout.
	HTTPClient *http.Client
	// Token is the ACL token sent with every request, if any.
	Token string

	// Nemeses are the faults. With Duration 0 each runs once, in an order
	// drawn from the seed; otherwise they are drawn at random until
	// Duration has passed.
	Nemeses  []Nemesis
	Duration time.Duration
	// Faults is the log the nemeses record process faults in.
	Faults *FaultLog
	// Quiet is the time between faults (and before the first); Hold how
	// long a fault is held before it is healed, unless the nemesis is a
	// Holder.
	Quiet, Hold Range

	// Writers apply adds, deletes and reports through random agents, at
	// most MaxWrites in all, pausing WritePause between writes.
	Writers    int
	MaxWrites  int
	WritePause Range
	// FetchersPerNode fetch on each agent, pausing FetchPause.
	FetchersPerNode int
	FetchPause      Range
	// ConsistentReaders read GET /v1/pools/{pool}/tokens?consistent on
	// random agents, pausing ReadPause. 0 turns consistent reads off.
	ConsistentReaders int
	ReadPause         Range
	// LocalReads makes the readers leave out ?consistent: local reads,
	// stale by design, which the linearizability check must then catch
	// under faults. For testing the checker on a real cluster.
	LocalReads bool
	// ExpiringFraction of the adds carry an expires_at ExpiresIn ahead.
	ExpiringFraction float64
	ExpiresIn        Range

	// ReadyTimeout bounds waiting for the cluster to be whole again after
	// a fault; ConvergeTimeout waiting for every agent to hold the same
	// state at the end; CheckTimeout each linearizability check.
	ReadyTimeout, ConvergeTimeout, CheckTimeout time.Duration
	// ArtifactDir receives the porcupine visualization of any history
	// that is not linearizable; empty uses a new temporary directory.
	ArtifactDir string
	// Logf logs progress; nil is silent.
	Logf func(format string, args ...any)
}

func (c *Config) defaults() error {
	if len(c.Targets) == 0 {
		return errors.New("chaos: no targets")
	}
	if c.Faults == nil {
		c.Faults = &FaultLog{}
	}
	if c.HTTPClient == nil {
		c.HTTPClient = newHTTPClient()
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	def := func(r *Range, d Range) {
		if *r == (Range{}) {
			*r = d
		}
	}
	def(&c.Quiet, Range{time.Second, 2 * time.Second})
	def(&c.Hold, Range{time.Second, 3 * time.Second})
	def(&c.WritePause, Range{100 * time.Millisecond, 300 * time.Millisecond})
	def(&c.FetchPause, Range{5 * time.Millisecond, 15 * time.Millisecond})
	def(&c.ReadPause, Range{20 * time.Millisecond, 60 * time.Millisecond})
	def(&c.ExpiresIn, Range{3 * time.Second, 8 * time.Second})
	if c.Writers == 0 {
		c.Writers = 3
	}
	if c.MaxWrites == 0 {
		c.MaxWrites = 1000
	}
	if c.FetchersPerNode == 0 {
		c.FetchersPerNode = 1
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 60 * time.Second
	}
	if c.ConvergeTimeout == 0 {
		c.ConvergeTimeout = 60 * time.Second
	}
	if c.CheckTimeout == 0 {
		c.CheckTimeout = 30 * time.Second
	}
	return nil
}

// Report is what a run did and what the checks found.
type Report struct {
	Seed int64
	// Faults lists the faults run, in order.
	Faults []string
	// Ops counts the operations by kind and outcome: "add:ok", "add:info".
	Ops    map[string]int
	Checks []CheckResult
	// Artifacts are the files written: porcupine visualizations of
	// histories that are not linearizable, and history.json (the Record)
	// when the run failed or Config.ArtifactDir was set. ArtifactDir is
	// their directory.
	Artifacts   []string
	ArtifactDir string
	Elapsed     time.Duration
}

// OK reports whether every check passed.
func (r *Report) OK() bool {
	for _, c := range r.Checks {
		if len(c.Violations) > 0 {
			return false
		}
	}
	return true
}

func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "chaos seed=%d (replay with %s=%d): %d faults %v in %s; ops %v\n", r.Seed, EnvSeed, r.Seed, len(r.Faults), r.Faults, r.Elapsed.Round(time.Millisecond), r.Ops)
	for _, c := range r.Checks {
		b.WriteString(c.String())
	}
	for _, a := range r.Artifacts {
		fmt.Fprintf(&b, "artifact: %s\n", a)
	}
	return b.String()
}

// Run runs the workload against the targets while the nemeses inject
// faults, heals everything, waits for the agents to converge and checks
// the history. An error means the run could not be carried out as planned
// (a fault could not be injected or healed, or the cluster did not recover
// within ReadyTimeout); the history is checked all the same. Violations are
// in the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	begin := time.Now()
	c := &client{hc: cfg.HTTPClient, token: cfg.Token}
	rep := &Report{Seed: cfg.Seed, Ops: map[string]int{}}
	if err := Ready(ctx, c.hc, cfg.Token, cfg.Targets, cfg.ReadyTimeout); err != nil {
		return rep, fmt.Errorf("before the run: %w", err)
	}
	h := &History{}
	w := newWorkload(&cfg, c, h)
	if err := w.setup(ctx); err != nil {
		return rep, err
	}
	w.start()
	err := schedule(ctx, &cfg, c, rep)
	w.stop()

	var final []NodeState
	var cerr error
	if err == nil {
		final, cerr = Converge(ctx, c.hc, cfg.Token, cfg.Targets, cfg.ConvergeTimeout)
		if cerr != nil && len(final) < len(cfg.Targets) {
			final = nil // not every agent could be read
		}
	}
	ops := h.Ops()
	for _, op := range ops {
		rep.Ops[string(op.Kind)+":"+string(op.Outcome)]++
	}
	artifacts := cfg.ArtifactDir
	if artifacts == "" {
		artifacts = filepath.Join(os.TempDir(), fmt.Sprintf("tokend-chaos-%d-%s", cfg.Seed, begin.Format("20060102-150405")))
	}
	rep.Checks, rep.Artifacts = Check(CheckInput{Ops: ops, Faults: cfg.Faults.Windows(), Final: final, ArtifactDir: artifacts, Timeout: cfg.CheckTimeout})
	if cerr != nil {
		for i := range rep.Checks {
			if c := &rep.Checks[i]; c.Name == CheckConvergence && len(c.Violations) == 0 {
				c.violate("agents did not converge: %v", cerr)
			}
		}
	}
	if cfg.ArtifactDir != "" || err != nil || !rep.OK() {
		if path, err := saveRecord(artifacts, Record{Seed: cfg.Seed, Ops: ops, Faults: cfg.Faults.Windows(), Final: final}); err != nil {
			cfg.Logf("chaos: saving the history: %v", err)
		} else {
			rep.Artifacts = append(rep.Artifacts, path)
		}
	}
	if len(rep.Artifacts) > 0 {
		rep.ArtifactDir = artifacts
	}
	rep.Elapsed = time.Since(begin)
	return rep, err
}

// schedule runs the nemeses: each once in an order drawn from the seed, or
// drawn at random until cfg.Duration has passed. After each heal it waits
// until the cluster is whole again.
func schedule(ctx context.Context, cfg *Config, c *client, rep *Report) error {
	rng := rand.New(rand.NewPCG(uint64(cfg.Seed), 0))
	order := rng.Perm(len(cfg.Nemeses))
	deadline := time.Now().Add(cfg.Duration)
	for i := 0; ; i++ {
		var n Nemesis
		switch {
		case cfg.Duration == 0 && i < len(order):
			n = cfg.Nemeses[order[i]]
		case cfg.Duration > 0 && len(cfg.Nemeses) > 0 && time.Now().Before(deadline):
			n = cfg.Nemeses[rng.IntN(len(cfg.Nemeses))]
		}
		if n == nil {
			break
		}
		if err := sleep(ctx, cfg.Quiet.draw(rng)); err != nil {
			return err
		}
		hold := cfg.Hold
		if hd, ok := n.(Holder); ok {
			hold.Min, hold.Max = hd.HoldRange()
		}
		d := hold.draw(rng)
		start := time.Now()
		cfg.Logf("chaos: fault %d: %s, held %s", len(rep.Faults)+1, n.Name(), d.Round(time.Millisecond))
		rep.Faults = append(rep.Faults, n.Name())
		heal, err := n.Start(ctx, rng)
		if err != nil {
			return fmt.Errorf("fault %s: %w", n.Name(), err)
		}
		// Holding a fault is the fault itself, not a wait for anything.
		serr := sleep(ctx, d)
		if err := heal(ctx); err != nil {
			return fmt.Errorf("heal %s: %w", n.Name(), err)
		}
		if serr != nil {
			return serr
		}
		if err := Ready(ctx, c.hc, cfg.Token, cfg.Targets, cfg.ReadyTimeout); err != nil {
			return fmt.Errorf("after %s: %w", n.Name(), err)
		}
		cfg.Logf("chaos: %s healed; cluster whole again %s after the fault began", n.Name(), time.Since(start).Round(time.Millisecond))
	}
	// Writes go on for one more quiet period on the healed cluster.
	return sleep(ctx, cfg.Quiet.draw(rng))
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// poll calls cond every 50 ms until it returns nil, timeout passes or ctx
// ends, and returns cond's last error then.
func poll(ctx context.Context, timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not after %s: %w", timeout, err)
		}
		if serr := sleep(ctx, 50*time.Millisecond); serr != nil {
			return fmt.Errorf("%w (last: %v)", serr, err)
		}
	}
}

// Ready waits until the cluster is whole: every target answers, knows the
// same leader, and the Raft configuration holds exactly the targets, all
// voters.
func Ready(ctx context.Context, hc *http.Client, token string, targets []Target, timeout time.Duration) error {
	c := &client{hc: hc, token: token}
	return poll(ctx, timeout, func() error {
		ids := map[string]string{}
		leader := ""
		for _, t := range targets {
			var h api.AgentHealth
			a := c.do(ctx, "GET", t.URL+"/v1/health", nil)
			if err := a.failure(http.StatusOK); err != nil {
				return fmt.Errorf("%s: health: %w", t.Name, err)
			}
			if err := a.decode(&h); err != nil {
				return err
			}
			ids[h.ID] = t.Name
			var l api.Leader
			a = c.do(ctx, "GET", t.URL+"/v1/status/leader", nil)
			if err := a.failure(http.StatusOK); err != nil {
				return fmt.Errorf("%s: leader: %w", t.Name, err)
			}
			if err := a.decode(&l); err != nil {
				return err
			}
			if l.ID == "" {
				return fmt.Errorf("%s knows no leader", t.Name)
			}
			if leader != "" && l.ID != leader {
				return fmt.Errorf("%s follows %s, others %s", t.Name, l.Node, leader)
			}
			leader = l.ID
		}
		if _, ok := ids[leader]; !ok {
			return fmt.Errorf("the leader %s is not one of the targets", leader)
		}
		var peers []api.Peer
		a := c.do(ctx, "GET", targets[0].URL+"/v1/status/peers", nil)
		if err := a.failure(http.StatusOK); err != nil {
			return fmt.Errorf("%s: peers: %w", targets[0].Name, err)
		}
		if err := a.decode(&peers); err != nil {
			return err
		}
		voters := 0
		for _, p := range peers {
			if _, ok := ids[p.ID]; !ok {
				return fmt.Errorf("the Raft configuration holds %s (%s, %s), which no target is", p.ID, p.Node, p.Suffrage)
			}
			if p.Suffrage == "voter" {
				voters++
			}
		}
		if voters != len(targets) {
			return fmt.Errorf("%d of %d targets are voters: %+v", voters, len(targets), peers)
		}
		return nil
	})
}

// Leader returns the target that says it leads, waiting up to timeout for
// one.
func Leader(ctx context.Context, hc *http.Client, token string, targets []Target, timeout time.Duration) (Target, error) {
	c := &client{hc: hc, token: token}
	var leader Target
	err := poll(ctx, timeout, func() error {
		for _, t := range targets {
			var h api.AgentHealth
			a := c.do(ctx, "GET", t.URL+"/v1/health", nil)
			if a.failure(http.StatusOK) != nil || a.decode(&h) != nil {
				continue
			}
			if h.RaftState == "leader" {
				leader = t
				return nil
			}
		}
		return errors.New("no target says it leads")
	})
	return leader, err
}

// saveRecord writes rec as history.json in dir.
func saveRecord(dir string, rec Record) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "history.json")
	return path, rec.Save(path)
}
