package cluster

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/tokens"
)

func newGossipKey(t *testing.T) []byte {
	t.Helper()
	k, err := ParseGossipKey(tokens.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func knows(n *testNode, other *testNode) bool {
	for _, m := range n.Members() {
		if m.ID == other.cfg.NodeID && m.Status == StatusAlive {
			return true
		}
	}
	return false
}

// Agents with different gossip keys, or one without a key, cannot join
// each other's gossip; agents with the same key can.
func TestGossipEncryptionSeparatesKeys(t *testing.T) {
	k1, k2 := newGossipKey(t), newGossipKey(t)
	tc := newTestCluster(t)
	a := tc.add(1, func(c *Config) { c.GossipKey = k1 })
	other := tc.add(0, func(c *Config) { c.GossipKey = k2; c.Join = []string{a.GossipAddr()} })
	plain := tc.add(0, func(c *Config) { c.Join = []string{a.GossipAddr()} })
	same := tc.add(0, func(c *Config) { c.GossipKey = k1; c.Join = []string{a.GossipAddr()} })
	waitFor(t, 5*time.Second, func() error {
		if !knows(a, same) || !knows(same, a) {
			return errors.New("the agents with the same key do not see each other")
		}
		return nil
	})
	for _, n := range []*testNode{other, plain} {
		if got, err := n.gossip.Join([]string{a.GossipAddr()}); got != 0 || err == nil {
			t.Errorf("%s joined an agent with another gossip key: %d, %v", n.cfg.NodeName, got, err)
		}
		if knows(a, n) || knows(n, a) || knows(same, n) {
			t.Errorf("%s and the encrypted agents see each other", n.cfg.NodeName)
		}
	}
	if !a.GossipEncrypted() || plain.GossipEncrypted() {
		t.Fatalf("GossipEncrypted: %v with a key, %v without", a.GossipEncrypted(), plain.GossipEncrypted())
	}
	if _, err := plain.InstallGossipKey(k1); !errors.Is(err, tokens.ErrConflict) {
		t.Fatalf("installing a key on an agent without encryption: %v", err)
	}
}

func readKeyringFile(t *testing.T, n *testNode) []string {
	t.Helper()
	path := filepath.Join(n.cfg.DataDir, gossipKeyringFile)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %v", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	if err := json.Unmarshal(b, &keys); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(keys))
	for i, k := range keys {
		raw, err := base64.StdEncoding.DecodeString(k)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = GossipKeyID(raw)
	}
	return ids
}

// The keyring's operations change memberlist's keyring and the saved file
// together; a restart starts from the file, not the configured key.
func TestGossipKeyringOperationsAreSaved(t *testing.T) {
	k1, k2 := newGossipKey(t), newGossipKey(t)
	id1, id2 := GossipKeyID(k1), GossipKeyID(k2)
	tc := newTestCluster(t)
	n := tc.add(1, func(c *Config) { c.GossipKey = k1 })
	if got := readKeyringFile(t, n); !slices.Equal(got, []string{id1}) {
		t.Fatalf("saved keyring at start = %v, want [%s]", got, id1)
	}
	kr, err := n.InstallGossipKey(k2)
	if err != nil || !slices.Equal(kr.Keys, []string{id1, id2}) || !kr.Persisted {
		t.Fatalf("install = %+v, %v", kr, err)
	}
	if _, err := n.UseGossipKey("00000000"); !errors.Is(err, tokens.ErrConflict) {
		t.Fatalf("use of a key not installed = %v", err)
	}
	if _, err := n.UseGossipKey(id2); err != nil {
		t.Fatal(err)
	}
	if _, err := n.RemoveGossipKey(id2); !errors.Is(err, tokens.ErrConflict) {
		t.Fatalf("remove of the primary key = %v", err)
	}
	if kr, err = n.RemoveGossipKey(id1); err != nil || !slices.Equal(kr.Keys, []string{id2}) {
		t.Fatalf("remove = %+v, %v", kr, err)
	}
	if kr, err = n.RemoveGossipKey(id1); err != nil || !slices.Equal(kr.Keys, []string{id2}) {
		t.Fatalf("a second remove = %+v, %v", kr, err)
	}
	if got := readKeyringFile(t, n); !slices.Equal(got, []string{id2}) {
		t.Fatalf("saved keyring = %v, want [%s]", got, id2)
	}
	n.Shutdown()
	cfg := n.cfg
	cfg.RaftAddr, cfg.GossipAddr = "127.0.0.1:0", "127.0.0.1:0"
	again := tc.add(1, func(c *Config) { *c = cfg }) // still configured with k1
	kr, err = again.GossipKeyring()
	if err != nil || !slices.Equal(kr.Keys, []string{id2}) {
		t.Fatalf("after a restart configured with the old key: %+v, %v; want the saved [%s]", kr, err, id2)
	}
}

func TestGossipKeyringFileErrors(t *testing.T) {
	for name, content := range map[string]string{
		"not JSON":  "nope",
		"empty":     "[]",
		"short key": fmt.Sprintf("[%q]", base64.StdEncoding.EncodeToString([]byte("short"))),
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, gossipKeyringFile), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := New(Config{NodeID: "x", NodeName: "x", DataDir: dir, RaftAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", Timing: FastTiming()}, &counterSM{})
		if err == nil {
			c.Shutdown()
			t.Errorf("%s: started with a bad gossip keyring", name)
		} else if want := filepath.Join(dir, gossipKeyringFile); !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %q does not name %s", name, err, want)
		}
	}
}
