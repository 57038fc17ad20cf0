package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/agent"
	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
	"github.com/tokend/tokend/tokens"
)

func TestKeygen(t *testing.T) {
	a, b := strings.TrimSpace(mustRun(t, "", "keygen")), strings.TrimSpace(mustRun(t, "", "keygen"))
	if a == b {
		t.Fatal("keygen printed the same key twice")
	}
	for _, k := range []string{a, b} {
		if _, err := tokens.ParseKey(k); err != nil {
			t.Fatalf("keygen printed %d characters that are not a key: %v", len(k), err)
		}
	}
	mustFail(t, "", []string{"keygen", "extra"}, "unknown command")
}

// The keyring commands, end to end on one agent: install from a file and
// from stdin, use, list, remove.
func TestOperatorKeyring(t *testing.T) {
	a := startAgent(t)
	addr := "--addr=http://" + a.HTTPAddr()
	mustRun(t, "", "pool", "apply", writeFile(t, "p.json", `{"name":"p"}`), addr)
	mustRun(t, "secret-value\n", "token", "add", "p", "--value-stdin", addr)

	out := mustRun(t, "", "operator", "keyring", "list", addr)
	var kr api.Keyring
	if err := json.Unmarshal([]byte(mustRun(t, "", "operator", "keyring", "list", "--json", addr)), &kr); err != nil {
		t.Fatal(err)
	}
	old := kr.Primary
	if old == "" || !strings.Contains(out, "Sealing key: "+old) || !strings.Contains(out, "n1") {
		t.Fatalf("keyring list printed:\n%s", out)
	}

	key := tokens.GenerateKey()
	raw, _ := tokens.ParseKey(key)
	id, _ := tokens.KeyID(raw)
	out = mustRun(t, "", "operator", "keyring", "install", writeFile(t, "new.key", "# new key\n"+key+"\n"), addr)
	if !strings.Contains(out, "Installed key "+id) || strings.Contains(out, key) {
		t.Fatalf("install printed:\n%s", out)
	}
	// Installing the same key from stdin again is harmless.
	mustRun(t, key+"\n", "operator", "keyring", "install", addr)
	mustFail(t, "", []string{"operator", "keyring", "install", writeFile(t, "two.key", key+"\n"+key+"\n"), addr}, "exactly one key")
	mustFail(t, "", []string{"operator", "keyring", "remove", old, addr}, "seals new secrets")

	out = mustRun(t, "", "operator", "keyring", "use", id, addr)
	if !strings.Contains(out, "seals new secrets with key "+id) {
		t.Fatalf("use printed:\n%s", out)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		if r := tokend(t, "", "operator", "keyring", "remove", old, addr); r.err != nil {
			return r.err
		}
		return nil
	})
	out = mustRun(t, "", "operator", "keyring", "list", addr)
	if strings.Contains(out, old) || !strings.Contains(out, id) {
		t.Fatalf("keyring list after the rotation:\n%s", out)
	}
	if got := mustRun(t, "", "token", "get", "p", "--raw", addr); got != "secret-value\n" {
		t.Fatalf("token get after the rotation printed %q", got)
	}
	mustFail(t, "", []string{"operator", "keyring", "use", "nothex", addr}, "8 lowercase hex")
}

// The gossip keyring commands on one agent: list, install from a file and
// from stdin, use, remove. Nothing prints a key.
func TestOperatorGossipKeyring(t *testing.T) {
	oldKey, newKey := tokens.GenerateKey(), tokens.GenerateKey()
	a := testutil.StartAgent(t, func(cfg *agent.Config) { cfg.GossipKey = oldKey })
	addr := "--addr=http://" + a.HTTPAddr()
	var kr api.GossipKeyring
	if err := json.Unmarshal([]byte(mustRun(t, "", "operator", "gossip-keyring", "list", "--json", addr)), &kr); err != nil {
		t.Fatal(err)
	}
	if len(kr.Nodes) != 1 || len(kr.Nodes[0].Keys) != 1 {
		t.Fatalf("gossip-keyring list: %+v", kr)
	}
	oldID := kr.Nodes[0].Primary
	out := mustRun(t, "", "operator", "gossip-keyring", "install", writeFile(t, "g.key", "# gossip\n"+newKey+"\n"), addr)
	var newID string
	if _, err := fmt.Sscanf(out, "Installed gossip key %s on every agent.", &newID); err != nil || newID == oldID {
		t.Fatalf("install printed:\n%s", out)
	}
	newID = strings.TrimSuffix(newID, ".")
	mustRun(t, newKey+"\n", "operator", "gossip-keyring", "install", addr)
	mustFail(t, "", []string{"operator", "gossip-keyring", "remove", oldID, addr}, "still the primary key")
	out = mustRun(t, "", "operator", "gossip-keyring", "use", newID, addr)
	if !strings.Contains(out, "encrypts gossip with key "+newID) {
		t.Fatalf("use printed:\n%s", out)
	}
	mustRun(t, "", "operator", "gossip-keyring", "remove", oldID, addr)
	out = mustRun(t, "", "operator", "gossip-keyring", "list", addr)
	if !strings.Contains(out, "n1") || !strings.Contains(out, newID) || strings.Contains(out, oldID) {
		t.Fatalf("list after the rotation:\n%s", out)
	}
	for _, k := range []string{oldKey, newKey} {
		if strings.Contains(out, k) {
			t.Fatal("list printed a key")
		}
	}
	mustFail(t, "", []string{"operator", "gossip-keyring", "use", "nothex", addr}, "8 lowercase hex")
}
