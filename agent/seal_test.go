package agent_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokend/tokend/agent"
	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
	"github.com/tokend/tokend/tokens"
)

// needles returns the ways a secret could sit in a file: as is, in base64
// (as JSON stores bytes) at each alignment, and in hex.
func needles(secret string) [][]byte {
	out := [][]byte{[]byte(secret), []byte(hex.EncodeToString([]byte(secret)))}
	for pad := range 3 {
		enc := base64.StdEncoding.EncodeToString(append(bytes.Repeat([]byte{0}, pad), secret...))
		// Drop the characters that also encode the padding or what
		// follows the secret.
		start := (pad*8 + 5) / 6
		if start < len(enc)-4 {
			out = append(out, []byte(enc[start+1:len(enc)-4]))
		}
	}
	return out
}

// scanDir returns, for each secret found in any file under dir, the file.
func scanDir(t *testing.T, dir string, secrets []string) map[string]string {
	t.Helper()
	found := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Type()&fs.ModeSocket != 0 {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, s := range secrets {
			for _, n := range needles(s) {
				if bytes.Contains(data, n) {
					found[s] = path
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// specSeen records the credentials the providers were built with.
type specSeen struct {
	mu      sync.Mutex
	secrets map[string]bool
}

func (s *specSeen) factory(f *testutil.FakeProvider, node string) agent.ProviderFactory {
	inner := f.Factory(node)
	return func(spec tokens.ProviderSpec) (tokens.Provider, error) {
		s.mu.Lock()
		s.secrets[spec.ClientSecret.Reveal()] = true
		for _, c := range spec.Clients {
			s.secrets[c.ClientSecret.Reveal()] = true
		}
		for _, v := range spec.Headers {
			s.secrets[v.Reveal()] = true
		}
		s.mu.Unlock()
		return inner(spec)
	}
}

func (s *specSeen) has(v string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.secrets[v]
}

// Token values and provider credentials reach the Raft log, the stable
// store and the snapshots of every agent only sealed; the leader still
// builds its providers with the plaintext, and every agent serves the
// plaintext.
func TestSecretsAreSealedAtRest(t *testing.T) {
	fake := testutil.NewFakeProvider(time.Hour)
	seen := &specSeen{secrets: map[string]bool{}}
	c := testutil.NewClusterWith(t, 3, func(cfg *agent.Config) {
		cfg.ProviderFactory = seen.factory(fake, cfg.NodeName)
	})
	leader := c.Leader()
	h := tcpClient(leader)
	canary := func(what string) string { return "SealCanary-" + what + "-Qz81xVp3Lm" }
	// A label is not secret: finding it proves the scan reads the files.
	const marker = "seal-marker-0f3a9c"

	h.Must(t, "PUT", "/v1/pools/static", api.PoolRequest{Selection: "priority", Labels: map[string]string{"marker": marker}}, http.StatusOK, nil)
	var values []string
	for i := range 3 {
		v := canary(fmt.Sprintf("token%d", i))
		values = append(values, v)
		h.AddToken(t, "static", v, i)
	}
	oauth := api.PoolRequest{Selection: "priority", Provider: &api.Provider{
		Type: "oauth2", TokenURL: "https://auth.example.com/token", ClientID: "c0", ClientSecret: canary("client0"),
	}}
	h.Must(t, "PUT", "/v1/pools/oauth", oauth, http.StatusOK, nil)
	hdr := api.PoolRequest{Selection: "priority", Provider: &api.Provider{
		Type: "http", URL: "https://issuer.example.com/issue", Headers: map[string]string{"Authorization": "Bearer " + canary("header")},
	}}
	h.Must(t, "PUT", "/v1/pools/issuer", hdr, http.StatusOK, nil)
	secrets := append(values, canary("client0"), "Bearer "+canary("header"))

	// The leader opened the credentials to build the providers, and they
	// issued.
	testutil.WaitFor(t, 10*time.Second, func() error {
		for _, s := range []string{canary("client0"), "Bearer " + canary("header")} {
			if !seen.has(s) {
				return fmt.Errorf("no provider was built with credential %q yet", s)
			}
		}
		for _, pool := range []string{"oauth", "issuer"} {
			if _, code, err := h.Fetch(pool); err != nil || code != "" {
				return fmt.Errorf("%s: %v %s", pool, err, code)
			}
		}
		return nil
	})
	for _, n := range c.Running() {
		if err := n.Agent.Snapshot(); err != nil {
			t.Fatalf("snapshot %s: %v", n.Name, err)
		}
	}
	// One more after the snapshots: it is in the logs only.
	late := canary("late")
	secrets = append(secrets, late)
	h.AddToken(t, "static", late, -1)
	// Every agent opens what it holds.
	for _, n := range c.Running() {
		testutil.WaitFor(t, 5*time.Second, func() error {
			r, err := tcpClient(n).Do("GET", "/v1/pools/static/token?format=raw", nil)
			if err != nil {
				return err
			}
			if string(r.Body) != late {
				return fmt.Errorf("%s serves %q, want the late token", n.Name, r.Body)
			}
			return nil
		})
	}
	nodes := c.Running()
	c.Shutdown()

	for _, n := range nodes {
		if found := scanDir(t, n.DataDir, []string{marker}); found[marker] == "" {
			t.Fatalf("%s: the scan did not find the label %q in the data dir: does it read the Raft log?", n.Name, marker)
		}
		if found := scanDir(t, n.DataDir, secrets); len(found) > 0 {
			t.Fatalf("%s: secrets found in the data dir: %v", n.Name, found)
		}
	}
}

func keyID(t *testing.T, key string) string {
	t.Helper()
	raw, err := tokens.ParseKey(key)
	if err != nil {
		t.Fatal(err)
	}
	id, err := tokens.KeyID(raw)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// An agent started without a key, with a malformed one, or with a key other
// than the one its data was sealed with refuses to start and says what to
// do.
func TestStartupNeedsTheClustersKey(t *testing.T) {
	dir := t.TempDir()
	a := testutil.StartAgent(t, func(cfg *agent.Config) { cfg.DataDir = dir })
	testutil.TCP(a.HTTPAddr()).Must(t, "PUT", "/v1/pools/p", api.PoolRequest{}, http.StatusOK, nil)
	testutil.TCP(a.HTTPAddr()).AddToken(t, "p", "value-1", 0)
	if err := a.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	other := tokens.GenerateKey()
	tests := []struct {
		name string
		mod  func(*agent.Config)
		want []string
	}{
		{"no key", func(cfg *agent.Config) { cfg.EncryptKey = "" }, []string{"no encryption key", "tokend keygen", "--encrypt-key-file"}},
		{"malformed key", func(cfg *agent.Config) { cfg.EncryptKey = "not base64!" }, []string{agent.EnvEncryptKey, "base64"}},
		{"short key", func(cfg *agent.Config) { cfg.EncryptKey = base64.StdEncoding.EncodeToString([]byte("short")) }, []string{"32 bytes"}},
		{"wrong key", func(cfg *agent.Config) { cfg.EncryptKey = other }, []string{"sealed with key " + keyID(t, testutil.TestKey), keyID(t, other), "does not hold"}},
		{"both file and env", func(cfg *agent.Config) { cfg.EncryptKeyFile = filepath.Join(dir, "nope") }, []string{"both"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testutil.NodeConfig(t, "n1", dir, t.TempDir())
			tt.mod(&cfg)
			a, err := agent.New(cfg)
			if err == nil {
				_ = a.Shutdown(context.Background())
				t.Fatal("agent started")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), other) || strings.Contains(err.Error(), testutil.TestKey) {
				t.Fatalf("error %q quotes a key", err)
			}
		})
	}
	// With its key, it starts and serves what it held.
	cfg := testutil.NodeConfig(t, "n1", dir, t.TempDir())
	b, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown(context.Background())
	testutil.WaitFor(t, 5*time.Second, func() error {
		r, err := testutil.TCP(b.HTTPAddr()).Do("GET", "/v1/pools/p/token?format=raw", nil)
		if err != nil || string(r.Body) != "value-1" {
			return fmt.Errorf("fetch after restart: %v %s", err, r.Body)
		}
		return nil
	})
}

// The keyring file: keys one per line, comments and blank lines skipped,
// errors naming the line.
func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	write := func(content string) string {
		path := filepath.Join(dir, fmt.Sprintf("keyring-%d", time.Now().UnixNano()))
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	start := func(path string) (*agent.Agent, error) {
		cfg := testutil.NodeConfig(t, "n1", t.TempDir(), t.TempDir())
		cfg.EncryptKey, cfg.EncryptKeyFile, cfg.BootstrapExpect = "", path, 1
		return agent.New(cfg)
	}
	for content, want := range map[string]string{
		"":                     "holds no key",
		"# only a comment\n\n": "holds no key",
		"# c\n" + tokens.GenerateKey() + "\nnot-a-key\n": "line 3",
	} {
		if a, err := start(write(content)); err == nil || !strings.Contains(err.Error(), want) {
			if a != nil {
				_ = a.Shutdown(context.Background())
			}
			t.Fatalf("key file %q: %v, want an error saying %q", content, err, want)
		}
	}
	if _, err := start(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing key file: %v", err)
	}
	a, err := start(write("# the cluster's key\n\n  " + testutil.TestKey + "  \n"))
	if err != nil {
		t.Fatal(err)
	}
	_ = a.Shutdown(context.Background())
}

// An agent that joins a cluster whose secrets are sealed with a key it was
// not given stops with an error, rather than serve nothing quietly.
func TestJoinWithWrongKeyStops(t *testing.T) {
	c := testutil.NewCluster(t, 1)
	h := tcpClient(c.Leader())
	h.Must(t, "PUT", "/v1/pools/p", api.PoolRequest{}, http.StatusOK, nil)
	h.AddToken(t, "p", "value-1", 0)

	cfg := testutil.NodeConfig(t, "stranger", t.TempDir(), t.TempDir())
	cfg.Join = []string{c.Leader().GossipAddr()}
	cfg.EncryptKey = tokens.GenerateKey()
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(context.Background())
	select {
	case err := <-a.Err():
		if !strings.Contains(err.Error(), "sealed with key "+keyID(t, testutil.TestKey)) {
			t.Fatalf("the agent stopped with %q, want it to name the missing key", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("an agent without the cluster's key kept running")
	}
}
