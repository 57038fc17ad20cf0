package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/api/client"
	"github.com/tokend/tokend/internal/testutil"
)

// run runs the tokend binary with args, stdin and extra environment, and
// fails the test unless it succeeds.
func run(t *testing.T, dir, stdin string, env []string, args ...string) string {
	t.Helper()
	out, err := runErr(dir, stdin, env, args...)
	if err != nil {
		t.Fatalf("tokend %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(dir, stdin string, env []string, args ...string) (string, error) {
	cmd := exec.Command(binary, args...)
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestTLSCluster is the README's "try it in a minute": a CA and
// certificates made with tokend tls, three agents with mutual TLS and an
// encrypted gossip, and the CLI with a client certificate adding a pool and
// a token on one agent and fetching it on another.
func TestTLSCluster(t *testing.T) {
	dir := t.TempDir()
	run(t, dir, "", nil, "tls", "ca", "create")
	for range 3 {
		run(t, dir, "", nil, "tls", "cert", "create")
	}
	run(t, dir, "", nil, "tls", "cert", "create", "--client")
	gossipKey := strings.TrimSpace(run(t, dir, "", nil, "keygen"))
	p := func(name string) string { return filepath.Join(dir, name) }

	roots := x509.NewCertPool()
	caPEM, err := os.ReadFile(p("tokend-agent-ca.pem"))
	if err != nil || !roots.AppendCertsFromPEM(caPEM) {
		t.Fatalf("read the CA: %v", err)
	}
	cert, err := tls.LoadX509KeyPair(p("tokend-client-0.pem"), p("tokend-client-0-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	withCert := &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}}

	procs := newCluster(t, 3)
	for i, pr := range procs {
		pr.args = append(pr.args,
			"--tls-ca-file", p("tokend-agent-ca.pem"),
			"--tls-cert-file", p(fmt.Sprintf("tokend-agent-%d.pem", i)),
			"--tls-key-file", p(fmt.Sprintf("tokend-agent-%d-key.pem", i)),
			"--gossip-key", gossipKey)
		pr.httpC = testutil.TCPS(pr.http, withCert)
		pr.start()
	}
	l := leader(t, procs)
	var f *agentProc
	for _, pr := range procs {
		if pr != l {
			f = pr
		}
	}

	// The CLI with flags on a follower, then with the variables on the
	// leader.
	flags := []string{"--addr", "https://" + f.http, "--ca-file", p("tokend-agent-ca.pem"),
		"--client-cert", p("tokend-client-0.pem"), "--client-key", p("tokend-client-0-key.pem")}
	poolFile := filepath.Join(dir, "pool.json")
	if err := os.WriteFile(poolFile, []byte(`{"name":"github"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, dir, "", nil, append([]string{"pool", "apply", poolFile}, flags...)...)
	run(t, dir, "ghp_over_tls\n", nil, append([]string{"token", "add", "github", "--value-stdin"}, flags...)...)
	env := []string{
		client.EnvAddr + "=https://" + l.http,
		client.EnvCACert + "=" + p("tokend-agent-ca.pem"),
		client.EnvClientCert + "=" + p("tokend-client-0.pem"),
		client.EnvClientKey + "=" + p("tokend-client-0-key.pem"),
	}
	if got := run(t, dir, "", env, "token", "get", "github", "--raw"); got != "ghp_over_tls\n" {
		t.Fatalf("token get on the leader printed %q", got)
	}
	var tokens []api.TokenInfo
	procs[0].must("GET", "/v1/pools/github/tokens", nil, 200, &tokens)
	if len(tokens) != 1 {
		t.Fatalf("pool lists %d tokens", len(tokens))
	}
	waitServes(t, procs, "github", tokens[0].ID)

	// Without a client certificate the CLI is refused.
	if out, err := runErr(dir, "", nil, "token", "get", "github", "--addr", "https://"+l.http, "--ca-file", p("tokend-agent-ca.pem")); err == nil || !strings.Contains(out, "certificate") {
		t.Fatalf("token get without a client certificate: %v\n%s", err, out)
	}
	// Gossip is encrypted with the key, on every agent, saved in the data
	// dir.
	var kr api.GossipKeyring
	if err := json.Unmarshal([]byte(run(t, dir, "", env, "operator", "gossip-keyring", "list", "--json")), &kr); err != nil {
		t.Fatal(err)
	}
	if len(kr.Nodes) != 3 {
		t.Fatalf("gossip keyring lists %d agents", len(kr.Nodes))
	}
	for _, n := range kr.Nodes {
		if len(n.Keys) != 1 || n.Primary != kr.Nodes[0].Primary || !n.Persisted {
			t.Fatalf("gossip keyring: %+v", kr.Nodes)
		}
	}
	for _, pr := range procs {
		if fi, err := os.Stat(filepath.Join(pr.dataDir, "gossip-keyring")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s gossip-keyring: %v", pr.name, err)
		}
	}
}
