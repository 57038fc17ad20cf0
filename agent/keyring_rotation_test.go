package agent_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokend/tokend/agent"
	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
	"github.com/tokend/tokend/tokens"
)

// fetchLoad fetches from pools on every node, over TCP and the socket, until
// stopped, and counts what went wrong.
type fetchLoad struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	failures   []string
	stop       chan struct{}
	wg         sync.WaitGroup
}

// startFetchLoad fetches raw values; a value not in valid (when valid is
// set for the pool) counts as a failure.
func startFetchLoad(nodes []*testutil.Node, valid map[string]map[string]bool) *fetchLoad {
	l := &fetchLoad{stop: make(chan struct{})}
	for _, n := range nodes {
		for _, h := range []*testutil.HTTP{tcpClient(n), unixClient(n)} {
			for pool := range valid {
				l.wg.Go(func() {
					for {
						select {
						case <-l.stop:
							return
						default:
						}
						r, err := h.Do("GET", "/v1/pools/"+pool+"/token?format=raw", nil)
						switch {
						case err != nil:
							l.fail(fmt.Sprintf("%s %s: %v", n.Name, pool, err))
						case r.Status != http.StatusOK:
							l.fail(fmt.Sprintf("%s %s: %d %s", n.Name, pool, r.Status, r.Body))
						case len(valid[pool]) > 0 && !valid[pool][string(r.Body)]:
							l.fail(fmt.Sprintf("%s %s: served %q, not one of the pool's values", n.Name, pool, r.Body))
						default:
							l.ok.Add(1)
						}
					}
				})
			}
		}
	}
	return l
}

func (l *fetchLoad) fail(msg string) {
	l.failed.Add(1)
	l.mu.Lock()
	if len(l.failures) < 10 {
		l.failures = append(l.failures, msg)
	}
	l.mu.Unlock()
}

func (l *fetchLoad) finish() (ok, failed int64, failures []string) {
	close(l.stop)
	l.wg.Wait()
	return l.ok.Load(), l.failed.Load(), l.failures
}

// keyFileCluster starts n agents, each with its own copy of a key file
// holding key.
func keyFileCluster(t *testing.T, n int, key string, mod func(*agent.Config)) *testutil.Cluster {
	return testutil.NewClusterWith(t, n, func(cfg *agent.Config) {
		path := filepath.Join(t.TempDir(), "keyring")
		if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.EncryptKey, cfg.EncryptKeyFile = "", path
		if mod != nil {
			mod(cfg)
		}
	})
}

func keyringOf(t *testing.T, h *testutil.HTTP) api.Keyring {
	t.Helper()
	var kr api.Keyring
	h.Must(t, "GET", "/v1/operator/keyring", nil, http.StatusOK, &kr)
	return kr
}

// The whole rotation, online, while clients fetch from every agent: install
// a new key everywhere, switch to it, wait for the leader to seal every
// secret again (token values and provider credentials), remove the old key.
// Not one fetch fails, and afterwards the key files hold the new key only
// and agents restart with them.
func TestKeyringRotationUnderLoad(t *testing.T) {
	fake := testutil.NewFakeProvider(time.Hour)
	seen := &specSeen{secrets: map[string]bool{}}
	oldKey, newKey := tokens.GenerateKey(), tokens.GenerateKey()
	oldID, newID := keyID(t, oldKey), keyID(t, newKey)
	c := keyFileCluster(t, 3, oldKey, func(cfg *agent.Config) {
		cfg.ProviderFactory = seen.factory(fake, cfg.NodeName)
	})
	h := tcpClient(c.Leader())
	values := map[string]bool{}
	h.Must(t, "PUT", "/v1/pools/static", api.PoolRequest{Selection: "round_robin"}, http.StatusOK, nil)
	for i := range 150 {
		v := fmt.Sprintf("rotation-value-%03d", i)
		values[v] = true
		h.AddToken(t, "static", v, 0)
	}
	oauth := api.PoolRequest{Selection: "priority", Provider: &api.Provider{
		Type: "oauth2", TokenURL: "https://auth.example.com/token", ClientID: "c0", ClientSecret: "client-secret-before-rotation",
	}}
	h.Must(t, "PUT", "/v1/pools/issued", oauth, http.StatusOK, nil)
	testutil.WaitFor(t, 10*time.Second, func() error {
		for _, n := range c.Running() {
			for _, pool := range []string{"issued", "static"} {
				if _, code, err := tcpClient(n).Fetch(pool); err != nil || code != "" {
					return fmt.Errorf("%s %s: %v %s", n.Name, pool, err, code)
				}
			}
		}
		if kr := keyringOf(t, h); kr.Primary != oldID || kr.Secrets[oldID] < 152 {
			return fmt.Errorf("keyring %+v: want every secret under %s", kr, oldID)
		}
		return nil
	})

	load := startFetchLoad(c.Running(), map[string]map[string]bool{"static": values, "issued": nil})

	// Errors first, changing nothing.
	bad := newKey[:len(newKey)-4] + "!!!!"
	r, _ := h.Do("POST", "/v1/operator/keyring", api.KeyringInstallRequest{Key: bad})
	if r.Status != http.StatusBadRequest || strings.Contains(string(r.Body), bad) {
		t.Fatalf("install of a malformed key: %d %s", r.Status, r.Body)
	}
	if r, _ := h.Do("POST", "/v1/operator/keyring/"+newID+"/use", nil); r.Status != http.StatusConflict || !strings.Contains(string(r.Body), "not installed on every agent") {
		t.Fatalf("use of a key not installed: %d %s", r.Status, r.Body)
	}
	if r, _ := h.Do("DELETE", "/v1/operator/keyring/"+oldID, nil); r.Status != http.StatusConflict || !strings.Contains(string(r.Body), "seals new secrets") {
		t.Fatalf("remove of the key in use: %d %s", r.Status, r.Body)
	}
	if r, _ := h.Do("POST", "/v1/operator/keyring/NOTAKEY/use", nil); r.Status != http.StatusBadRequest {
		t.Fatalf("use of a malformed key id: %d %s", r.Status, r.Body)
	}

	// Install through a follower.
	follower := tcpClient(c.Followers()[0])
	var inst api.KeyringChange
	follower.Must(t, "POST", "/v1/operator/keyring", api.KeyringInstallRequest{Key: newKey}, http.StatusOK, &inst)
	if inst.KeyID != newID || len(inst.Nodes) != 3 {
		t.Fatalf("install answered %+v", inst)
	}
	for _, n := range inst.Nodes {
		if !slices.Contains(n.Keys, newID) || !slices.Contains(n.Keys, oldID) || !n.Persisted {
			t.Fatalf("after install %s holds %v (saved %v)", n.Node, n.Keys, n.Persisted)
		}
	}
	var use api.KeyringChange
	follower.Must(t, "POST", "/v1/operator/keyring/"+newID+"/use", nil, http.StatusOK, &use)
	// The old key cannot go while secrets are sealed with it; once the
	// leader has sealed them all again, it goes.
	testutil.WaitFor(t, 20*time.Second, func() error {
		kr := keyringOf(t, h)
		if kr.Primary != newID || kr.Secrets[oldID] != 0 || kr.Secrets[newID] < 152 {
			return fmt.Errorf("keyring %+v: want every secret under %s", kr, newID)
		}
		return nil
	})
	var rm api.KeyringChange
	h.Must(t, "DELETE", "/v1/operator/keyring/"+oldID, nil, http.StatusOK, &rm)
	for _, n := range rm.Nodes {
		if !slices.Equal(n.Keys, []string{newID}) {
			t.Fatalf("after remove %s holds %v", n.Node, n.Keys)
		}
	}
	// With the old key gone, the leader still opens the provider's
	// credential (sealed again with the new key) and rotates.
	var rot api.RotateResponse
	h.Must(t, "POST", "/v1/pools/issued/rotate", nil, http.StatusAccepted, &rot)
	testutil.WaitFor(t, 10*time.Second, func() error {
		var toks []api.TokenInfo
		h.Must(t, "GET", "/v1/pools/issued/tokens", nil, http.StatusOK, &toks)
		for _, tk := range toks {
			if len(rot.Rotations) > 0 && tk.RotationID == rot.Rotations[0] {
				return nil
			}
		}
		return fmt.Errorf("rotation %v has not committed a token", rot.Rotations)
	})
	if !seen.has("client-secret-before-rotation") {
		t.Fatal("no provider was built with the plaintext credential")
	}
	ok, failed, failures := load.finish()
	if failed != 0 {
		t.Fatalf("%d of %d fetches failed during the rotation: %v", failed, ok+failed, failures)
	}
	if ok < 100 {
		t.Fatalf("only %d fetches ran during the rotation", ok)
	}
	t.Logf("%d fetches during the key rotation, 0 failed", ok)

	// The key files hold the new key only, first; a restarted agent comes
	// back with its file and serves.
	for _, n := range c.Running() {
		b, err := os.ReadFile(n.Config.EncryptKeyFile)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), oldKey) || !strings.Contains(string(b), newKey) {
			t.Fatalf("%s's key file after rotation: old key present or new key missing", n.Name)
		}
		if fi, _ := os.Stat(n.Config.EncryptKeyFile); fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s's key file has mode %v", n.Name, fi.Mode().Perm())
		}
	}
	n := c.Followers()[0]
	c.Stop(n)
	c.Restart(n)
	testutil.WaitFor(t, 10*time.Second, func() error {
		r, err := tcpClient(n).Do("GET", "/v1/pools/static/token?format=raw", nil)
		if err != nil || r.Status != http.StatusOK || !values[string(r.Body)] {
			return fmt.Errorf("restarted %s: %v %d %s", n.Name, err, r.Status, r.Body)
		}
		return nil
	})
}

// An agent given its key in the environment keeps installed keys in memory
// and says so.
func TestKeyringInstallWithoutKeyFile(t *testing.T) {
	c := testutil.NewCluster(t, 1)
	h := tcpClient(c.Leader())
	var inst api.KeyringChange
	h.Must(t, "POST", "/v1/operator/keyring", api.KeyringInstallRequest{Key: tokens.GenerateKey()}, http.StatusOK, &inst)
	if len(inst.Nodes) != 1 || inst.Nodes[0].Persisted || !strings.Contains(inst.Nodes[0].NotPersisted, agent.EnvEncryptKey) {
		b, _ := json.Marshal(inst)
		t.Fatalf("install without a key file answered %s", b)
	}
}
