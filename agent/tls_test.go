package agent_test

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/agent"
	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
)

// Three agents with TLS form a cluster and serve writes made through a
// follower over HTTPS. A fourth agent with a certificate from another CA,
// and a fifth without TLS, join gossip but never receive the cluster's
// state, so they serve nothing of it. The TCP API refuses clients without
// a certificate of the cluster's CA at the handshake, and plain HTTP.
func TestTLSAgents(t *testing.T) {
	pki := testutil.NewPKI(t)
	c := testutil.NewClusterWith(t, 3, pki.Configure)
	cc := pki.ClientConfig(pki.Client())
	https := func(n *testutil.Node) *testutil.HTTP { return testutil.TCPS(n.HTTPAddr(), cc) }

	f := c.Followers()[0]
	// A write may meet a leader that has just stepped down (503) on a loaded
	// machine; a pool PUT is idempotent, so it is simply sent again.
	testutil.WaitFor(t, 10*time.Second, func() error {
		r, err := https(f).Do("PUT", "/v1/pools/tls", api.PoolRequest{})
		if err != nil || r.Status != http.StatusOK {
			return fmt.Errorf("PUT /v1/pools/tls: %d %s %v", r.Status, r.Body, err)
		}
		return nil
	})
	id := https(f).AddToken(t, "tls", "tls-token-value", 0)
	testutil.WaitFor(t, 5*time.Second, func() error {
		for _, n := range c.Running() {
			got, code, err := https(n).Fetch("tls")
			if err != nil || got != id {
				return fmt.Errorf("%s serves %q (%s, %v), want %s", n.Name, got, code, err, id)
			}
			// The unix socket stays plain HTTP.
			if got, _, err := unixClient(n).Fetch("tls"); err != nil || got != id {
				return fmt.Errorf("%s socket serves %q (%v)", n.Name, got, err)
			}
		}
		return nil
	})

	// Clients the TCP API refuses.
	other := testutil.NewPKI(t)
	refused := map[string]*testutil.HTTP{
		"no client certificate":           testutil.TCPS(f.HTTPAddr(), pki.ClientConfig("", "")),
		"another CA's client certificate": testutil.TCPS(f.HTTPAddr(), withRoots(other.ClientConfig(other.Client()), pki)),
	}
	for name, h := range refused {
		if r, err := h.Do("GET", "/v1/pools/tls/token", nil); err == nil {
			t.Errorf("%s: answered %d: %s", name, r.Status, r.Body)
		} else if !strings.Contains(err.Error(), "certificate") {
			t.Errorf("%s: refused with %v, not for its certificate", name, err)
		}
	}
	if r, err := tcpClient(f).Do("GET", "/v1/pools/tls/token", nil); err == nil && (r.Status == http.StatusOK || strings.Contains(string(r.Body), id)) {
		t.Errorf("plain HTTP: answered %d: %s", r.Status, r.Body)
	}
	// With --tls-verify-incoming-api=false a client without a certificate
	// is served (ACL tokens still apply; these agents have ACLs off).
	optional := testutil.StartAgent(t, func(cfg *agent.Config) { pki.Configure(cfg); cfg.TLSAPIClientCertOptional = true })
	testutil.TCPS(optional.HTTPAddr(), pki.ClientConfig("", "")).Must(t, "GET", "/v1/health", nil, http.StatusOK, nil)

	// Agents without a valid certificate.
	rogues := []*testutil.Node{
		c.Add("other-ca", other.Configure),
		c.Add("plain", nil),
	}
	var leader *testutil.Node
	for _, n := range c.Nodes[:3] {
		if n.IsLeader() {
			leader = n
		}
	}
	if leader == nil {
		t.Fatal("no leader among the three")
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		var ms []api.Member
		https(leader).Must(t, "GET", "/v1/members", nil, http.StatusOK, &ms)
		seen := 0
		for _, m := range ms {
			if m.Name == "other-ca" || m.Name == "plain" {
				seen++
			}
		}
		if seen != 2 {
			return fmt.Errorf("the leader's gossip knows %d of the 2 rogues", seen)
		}
		return nil
	})
	// The leader adds them to Raft as non-voters and tries to replicate:
	// a write committed after that still reaches only the cluster.
	https(leader).AddToken(t, "tls", "second-value", 10)
	testutil.WaitFor(t, 5*time.Second, func() error {
		for _, n := range c.Nodes[:3] {
			var toks []api.TokenInfo
			https(n).Must(t, "GET", "/v1/pools/tls/tokens", nil, http.StatusOK, &toks)
			if len(toks) != 2 {
				return fmt.Errorf("%s lists %d tokens", n.Name, len(toks))
			}
		}
		return nil
	})
	for _, r := range rogues {
		h := unixClient(r)
		var health api.AgentHealth
		h.Must(t, "GET", "/v1/health", nil, http.StatusOK, &health)
		if resp := h.Must(t, "GET", "/v1/pools/tls/token", nil, http.StatusNotFound, nil); !strings.Contains(string(resp.Body), "pool_not_found") {
			t.Errorf("%s: %s", r.Name, resp.Body)
		}
		if id, _ := r.LeaderID(); id != "" {
			t.Errorf("%s knows the leader %s", r.Name, id)
		}
		// A write on a rogue cannot reach the leader.
		if resp, err := h.Do("PUT", "/v1/pools/rogue", api.PoolRequest{}); err != nil || resp.Status == http.StatusOK {
			t.Errorf("%s: a write answered %v %d", r.Name, err, resp.Status)
		}
	}
	https(leader).Must(t, "GET", "/v1/pools/rogue", nil, http.StatusNotFound, nil)
}

// withRoots makes cfg trust pki's CA, so that only the server can refuse.
func withRoots(cfg *tls.Config, pki *testutil.PKI) *tls.Config {
	cfg.RootCAs = pki.ClientConfig("", "").RootCAs
	return cfg
}

// An agent refuses to start with TLS files that are incomplete, unreadable
// or wrong, and says which.
func TestTLSStartErrors(t *testing.T) {
	pki := testutil.NewPKI(t)
	agentCert, agentKey := pki.Agent()
	clientCert, clientKey := pki.Client()
	otherCert, _ := pki.Agent()
	junk := filepath.Join(t.TempDir(), "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")
	cases := []struct {
		name           string
		ca, cert, key  string
		gossip         string
		want           []string
		wantNotContain string
	}{
		{"no key", pki.CAFile, agentCert, "", "", []string{"--tls-key-file missing"}, ""},
		{"only a CA", pki.CAFile, "", "", "", []string{"--tls-cert-file and --tls-key-file missing"}, ""},
		{"unreadable CA", missing, agentCert, agentKey, "", []string{"--tls-ca-file", missing}, ""},
		{"CA not PEM", junk, agentCert, agentKey, "", []string{"--tls-ca-file " + junk}, ""},
		{"cert not PEM", pki.CAFile, junk, agentKey, "", []string{"--tls-cert-file " + junk}, ""},
		{"key of another cert", pki.CAFile, otherCert, agentKey, "", []string{otherCert, agentKey}, ""},
		{"client-only cert", pki.CAFile, clientCert, clientKey, "", []string{"--tls-cert-file " + clientCert, "not an agent certificate"}, ""},
		{"bad gossip key", "", "", "", "c2hvcnQ=", []string{"--gossip-key", "16, 24 or 32 bytes"}, "c2hvcnQ="},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testutil.NodeConfig(t, "n1", t.TempDir(), t.TempDir())
			cfg.BootstrapExpect = 1
			cfg.TLSCAFile, cfg.TLSCertFile, cfg.TLSKeyFile, cfg.GossipKey = tc.ca, tc.cert, tc.key, tc.gossip
			a, err := agent.New(cfg)
			if err == nil {
				_ = a.Shutdown(t.Context())
				t.Fatal("started")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if tc.wantNotContain != "" && strings.Contains(err.Error(), tc.wantNotContain) {
				t.Errorf("error %q quotes the key", err)
			}
		})
	}
}
