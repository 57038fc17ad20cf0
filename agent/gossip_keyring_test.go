package agent_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tokend/tokend/agent"
	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/cluster"
	"github.com/tokend/tokend/internal/testutil"
	"github.com/tokend/tokend/tokens"
)

func gossipKeyID(t *testing.T, key string) string {
	t.Helper()
	raw, err := cluster.ParseGossipKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return cluster.GossipKeyID(raw)
}

// gossipKeys checks that every node of the listing holds keys, primary
// first.
func gossipKeys(t *testing.T, h *testutil.HTTP, n int, keys ...string) api.GossipKeyring {
	t.Helper()
	var kr api.GossipKeyring
	h.Must(t, "GET", "/v1/operator/gossip-keyring", nil, http.StatusOK, &kr)
	if len(kr.Nodes) != n {
		t.Fatalf("gossip keyring lists %d nodes, want %d: %+v", len(kr.Nodes), n, kr)
	}
	for _, node := range kr.Nodes {
		if !slices.Equal(node.Keys, keys) || node.Primary != keys[0] || !node.Persisted || node.Error != "" {
			t.Fatalf("%s holds %+v, want keys %v", node.Node, node, keys)
		}
	}
	return kr
}

// aliveEverywhere waits until every running node sees every name alive in
// gossip.
func aliveEverywhere(t *testing.T, nodes []*testutil.Node, names ...string) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, func() error {
		for _, n := range nodes {
			var ms []api.Member
			if r, err := tcpClient(n).Do("GET", "/v1/members", nil); err != nil || jsonUnmarshal(r.Body, &ms) != nil {
				return fmt.Errorf("%s members: %v", n.Name, err)
			}
			for _, name := range names {
				if !slices.ContainsFunc(ms, func(m api.Member) bool { return m.Name == name && m.Status == "alive" }) {
					return fmt.Errorf("%s does not see %s alive", n.Name, name)
				}
			}
		}
		return nil
	})
}

// A gossip key rotation on three agents: install, use, remove, through the
// API, with every member alive throughout. Afterwards an agent with only the
// new key joins, one with only the old key cannot, and a restarted agent
// configured with the old key comes back with the new one from its data
// dir.
func TestGossipKeyringRotation(t *testing.T) {
	oldKey, newKey := tokens.GenerateKey(), tokens.GenerateKey()
	oldID, newID := gossipKeyID(t, oldKey), gossipKeyID(t, newKey)
	c := testutil.NewClusterWith(t, 3, func(cfg *agent.Config) { cfg.GossipKey = oldKey })
	three := slices.Clone(c.Nodes)
	names := []string{"node0", "node1", "node2"}
	h := tcpClient(three[1])

	gossipKeys(t, h, 3, oldID)
	h.Must(t, "POST", "/v1/operator/gossip-keyring/"+newID+"/use", nil, http.StatusConflict, nil)

	var ch api.GossipKeyringChange
	resp := h.Must(t, "POST", "/v1/operator/gossip-keyring", api.KeyringInstallRequest{Key: newKey}, http.StatusOK, &ch)
	if ch.KeyID != newID || strings.Contains(string(resp.Body), newKey) {
		t.Fatalf("install answered %s", resp.Body)
	}
	gossipKeys(t, h, 3, oldID, newID)
	h.Must(t, "DELETE", "/v1/operator/gossip-keyring/"+oldID, nil, http.StatusConflict, nil)
	aliveEverywhere(t, three, names...)

	h.Must(t, "POST", "/v1/operator/gossip-keyring/"+newID+"/use", nil, http.StatusOK, nil)
	gossipKeys(t, h, 3, newID, oldID)
	aliveEverywhere(t, three, names...)

	h.Must(t, "DELETE", "/v1/operator/gossip-keyring/"+oldID, nil, http.StatusOK, nil)
	gossipKeys(t, h, 3, newID)
	for _, n := range three {
		b, err := os.ReadFile(filepath.Join(n.DataDir, "gossip-keyring"))
		if err != nil || strings.Contains(string(b), oldKey) || !strings.Contains(string(b), newKey) {
			t.Fatalf("%s gossip-keyring file: %v", n.Name, err)
		}
	}

	// Only the new key gets in now.
	c.Add("new-key", func(cfg *agent.Config) { cfg.GossipKey = newKey })
	aliveEverywhere(t, three, append(names, "new-key")...)
	logs := &syncBuffer{}
	oldOnly := c.Add("old-key", func(cfg *agent.Config) {
		cfg.GossipKey = oldKey
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: logs})
	})
	testutil.WaitFor(t, 5*time.Second, func() error {
		if n := strings.Count(logs.String(), "join failed; will retry"); n < 2 {
			return fmt.Errorf("the agent with the old key tried to join %d times", n)
		}
		return nil
	})
	for _, n := range append(three, oldOnly) {
		var ms []api.Member
		tcpClient(n).Must(t, "GET", "/v1/members", nil, http.StatusOK, &ms)
		for _, m := range ms {
			if (n == oldOnly) != (m.Name == "old-key") {
				t.Fatalf("%s sees %s across the gossip keys", n.Name, m.Name)
			}
		}
	}
	c.Stop(oldOnly)

	// A restart keeps the rotated keyring, whatever its configuration says.
	c.Stop(three[2])
	c.Restart(three[2])
	aliveEverywhere(t, three, append(names, "new-key")...)
	var kr api.GossipKeyring
	tcpClient(three[2]).Must(t, "GET", "/v1/operator/gossip-keyring", nil, http.StatusOK, &kr)
	for _, n := range kr.Nodes {
		if n.Node == "node2" && !slices.Equal(n.Keys, []string{newID}) {
			t.Fatalf("the restarted agent holds %v, want [%s]", n.Keys, newID)
		}
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// An agent started without a gossip key does not encrypt gossip and says so
// to keyring operations.
func TestGossipKeyringWithoutEncryption(t *testing.T) {
	a := testutil.StartAgent(t, nil)
	h := testutil.TCP(a.HTTPAddr())
	for _, req := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/v1/operator/gossip-keyring", nil},
		{"POST", "/v1/operator/gossip-keyring", api.KeyringInstallRequest{Key: tokens.GenerateKey()}},
		{"POST", "/v1/operator/gossip-keyring/00000000/use", nil},
		{"DELETE", "/v1/operator/gossip-keyring/00000000", nil},
	} {
		r := h.Must(t, req.method, req.path, req.body, http.StatusConflict, nil)
		if !strings.Contains(string(r.Body), "gossip encryption is off") {
			t.Fatalf("%s %s: %s", req.method, req.path, r.Body)
		}
	}
	h.Must(t, "POST", "/v1/operator/gossip-keyring", api.KeyringInstallRequest{Key: "c2hvcnQ="}, http.StatusBadRequest, nil)
}
