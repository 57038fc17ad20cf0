package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/bench/internal/procfs"
	"github.com/tokend/tokend/bench/internal/procs"
)

// scale is the size part of issue 7: "10,000 tokens in 100 pools: RSS ≤ 64 MB
// per agent, snapshot + restore ≤ 1 s, idle CPU ≤ 1 %". It starts 3 agents
// (production timing, ACLs off, as the suite does), loads the pools through
// the API, and measures each agent from outside: memory as the OS sees it
// (/proc/PID/status) and as the Go runtime reports it (/v1/metrics), CPU over
// an idle window (/proc/PID/stat), and the operator's backup round trip
// (GET then PUT /v1/snapshot). The Raft snapshot of the state machine
// itself is measured in-process by fsm's BenchmarkSnapshot10k.
type scaleOptions struct {
	tokend      string
	pools       int
	perPool     int
	valueSize   int
	concurrency int
	idle        time.Duration
	rounds      int
	dir         string
	keep        bool
}

// Targets of issue 7.
const (
	targetRSS      = 64 << 20
	targetIdleCPU  = 1.0 // % of one CPU
	targetSnapshot = time.Second
)

func runScale(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("scale", flag.ExitOnError)
	o := scaleOptions{}
	fs.StringVar(&o.tokend, "tokend", "bin/tokend", "built tokend binary")
	fs.IntVar(&o.pools, "pools", 100, "pools to create")
	fs.IntVar(&o.perPool, "tokens", 100, "tokens to add to each pool")
	fs.IntVar(&o.valueSize, "value-size", 40, "bytes of each token value")
	fs.IntVar(&o.concurrency, "c", 32, "concurrent API clients while loading")
	fs.DurationVar(&o.idle, "idle", 30*time.Second, "window over which idle CPU is measured")
	fs.IntVar(&o.rounds, "rounds", 3, "snapshot save + restore round trips")
	fs.StringVar(&o.dir, "dir", "", "parent of the temp dir for data, sockets and logs (default the system's)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temp dir (logs, data) after the run")
	_ = fs.Parse(args)
	if o.valueSize < 16 || o.valueSize > 16<<10 {
		return fmt.Errorf("-value-size %d: 16 to 16384", o.valueSize)
	}
	if o.pools < 1 || o.perPool < 1 || o.concurrency < 1 || o.rounds < 1 || o.idle <= 0 {
		return errors.New("-pools, -tokens, -c, -rounds and -idle must be positive")
	}
	if _, err := os.Stat(o.tokend); err != nil {
		return fmt.Errorf("-tokend: %w (make build)", err)
	}
	dir, err := os.MkdirTemp(o.dir, "tkb-scale-")
	if err != nil {
		return err
	}
	defer func() {
		if o.keep {
			logf("kept %s (logs and data)", dir)
		} else if err := os.RemoveAll(dir); err != nil {
			logf("remove %s: %v", dir, err)
		}
	}()
	started := time.Now()
	load0 := loadavg()

	logf("starting 3 tokend agents (%s) in %s", o.tokend, dir)
	c, err := procs.StartTokend(ctx, o.tokend, dir, 3)
	if err != nil {
		return err
	}
	defer c.Stop()
	leader, err := c.Leader(ctx, 30*time.Second)
	if err != nil {
		return err
	}
	role := func(n *procs.TokendNode) string {
		if n == leader {
			return "leader"
		}
		return "follower"
	}
	rows := make([]scaleRow, len(c.Nodes))
	for i, n := range c.Nodes {
		rows[i].node, rows[i].role = n.Name, role(n)
		if rows[i].start, err = procfs.ReadMemory(n.Proc.Pid()); err != nil {
			return err
		}
	}

	// Peak resident memory by kind, sampled every 10 ms for the rest of
	// the run: VmHWM says how high RSS went, this says of what.
	peaks := samplePeaks(ctx, c)

	// 1. Load.
	logf("loading %d pools × %d tokens of %d bytes through %s, %d clients", o.pools, o.perPool, o.valueSize, leader.Name, o.concurrency)
	loadStart := time.Now()
	last, err := loadScale(ctx, leader.HTTPAddr, o)
	if err != nil {
		return err
	}
	loadTime := time.Since(loadStart)
	// 2. Every agent has applied the last write.
	if err := waitApplied(ctx, c, last); err != nil {
		return err
	}
	replicated := time.Since(loadStart)
	logf("loaded in %s (%.0f writes/s), every agent applied index %d after %s",
		loadTime.Round(time.Millisecond), float64(o.pools*(o.perPool+1))/loadTime.Seconds(), last, replicated.Round(time.Millisecond))
	for i, n := range c.Nodes {
		if err := checkTokens(n.HTTPAddr, o.pools*o.perPool); err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
		if err := rows[i].sample(n, &rows[i].loaded, &rows[i].heapLoaded); err != nil {
			return err
		}
	}

	// 3. Idle CPU: no client traffic, only what the agents do by themselves.
	logf("idle CPU over %s (no client traffic)", o.idle)
	snapsBefore := raftSnapshots(dir, c)
	cpu0 := make([]procfs.CPU, len(c.Nodes))
	for i, n := range c.Nodes {
		if cpu0[i], err = procfs.ReadCPU(n.Proc.Pid()); err != nil {
			return err
		}
	}
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(o.idle):
	}
	wall := time.Since(t0)
	for i, n := range c.Nodes {
		cpu1, err := procfs.ReadCPU(n.Proc.Pid())
		if err != nil {
			return err
		}
		rows[i].idleUser, rows[i].idleSys = cpu1.User-cpu0[i].User, cpu1.System-cpu0[i].System
		rows[i].idleCPU = procfs.Percent(cpu1.Total()-cpu0[i].Total(), wall)
		if err := rows[i].sample(n, &rows[i].idle, &rows[i].heapIdle); err != nil {
			return err
		}
	}
	snapsAfter := raftSnapshots(dir, c)

	// 4. The operator's backup round trip, through the leader.
	logf("snapshot save + restore, %d rounds", o.rounds)
	var trips []snapshotTrip
	for r := range o.rounds {
		trip, err := snapshotRoundTrip(ctx, c, leader)
		if err != nil {
			return fmt.Errorf("round %d: %w", r+1, err)
		}
		logf("round %d: save %s (%d bytes), restore %s, every agent applied %s",
			r+1, trip.save.Round(time.Millisecond), trip.bytes, trip.restore.Round(time.Millisecond), trip.applied.Round(time.Millisecond))
		trips = append(trips, trip)
	}
	for i, n := range c.Nodes {
		if err := checkTokens(n.HTTPAddr, o.pools*o.perPool); err != nil {
			return fmt.Errorf("%s after restore: %w", n.Name, err)
		}
		if err := rows[i].sample(n, &rows[i].restored, &rows[i].heapRestored); err != nil {
			return err
		}
	}

	for i, p := range peaks.stop() {
		rows[i].peakAnon, rows[i].peakFile = p.Anon, p.File
	}
	printScale(os.Stdout, scaleReport{
		opts: o, started: started, loadStart: load0, loadEnd: loadavg(),
		loadTime: loadTime, replicated: replicated, lastIndex: last,
		rows: rows, wall: wall, trips: trips, snapsBefore: snapsBefore, snapsAfter: snapsAfter,
	})
	return nil
}

// scaleRow is one agent's measurements.
type scaleRow struct {
	node, role                         string
	start, loaded, idle, restored      procfs.Memory
	heapLoaded, heapIdle, heapRestored goMemory
	peakAnon, peakFile                 int64
	idleCPU                            float64
	idleUser, idleSys                  time.Duration
}

func (r *scaleRow) sample(n *procs.TokendNode, m *procfs.Memory, g *goMemory) error {
	var err error
	if *m, err = procfs.ReadMemory(n.Proc.Pid()); err != nil {
		return err
	}
	_, body, err := procs.Call(n.HTTPAddr, "GET", "/v1/metrics", nil)
	if err != nil {
		return err
	}
	*g = parseGoMemory(body)
	return nil
}

// peakSampler samples each agent's resident memory until stopped.
type peakSampler struct {
	stopCh chan struct{}
	done   chan struct{}
	peaks  []procfs.Memory // the largest Anon and File seen, each
}

func samplePeaks(ctx context.Context, c *procs.TokendCluster) *peakSampler {
	s := &peakSampler{stopCh: make(chan struct{}), done: make(chan struct{}), peaks: make([]procfs.Memory, len(c.Nodes))}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			for i, n := range c.Nodes {
				if m, err := procfs.ReadMemory(n.Proc.Pid()); err == nil {
					s.peaks[i].Anon = max(s.peaks[i].Anon, m.Anon)
					s.peaks[i].File = max(s.peaks[i].File, m.File)
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-s.stopCh:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *peakSampler) stop() []procfs.Memory {
	close(s.stopCh)
	<-s.done
	return s.peaks
}

// goMemory is what the Go runtime says of its memory, from the agent's
// Prometheus metrics; -1 where a metric is missing.
type goMemory struct {
	HeapInuse int64 // go_memstats_heap_inuse_bytes
	HeapAlloc int64 // go_memstats_heap_alloc_bytes
	Sys       int64 // go_memstats_sys_bytes: everything the runtime got from the OS
}

// parseGoMemory reads the Go runtime's memory gauges from Prometheus text.
func parseGoMemory(text []byte) goMemory {
	g := goMemory{-1, -1, -1}
	for line := range bytes.Lines(text) {
		f := strings.Fields(string(line))
		if len(f) != 2 {
			continue
		}
		var dst *int64
		switch f[0] {
		case "go_memstats_heap_inuse_bytes":
			dst = &g.HeapInuse
		case "go_memstats_heap_alloc_bytes":
			dst = &g.HeapAlloc
		case "go_memstats_sys_bytes":
			dst = &g.Sys
		default:
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			*dst = int64(v)
		}
	}
	return g
}

// loadScale creates the pools, then adds the tokens, each with
// o.concurrency clients, and returns the highest index a write was
// committed at.
func loadScale(ctx context.Context, addr string, o scaleOptions) (uint64, error) {
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: o.concurrency}}
	defer client.CloseIdleConnections()
	var last atomic.Uint64
	send := func(method, path string, body any, want int) error {
		status, b, index, err := callIndex(ctx, client, addr, method, path, body)
		if err != nil {
			return err
		}
		if status != want {
			return fmt.Errorf("%s %s: %d %s", method, path, status, strings.TrimSpace(string(b)))
		}
		for {
			old := last.Load()
			if index <= old || last.CompareAndSwap(old, index) {
				return nil
			}
		}
	}
	pool := func(i int) string { return fmt.Sprintf("scale-%03d", i) }
	if err := parallel(ctx, o.concurrency, o.pools, func(i int) error {
		return send("PUT", "/v1/pools/"+pool(i), api.PoolRequest{}, http.StatusOK)
	}); err != nil {
		return 0, fmt.Errorf("create pools: %w", err)
	}
	if err := parallel(ctx, o.concurrency, o.pools*o.perPool, func(i int) error {
		return send("POST", "/v1/pools/"+pool(i%o.pools)+"/tokens", api.TokenRequest{Value: randomValue(o.valueSize)}, http.StatusCreated)
	}); err != nil {
		return 0, fmt.Errorf("add tokens: %w", err)
	}
	return last.Load(), nil
}

// parallel runs f(0..n-1) on c goroutines and returns the first error.
func parallel(ctx context.Context, c, n int, f func(i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(c, n) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// callIndex sends one JSON request and returns the status, the body and
// the index the agent says the write committed at (api.HeaderIndex).
func callIndex(ctx context.Context, client *http.Client, addr, method, path string, body any) (int, []byte, uint64, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, nil, 0, err
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, bytes.NewReader(b))
	if err != nil {
		return 0, nil, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, 0, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	index, _ := strconv.ParseUint(resp.Header.Get(api.HeaderIndex), 10, 64)
	return resp.StatusCode, out, index, err
}

// waitApplied waits until every agent has applied index.
func waitApplied(ctx context.Context, c *procs.TokendCluster, index uint64) error {
	var ps []*procs.Proc
	for _, n := range c.Nodes {
		ps = append(ps, n.Proc)
	}
	return procs.WaitFor(ctx, 60*time.Second, ps, func() error {
		for _, n := range c.Nodes {
			var h api.AgentHealth
			status, b, err := procs.Call(n.HTTPAddr, "GET", "/v1/health", nil)
			if err != nil {
				return err
			}
			if err := json.Unmarshal(b, &h); err != nil {
				return fmt.Errorf("%s: health %d: %w", n.Name, status, err)
			}
			if h.AppliedIndex < index {
				return fmt.Errorf("%s has applied %d of %d", n.Name, h.AppliedIndex, index)
			}
		}
		return nil
	})
}

// checkTokens checks that the agent's pools hold want tokens in all.
func checkTokens(addr string, want int) error {
	status, b, err := procs.Call(addr, "GET", "/v1/pools", nil)
	if err != nil {
		return err
	}
	var pools []api.Pool
	if err := json.Unmarshal(b, &pools); err != nil {
		return fmt.Errorf("list pools: %d: %w", status, err)
	}
	got := 0
	for _, p := range pools {
		got += p.Tokens
	}
	if got != want {
		return fmt.Errorf("holds %d tokens in %d pools, want %d", got, len(pools), want)
	}
	return nil
}

// snapshotTrip is one operator backup round trip.
type snapshotTrip struct {
	save, restore, applied time.Duration // applied: restore until every agent applied it
	bytes                  int
}

func (t snapshotTrip) total() time.Duration { return t.save + t.restore }

// snapshotRoundTrip saves a snapshot file from the leader (GET
// /v1/snapshot), restores it (PUT /v1/snapshot) and waits until every
// agent has applied the restore.
func snapshotRoundTrip(ctx context.Context, c *procs.TokendCluster, leader *procs.TokendNode) (snapshotTrip, error) {
	client := &http.Client{Timeout: 2 * time.Minute}
	defer client.CloseIdleConnections()
	var t snapshotTrip
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+leader.HTTPAddr+"/v1/snapshot", nil)
	if err != nil {
		return t, err
	}
	req.Header.Set("Accept", "application/octet-stream")
	resp, err := client.Do(req)
	if err != nil {
		return t, err
	}
	file, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return t, err
	}
	if resp.StatusCode != http.StatusOK {
		return t, fmt.Errorf("GET /v1/snapshot: %s %s", resp.Status, bytes.TrimSpace(file))
	}
	t.save, t.bytes = time.Since(start), len(file)
	if _, err := api.DecodeSnapshot(file); err != nil {
		return t, fmt.Errorf("saved snapshot: %w", err)
	}

	start = time.Now()
	req, err = http.NewRequestWithContext(ctx, "PUT", "http://"+leader.HTTPAddr+"/v1/snapshot", bytes.NewReader(file))
	if err != nil {
		return t, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = client.Do(req)
	if err != nil {
		return t, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return t, err
	}
	if resp.StatusCode != http.StatusOK {
		return t, fmt.Errorf("PUT /v1/snapshot: %s %s", resp.Status, bytes.TrimSpace(b))
	}
	t.restore = time.Since(start)
	var out api.SnapshotRestored
	if err := json.Unmarshal(b, &out); err != nil {
		return t, err
	}
	if err := waitApplied(ctx, c, out.Index); err != nil {
		return t, err
	}
	t.applied = time.Since(start)
	return t, nil
}

// raftSnapshots counts the Raft snapshots each agent keeps on disk (at
// most 2 are retained), by name: a new name means a snapshot was taken.
func raftSnapshots(dir string, c *procs.TokendCluster) map[string][]string {
	out := map[string][]string{}
	for _, n := range c.Nodes {
		entries, _ := os.ReadDir(filepath.Join(dir, n.Name, "raft", "snapshots"))
		for _, e := range entries {
			out[n.Name] = append(out[n.Name], e.Name())
		}
	}
	return out
}

type scaleReport struct {
	opts                 scaleOptions
	started              time.Time
	loadStart, loadEnd   string
	loadTime, replicated time.Duration
	lastIndex            uint64
	rows                 []scaleRow
	wall                 time.Duration
	trips                []snapshotTrip
	snapsBefore          map[string][]string
	snapsAfter           map[string][]string
}

func mib(n int64) string {
	if n < 0 {
		return "?"
	}
	return fmt.Sprintf("%.1f", float64(n)/(1<<20))
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// printScale writes the report as markdown.
func printScale(out io.Writer, r scaleReport) {
	w := bufio.NewWriter(out)
	defer w.Flush()
	o := r.opts
	fmt.Fprintf(w, "## tokend-bench scale, %s\n\n", r.started.UTC().Format("2006-01-02 15:04 UTC"))
	m := describeMachine()
	fmt.Fprintf(w, "%d pools × %d tokens (%d tokens, %d-byte values), 3 agents, production timing, ACLs off. Machine: %d CPUs (%s), %s, loadavg %s at start, %s at end.\n\n",
		o.pools, o.perPool, o.pools*o.perPool, o.valueSize, m.CPUs, m.CPUModel, m.GoVersion, r.loadStart, r.loadEnd)
	fmt.Fprintf(w, "Loading: %d writes with %d clients through the leader in %s (%.0f/s); every agent had applied index %d after %s.\n\n",
		o.pools*(o.perPool+1), o.concurrency, r.loadTime.Round(time.Millisecond), float64(o.pools*(o.perPool+1))/r.loadTime.Seconds(), r.lastIndex, r.replicated.Round(time.Millisecond))

	fmt.Fprintf(w, "Memory, MiB: VmRSS from /proc/PID/status as anon (heap, stacks) + file (the binary, bbolt's mmap of the Raft log); Go heap in use and the runtime's total (Go sys) from /v1/metrics; VmHWM is the peak RSS of the whole run, and the peaks of anon and of file were sampled every 10 ms:\n\n")
	fmt.Fprintf(w, "| agent | RSS empty | RSS loaded (anon + file) | heap in use loaded | Go sys loaded | RSS after idle | RSS after %d restores | heap in use after | ≤ 64 MiB | VmHWM | peak anon | peak file | VmHWM ≤ 64 MiB |\n", len(r.trips))
	fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|\n")
	for _, row := range r.rows {
		fmt.Fprintf(w, "| %s (%s) | %s | %s (%s + %s) | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", row.node, row.role,
			mib(row.start.RSS), mib(row.loaded.RSS), mib(row.loaded.Anon), mib(row.loaded.File), mib(row.heapLoaded.HeapInuse), mib(row.heapLoaded.Sys),
			mib(row.idle.RSS), mib(row.restored.RSS), mib(row.heapRestored.HeapInuse),
			verdict(max(row.loaded.RSS, row.idle.RSS, row.restored.RSS) <= targetRSS),
			mib(row.restored.HWM), mib(row.peakAnon), mib(row.peakFile), verdict(row.restored.HWM <= targetRSS))
	}

	fmt.Fprintf(w, "\nIdle CPU over %s of wall time, no client traffic (utime+stime from /proc/PID/stat, %% of one CPU):\n\n", r.wall.Round(time.Millisecond))
	fmt.Fprintf(w, "| agent | user | system | CPU | ≤ 1 %% | Raft snapshots taken in the window |\n|---|---:|---:|---:|---|---|\n")
	for _, row := range r.rows {
		taken := 0
		for _, s := range r.snapsAfter[row.node] {
			if !slices.Contains(r.snapsBefore[row.node], s) {
				taken++
			}
		}
		fmt.Fprintf(w, "| %s (%s) | %s | %s | %.2f %% | %s | %d |\n", row.node, row.role,
			row.idleUser, row.idleSys, row.idleCPU, verdict(row.idleCPU <= targetIdleCPU), taken)
	}

	fmt.Fprintf(w, "\nOperator backup round trip through the leader (GET /v1/snapshot, then PUT /v1/snapshot of the same file):\n\n")
	fmt.Fprintf(w, "| round | file bytes | save | restore | save + restore | ≤ 1 s | restore until all 3 applied |\n|---:|---:|---:|---:|---:|---|---:|\n")
	for i, t := range r.trips {
		fmt.Fprintf(w, "| %d | %d | %s | %s | %s | %s | %s |\n", i+1, t.bytes,
			t.save.Round(time.Millisecond), t.restore.Round(time.Millisecond), t.total().Round(time.Millisecond),
			verdict(t.total() <= targetSnapshot), t.applied.Round(time.Millisecond))
	}
	fmt.Fprintf(w, "\nThe Raft snapshot alone (FSM Snapshot + Persist, then Restore, in-process): `go test -run '^$' -bench Snapshot10k -benchmem ./fsm/`.\n")
}
