package main

// tokend-bench failover: the two availability targets of issue 7, measured
// on a 3-agent cluster on loopback started from the built binary.
//
// Leader failover: a writer adds tokens through each of the two agents that
// will survive; the leader is killed with SIGKILL; the sample is the time
// from just before the kill until the first write answered 201 that was sent
// after the killed process was reaped — a write the dead leader cannot have
// committed, so the new leader did. The writers go to both survivors because
// a client that knows several agents retries on the next one: the write to
// the agent that wins the election is applied there, the write to the other
// is forwarded to it once that agent learns who leads. The killed agent is
// then started again on its data dir, and the next kill waits until the
// cluster is whole (three voters, one leader known to all, every agent
// alive in gossip and caught up).
//
// Report propagation: a pool holds a backup token far down the priority
// order and, each repetition, a new first-choice token. Once every agent
// serves the new token, it is reported unauthorized on a follower (over that
// follower's unix socket, as a local application would), while every agent
// is polled over its unix socket until it serves something else. The sample
// is the time from sending the report to the slowest agent's first answer
// with another token.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/bench/internal/procs"
	"github.com/tokend/tokend/bench/internal/stats"
)

type failoverOptions struct {
	tokend     string
	multiplier int
	kills      int
	reports    int
	poll       time.Duration
	retry      time.Duration
	dir        string
	keep       bool
	jsonOut    string
}

func runFailover(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("failover", flag.ExitOnError)
	o := failoverOptions{}
	fs.StringVar(&o.tokend, "tokend", "bin/tokend", "built tokend binary")
	fs.IntVar(&o.multiplier, "raft-multiplier", 0, "--raft-multiplier given to every agent (1 to 10); 0 gives none: the agent's default")
	fs.IntVar(&o.kills, "kills", 20, "leader kills (0 for none)")
	fs.IntVar(&o.reports, "reports", 200, "report propagation repetitions (0 for none)")
	fs.DurationVar(&o.poll, "poll", 500*time.Microsecond, "pause between two polls of one agent while a report propagates")
	fs.DurationVar(&o.retry, "retry", 2*time.Millisecond, "pause after a failed write before a writer sends the next")
	fs.StringVar(&o.dir, "dir", "", "parent of the temp dir for data, sockets and logs (default the system's)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temp dir (logs, data) after the run")
	fs.StringVar(&o.jsonOut, "json", "", "also write every sample as JSON to this file")
	_ = fs.Parse(args)
	if err := o.check(); err != nil {
		return err
	}
	rep := failoverReport{
		Started: time.Now(), Command: "tokend-bench failover " + strings.Join(args, " "),
		Machine: failoverMachine{machine: describeMachine()}, RaftMultiplier: o.multiplier,
	}
	dir, err := os.MkdirTemp(o.dir, "tkf-")
	if err != nil {
		return err
	}
	var extra []string
	if o.multiplier != 0 {
		extra = []string{"--raft-multiplier", fmt.Sprint(o.multiplier)}
	}
	logf("starting 3 tokend agents (%s %s) in %s", o.tokend, strings.Join(extra, " "), dir)
	c, err := procs.StartTokendWith(ctx, o.tokend, dir, 3, extra)
	defer func() {
		if c != nil {
			c.Stop()
		}
		if o.keep {
			logf("kept %s (logs and data)", dir)
		} else if err := os.RemoveAll(dir); err != nil {
			logf("remove %s: %v", dir, err)
		}
	}()
	if err != nil {
		return err
	}
	if o.reports > 0 {
		if rep.Reports, err = measureReports(ctx, c, o); err != nil {
			return fmt.Errorf("report propagation: %w", err)
		}
	}
	for i := range o.kills {
		s, err := killLeader(ctx, c, o, i)
		if err != nil {
			return fmt.Errorf("kill %d: %w", i+1, err)
		}
		logf("kill %d/%d: %s killed, first write committed by %s after %s (%s)", i+1, o.kills, s.Killed, s.NewLeader, ms(s.Time), s.Path)
		rep.Failovers = append(rep.Failovers, s)
	}
	rep.Machine.LoadEnd = loadavg()
	fmt.Print(rep.render())
	if o.jsonOut != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (o failoverOptions) check() error {
	if o.multiplier != 0 && (o.multiplier < 1 || o.multiplier > 10) {
		return fmt.Errorf("-raft-multiplier %d: 1 to 10, or 0 for the agent's default", o.multiplier)
	}
	if o.kills < 0 || o.reports < 0 {
		return errors.New("-kills and -reports must not be negative")
	}
	if o.poll <= 0 || o.retry <= 0 {
		return errors.New("-poll and -retry must be positive")
	}
	if _, err := os.Stat(o.tokend); err != nil {
		return fmt.Errorf("-tokend: %w (make build)", err)
	}
	return nil
}

// failoverReport is everything one run measured.
type failoverReport struct {
	Started        time.Time        `json:"started"`
	Command        string           `json:"command"`
	Machine        failoverMachine  `json:"machine"`
	RaftMultiplier int              `json:"raft_multiplier"`
	Failovers      []failoverSample `json:"failovers"`
	Reports        []reportSample   `json:"reports"`
}

type failoverMachine struct {
	machine
	LoadEnd string `json:"loadavg_end"`
}

// failoverSample is one leader kill.
type failoverSample struct {
	Time      time.Duration `json:"ns"`
	Killed    string        `json:"killed"`
	NewLeader string        `json:"new_leader"`
	// Path is how the first write got in: "direct" when it was sent to the
	// new leader, "forwarded" when the other survivor forwarded it.
	Path string `json:"path"`
	// Failed counts the writes that failed meanwhile.
	Failed int `json:"failed_writes"`
}

// reportSample is one report's propagation: until the slowest agent
// stopped serving the token, and per role.
type reportSample struct {
	Slowest      time.Duration `json:"ns"`
	SlowestNode  string        `json:"slowest_node"`
	Reporter     time.Duration `json:"reporter_ns"`
	Leader       time.Duration `json:"leader_ns"`
	Other        time.Duration `json:"other_follower_ns"`
	ReportAnswer time.Duration `json:"report_answer_ns"`
}

// write is one token add of a failover writer.
type write struct {
	node       string
	start, end time.Time
	ok         bool
}

// firstCommit is the failover time: from the kill (t0) until the earliest
// answer of a successful write sent after the killed process was reaped.
// A write sent earlier, even answered later, may have been committed by the
// dead leader, so it does not count.
func firstCommit(t0, reaped time.Time, writes []write) (time.Duration, write, bool) {
	var best write
	found := false
	for _, w := range writes {
		if !w.ok || w.start.Before(reaped) {
			continue
		}
		if !found || w.end.Before(best.end) {
			best, found = w, true
		}
	}
	if !found {
		return 0, write{}, false
	}
	return best.end.Sub(t0), best, true
}

// killLeader runs one repetition of the failover measurement.
func killLeader(ctx context.Context, c *procs.TokendCluster, o failoverOptions, i int) (failoverSample, error) {
	leader, err := c.Leader(ctx, 60*time.Second)
	if err != nil {
		return failoverSample{}, err
	}
	var survivors []*procs.TokendNode
	for _, n := range c.Nodes {
		if n != leader {
			survivors = append(survivors, n)
		}
	}
	pool := fmt.Sprintf("failover-%d", i)
	if status, b, err := procs.Call(leader.HTTPAddr, "PUT", "/v1/pools/"+pool, api.PoolRequest{}); err != nil || status != http.StatusOK {
		return failoverSample{}, fmt.Errorf("create pool: %d %s %v", status, b, err)
	}

	wctx, stop := context.WithCancel(ctx)
	results := make(chan write, 1024)
	var wg sync.WaitGroup
	for _, n := range survivors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			writeLoop(wctx, n, pool, o.retry, results)
		}()
	}
	defer func() {
		stop()
		wg.Wait()
	}()

	// Writes flow through both survivors before the kill.
	flowing := map[string]bool{}
	var writes []write
	deadline := time.After(30 * time.Second)
	for len(flowing) < len(survivors) {
		select {
		case w := <-results:
			if w.ok {
				flowing[w.node] = true
			}
		case <-deadline:
			return failoverSample{}, fmt.Errorf("writes through %v do not succeed before the kill", survivors)
		}
	}
	t0 := time.Now()
	leader.Proc.Kill()
	reaped := time.Now()

	deadline = time.After(60 * time.Second)
	var (
		d     time.Duration
		first write
		found bool
	)
	for !found {
		select {
		case w := <-results:
			writes = append(writes, w)
			if w.ok {
				d, first, found = firstCommit(t0, reaped, writes)
			}
		case <-deadline:
			return failoverSample{}, fmt.Errorf("no write committed in 60 s after killing %s", leader.Name)
		}
	}
	stop()
	wg.Wait()
	s := failoverSample{Time: d, Killed: leader.Name, Path: "forwarded"}
	for _, w := range writes {
		if !w.ok {
			s.Failed++
		}
	}

	if err := leader.Start(); err != nil {
		return s, err
	}
	if err := waitWhole(ctx, c); err != nil {
		return s, fmt.Errorf("after restarting %s: %w", leader.Name, err)
	}
	// Who won: the survivor that leads now, unless it already changed
	// again (then the write's path is unknown and called forwarded).
	if now, err := c.Leader(ctx, 10*time.Second); err == nil {
		s.NewLeader = now.Name
		if now.Name == first.node {
			s.Path = "direct"
		}
	}
	if status, b, err := procs.Call(survivors[0].HTTPAddr, "DELETE", "/v1/pools/"+pool+"?force=true", nil); err != nil || status != http.StatusOK {
		return s, fmt.Errorf("delete pool: %d %s %v", status, b, err)
	}
	return s, nil
}

// writeLoop adds tokens to pool through n until ctx ends, sending every
// outcome to results; after a failure it pauses retry, so that a writer
// facing a dead leader does not take the CPU the election needs.
func writeLoop(ctx context.Context, n *procs.TokendNode, pool string, retry time.Duration, results chan<- write) {
	client := &http.Client{Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	url := "http://" + n.HTTPAddr + "/v1/pools/" + pool + "/tokens"
	for k := 0; ctx.Err() == nil; k++ {
		body, _ := json.Marshal(api.TokenRequest{Value: fmt.Sprintf("%s-%s-%d", pool, n.Name, k), Priority: k})
		w := write{node: n.Name, start: time.Now()}
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			w.ok = resp.StatusCode == http.StatusCreated
		}
		w.end = time.Now()
		if ctx.Err() != nil {
			return
		}
		select {
		case results <- w:
		case <-ctx.Done():
			return
		}
		if !w.ok {
			select {
			case <-time.After(retry):
			case <-ctx.Done():
				return
			}
		}
	}
}

// waitWhole waits until the cluster is whole again: every agent knows the
// same leader, the leader counts three voters and three alive members, and
// every agent has applied what the leader had when the check began.
func waitWhole(ctx context.Context, c *procs.TokendCluster) error {
	var procList []*procs.Proc
	for _, n := range c.Nodes {
		procList = append(procList, n.Proc)
	}
	return procs.WaitFor(ctx, 60*time.Second, procList, func() error {
		leader, err := c.Leader(ctx, time.Second)
		if err != nil {
			return err
		}
		var lh api.AgentHealth
		if err := getJSON(leader.HTTPAddr, "/v1/health", &lh); err != nil {
			return err
		}
		var peers []api.Peer
		if err := getJSON(leader.HTTPAddr, "/v1/status/peers", &peers); err != nil {
			return err
		}
		voters := 0
		for _, p := range peers {
			if p.Suffrage == "voter" {
				voters++
			}
		}
		if voters != len(c.Nodes) {
			return fmt.Errorf("%d voters, want %d", voters, len(c.Nodes))
		}
		var members []api.Member
		if err := getJSON(leader.HTTPAddr, "/v1/members", &members); err != nil {
			return err
		}
		alive := 0
		for _, m := range members {
			if m.Status == "alive" {
				alive++
			}
		}
		if alive != len(c.Nodes) {
			return fmt.Errorf("%d members alive, want %d", alive, len(c.Nodes))
		}
		for _, n := range c.Nodes {
			var h api.AgentHealth
			if err := getJSON(n.HTTPAddr, "/v1/health", &h); err != nil {
				return err
			}
			if h.AppliedIndex < lh.AppliedIndex {
				return fmt.Errorf("%s applied %d, the leader %d", n.Name, h.AppliedIndex, lh.AppliedIndex)
			}
		}
		return nil
	})
}

func getJSON(addr, path string, out any) error {
	status, b, err := procs.Call(addr, "GET", path, nil)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", path, status, bytes.TrimSpace(b))
	}
	return json.Unmarshal(b, out)
}

// measureReports runs o.reports repetitions of the report propagation
// measurement.
func measureReports(ctx context.Context, c *procs.TokendCluster, o failoverOptions) ([]reportSample, error) {
	leader, err := c.Leader(ctx, 60*time.Second)
	if err != nil {
		return nil, err
	}
	reporter := c.Follower(leader)
	const pool = "reports"
	if status, b, err := procs.Call(leader.HTTPAddr, "PUT", "/v1/pools/"+pool, api.PoolRequest{}); err != nil || status != http.StatusOK {
		return nil, fmt.Errorf("create pool: %d %s %v", status, b, err)
	}
	// A backup far down the priority order, so the pool never runs out.
	if status, b, err := procs.Call(leader.HTTPAddr, "POST", "/v1/pools/"+pool+"/tokens", api.TokenRequest{Value: "backup", Priority: 1_000_000}); err != nil || status != http.StatusCreated {
		return nil, fmt.Errorf("add backup token: %d %s %v", status, b, err)
	}
	clients := make([]*http.Client, len(c.Nodes))
	for j, n := range c.Nodes {
		clients[j] = procs.UnixClient(n.Socket)
		defer clients[j].CloseIdleConnections()
	}
	reporterClient := procs.UnixClient(reporter.Socket)
	defer reporterClient.CloseIdleConnections()
	fetchPath := "http://tokend/v1/pools/" + pool + "/token"
	var out []reportSample
	for i := range o.reports {
		var info api.TokenInfo
		status, b, err := procs.Call(leader.HTTPAddr, "POST", "/v1/pools/"+pool+"/tokens", api.TokenRequest{Value: fmt.Sprintf("v%d", i), Priority: -1})
		if err != nil || status != http.StatusCreated || json.Unmarshal(b, &info) != nil {
			return out, fmt.Errorf("add token: %d %s %v", status, b, err)
		}
		if err := procs.WaitFor(ctx, 10*time.Second, nil, func() error {
			for j, h := range clients {
				if id, err := fetchID(h, fetchPath); err != nil || id != info.ID {
					return fmt.Errorf("%s serves %q (%v), not %s yet", c.Nodes[j].Name, id, err, info.ID)
				}
			}
			return nil
		}); err != nil {
			return out, err
		}

		seen := make([]time.Time, len(c.Nodes))
		var wg sync.WaitGroup
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		for j, h := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for pctx.Err() == nil {
					if id, err := fetchID(h, fetchPath); err == nil && id != info.ID {
						seen[j] = time.Now()
						return
					}
					time.Sleep(o.poll)
				}
			}()
		}
		sent := time.Now()
		body, _ := json.Marshal(api.ReportRequest{Outcome: "unauthorized"})
		resp, err := reporterClient.Post("http://tokend/v1/pools/"+pool+"/tokens/"+info.ID+"/report", "application/json", bytes.NewReader(body))
		answered := time.Now()
		if err == nil {
			b, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("report: %s %s", resp.Status, bytes.TrimSpace(b))
			}
		}
		wg.Wait()
		cancel()
		if err != nil {
			return out, err
		}
		s, err := propagation(sent, c.Nodes, seen)
		if err != nil {
			return out, fmt.Errorf("token %d (%s): %w", i, info.ID, err)
		}
		s.ReportAnswer = answered.Sub(sent)
		for j, n := range c.Nodes {
			switch n {
			case reporter:
				s.Reporter = seen[j].Sub(sent)
			case leader:
				s.Leader = seen[j].Sub(sent)
			default:
				s.Other = seen[j].Sub(sent)
			}
		}
		out = append(out, s)
		if status, b, err := procs.Call(leader.HTTPAddr, "DELETE", "/v1/pools/"+pool+"/tokens/"+info.ID, nil); err != nil || status != http.StatusOK {
			return out, fmt.Errorf("delete token: %d %s %v", status, b, err)
		}
		if (i+1)%50 == 0 {
			logf("report %d/%d: slowest agent %s after %s", i+1, o.reports, s.SlowestNode, ms(s.Slowest))
		}
	}
	return out, nil
}

// propagation is one report's sample: the slowest agent's time from sent
// to its first answer with another token. An agent never seen to change
// is an error.
func propagation(sent time.Time, nodes []*procs.TokendNode, seen []time.Time) (reportSample, error) {
	var s reportSample
	for j, t := range seen {
		if t.IsZero() {
			return s, fmt.Errorf("%s still serves the reported token 10 s after the report", nodes[j].Name)
		}
		if d := t.Sub(sent); s.SlowestNode == "" || d > s.Slowest {
			s.Slowest, s.SlowestNode = d, nodes[j].Name
		}
	}
	return s, nil
}

// fetchID fetches the pool's token and returns its id.
func fetchID(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return "", fmt.Errorf("fetch: %s", resp.Status)
	}
	var t struct {
		ID string `json:"id"`
	}
	err = json.NewDecoder(resp.Body).Decode(&t)
	return t.ID, err
}

// render is the run as markdown: the machine, then for each measurement
// its percentiles and every sample.
func (r failoverReport) render() string {
	var b strings.Builder
	mult := "default (none given)"
	if r.RaftMultiplier != 0 {
		mult = fmt.Sprint(r.RaftMultiplier)
	}
	fmt.Fprintf(&b, "`%s` — %s, raft multiplier %s\n\n", r.Command, r.Started.UTC().Format(time.RFC3339), mult)
	fmt.Fprintf(&b, "machine: %d CPUs (%s), %s, load average %s at start, %s at end\n\n", r.Machine.CPUs, r.Machine.CPUModel, r.Machine.GoVersion, r.Machine.LoadStart, r.Machine.LoadEnd)
	if len(r.Failovers) > 0 {
		var ds []time.Duration
		direct := 0
		for _, s := range r.Failovers {
			ds = append(ds, s.Time)
			if s.Path == "direct" {
				direct++
			}
		}
		b.WriteString(summaryTable("leader SIGKILL → first write committed by the new leader", ds))
		fmt.Fprintf(&b, "\nfirst write sent to the new leader itself in %d of %d kills (else forwarded by the other survivor)\n", direct, len(r.Failovers))
		fmt.Fprintf(&b, "samples (ms, in order): %s\n\n", msList(durations(r.Failovers, func(s failoverSample) time.Duration { return s.Time })))
	}
	if len(r.Reports) > 0 {
		slowest := durations(r.Reports, func(s reportSample) time.Duration { return s.Slowest })
		b.WriteString(summaryTable("report on a follower → no agent serves the token (slowest agent)", slowest))
		b.WriteString(summaryTable("  the reporter itself", durations(r.Reports, func(s reportSample) time.Duration { return s.Reporter })))
		b.WriteString(summaryTable("  the leader", durations(r.Reports, func(s reportSample) time.Duration { return s.Leader })))
		b.WriteString(summaryTable("  the other follower", durations(r.Reports, func(s reportSample) time.Duration { return s.Other })))
		b.WriteString(summaryTable("  the report's answer (committed)", durations(r.Reports, func(s reportSample) time.Duration { return s.ReportAnswer })))
		fmt.Fprintf(&b, "\nslowest agent, samples (ms, in order): %s\n", msList(slowest))
	}
	return b.String()
}

func durations[S any](xs []S, f func(S) time.Duration) []time.Duration {
	out := make([]time.Duration, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return out
}

// summaryTable is one markdown row of percentiles of samples (not
// changed), after a header row when title is not indented.
func summaryTable(title string, samples []time.Duration) string {
	s := stats.Summarize(slices.Clone(samples))
	row := fmt.Sprintf("| %s | %d | %s | %s | %s | %s |\n", strings.TrimSpace(title), s.N, ms(s.P50), ms(s.P99), ms(s.P999), ms(s.Max))
	if strings.HasPrefix(title, " ") {
		return row
	}
	return "| measured | n | p50 | p99 | p99.9 | max |\n|---|---|---|---|---|---|\n" + row
}

// ms is d in milliseconds with one decimal.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

func msList(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond))
	}
	return strings.Join(parts, " ")
}
