//go:build docker

// Package docker is the container fault suite (make e2e-docker): tokend
// agents in containers built FROM scratch, on networks this suite creates,
// with faults injected from the host — docker kill, pause and network
// disconnect, routes that split the cluster, and latency on a container's
// cluster interface — while clients fetch on every agent and writers write
// through random ones. It needs a Docker engine and root (for nsenter); it
// pulls nothing.
//
// Every container, network, volume and image it creates is labelled
// tokend-e2e=1 and tokend-e2e.owner=<host>:<pid>; a run removes them when it
// ends and, when it starts, removes those left by runs whose process is gone.
package docker

import (
	"context"
	"flag"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	labelKey   = "tokend-e2e"
	ownerLabel = "tokend-e2e.owner"
	// envSeed replays a run: TOKEND_E2E_SEED=<seed printed by a run>.
	envSeed = "TOKEND_E2E_SEED"
)

var (
	// image is the tag of this run's image.
	image string
	// owner identifies this run in labels.
	owner string
	// seed drives every random choice of the run.
	seed uint64
	// runID makes this run's names unique on the engine.
	runID string
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(envNetDelay); spec != "" {
		os.Exit(runNetDelay(spec))
	}
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "\n%s\nDOCKER NOT REACHABLE: the container fault suite did NOT run (%v: %s)\n%s\n\n",
			strings.Repeat("!", 78), err, strings.TrimSpace(string(out)), strings.Repeat("!", 78))
		return 1
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "the container fault suite needs root: it enters containers' network namespaces with nsenter")
		return 1
	}
	for _, tool := range []string{"nsenter", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "the container fault suite needs %s on the host (util-linux, iproute2): %v\n", tool, err)
			return 1
		}
	}
	host, _ := os.Hostname()
	owner = fmt.Sprintf("%s:%d", host, os.Getpid())
	runID = fmt.Sprintf("%d%02d", os.Getpid()%100000, rand.IntN(100))
	seed = rand.Uint64()
	if s := os.Getenv(envSeed); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s=%q is not a seed: %v\n", envSeed, s, err)
			return 1
		}
		seed = v
	}
	fmt.Printf("seed %d (replay: %s=%d make e2e-docker)\n", seed, envSeed, seed)
	removeLeftovers()
	img, err := buildImage()
	if err != nil {
		fmt.Fprintln(os.Stderr, "build the image:", err)
		return 1
	}
	image = img
	code := m.Run()
	if out, err := dockerCmd(context.Background(), "rmi", "-f", image); err != nil {
		fmt.Fprintf(os.Stderr, "remove image %s: %v %s\n", image, err, out)
	}
	fmt.Printf("seed %d (replay: %s=%d make e2e-docker)\n", seed, envSeed, seed)
	return code
}

// testRand is the random source of one test: the run's seed and the test's
// name, so that a test replays alike when run alone with -run.
func testRand(t testing.TB) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(t.Name()))
	return rand.New(rand.NewPCG(seed, h.Sum64()))
}

// buildImage builds the static binary and an image FROM scratch with the
// repository's Dockerfile, in a context that holds only the binary.
func buildImage() (string, error) {
	start := time.Now()
	dir, err := os.MkdirTemp("", "tokend-e2e-docker-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "bin", "docker", "tokend")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "../../cmd/tokend")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	tag := "tokend-e2e:" + runID
	if out, err := dockerCmd(context.Background(), "build", "-q", "--label", labelKey+"=1", "--label", ownerLabel+"="+owner,
		"-t", tag, "-f", "../../Dockerfile", dir); err != nil {
		return "", fmt.Errorf("docker build: %v\n%s", err, out)
	}
	fmt.Printf("image %s built in %s\n", tag, time.Since(start).Round(time.Millisecond))
	return tag, nil
}

// removeLeftovers removes what earlier runs on this host left behind
// (killed by a timeout, say), never what a live run owns.
func removeLeftovers() {
	ctx := context.Background()
	host, _ := os.Hostname()
	stale := func(o string) bool {
		h, p, ok := strings.Cut(o, ":")
		if !ok {
			return true
		}
		if h != host {
			return false // another host's run, which this one cannot see
		}
		pid, err := strconv.Atoi(p)
		return err != nil || syscall.Kill(pid, 0) == syscall.ESRCH
	}
	list := func(args ...string) []string {
		out, err := dockerCmd(ctx, args...)
		if err != nil {
			return nil
		}
		var ids []string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			id, o, _ := strings.Cut(line, "\t")
			if id != "" && stale(o) {
				ids = append(ids, id)
			}
		}
		return ids
	}
	format := `--format={{.ID}}	{{.Label "` + ownerLabel + `"}}`
	filter := "--filter=label=" + labelKey + "=1"
	if ids := list("ps", "-a", filter, format); len(ids) > 0 {
		fmt.Printf("removing %d containers left by earlier runs\n", len(ids))
		_, _ = dockerCmd(ctx, append([]string{"rm", "-f", "-v"}, ids...)...)
	}
	if ids := list("volume", "ls", filter, `--format={{.Name}}	{{.Label "`+ownerLabel+`"}}`); len(ids) > 0 {
		fmt.Printf("removing %d volumes left by earlier runs\n", len(ids))
		_, _ = dockerCmd(ctx, append([]string{"volume", "rm", "-f"}, ids...)...)
	}
	if ids := list("network", "ls", filter, format); len(ids) > 0 {
		fmt.Printf("removing %d networks left by earlier runs\n", len(ids))
		_, _ = dockerCmd(ctx, append([]string{"network", "rm"}, ids...)...)
	}
	out, _ := dockerCmd(ctx, "images", "-q", filter)
	for _, id := range strings.Fields(out) {
		o, _ := dockerCmd(ctx, "image", "inspect", "--format", `{{index .Config.Labels "`+ownerLabel+`"}}`, id)
		if stale(strings.TrimSpace(o)) {
			_, _ = dockerCmd(ctx, "rmi", "-f", id)
		}
	}
}

// dockerCmd runs the docker CLI and returns its combined output.
func dockerCmd(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
