package procs

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
	"time"

	"github.com/tokend/tokend/api"
)

// TokendNode is one agent of a TokendCluster.
type TokendNode struct {
	Name     string
	HTTPAddr string // host:port
	Socket   string
	Proc     *Proc

	bin     string
	args    []string
	logPath string
}

// TokendCluster is n agents on loopback started from the built binary the
// way e2e/harness_test.go starts them: own data dirs, one keyring file,
// --bootstrap-expect n, each joining the others, ACLs off, default Raft
// timing (unless StartTokendWith gives --raft-multiplier) and log level.
type TokendCluster struct {
	Nodes []*TokendNode
}

// StartTokend starts n agents under dir and waits until every one reports
// the same leader.
func StartTokend(ctx context.Context, bin, dir string, n int) (*TokendCluster, error) {
	return StartTokendWith(ctx, bin, dir, n, nil)
}

// StartTokendWith is StartTokend with more agent flags (--raft-multiplier 1)
// given to every agent.
func StartTokendWith(ctx context.Context, bin, dir string, n int, extra []string) (*TokendCluster, error) {
	key, err := exec.Command(bin, "keygen").Output()
	if err != nil {
		return nil, fmt.Errorf("tokend keygen: %w", err)
	}
	keyFile := filepath.Join(dir, "keyring")
	if err := os.WriteFile(keyFile, bytes.TrimSpace(key), 0o600); err != nil {
		return nil, err
	}
	c := &TokendCluster{}
	var args [][]string
	var gossip []string
	for i := range n {
		ports := make([]int, 3)
		for j := range ports {
			if ports[j], err = FreePort(); err != nil {
				return nil, err
			}
		}
		node := &TokendNode{
			Name:     fmt.Sprintf("node%d", i+1),
			HTTPAddr: fmt.Sprintf("127.0.0.1:%d", ports[0]),
		}
		node.Socket = filepath.Join(dir, node.Name+".sock")
		g := fmt.Sprintf("127.0.0.1:%d", ports[2])
		gossip = append(gossip, g)
		args = append(args, []string{"agent",
			"--node", node.Name,
			"--data-dir", filepath.Join(dir, node.Name),
			"--http-addr", node.HTTPAddr,
			"--raft-addr", fmt.Sprintf("127.0.0.1:%d", ports[1]),
			"--gossip-addr", g,
			"--socket", node.Socket,
			"--encrypt-key-file", keyFile,
			"--acl=false",
			"--bootstrap-expect", fmt.Sprint(n),
		})
		args[i] = append(args[i], extra...)
		c.Nodes = append(c.Nodes, node)
	}
	for i, node := range c.Nodes {
		a := args[i]
		for j, g := range gossip {
			if j != i {
				a = append(a, "--join", g)
			}
		}
		node.bin, node.args, node.logPath = bin, a, filepath.Join(dir, node.Name+".log")
		if err := node.Start(); err != nil {
			c.Stop()
			return nil, err
		}
	}
	if _, err := c.Leader(ctx, 30*time.Second); err != nil {
		c.Stop()
		return nil, fmt.Errorf("tokend cluster: %w", err)
	}
	return c, nil
}

func (c *TokendCluster) procs() []*Proc {
	var ps []*Proc
	for _, n := range c.Nodes {
		if n.Proc != nil {
			ps = append(ps, n.Proc)
		}
	}
	return ps
}

// Start starts the agent again, after Kill, with the flags and the data
// dir it had: it rejoins as the same server.
func (n *TokendNode) Start() error {
	p, err := Start("tokend "+n.Name, n.bin, n.args, nil, n.logPath)
	if err != nil {
		return err
	}
	n.Proc = p
	return nil
}

// Stop stops every agent.
func (c *TokendCluster) Stop() {
	for _, n := range c.Nodes {
		n.Proc.Stop()
	}
}

// Leader waits until every agent reports the same leader and returns it.
func (c *TokendCluster) Leader(ctx context.Context, timeout time.Duration) (*TokendNode, error) {
	var leader *TokendNode
	err := WaitFor(ctx, timeout, c.procs(), func() error {
		leader = nil
		var id string
		for _, n := range c.Nodes {
			var h api.AgentHealth
			if err := getJSON(n.HTTPAddr, "/v1/health", &h); err != nil {
				return err
			}
			var l api.Leader
			if err := getJSON(n.HTTPAddr, "/v1/status/leader", &l); err != nil || l.ID == "" {
				return fmt.Errorf("%s knows no leader (%v)", n.Name, err)
			}
			if id != "" && l.ID != id {
				return fmt.Errorf("%s follows %s, others %s", n.Name, l.ID, id)
			}
			id = l.ID
			if h.RaftState == "leader" {
				leader = n
			}
		}
		if leader == nil {
			return fmt.Errorf("no agent says it leads")
		}
		return nil
	})
	return leader, err
}

// Follower returns an agent other than leader.
func (c *TokendCluster) Follower(leader *TokendNode) *TokendNode {
	for _, n := range c.Nodes {
		if n != leader {
			return n
		}
	}
	return leader
}

// Call sends one JSON request to addr over TCP and returns the answer's
// status and body.
func Call(addr, method, path string, body any) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+addr+path, r)
	if err != nil {
		return 0, nil, err
	}
	resp, err := setupClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

var setupClient = &http.Client{Timeout: 10 * time.Second}

func getJSON(addr, path string, out any) error {
	status, b, err := Call(addr, "GET", path, nil)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", path, status, strings.TrimSpace(string(b)))
	}
	return json.Unmarshal(b, out)
}

// UnixClient is an HTTP client that reaches a unix socket whatever the
// URL's host.
func UnixClient(socket string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
}
