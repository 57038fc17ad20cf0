// Package e2e runs the built tokend binary as separate processes on
// loopback: the way a user runs it.
package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tokend-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "tokend")
	build := exec.Command("go", "build", "-o", binary, "../cmd/tokend")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build tokend:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// agentProc is one tokend agent process.
type agentProc struct {
	t       *testing.T
	name    string
	args    []string
	dataDir string
	http    string
	gossip  string
	socket  string
	logPath string
	keyFile string
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	exitErr error
	httpC   *testutil.HTTP
	unixC   *testutil.HTTP
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{} // never hand out a port twice
)

// freePort returns a loopback port free for both TCP and UDP (gossip uses
// both). It is taken below the kernel's ephemeral range (32768 and up), so
// that the ports other tests bind with :0 meanwhile never take it before
// the agent starts.
func freePort(t *testing.T) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 200 {
		port := 10000 + rand.IntN(22000)
		if portsGiven[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			portsGiven[port] = true
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// newCluster prepares n agents that bootstrap together; start them with
// start().
func newCluster(t *testing.T, n int) []*agentProc {
	t.Helper()
	sockDir, err := os.MkdirTemp("", "tkd-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	// Each agent gets its own copy of the cluster's keyring file, as on
	// separate hosts.
	key := testutil.TestKey
	procs := make([]*agentProc, n)
	var gossips []string
	for i := range procs {
		p := &agentProc{
			t:       t,
			name:    fmt.Sprintf("node%d", i),
			dataDir: filepath.Join(t.TempDir(), "data"),
			http:    fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			gossip:  fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		}
		p.socket = filepath.Join(sockDir, p.name+".sock")
		p.logPath = filepath.Join(t.TempDir(), p.name+".log")
		p.keyFile = filepath.Join(t.TempDir(), "keyring")
		if err := os.WriteFile(p.keyFile, []byte(key+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		p.args = []string{"agent",
			"--node", p.name,
			"--data-dir", p.dataDir,
			"--http-addr", p.http,
			"--raft-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			"--gossip-addr", p.gossip,
			"--socket", p.socket,
			"--encrypt-key-file", p.keyFile,
			"--acl=false",
			"--bootstrap-expect", fmt.Sprint(n),
			"--log-level", "debug",
		}
		p.httpC = testutil.TCP(p.http)
		p.unixC = testutil.Unix(p.socket)
		gossips = append(gossips, p.gossip)
		procs[i] = p
	}
	for _, p := range procs {
		for _, g := range gossips {
			if g != p.gossip {
				p.args = append(p.args, "--join", g)
			}
		}
		t.Cleanup(p.stop)
	}
	return procs
}

func (p *agentProc) start() {
	p.t.Helper()
	if err := p.launch(); err != nil {
		p.t.Fatal(err)
	}
}

// launch starts the agent and waits until it answers; unlike start it
// returns errors, for use off the test's goroutine.
func (p *agentProc) launch() error {
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(binary, p.args...)
	// Exec providers that list TOKEND_E2E_NODE in their env can tell which
	// agent ran them even when it died before they started.
	cmd.Env = append(os.Environ(), "TOKEND_E2E_NODE="+p.name)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %v", p.name, err)
	}
	exited := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.exited = cmd, exited
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.exitErr = err
		p.mu.Unlock()
		close(exited)
	}()
	return testutil.Poll(10*time.Second, func() error {
		select {
		case <-exited:
			p.mu.Lock()
			defer p.mu.Unlock()
			return fmt.Errorf("%s exited: %v\n%s", p.name, p.exitErr, p.logs())
		default:
		}
		_, err := p.health()
		return err
	})
}

// pid is the process id of the agent's current process, 0 before the first
// start.
func (p *agentProc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *agentProc) kill() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

// signal sends sig to the agent's current process.
func (p *agentProc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	return cmd.Process.Signal(sig)
}

// stop ends the process with SIGTERM (SIGKILL after 10 s) and, if the test
// failed, prints its log.
func (p *agentProc) stop() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	if p.t.Failed() {
		p.t.Logf("---- %s log ----\n%s", p.name, p.logs())
	}
}

func (p *agentProc) logs() string {
	b, _ := os.ReadFile(p.logPath)
	if len(b) > 20000 {
		b = b[len(b)-20000:]
	}
	return string(b)
}

// must performs a request over HTTP that must answer want.
func (p *agentProc) must(method, path string, body any, want int, out any) testutil.Response {
	p.t.Helper()
	return p.httpC.Must(p.t, method, path, body, want, out)
}

func (p *agentProc) health() (api.AgentHealth, error) {
	var h api.AgentHealth
	r, err := p.httpC.Do("GET", "/v1/health", nil)
	if err == nil {
		err = json.Unmarshal(r.Body, &h)
	}
	return h, err
}

// fetch returns the token id p serves for pool over c; an error answer is
// an error.
func fetch(c *testutil.HTTP, pool string) (string, error) {
	id, code, err := c.Fetch(pool)
	if err == nil && code != "" {
		err = fmt.Errorf("answered %s", code)
	}
	return id, err
}

// leader waits until every running agent reports the same leader and
// returns it.
func leader(t *testing.T, procs []*agentProc) *agentProc {
	t.Helper()
	var l *agentProc
	testutil.WaitFor(t, 20*time.Second, func() error {
		l = nil
		var id string
		for _, p := range procs {
			h, err := p.health()
			if err != nil {
				return fmt.Errorf("%s: %v", p.name, err)
			}
			var ld api.Leader
			r, err := p.httpC.Do("GET", "/v1/status/leader", nil)
			if err != nil || json.Unmarshal(r.Body, &ld) != nil || ld.ID == "" {
				return fmt.Errorf("%s knows no leader (%v)", p.name, err)
			}
			if id != "" && ld.ID != id {
				return fmt.Errorf("%s follows %s, others %s", p.name, ld.ID, id)
			}
			id = ld.ID
			if h.RaftState == "leader" {
				l = p
			}
		}
		if l == nil {
			return fmt.Errorf("no agent says it is the leader")
		}
		return nil
	})
	return l
}

// waitServes waits until each agent serves want for pool over HTTP and its
// unix socket.
func waitServes(t *testing.T, procs []*agentProc, pool, want string) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, func() error {
		for _, p := range procs {
			for _, c := range []*testutil.HTTP{p.httpC, p.unixC} {
				id, err := fetch(c, pool)
				if err != nil {
					return fmt.Errorf("%s: %v", p.name, err)
				}
				if id != want {
					return fmt.Errorf("%s serves %s, want %s", p.name, id, want)
				}
			}
		}
		return nil
	})
}
