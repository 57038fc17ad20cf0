package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/testutil"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.hcl")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// agentFlags parses args as tokend agent would, config files included, and
// returns the flag set.
func agentFlags(t *testing.T, args ...string) (map[string]string, error) {
	t.Helper()
	cmd := newAgentCmd()
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	files, err := cmd.Flags().GetStringArray(configFileFlag)
	if err != nil {
		t.Fatal(err)
	}
	err = applyConfigFiles(cmd.Flags(), files)
	got := map[string]string{}
	for _, name := range []string{"data-dir", "join", "acl", "dev", "max-voters", "raft-multiplier", "dead-server-timeout", "report-rate", "encrypt-key-file", "log-json", "region", "gossip-key", "tls-ca-file", "tls-cert-file", "tls-key-file", "tls-verify-incoming-api"} {
		got[name] = cmd.Flags().Lookup(name).Value.String()
	}
	return got, err
}

func TestConfigFileSetsFlags(t *testing.T) {
	path := writeConfig(t, `
data_dir            = "/var/lib/tokend"
join                = ["10.0.0.2:8552", "10.0.0.3:8552"]
encrypt_key_file    = "/etc/tokend/keyring"
max_voters          = 3
raft_multiplier     = 1
dead_server_timeout = "5m"
report_rate         = 2.5
log_json            = true
acl { enabled = false }
gossip_key          = "c2l4dGVlbiBieXRlIGtleQ=="
tls {
  ca_file             = "/etc/tokend/ca.pem"
  cert_file           = "/etc/tokend/agent.pem"
  key_file            = "/etc/tokend/agent-key.pem"
  verify_incoming_api = false
}
`)
	got, err := agentFlags(t, "--config-file", path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"data-dir": "/var/lib/tokend", "join": "[10.0.0.2:8552,10.0.0.3:8552]", "acl": "false", "dev": "false",
		"max-voters": "3", "raft-multiplier": "1", "dead-server-timeout": "5m0s", "report-rate": "2.5", "encrypt-key-file": "/etc/tokend/keyring", "log-json": "true",
		"gossip-key": "c2l4dGVlbiBieXRlIGtleQ==", "tls-ca-file": "/etc/tokend/ca.pem", "tls-cert-file": "/etc/tokend/agent.pem",
		"tls-key-file": "/etc/tokend/agent-key.pem", "tls-verify-incoming-api": "false",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("--%s = %q, want %q", k, got[k], v)
		}
	}
}

// A flag on the command line wins over the file; a later file wins over an
// earlier one; lists add up.
func TestConfigFilePrecedence(t *testing.T) {
	first := writeConfig(t, "data_dir = \"/a\"\nmax_voters = 3\njoin = [\"10.0.0.2:8552\"]\nacl { enabled = false }\n")
	second := writeConfig(t, "max_voters = 7\njoin = \"10.0.0.3:8552\"\n")
	got, err := agentFlags(t, "--config-file", first, "--config-file", second, "--data-dir", "/cli", "--acl=true")
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"data-dir": "/cli", "acl": "true", "max-voters": "7", "join": "[10.0.0.2:8552,10.0.0.3:8552]"} {
		if got[k] != v {
			t.Errorf("--%s = %q, want %q", k, got[k], v)
		}
	}
	// Joins on the command line replace the files' joins.
	got, err = agentFlags(t, "--config-file", first, "--join", "10.0.0.9:8552")
	if err != nil || got["join"] != "[10.0.0.9:8552]" {
		t.Fatalf("join = %q, %v; want only the command line's", got["join"], err)
	}
}

// Every mistake is reported with file:line,column, and a file with any
// mistake sets nothing.
func TestConfigFileErrors(t *testing.T) {
	cases := []struct{ text, want string }{
		{"bogus = 1", `:1,1: unknown key "bogus"`},
		{"config_file = \"x\"", `unknown key "config_file"`},
		{"max_voters = \"3\"", `:1,14: max_voters: want a number, not string`},
		{"max_voters = 2.5", `want a whole number`},
		{"dead_server_timeout = \"5 min\"", `want a duration`},
		{"acl { enabled = \"yes\" }", `enabled: want true or false, not string`},
		{"acl \"x\" { enabled = true }", `block acl takes no label`},
		{"nope { a = 1 }", `unknown block "nope"`},
		{"acl {\n  x {\n  }\n}", `block acl cannot hold block x`},
		{"join = [1]", `want a list of strings`},
		{"data_dir = var.x", `Variables not allowed`},
		{"data_dir = ", `:1,12:`},
	}
	for _, c := range cases {
		t.Run(c.text, func(t *testing.T) {
			path := writeConfig(t, "region = \"from-file\"\n"+c.text+"\n")
			got, err := agentFlags(t, "--config-file", path)
			if err == nil || !strings.Contains(err.Error(), strings.Replace(c.want, ":1,", ":2,", 1)) {
				t.Fatalf("error = %v, want it to contain %q", err, c.want)
			}
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q does not name the file", err)
			}
			if got["region"] != "" {
				t.Fatalf("region = %q after a bad file; want nothing set", got["region"])
			}
		})
	}
	if _, err := agentFlags(t, "--config-file", filepath.Join(t.TempDir(), "missing.hcl")); err == nil || !strings.Contains(err.Error(), "missing.hcl") {
		t.Fatalf("missing file: error = %v", err)
	}
}

// A multiplier out of range, on the command line or in a file, stops the
// agent before it starts, with the flag and the range in the error.
func TestRaftMultiplierOutOfRange(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"--raft-multiplier", "0"},
		{"--raft-multiplier", "11"},
		{"--config-file", writeConfig(t, "raft_multiplier = 11\n")},
		{"--dev", "--raft-multiplier", "-1"},
	} {
		mustFail(t, "", append([]string{"agent", "--data-dir", dir}, args...), "--raft-multiplier", "out of range", "1 to 10")
	}
}

// The real binary started with only a config file runs the agent it
// describes: here a dev agent with ACLs switched on by the file.
func TestAgentRunsFromConfigFile(t *testing.T) {
	addr := freeAddr(t)
	sock := filepath.Join(t.TempDir(), "a.sock")
	path := writeConfig(t, fmt.Sprintf(`
dev       = true
http_addr = %q
socket    = %q
acl { enabled = true }
`, addr, sock))
	cmd := exec.Command(os.Args[0], "agent", "--config-file", path)
	cmd.Env = append(os.Environ(), envRunMain+"=1")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	testutil.WaitFor(t, 10*time.Second, func() error {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("agent exited: %v\n%s", err, out.String())
		default:
		}
		resp, err := http.Get("http://" + addr + "/v1/pools")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			return fmt.Errorf("GET /v1/pools without a token = %d, want 401 (ACLs on from the file)", resp.StatusCode)
		}
		return nil
	})
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
