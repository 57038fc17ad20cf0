package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tokend/tokend/bench/internal/floor"
	"github.com/tokend/tokend/bench/internal/load"
	"github.com/tokend/tokend/bench/internal/suite"
	"github.com/tokend/tokend/bench/internal/targets"
)

// envFlags registers the flags that say what startEnv starts.
func envFlags(fs *flag.FlagSet) *envOptions {
	o := &envOptions{}
	fs.StringVar(&o.tokend, "tokend", "bin/tokend", "built tokend binary")
	fs.StringVar(&o.etcd, "etcd", "/usr/bin/etcd", `etcd binary; "" leaves etcd out`)
	fs.IntVar(&o.valueSize, "value-size", 40, "bytes of the token value and of the etcd value")
	fs.BoolVar(&o.raw, "raw", false, "fetch with ?format=raw (the value only) instead of JSON")
	fs.StringVar(&o.writeTo, "write-to", "leader", "where writes go: leader or follower (which forwards to the leader)")
	fs.StringVar(&o.dir, "dir", "", "parent of the temp dir for data, sockets and logs (default the system's)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temp dir (logs, data) after the run")
	return o
}

func checkEnvOptions(o *envOptions) error {
	if o.writeTo != "leader" && o.writeTo != "follower" {
		return fmt.Errorf("-write-to %q: leader or follower", o.writeTo)
	}
	if o.valueSize < 16 || o.valueSize > 16<<10 {
		return fmt.Errorf("-value-size %d: 16 to 16384", o.valueSize)
	}
	if _, err := os.Stat(o.tokend); err != nil {
		return fmt.Errorf("-tokend: %w (make build)", err)
	}
	if o.etcd != "" {
		if _, err := os.Stat(o.etcd); err != nil {
			return fmt.Errorf("-etcd: %w (apt-get install etcd-server, or -etcd= to leave etcd out)", err)
		}
	}
	return nil
}

func intList(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive count", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// report is what a suite writes as JSON.
type report struct {
	Started  time.Time      `json:"started"`
	Command  string         `json:"command"`
	Machine  machine        `json:"machine"`
	Config   map[string]any `json:"config"`
	Groups   []suite.Group  `json:"groups"`
	Samples  []suite.Sample `json:"samples"`
	Rows     []suite.Row    `json:"rows"`
	Checks   []suite.Check  `json:"checks"`
	LoadEnd  string         `json:"loadavg_end"`
	Duration time.Duration  `json:"wall_ns"`
}

func runSuite(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("suite", flag.ExitOnError)
	o := envFlags(fs)
	duration := fs.Duration("duration", 3*time.Second, "measured time of each run")
	warmup := fs.Duration("warmup", 500*time.Millisecond, "unmeasured time before each run's window")
	rounds := fs.Int("rounds", 3, "rounds: every run of the suite once per round, interleaved")
	fetchC := fs.String("fetch-c", "1,16", "client counts for fetches")
	writeC := fs.String("write-c", "1,16", "client counts for writes")
	out := fs.String("out", "", "also write the markdown report to this file")
	jsonOut := fs.String("json", "", "also write every sample, row and check as JSON to this file")
	_ = fs.Parse(args)
	if err := checkEnvOptions(o); err != nil {
		return err
	}
	fc, err := intList(*fetchC)
	if err != nil {
		return fmt.Errorf("-fetch-c: %w", err)
	}
	wc, err := intList(*writeC)
	if err != nil {
		return fmt.Errorf("-write-c: %w", err)
	}
	if *rounds < 1 || *duration <= 0 {
		return errors.New("-rounds ≥ 1 and -duration > 0")
	}

	rep := report{Started: time.Now(), Command: strings.Join(os.Args, " "), Machine: describeMachine()}
	groups := suite.Groups(fc, wc, o.etcd != "")
	rep.Groups = groups
	steps := suite.Schedule(groups, *rounds)
	logf("%d runs of %s + %s warmup: about %s of load", len(steps), duration, warmup, time.Duration(len(steps))*(*duration+*warmup))

	e, err := startEnv(ctx, *o)
	if err != nil {
		return err
	}
	defer e.Close()
	rep.Config = map[string]any{
		"duration": duration.String(), "warmup": warmup.String(), "rounds": *rounds,
		"fetch_clients": fc, "write_clients": wc, "value_size": o.valueSize, "fetch_path": e.fetchPath,
		"write_to": o.writeTo, "etcd_version": e.etcdVersion, "body_bytes": fetchBodyLen(e),
	}

	for i, s := range steps {
		g := groups[s.Group]
		newWorker := e.workers(i)[s.Target]
		res, err := load.Run(ctx, load.Config{Concurrency: g.Concurrency, Warmup: *warmup, Duration: *duration}, newWorker)
		if err != nil {
			return fmt.Errorf("round %d, %s, %s: %w", s.Round+1, g.Name(), s.Target, err)
		}
		logf("[%d/%d] round %d %-10s %-26s %s", i+1, len(steps), s.Round+1, g.Name(), s.Target, res)
		rep.Samples = append(rep.Samples, suite.Sample{Step: s, Result: res})
	}
	rep.Rows = suite.Aggregate(groups, rep.Samples)
	rep.Checks = suite.Checks(rep.Rows)
	rep.LoadEnd = loadavg()
	rep.Duration = time.Since(rep.Started)

	md := markdownReport(rep, e.etcd != nil, fetchBodyLen(e))
	fmt.Print(md)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(md), 0o644); err != nil {
			return err
		}
	}
	if *jsonOut != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func markdownReport(rep report, withEtcd bool, bodyLen int) string {
	var b strings.Builder
	m, c := rep.Machine, rep.Config
	fmt.Fprintf(&b, "Comparative suite, %s (took %s).\n\n", rep.Started.Format("2006-01-02 15:04 MST"), rep.Duration.Round(time.Second))
	fmt.Fprintf(&b, "- machine: %d CPUs (%s), kernel %s, %s; load average %s at the start, %s at the end\n", m.CPUs, m.CPUModel, m.Kernel, m.GoVersion, m.LoadStart, rep.LoadEnd)
	fmt.Fprintf(&b, "- command: `%s`\n", rep.Command)
	fmt.Fprintf(&b, "- each run: %v after %v of warmup, %v rounds interleaved; medians over rounds; ratios are medians of per-round ratios\n", c["duration"], c["warmup"], c["rounds"])
	body := ""
	if bodyLen > 0 {
		body = fmt.Sprintf(", %d-byte body", bodyLen)
	}
	fmt.Fprintf(&b, "- tokend: 3 agents, fetches from a follower (`GET %v`, %v-byte value%s), token adds to the %v\n", c["fetch_path"], c["value_size"], body, c["write_to"])
	if withEtcd {
		fmt.Fprintf(&b, "- etcd %v: 3 members, serializable gets of one key from a follower, puts to the %v, one client (gRPC connection) per worker\n", c["etcd_version"], c["write_to"])
	}
	b.WriteString("\n")
	b.WriteString(suite.Markdown(rep.Rows, rep.Checks))
	return b.String()
}

// runReport renders a suite's JSON report again, aggregating its samples
// with this build's rules.
func runReport(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	_ = fs.Parse(args)
	if fs.NArg() < 1 {
		return errors.New("usage: tokend-bench report RESULTS.json [MORE.json ...]")
	}
	var bs [][]byte
	for _, name := range fs.Args() {
		b, err := os.ReadFile(name)
		if err != nil {
			return err
		}
		bs = append(bs, b)
	}
	md, err := renderReport(bs...)
	if err != nil {
		return fmt.Errorf("%s: %w", strings.Join(fs.Args(), ", "), err)
	}
	fmt.Print(md)
	return nil
}

// renderReport is the markdown of a suite's JSON report. Several reports of
// the same groups (suites run one after another, say interleaved with
// another build's) are merged as one: their rounds follow each other, and
// medians and per-round ratios are taken over all of them.
func renderReport(bs ...[]byte) (string, error) {
	var rep report
	for i, b := range bs {
		var r report
		if err := json.Unmarshal(b, &r); err != nil {
			return "", err
		}
		if i == 0 {
			rep = r
			continue
		}
		a, _ := json.Marshal(rep.Groups)
		g, _ := json.Marshal(r.Groups)
		if string(a) != string(g) {
			return "", fmt.Errorf("report %d has other groups than the first: %s, not %s", i+1, g, a)
		}
		next := 0
		for _, s := range rep.Samples {
			next = max(next, s.Round+1)
		}
		for _, s := range r.Samples {
			s.Round += next
			rep.Samples = append(rep.Samples, s)
		}
		rep.Command += " ; " + r.Command
		rep.LoadEnd = r.LoadEnd
		rep.Duration += r.Duration
		if n, ok := rep.Config["rounds"].(float64); ok {
			if m, ok := r.Config["rounds"].(float64); ok {
				rep.Config["rounds"] = n + m
			}
		}
	}
	withEtcd := rep.Config["etcd_version"] != nil && rep.Config["etcd_version"] != ""
	if len(rep.Groups) == 0 { // written before reports held their groups
		var fc, wc []int
		for _, x := range asList(rep.Config["fetch_clients"]) {
			fc = append(fc, int(x))
		}
		for _, x := range asList(rep.Config["write_clients"]) {
			wc = append(wc, int(x))
		}
		rep.Groups = suite.Groups(fc, wc, withEtcd)
	}
	rep.Rows = suite.Aggregate(rep.Groups, rep.Samples)
	rep.Checks = suite.Checks(rep.Rows)
	bodyLen := 0
	if v, ok := rep.Config["body_bytes"].(float64); ok {
		bodyLen = int(v)
	}
	return markdownReport(rep, withEtcd, bodyLen), nil
}

func asList(v any) []float64 {
	var out []float64
	l, _ := v.([]any)
	for _, x := range l {
		if f, ok := x.(float64); ok {
			out = append(out, f)
		}
	}
	return out
}

func fetchBodyLen(e *env) int {
	r, err := floor.ReadResponse(e.dir + "/floor-response.json")
	if err != nil {
		return 0
	}
	return len(r.Body)
}

func runUp(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	o := envFlags(fs)
	_ = fs.Parse(args)
	if err := checkEnvOptions(o); err != nil {
		return err
	}
	e, err := startEnv(ctx, *o)
	if err != nil {
		return err
	}
	defer e.Close()
	fmt.Printf("tokend leader   %s (pid %d)\n", e.tLeader.HTTPAddr, e.tLeader.Proc.Pid())
	fmt.Printf("tokend reader   %s unix:%s (pid %d)\n", e.tReader.HTTPAddr, e.tReader.Socket, e.tReader.Proc.Pid())
	fmt.Printf("floor           %s unix:%s (pid %d)\n", e.floorTCP, e.floorUnix, e.floor.Pid())
	if e.etcd != nil {
		fmt.Printf("etcd leader     %s (pid %d)\n", e.eLeader.ClientURL, e.eLeader.Proc.Pid())
		fmt.Printf("etcd reader     %s key %s (pid %d)\n", e.eReader.ClientURL, etcdKey, e.eReader.Proc.Pid())
	}
	fmt.Printf("fetch path      %s\nlogs and data   %s\nwaiting for ^C\n", e.fetchPath, e.dir)
	<-ctx.Done()
	return nil
}

func runLoad(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	kind := fs.String("target", "http", "http (GET -path), tokend-cache (fetch -pool through the Go client's cache), tokend-add (POST tokens), etcd-get (serializable) or etcd-put")
	addr := fs.String("addr", "", "tcp:HOST:PORT or unix:PATH for http and tokend-add; an etcd client URL for etcd-*")
	path := fs.String("path", "/v1/pools/bench/token", "path for http")
	pool := fs.String("pool", "bench", "pool for tokend-cache")
	key := fs.String("key", "/tokend-bench/token", "key for etcd-get; key prefix for etcd-put")
	valueSize := fs.Int("value-size", 40, "bytes written by tokend-add and etcd-put")
	c := fs.Int("c", 1, "clients (concurrency)")
	d := fs.Duration("d", 5*time.Second, "measured time")
	warmup := fs.Duration("warmup", time.Second, "unmeasured time first")
	_ = fs.Parse(args)
	if *valueSize < 16 || *valueSize > 16<<10 {
		return fmt.Errorf("-value-size %d: 16 to 16384", *valueSize)
	}
	var nw load.NewWorker
	endpoint := func() (targets.Endpoint, error) {
		network, a, ok := strings.Cut(*addr, ":")
		if !ok || (network != "tcp" && network != "unix") {
			return targets.Endpoint{}, fmt.Errorf("-addr %q: tcp:HOST:PORT or unix:PATH", *addr)
		}
		return targets.Endpoint{Network: network, Addr: a}, nil
	}
	switch *kind {
	case "http":
		ep, err := endpoint()
		if err != nil {
			return err
		}
		nw = targets.HTTPGet(ep, *path)
	case "tokend-cache":
		ep, err := endpoint()
		if err != nil {
			return err
		}
		nw = targets.TokendCached(ep, *pool)
	case "tokend-add":
		ep, err := endpoint()
		if err != nil {
			return err
		}
		nw = targets.TokendAdd(ep, fmt.Sprintf("load%d", time.Now().Unix()), randomValue(*valueSize))
	case "etcd-get":
		nw = targets.EtcdGet(*addr, *key)
	case "etcd-put":
		nw = targets.EtcdPut(*addr, *key, randomValue(*valueSize))
	default:
		return fmt.Errorf("-target %q: http, tokend-cache, tokend-add, etcd-get or etcd-put", *kind)
	}
	res, err := load.Run(ctx, load.Config{Concurrency: *c, Warmup: *warmup, Duration: *d}, nw)
	if err != nil {
		return err
	}
	fmt.Printf("%s %s: %s\n", *kind, *addr, res)
	b, err := json.MarshalIndent(struct {
		Target string `json:"target"`
		Addr   string `json:"addr"`
		load.Result
	}{*kind, *addr, res}, "", "  ")
	if err != nil {
		return err
	}
	fmt.Println(string(b))
	return nil
}

func runFloor(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("floor", flag.ExitOnError)
	tcp := fs.String("tcp", "", "host:port to listen on")
	unix := fs.String("unix", "", "unix socket to listen on")
	respFile := fs.String("response", "", "JSON file of the response to give (status, header, body)")
	_ = fs.Parse(args)
	resp, err := floor.ReadResponse(*respFile)
	if err != nil {
		return err
	}
	ls, err := floor.Listen(*tcp, *unix)
	if err != nil {
		return err
	}
	return floor.Serve(ctx, ls, resp)
}

// machine is where a suite ran.
type machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	Kernel    string `json:"kernel"`
	GoVersion string `json:"go_version"`
	LoadStart string `json:"loadavg_start"`
}

func describeMachine() machine {
	m := machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), LoadStart: loadavg()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		var b []byte
		for _, c := range u.Release {
			if c == 0 {
				break
			}
			b = append(b, byte(c))
		}
		m.Kernel = string(b)
	}
	if out, err := exec.Command("go", "version").Output(); err == nil {
		m.GoVersion = strings.TrimSpace(strings.TrimPrefix(string(out), "go version "))
	}
	return m
}

// loadavg is the first three fields of /proc/loadavg.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
