package api_test

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
	"syscall"
	"testing"
	"time"

	"github.com/tokend/tokend/agent"
	"github.com/tokend/tokend/api"
)

const (
	envSocketClient  = "TOKEND_SOCKET_CLIENT"
	envSocketRequest = "TOKEND_SOCKET_REQUEST"
)

// socketClient sends request ("METHOD PATH") over the socket at path and
// prints the status and body; it runs as the helper process.
func socketClient(path, request string) int {
	method, target, _ := strings.Cut(request, " ")
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
	req, err := http.NewRequest(method, "http://tokend"+target, nil)
	if err != nil {
		fmt.Println(err)
		return 2
	}
	resp, err := hc.Do(req)
	if err != nil {
		fmt.Println("request failed:", err)
		return 2
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Printf("%d %s", resp.StatusCode, bytes.TrimSpace(body))
	return 0
}

// asUser runs one socket request as uid and gid, in a process of its own,
// and returns the status and body.
func asUser(t *testing.T, exe, socket string, uid, gid int, request string) (int, string) {
	t.Helper()
	cmd := exec.Command(exe)
	cmd.Env = []string{envSocketClient + "=" + socket, envSocketRequest + "=" + request}
	// Group root (supplementary) lets it connect: the socket is 0660 root:root.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{0}}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper as uid %d: %v: %s", uid, err, out)
	}
	var status int
	var body string
	if _, err := fmt.Sscanf(string(out), "%d", &status); err != nil {
		t.Fatalf("helper as uid %d printed %q", uid, out)
	}
	_, body, _ = strings.Cut(string(out), " ")
	return status, body
}

// Callers of the unix socket are told apart by the kernel's peer
// credentials: a pool with allow lists admits only the uids and gids they
// name, other pools whoever the socket's mode lets connect, and cluster
// operations only root and the agent's user. Denials are 403s with a
// message, and audited with the caller's uid and pid.
func TestSocketPeerCredentials(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run helper processes as other users")
	}
	// The socket in a directory others may enter; its group (root's) is
	// the helpers' group, as an operator would grant access.
	dir, err := os.MkdirTemp("", "tokend-peercred-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o755))
	// The test binary, where other users may run it.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "client")
	data, err := os.ReadFile(self)
	must(t, err)
	must(t, os.WriteFile(exe, data, 0o755))

	ta := startAgentWith(t, func(cfg *agent.Config) { cfg.SocketPath = filepath.Join(dir, "tokend.sock") })
	sock := ta.SocketPath()
	const allowedUID, otherUID, listedGID = 4242, 4343, 4444
	expect(t, ta.unix.do(t, "PUT", "/v1/pools/locked", api.PoolRequest{AllowUIDs: []int{allowedUID}, AllowGIDs: []int{listedGID}}), 200)
	expect(t, ta.unix.do(t, "POST", "/v1/pools/locked/tokens", api.TokenRequest{Value: ta.secret("locked-value-1")}), 201)
	expect(t, ta.unix.do(t, "PUT", "/v1/pools/open", api.PoolRequest{}), 200)
	expect(t, ta.unix.do(t, "POST", "/v1/pools/open/tokens", api.TokenRequest{Value: ta.secret("open-value-1")}), 201)

	for _, c := range []struct {
		name     string
		uid, gid int
		request  string
		want     int
		has      string
	}{
		{"listed uid fetches", allowedUID, 0, "GET /v1/pools/locked/token?format=raw", 200, "locked-value-1"},
		{"listed gid fetches", otherUID, listedGID, "GET /v1/pools/locked/token?format=raw", 200, "locked-value-1"},
		{"other uid is refused", otherUID, 0, "GET /v1/pools/locked/token?format=raw", 403, "uid 4343 (gid 0) may not use pool"},
		{"other uid cannot see its tokens", otherUID, 0, "GET /v1/pools/locked/tokens", 403, "allow_uids"},
		{"other uid cannot delete it", otherUID, 0, "DELETE /v1/pools/locked?force=true", 403, "permission_denied"},
		{"other uid's pool list leaves it out", otherUID, 0, "GET /v1/pools", 200, `"name": "open"`},
		{"other uid uses an open pool", otherUID, 0, "GET /v1/pools/open/token?format=raw", 200, "open-value-1"},
		{"other uid may not rotate keys", otherUID, 0, "GET /v1/operator/keyring", 403, "cluster operations need root or the agent's user"},
		{"nor see ACLs", otherUID, 0, "GET /v1/acl/tokens", 403, "permission_denied"},
		{"but may read health", otherUID, 0, "GET /v1/health", 200, `"status": "ok"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, body := asUser(t, exe, sock, c.uid, c.gid, c.request)
			if status != c.want || !strings.Contains(body, c.has) {
				t.Fatalf("as uid %d gid %d: %d %s; want %d with %q", c.uid, c.gid, status, body, c.want, c.has)
			}
			if strings.Contains(c.name, "list leaves") && strings.Contains(body, "locked") {
				t.Fatalf("the pool list shows a pool the caller may not use: %s", body)
			}
		})
	}
	// Outside the socket's group, the file mode alone keeps a user out.
	cmd := exec.Command(exe)
	cmd.Env = []string{envSocketClient + "=" + sock, envSocketRequest + "=GET /v1/health"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: otherUID, Gid: otherUID}}
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "permission denied") {
		t.Fatalf("a user outside the socket's group connected: %v %s", err, out)
	}
	// The denials are in the audit log, with uid and pid, and changed
	// nothing.
	var events []api.AuditEvent
	must(t, json.Unmarshal(expect(t, ta.unix.get(t, "/v1/audit"), 200).Body, &events))
	denied := 0
	for _, e := range events {
		if e.Result == "denied" && e.Principal == fmt.Sprintf("uid:%d", otherUID) && e.PID > 0 && e.Remote == "unix" {
			denied++
		}
	}
	if denied != 5 {
		t.Fatalf("audit log holds %d denials of uid %d, want 5: %+v", denied, otherUID, events)
	}
	expect(t, ta.unix.get(t, "/v1/pools/locked"), 200)
}
