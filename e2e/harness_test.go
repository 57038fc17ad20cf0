// Package e2e runs the built tokend binary as separate processes on
// loopback: the way a user runs it.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	exitErr error
	httpC   *http.Client
	unixC   *http.Client
}

// freePort returns a loopback port free for both TCP and UDP (gossip uses
// both).
func freePort(t *testing.T) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
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
		p.args = []string{"agent",
			"--node", p.name,
			"--data-dir", p.dataDir,
			"--http-addr", p.http,
			"--raft-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			"--gossip-addr", p.gossip,
			"--socket", p.socket,
			"--bootstrap-expect", fmt.Sprint(n),
			"--log-level", "debug",
		}
		p.httpC = &http.Client{Timeout: 5 * time.Second}
		sock := p.socket
		p.unixC = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
		}}
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
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		p.t.Fatal(err)
	}
	cmd := exec.Command(binary, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
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
	testutil.WaitFor(p.t, 10*time.Second, func() error {
		select {
		case <-exited:
			return fmt.Errorf("%s exited: %v\n%s", p.name, p.exitErr, p.logs())
		default:
		}
		_, err := p.get(p.httpC, "/v1/health")
		return err
	})
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *agentProc) kill() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
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

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) code() string {
	var e api.ErrorResponse
	_ = json.Unmarshal(r.body, &e)
	return e.Error.Code
}

func (p *agentProc) do(c *http.Client, method, path string, body any) (resp, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			return resp{}, err
		}
		rd = bytes.NewReader(raw)
	}
	host := "http://" + p.http
	if c == p.unixC {
		host = "http://unix"
	}
	req, err := http.NewRequest(method, host+path, rd)
	if err != nil {
		return resp{}, err
	}
	r, err := c.Do(req)
	if err != nil {
		return resp{}, err
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	return resp{status: r.StatusCode, header: r.Header, body: b}, err
}

func (p *agentProc) get(c *http.Client, path string) (resp, error) { return p.do(c, "GET", path, nil) }

// must performs a request over HTTP that must answer want.
func (p *agentProc) must(method, path string, body any, want int, out any) resp {
	p.t.Helper()
	r, err := p.do(p.httpC, method, path, body)
	if err != nil {
		p.t.Fatalf("%s: %s %s: %v", p.name, method, path, err)
	}
	if r.status != want {
		p.t.Fatalf("%s: %s %s: status %d, want %d: %s", p.name, method, path, r.status, want, r.body)
	}
	if out != nil {
		if err := json.Unmarshal(r.body, out); err != nil {
			p.t.Fatalf("%s: decode %s: %v", p.name, r.body, err)
		}
	}
	return r
}

func (p *agentProc) health() (api.AgentHealth, error) {
	var h api.AgentHealth
	r, err := p.get(p.httpC, "/v1/health")
	if err == nil {
		err = json.Unmarshal(r.body, &h)
	}
	return h, err
}

// fetch returns the token id p serves for pool over c.
func (p *agentProc) fetch(c *http.Client, pool string) (string, error) {
	r, err := p.get(c, "/v1/pools/"+pool+"/token")
	if err != nil {
		return "", err
	}
	if r.status != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", r.status, r.body)
	}
	var tok api.Token
	if err := json.Unmarshal(r.body, &tok); err != nil {
		return "", err
	}
	return tok.ID, nil
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
			r, err := p.get(p.httpC, "/v1/status/leader")
			if err != nil || json.Unmarshal(r.body, &ld) != nil || ld.ID == "" {
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
			for _, c := range []*http.Client{p.httpC, p.unixC} {
				id, err := p.fetch(c, pool)
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
