package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokend/tokend/bench/internal/load"
	"github.com/tokend/tokend/bench/internal/procs"
)

// TestMain lets the test binary be the floor server, which startEnv runs
// as os.Executable() floor ….
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "floor" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestSuiteSmoke starts every server of the suite, runs each system for a
// moment at 2 clients, and checks that everything is gone afterwards. It
// builds tokend and needs etcd for the etcd rows (skipped without), so it
// runs only with TOKEND_BENCH_SMOKE=1 (make bench-smoke), not in make test.
func TestSuiteSmoke(t *testing.T) {
	if os.Getenv("TOKEND_BENCH_SMOKE") == "" {
		t.Skip("set TOKEND_BENCH_SMOKE=1 (make bench-smoke): builds tokend and starts clusters")
	}
	bin := filepath.Join(t.TempDir(), "tokend")
	build := exec.Command("go", "build", "-o", bin, "./cmd/tokend")
	build.Dir = "../../.."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build tokend: %v\n%s", err, out)
	}
	etcd := "/usr/bin/etcd"
	if _, err := os.Stat(etcd); err != nil {
		t.Logf("no %s: etcd left out", etcd)
		etcd = ""
	}
	ctx := context.Background()
	e, err := startEnv(ctx, envOptions{tokend: bin, etcd: etcd, valueSize: 40, writeTo: "follower", dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			e.Close()
		}
	}()
	ws := e.workers(0)
	want := 6
	if etcd != "" {
		want = 8
	}
	if len(ws) != want {
		t.Errorf("%d systems, want %d", len(ws), want)
	}
	for name, nw := range ws {
		res, err := load.Run(ctx, load.Config{Concurrency: 2, Warmup: 50 * time.Millisecond, Duration: 200 * time.Millisecond}, nw)
		if err != nil || res.Ops == 0 || res.Errors > 0 {
			t.Errorf("%s: %v %s", name, err, res)
			continue
		}
		t.Logf("%s: %s", name, res)
	}

	var ps []*procs.Proc
	for _, n := range e.tokend.Nodes {
		ps = append(ps, n.Proc)
	}
	ps = append(ps, e.floor)
	if e.etcd != nil {
		for _, m := range e.etcd.Members {
			ps = append(ps, m.Proc)
		}
	}
	dir := e.dir
	e.Close()
	closed = true
	for _, p := range ps {
		if done, _ := p.Exited(); !done {
			t.Errorf("%s still runs", p.Name)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still there: %v", dir, err)
	}
}
