package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/api/client"
)

// TestFlow drives a pool and its tokens through their whole life with the
// real commands, over the unix socket and over HTTP.
func TestFlow(t *testing.T) {
	a := startAgent(t)
	for _, tc := range []struct{ name, addr string }{
		{"unix", "unix://" + a.SocketPath()},
		{"http", "http://" + a.HTTPAddr()},
	} {
		t.Run(tc.name, func(t *testing.T) { testFlow(t, tc.addr, "gh-"+tc.name) })
	}
}

func testFlow(t *testing.T, addr, pool string) {
	run := func(stdin string, args ...string) string {
		t.Helper()
		return mustRun(t, stdin, append(args, "--addr", addr)...)
	}
	fail := func(args []string, want ...string) error {
		t.Helper()
		return mustFail(t, "", append(args, "--addr", addr), want...)
	}
	valueOne, valueTwo := "ghp_one_"+pool, "ghp_two_"+pool
	noValues := func(what, out string) {
		t.Helper()
		if strings.Contains(out, valueOne) || strings.Contains(out, valueTwo) {
			t.Fatalf("%s printed a token value:\n%s", what, out)
		}
	}

	poolFile := writeFile(t, "pool.json", `{
  "name": "`+pool+`",
  "selection": "priority",
  "min_healthy": 1,
  "provider": {"type": "static"},
  "labels": {"team": "infra"}
}`)
	if out := run("", "pool", "apply", poolFile); !strings.Contains(out, `Pool "`+pool+`" applied`) {
		t.Fatalf("pool apply printed %q", out)
	}
	// Applying again from stdin replaces the definition.
	run(`{"name":"`+pool+`","selection":"round_robin","labels":{"team":"infra"}}`, "pool", "apply", "-")
	if out := run("", "pool", "list"); !strings.Contains(out, "NAME") || !strings.Contains(out, pool) || !strings.Contains(out, "round_robin") {
		t.Fatalf("pool list printed:\n%s", out)
	}
	run("", "pool", "apply", poolFile)
	out := run("", "pool", "show", pool)
	for _, want := range []string{"Name:", pool, "Selection:", "priority", "team=infra", "Tokens:"} {
		if !strings.Contains(out, want) {
			t.Fatalf("pool show does not mention %q:\n%s", want, out)
		}
	}
	var p api.Pool
	if err := json.Unmarshal([]byte(run("", "pool", "show", pool, "--json")), &p); err != nil || p.Name != pool || p.MinHealthy != 1 {
		t.Fatalf("pool show --json = %+v, %v", p, err)
	}

	// One token from a file ending in \n, one from stdin ending in \r\n.
	valueFile := writeFile(t, "value", valueOne+"\n")
	out = run("", "token", "add", pool, "--value-file", valueFile, "--priority", "1",
		"--label", "owner=ci", "--expires-at", "2099-01-02T03:04:05Z")
	noValues("token add", out)
	idOne := strings.TrimSpace(out)
	if idOne == "" || strings.ContainsAny(idOne, " \n") {
		t.Fatalf("token add printed %q, want just the id", out)
	}
	out = run(valueTwo+"\r\n", "token", "add", pool, "--value-stdin", "--priority", "2", "--json")
	noValues("token add --json", out)
	var info api.TokenInfo
	if err := json.Unmarshal([]byte(out), &info); err != nil || info.ID == "" || info.Priority != 2 {
		t.Fatalf("token add --json = %+v, %v", info, err)
	}
	idTwo := info.ID

	out = run("", "token", "list", pool)
	noValues("token list", out)
	for _, want := range []string{"ID", "PRIORITY", "LIFECYCLE", "HEALTH", "EXPIRES", "REASON", idOne, idTwo, "2099-01-02T03:04:05Z", "healthy"} {
		if !strings.Contains(out, want) {
			t.Fatalf("token list does not mention %q:\n%s", want, out)
		}
	}
	out = run("", "token", "list", pool, "--json")
	noValues("token list --json", out)
	var infos []api.TokenInfo
	if err := json.Unmarshal([]byte(out), &infos); err != nil || len(infos) != 2 || infos[0].ID != idOne || infos[0].Labels["owner"] != "ci" {
		t.Fatalf("token list --json = %+v, %v", infos, err)
	}
	noValues("pool list --json", run("", "pool", "list", "--json"))

	// Exactly one trailing newline was stripped from each value.
	if out := run("", "token", "get", pool, "--raw"); out != valueOne+"\n" {
		t.Fatalf("token get --raw = %q, want %q", out, valueOne+"\n")
	}
	if out := run("", "token", "get", pool, "--raw", "--exclude", idOne); out != valueTwo+"\n" {
		t.Fatalf("token get --raw --exclude %s = %q, want %q", idOne, out, valueTwo+"\n")
	}
	out = run("", "token", "get", pool)
	for _, want := range []string{"ID:", idOne, "Value:", valueOne, "Expires:", "2099-01-02T03:04:05Z"} {
		if !strings.Contains(out, want) {
			t.Fatalf("token get does not mention %q:\n%s", want, out)
		}
	}
	var tok api.Token
	if err := json.Unmarshal([]byte(run("", "token", "get", pool, "--json")), &tok); err != nil || tok.ID != idOne || tok.Value != valueOne {
		t.Fatalf("token get --json = %+v, %v", tok, err)
	}

	// A failed token is not served again. The other is then the pool's last
	// eligible token, which one agent's report does not fail.
	if out := run("", "token", "report", pool, idOne, "unauthorized"); !strings.Contains(out, "failed") {
		t.Fatalf("token report printed %q", out)
	}
	if out := run("", "token", "get", pool, "--raw"); out != valueTwo+"\n" {
		t.Fatalf("token get --raw after failing %s = %q, want the other token", idOne, out)
	}
	if out := run("", "token", "report", pool, idTwo, "forbidden"); !strings.Contains(out, "last eligible token") {
		t.Fatalf("token report of the last eligible token printed %q", out)
	}
	if out := run("", "token", "get", pool, "--raw"); out != valueTwo+"\n" {
		t.Fatalf("token get --raw after reporting the last eligible token = %q, want it still served", out)
	}
	if out := run("", "token", "list", pool); !strings.Contains(out, "failed") {
		t.Fatalf("token list after reports:\n%s", out)
	}

	fail([]string{"pool", "delete", pool}, "conflict", "force")
	if out := run("", "token", "rm", pool, idOne); !strings.Contains(out, idOne) || !strings.Contains(out, "removed") {
		t.Fatalf("token rm printed %q", out)
	}
	run("", "token", "rm", pool, idTwo)
	fail([]string{"token", "rm", pool, idTwo}, "token_not_found")
	if out := run("", "token", "list", pool); !strings.Contains(out, "no tokens") {
		t.Fatalf("token list of an empty pool printed %q", out)
	}
	fail([]string{"token", "get", pool, "--raw"}, "pool_empty")
	if out := run("", "pool", "delete", pool); !strings.Contains(out, "deleted") {
		t.Fatalf("pool delete printed %q", out)
	}
	fail([]string{"pool", "show", pool}, "pool_not_found")
}

func TestPoolDeleteForce(t *testing.T) {
	a := startAgent(t)
	addr := "--addr=http://" + a.HTTPAddr()
	mustRun(t, `{"name":"doomed"}`, "pool", "apply", "-", addr)
	mustRun(t, "v\n", "token", "add", "doomed", "--value-stdin", addr)
	var res api.WriteResponse
	if err := json.Unmarshal([]byte(mustRun(t, "", "pool", "delete", "doomed", "--force", "--json", addr)), &res); err != nil || res.Index == 0 {
		t.Fatalf("pool delete --force --json = %+v, %v", res, err)
	}
	if out := mustRun(t, "", "pool", "list", addr); !strings.Contains(out, "No pools") {
		t.Fatalf("pool list after deleting the only pool printed %q", out)
	}
}

func TestReportRateLimited(t *testing.T) {
	a := startAgent(t)
	addr := "--addr=unix://" + a.SocketPath()
	mustRun(t, `{"name":"rl"}`, "pool", "apply", "-", addr)
	id := strings.TrimSpace(mustRun(t, "v\n", "token", "add", "rl", "--value-stdin", addr))
	out := mustRun(t, "", "token", "report", "rl", id, "rate_limited", "--retry-after", "600", addr)
	if !strings.Contains(out, "cooldown until") {
		t.Fatalf("token report rate_limited printed %q", out)
	}
	mustFail(t, "", []string{"token", "get", "rl", addr}, "all_cooling_down")
	mustFail(t, "", []string{"token", "report", "rl", id, "unauthorized", "--retry-after", "5", addr}, "--retry-after only applies to outcome rate_limited")
	mustFail(t, "", []string{"token", "report", "rl", id, "sideways", addr}, "invalid_request", "sideways")
}

func TestErrors(t *testing.T) {
	a := startAgent(t)
	addr := "--addr=" + "unix://" + a.SocketPath()
	valueFile := writeFile(t, "value", "secret\n")

	t.Run("unknown pool", func(t *testing.T) {
		for _, args := range [][]string{
			{"pool", "show", "nosuch"},
			{"pool", "delete", "nosuch"},
			{"token", "list", "nosuch"},
			{"token", "get", "nosuch"},
			{"token", "add", "nosuch", "--value-file", valueFile},
		} {
			mustFail(t, "", append(args, addr), "pool_not_found", `"nosuch"`)
		}
	})

	t.Run("value sources", func(t *testing.T) {
		mustFail(t, "x", []string{"token", "add", "p", "--value-file", valueFile, "--value-stdin", addr}, "exactly one of --value-file")
		mustFail(t, "x", []string{"token", "add", "p", addr}, "exactly one of --value-file")
		mustFail(t, "", []string{"token", "add", "p", "--value-file", "", addr}, "--value-file needs a file name")
		mustFail(t, "\n", []string{"token", "add", "p", "--value-stdin", addr}, "token value from stdin is empty")
		missing := filepath.Join(t.TempDir(), "missing")
		mustFail(t, "", []string{"token", "add", "p", "--value-file", missing, addr}, missing)
		big := strings.Repeat("x", 20<<10)
		err := mustFail(t, big, []string{"token", "add", "p", "--value-stdin", addr}, "longer than")
		if strings.Contains(err.Error(), "xxxx") {
			t.Fatalf("error quotes the value: %v", err)
		}
	})

	t.Run("token add flags", func(t *testing.T) {
		mustFail(t, "v", []string{"token", "add", "p", "--value-stdin", "--expires-at", "tomorrow", addr}, "--expires-at", "RFC 3339")
		mustFail(t, "v", []string{"token", "add", "p", "--value-stdin", "--not-before", "2030-01-02", addr}, "--not-before")
		mustFail(t, "v", []string{"token", "add", "p", "--value-stdin", "--label", "novalue", addr}, "key=value")
		mustFail(t, "v", []string{"token", "add", "p", "--value-stdin", "--label", "a=1", "--label", "a=2", addr}, "twice")
		mustFail(t, "v", []string{"token", "add", "p", "--value-stdin", "--priority", "high", addr}, "--priority")
	})

	t.Run("pool files", func(t *testing.T) {
		for _, tc := range []struct {
			name, content string
			want          []string
		}{
			{"bad.json", `{"name": "x",`, []string{"ends in the middle"}},
			{"syntax.json", "{\n  \"name\": \"x\"\n  \"selection\": \"priority\"\n}", []string{"invalid JSON", "line 3"}},
			{"unknown.json", `{"name":"x","selektion":"priority"}`, []string{`unknown field "selektion"`}},
			{"type.json", `{"name":"x","min_healthy":"one"}`, []string{`"min_healthy" must be a number`}},
			{"noname.json", `{"selection":"priority"}`, []string{`"name" is required`}},
			{"two.json", `{"name":"x"} {"name":"y"}`, []string{"more data after the JSON object"}},
			{"empty.json", ``, []string{"is empty"}},
			{"array.json", `[]`, []string{"must hold a JSON object"}},
			{"pool.hcl", "name = \"x\"\nselection = ", []string{":2,13: Missing expression"}},
			{"pool.yaml", `name: x`, []string{"unknown format"}},
		} {
			path := writeFile(t, tc.name, tc.content)
			mustFail(t, "", []string{"pool", "apply", path, addr}, append(tc.want, path)...)
		}
		mustFail(t, `{"name":"x","extra":1}`, []string{"pool", "apply", "-", addr}, "<stdin>", `unknown field "extra"`)
		missing := filepath.Join(t.TempDir(), "missing.json")
		mustFail(t, "", []string{"pool", "apply", missing, addr}, missing)
		// The agent's own checks come back with its code.
		mustFail(t, `{"name":"x","selection":"sideways"}`, []string{"pool", "apply", "-", addr}, "invalid_request", "sideways")
		mustFail(t, `{"name":"Bad Name"}`, []string{"pool", "apply", "-", addr}, "invalid_request")
	})

	t.Run("arguments", func(t *testing.T) {
		mustFail(t, "", []string{"token", "report", "p", "id", addr}, "POOL ID OUTCOME", "got 2")
		mustFail(t, "", []string{"pool", "show", addr}, "NAME")
		mustFail(t, "", []string{"pool", "list", "extra", addr}, "no arguments")
		mustFail(t, "", []string{"pool", "frobnicate", addr}, "unknown command")
		mustFail(t, "", []string{"token", "get", "p", "--raw", "--json", addr}, "--raw and --json")
		mustFail(t, "", []string{"pool", "list", "--bogus", addr}, "unknown flag")
	})

	t.Run("addresses", func(t *testing.T) {
		mustFail(t, "", []string{"pool", "list", "--addr", "ftp://host:21"}, "--addr", "ftp")
		dead := "unix://" + filepath.Join(t.TempDir(), "dead.sock")
		mustFail(t, "", []string{"pool", "list", "--addr", dead}, dead)
		// Without --addr the command follows TOKEND_ADDR.
		t.Setenv(client.EnvAddr, "unix://"+a.SocketPath())
		mustRun(t, "", "pool", "list")
		t.Setenv(client.EnvAddr, "gopher://x:1")
		mustFail(t, "", []string{"pool", "list"}, client.EnvAddr)
		// --addr wins over TOKEND_ADDR.
		mustRun(t, "", "pool", "list", addr)
	})
}

func TestMembersAndStatus(t *testing.T) {
	a := startAgent(t)
	addr := "--addr=http://" + a.HTTPAddr()

	out := mustRun(t, "", "members", addr)
	for _, want := range []string{"NAME", "ID", "STATUS", "RAFT ADDR", "REGION", "ZONE", "VOTER", "n1", a.NodeID()[:8], a.RaftAddr(), "yes"} {
		if !strings.Contains(out, want) {
			t.Fatalf("members does not mention %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, a.NodeID()) {
		t.Fatalf("members printed the full node id, want the short one:\n%s", out)
	}
	var members []api.Member
	if err := json.Unmarshal([]byte(mustRun(t, "", "members", "--json", addr)), &members); err != nil || len(members) != 1 || members[0].ID != a.NodeID() {
		t.Fatalf("members --json = %+v, %v", members, err)
	}

	out = mustRun(t, "", "status", addr)
	for _, want := range []string{"Agent:", "n1", "Raft state:", "leader", "Leader:", a.RaftAddr(), "Raft peers:", "SUFFRAGE", "voter"} {
		if !strings.Contains(strings.ToLower(out), strings.ToLower(want)) {
			t.Fatalf("status does not mention %q:\n%s", want, out)
		}
	}
	var st statusReport
	if err := json.Unmarshal([]byte(mustRun(t, "", "status", "--json", addr)), &st); err != nil {
		t.Fatal(err)
	}
	if st.Health.Node != "n1" || st.Leader.ID != a.NodeID() || len(st.Peers) != 1 || !st.Peers[0].Leader {
		t.Fatalf("status --json = %+v", st)
	}
}

// TestExitCode runs the real main: a failing command prints "Error: ..." to
// stderr and exits 1.
func TestExitCode(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dead := "unix://" + filepath.Join(t.TempDir(), "dead.sock")
	cmd := exec.Command(exe, "pool", "list", "--addr", dead)
	cmd.Env = append(os.Environ(), envRunMain+"=1")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("exit = %v, want status 1 (stderr %q)", err, stderr.String())
	}
	if !strings.HasPrefix(stderr.String(), "Error: ") || !strings.Contains(stderr.String(), dead) || stdout.Len() != 0 {
		t.Fatalf("stdout %q, stderr %q; want only an error naming %s on stderr", stdout.String(), stderr.String(), dead)
	}
}
