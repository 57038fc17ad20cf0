package exec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokend/tokend/tokens"
)

var testNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// script writes a /bin/sh script into a temporary directory and returns its
// path.
func script(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "provider.sh")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// quote quotes s for the shell.
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// printing returns a script body that prints out on stdout.
func printing(out string) string { return "printf '%s' " + quote(out) }

// newProvider returns the provider of spec, its Type set, with the test
// clock and the agent's PATH visible.
func newProvider(t *testing.T, spec tokens.ProviderSpec) *Provider {
	t.Helper()
	spec.Type = tokens.ProviderExec
	if spec.Env == nil {
		spec.Env = []string{"PATH"}
	}
	p, err := New(spec, os.Environ())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	p.now = func() time.Time { return testNow }
	return p
}

func issue(t *testing.T, p *Provider, req tokens.IssueRequest) (tokens.Issued, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return p.Issue(ctx, req)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// processGone reports whether pid has exited: it is no longer in /proc, or
// is a zombie nobody reaped (the container's init may not reap orphans).
func processGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] == 'Z' || s[i+2] == 'X'
}

// waitGone polls until pid has exited, failing the test after a deadline.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !processGone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d is still running", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readPid reads the pid a script wrote.
func readPid(t *testing.T, path string) int {
	t.Helper()
	pid, err := strconv.Atoi(strings.TrimSpace(readFile(t, path)))
	if err != nil || pid <= 0 {
		t.Fatalf("pid file %s: %q", path, readFile(t, path))
	}
	return pid
}

func TestIssueExpiresIn(t *testing.T) {
	p := newProvider(t, tokens.ProviderSpec{Command: []string{script(t, printing(`{"token": "tok-123", "expires_in": 3600}`))}})
	got, err := issue(t, p, tokens.IssueRequest{Key: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Value.Reveal() != "tok-123" {
		t.Errorf("token = %q", got.Value.Reveal())
	}
	if want := testNow.Add(time.Hour); !got.ExpiresAt.Equal(want) {
		t.Errorf("ExpiresAt = %s, want %s", got.ExpiresAt, want)
	}
	if got.Metadata != nil {
		t.Errorf("Metadata = %v, want nil", got.Metadata)
	}
}

func TestIssueExpiresAtAndMetadata(t *testing.T) {
	out := `{"token":"tok-456","expires_at":"2030-01-02T06:04:05+02:00","metadata":{"issuer":"vault","scope":"read"}}` + "\n"
	p := newProvider(t, tokens.ProviderSpec{Command: []string{"/bin/sh", script(t, printing(out)), "ignored-arg"}})
	got, err := issue(t, p, tokens.IssueRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Value.Reveal() != "tok-456" {
		t.Errorf("token = %q", got.Value.Reveal())
	}
	if want := testNow.Add(time.Hour); !got.ExpiresAt.Equal(want) {
		t.Errorf("ExpiresAt = %s, want %s", got.ExpiresAt, want)
	}
	if want := map[string]string{"issuer": "vault", "scope": "read"}; fmt.Sprint(got.Metadata) != fmt.Sprint(want) {
		t.Errorf("Metadata = %v, want %v", got.Metadata, want)
	}
}

func TestIssueWithoutExpiry(t *testing.T) {
	p := newProvider(t, tokens.ProviderSpec{Command: []string{script(t, printing(`{"token":"forever"}`))}})
	got, err := issue(t, p, tokens.IssueRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !got.ExpiresAt.IsZero() {
		t.Errorf("ExpiresAt = %s, want zero", got.ExpiresAt)
	}
}

func TestIssueNonZeroExit(t *testing.T) {
	path := script(t, "echo 'vault: permission denied' >&2\nexit 3")
	p := newProvider(t, tokens.ProviderSpec{Command: []string{path}})
	_, err := issue(t, p, tokens.IssueRequest{})
	if err == nil {
		t.Fatal("Issue succeeded")
	}
	for _, want := range []string{"exec provider: ", strconv.Quote(path), "exit status 3", "vault: permission denied"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %q is a timeout", err)
	}
}

func TestIssueLongStderrIsCut(t *testing.T) {
	path := script(t, "i=0\nwhile [ $i -lt 300 ]; do echo \"line $i of noise\" >&2; i=$((i+1)); done\necho 'the real reason' >&2\nexit 1")
	p := newProvider(t, tokens.ProviderSpec{Command: []string{path}})
	_, err := issue(t, p, tokens.IssueRequest{})
	if err == nil {
		t.Fatal("Issue succeeded")
	}
	if !strings.Contains(err.Error(), "the real reason") || strings.Contains(err.Error(), "line 1 of noise") {
		t.Errorf("error does not quote the end of stderr: %q", err)
	}
	if len(err.Error()) > 1500 {
		t.Errorf("error is %d bytes long", len(err.Error()))
	}
}

func TestIssueRejectsOutput(t *testing.T) {
	for _, tc := range []struct {
		name, out, want string
	}{
		{"empty", "", "printed nothing"},
		{"blank", " \n\t\n", "printed nothing"},
		{"not JSON", "SEKRET-value\n", "not valid JSON"},
		{"truncated JSON", `{"token": "SEKRET-value"`, "not valid JSON"},
		{"bad JSON value", `{"token": SEKRET-value}`, "not valid JSON"},
		{"array", `["SEKRET-value"]`, "not a JSON object"},
		{"string", `"SEKRET-value"`, "not a JSON object"},
		{"trailing data", `{"token": "SEKRET-value"} {"token": "x"}`, "more after"},
		{"missing token", `{"expires_in": 60}`, `no "token"`},
		{"empty token", `{"token": "", "expires_in": 60}`, `"token" is empty`},
		{"null token", `{"token": null}`, `"token" is not a string`},
		{"number token", `{"token": 12345}`, `"token" is not a string`},
		{"newline in token", `{"token": "SEKRET-value\nx"}`, "control character"},
		{"tab in token", `{"token": "SEKRET-value\tx"}`, "control character"},
		{"NUL in token", `{"token": "SEKRET-value\u0000"}`, "control character"},
		{"DEL in token", "{\"token\": \"SEKRET-value\x7f\"}", "control character"},
		{"invalid UTF-8", "{\"token\": \"SEKRET-value\xff\"}", "UTF-8"},
		{"both expiries", `{"token": "SEKRET-value", "expires_at": "2031-01-01T00:00:00Z", "expires_in": 60}`, "both"},
		{"expires_in zero", `{"token": "SEKRET-value", "expires_in": 0}`, "must be positive"},
		{"expires_in negative", `{"token": "SEKRET-value", "expires_in": -5}`, "must be positive"},
		{"expires_in huge", `{"token": "SEKRET-value", "expires_in": 1e300}`, "out of range"},
		{"expires_in string", `{"token": "SEKRET-value", "expires_in": "3600"}`, "not a number"},
		{"expires_at past", `{"token": "SEKRET-value", "expires_at": "2030-01-02T03:04:04Z"}`, "not in the future"},
		{"expires_at now", `{"token": "SEKRET-value", "expires_at": "2030-01-02T03:04:05Z"}`, "not in the future"},
		{"expires_at unparseable", `{"token": "SEKRET-value", "expires_at": "tomorrow"}`, "not an RFC 3339 time"},
		{"expires_at number", `{"token": "SEKRET-value", "expires_at": 1893553445}`, "not a string"},
		{"unknown field", `{"token": "SEKRET-value", "expiry": 60}`, `unknown field "expiry"`},
		{"duplicate field", `{"token": "SEKRET-value", "token": "SEKRET-value"}`, "twice"},
		{"metadata number", `{"token": "SEKRET-value", "metadata": {"n": 1}}`, `"metadata" field "n" is not a string`},
		{"metadata null value", `{"token": "SEKRET-value", "metadata": {"n": null}}`, `"metadata" field "n" is not a string`},
		{"metadata array", `{"token": "SEKRET-value", "metadata": ["a"]}`, `"metadata" is not an object`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := script(t, printing(tc.out)+"\necho 'some diagnostics' >&2")
			p := newProvider(t, tokens.ProviderSpec{Command: []string{path}})
			got, err := issue(t, p, tokens.IssueRequest{})
			if err == nil {
				t.Fatalf("Issue succeeded: %+v", got)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "exec provider: ") || !strings.Contains(msg, strconv.Quote(path)) || !strings.Contains(msg, tc.want) {
				t.Errorf("error %q: want the prefix, the command and %q", msg, tc.want)
			}
			if strings.Contains(msg, "SEKRET") {
				t.Errorf("error %q holds the token", msg)
			}
		})
	}
}

func TestIssueEmptyOutputQuotesStderr(t *testing.T) {
	p := newProvider(t, tokens.ProviderSpec{Command: []string{script(t, "echo 'not logged in' >&2")}})
	_, err := issue(t, p, tokens.IssueRequest{})
	if err == nil || !strings.Contains(err.Error(), "not logged in") {
		t.Fatalf("error %v does not quote stderr", err)
	}
}

func TestIssueHugeOutput(t *testing.T) {
	line := strings.Repeat("x", 99)
	for _, tc := range []struct{ name, body string }{
		// 1000 lines of 100 bytes, then a clean exit.
		{"finite", "i=0\nwhile [ $i -lt 1000 ]; do echo " + line + "; i=$((i+1)); done"},
		// Writes until killed: the provider must not wait for the timeout.
		{"endless", "while :; do echo " + line + "; done"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := script(t, tc.body)
			p := newProvider(t, tokens.ProviderSpec{Command: []string{path}, Timeout: tokens.Duration(time.Minute)})
			start := time.Now()
			_, err := issue(t, p, tokens.IssueRequest{})
			if err == nil {
				t.Fatal("Issue succeeded")
			}
			if !strings.Contains(err.Error(), "more than 64 KiB") || !strings.Contains(err.Error(), strconv.Quote(path)) {
				t.Errorf("error %q", err)
			}
			if errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("error %q is a timeout", err)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("Issue took %s", d)
			}
		})
	}
}

func TestIssueTimeoutKillsProcessGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	path := script(t, "sleep 30 &\necho $! > "+quote(pidFile)+"\nsleep 30")
	p := newProvider(t, tokens.ProviderSpec{Command: []string{path}, Timeout: tokens.Duration(200 * time.Millisecond)})

	start := time.Now()
	_, err := p.Issue(context.Background(), tokens.IssueRequest{})
	elapsed := time.Since(start)
	if err == nil {
		t.Fatal("Issue succeeded")
	}
	if elapsed > 2*time.Second {
		t.Errorf("Issue returned after %s", elapsed)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %q does not wrap context.DeadlineExceeded", err)
	}
	if !strings.Contains(err.Error(), "timed out") || !strings.Contains(err.Error(), strconv.Quote(path)) {
		t.Errorf("error %q", err)
	}
	waitGone(t, readPid(t, pidFile))
}

func TestIssueKillsLeftoverProcesses(t *testing.T) {
	// The command succeeds but leaves a process holding its stdout: Issue
	// must not wait for it, and kills it.
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	path := script(t, "sleep 30 &\necho $! > "+quote(pidFile)+"\n"+printing(`{"token":"t"}`))
	p := newProvider(t, tokens.ProviderSpec{Command: []string{path}})

	start := time.Now()
	got, err := issue(t, p, tokens.IssueRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Value.Reveal() != "t" {
		t.Errorf("token = %q", got.Value.Reveal())
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Issue returned after %s", d)
	}
	waitGone(t, readPid(t, pidFile))
}

func TestIssueCallerCancel(t *testing.T) {
	ready := filepath.Join(t.TempDir(), "ready")
	path := script(t, ": > "+quote(ready)+"\nsleep 30")
	p := newProvider(t, tokens.ProviderSpec{Command: []string{path}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := p.Issue(ctx, tokens.IssueRequest{})
		done <- err
	}()
	// Cancel once the command runs.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the command did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("error %v does not wrap context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Issue did not return after its context was canceled")
	}
}

func TestIssueCommandNotFound(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no-such-command")
	p := newProvider(t, tokens.ProviderSpec{Command: []string{path}})
	_, err := issue(t, p, tokens.IssueRequest{})
	if err == nil || !strings.Contains(err.Error(), strconv.Quote(path)) || !strings.HasPrefix(err.Error(), "exec provider: ") {
		t.Fatalf("error %v", err)
	}
}

func TestIssueEnvironment(t *testing.T) {
	dir := t.TempDir()
	exported := filepath.Join(dir, "exported")
	replacing := filepath.Join(dir, "replacing")
	path := script(t, `export -p > `+quote(exported)+`
printf '%s' "${TOKEND_REPLACING_METADATA-unset}" > `+quote(replacing)+`
printf '{"token":"t","metadata":{"visible":"%s","hidden":"%s","key":"%s","stdin":"%s"}}' \
	"${TOKEND_TEST_VISIBLE-unset}" "${TOKEND_TEST_HIDDEN-unset}" "${TOKEND_IDEMPOTENCY_KEY-unset}" "$(read -r l && echo "$l")"`)
	spec := tokens.ProviderSpec{
		Type:    tokens.ProviderExec,
		Command: []string{path},
		Env:     []string{"TOKEND_TEST_VISIBLE", "TOKEND_TEST_ABSENT", "TOKEND_IDEMPOTENCY_KEY"},
	}
	environ := []string{
		"TOKEND_TEST_VISIBLE=old",
		"TOKEND_TEST_HIDDEN=do-not-pass",
		"TOKEND_IDEMPOTENCY_KEY=spoofed",
		"PATH=/usr/bin:/bin",
		"HOME=/root",
		"TOKEND_TEST_VISIBLE=seen",
	}
	p, err := New(spec, environ)
	if err != nil {
		t.Fatal(err)
	}

	got, err := issue(t, p, tokens.IssueRequest{Key: "rotation-42", Replacing: map[string]string{"client": "a\"b"}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"visible": "seen", "hidden": "unset", "key": "rotation-42", "stdin": ""}
	if fmt.Sprint(got.Metadata) != fmt.Sprint(want) {
		t.Errorf("the command saw %v, want %v", got.Metadata, want)
	}
	var rep map[string]string
	if err := json.Unmarshal([]byte(readFile(t, replacing)), &rep); err != nil || rep["client"] != "a\"b" || len(rep) != 1 {
		t.Errorf("TOKEND_REPLACING_METADATA = %q", readFile(t, replacing))
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(readFile(t, exported)), "\n") {
		name, _, _ := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if name != "PWD" { // dash exports the PWD it sets itself
			names = append(names, name)
		}
	}
	slices.Sort(names)
	if want := []string{"TOKEND_IDEMPOTENCY_KEY", "TOKEND_REPLACING_METADATA", "TOKEND_TEST_VISIBLE"}; !slices.Equal(names, want) {
		t.Errorf("the command's environment has %v, want %v", names, want)
	}

	// Topping up: no key, no replaced token.
	got, err = issue(t, p, tokens.IssueRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Metadata["key"] != "unset" || readFile(t, replacing) != "unset" {
		t.Errorf("key %q, replacing %q: want both unset", got.Metadata["key"], readFile(t, replacing))
	}
}

func TestIssueConcurrent(t *testing.T) {
	p := newProvider(t, tokens.ProviderSpec{Command: []string{script(t, `printf '{"token":"t-%s","expires_in":60}' "$TOKEND_IDEMPOTENCY_KEY"`)}})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			key := strconv.Itoa(i)
			got, err := issue(t, p, tokens.IssueRequest{Key: key})
			if err != nil {
				t.Error(err)
			} else if got.Value.Reveal() != "t-"+key {
				t.Errorf("token %q for key %s", got.Value.Reveal(), key)
			}
		})
	}
	wg.Wait()
}

func TestIssueRedactsTokenInStderr(t *testing.T) {
	const secret = "SEKRET-abcdef-123456"
	path := script(t, printing(`{"token":"`+secret+`"}`)+"\necho \"got token "+secret+" but the audit log failed\" >&2\nexit 1")
	p := newProvider(t, tokens.ProviderSpec{Command: []string{path}})
	_, err := issue(t, p, tokens.IssueRequest{})
	if err == nil {
		t.Fatal("Issue succeeded")
	}
	if strings.Contains(err.Error(), "SEKRET") {
		t.Errorf("error %q holds the token", err)
	}
	if !strings.Contains(err.Error(), "got token [redacted] but the audit log failed") {
		t.Errorf("error %q does not quote the redacted stderr", err)
	}
}

func TestRevokeReceivesTokenOnStdin(t *testing.T) {
	dir := t.TempDir()
	stdin := filepath.Join(dir, "stdin")
	env := filepath.Join(dir, "env")
	revoke := script(t, "cat > "+quote(stdin)+"\nprintf '%s' \"$TOKEND_TOKEN_METADATA\" > "+quote(env)+"\necho revoked")
	p := newProvider(t, tokens.ProviderSpec{Command: []string{"/bin/true"}, RevokeCommand: []string{revoke, "--all"}})
	if !p.CanRevoke() {
		t.Fatal("CanRevoke() = false with a revoke command")
	}
	err := p.Revoke(context.Background(), tokens.RevokeRequest{Value: tokens.Secret("tok-to-revoke"), Metadata: map[string]string{"client": "c1"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, stdin); got != "tok-to-revoke\n" {
		t.Errorf("revoke command read %q", got)
	}
	if got := readFile(t, env); got != `{"client":"c1"}` {
		t.Errorf("TOKEND_TOKEN_METADATA = %q", got)
	}
}

func TestRevokeFailure(t *testing.T) {
	revoke := script(t, "cat > /dev/null\necho 'revocation denied' >&2\nexit 2")
	p := newProvider(t, tokens.ProviderSpec{Command: []string{"/bin/true"}, RevokeCommand: []string{revoke}})
	err := p.Revoke(context.Background(), tokens.RevokeRequest{Value: tokens.Secret("tok")})
	if err == nil {
		t.Fatal("Revoke succeeded")
	}
	for _, want := range []string{"exec provider: ", strconv.Quote(revoke), "exit status 2", "revocation denied"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestRevokeTimeout(t *testing.T) {
	revoke := script(t, "sleep 30")
	p := newProvider(t, tokens.ProviderSpec{Command: []string{"/bin/true"}, RevokeCommand: []string{revoke}, Timeout: tokens.Duration(200 * time.Millisecond)})
	start := time.Now()
	err := p.Revoke(context.Background(), tokens.RevokeRequest{Value: tokens.Secret("tok")})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Revoke returned after %s", d)
	}
}

func TestRevokeRedactsTokenInStderr(t *testing.T) {
	const secret = "SEKRET-revoke-987654"
	revoke := script(t, "echo \"cannot revoke $(cat)\" >&2\nexit 1")
	p := newProvider(t, tokens.ProviderSpec{Command: []string{"/bin/true"}, RevokeCommand: []string{revoke}})
	err := p.Revoke(context.Background(), tokens.RevokeRequest{Value: tokens.Secret(secret)})
	if err == nil {
		t.Fatal("Revoke succeeded")
	}
	if strings.Contains(err.Error(), "SEKRET") || strings.Contains(err.Error(), "987654") {
		t.Errorf("error %q holds the token", err)
	}
	if !strings.Contains(err.Error(), "cannot revoke [redacted]") {
		t.Errorf("error %q does not quote the redacted stderr", err)
	}
}

func TestRevokeWithoutCommand(t *testing.T) {
	p := newProvider(t, tokens.ProviderSpec{Command: []string{"/bin/true"}})
	if p.CanRevoke() {
		t.Error("CanRevoke() = true without a revoke command")
	}
	err := p.Revoke(context.Background(), tokens.RevokeRequest{Value: tokens.Secret("tok")})
	if !errors.Is(err, errors.ErrUnsupported) || !strings.Contains(err.Error(), "revoke_command") {
		t.Errorf("error %v", err)
	}
}

func TestRevokeEmptyToken(t *testing.T) {
	p := newProvider(t, tokens.ProviderSpec{Command: []string{"/bin/true"}, RevokeCommand: []string{"/bin/true"}})
	if err := p.Revoke(context.Background(), tokens.RevokeRequest{}); err == nil {
		t.Error("Revoke of an empty token succeeded")
	}
}

func TestNew(t *testing.T) {
	if _, err := New(tokens.ProviderSpec{Command: []string{"/bin/true"}}, nil); err != nil {
		t.Errorf("New without a type: %v", err)
	}
	if _, err := New(tokens.ProviderSpec{Type: tokens.ProviderHTTP, URL: "https://example.com"}, nil); err == nil {
		t.Error("New accepted an http spec")
	}
	_, err := New(tokens.ProviderSpec{Type: tokens.ProviderExec}, nil)
	if !errors.Is(err, tokens.ErrInvalid) || !strings.HasPrefix(err.Error(), "exec provider: ") {
		t.Errorf("New without a command: %v", err)
	}
	_, err = New(tokens.ProviderSpec{Type: tokens.ProviderExec, Command: []string{"/bin/true"}, Env: []string{"NOT A NAME"}}, nil)
	if !errors.Is(err, tokens.ErrInvalid) {
		t.Errorf("New with a bad env name: %v", err)
	}
}

func TestAllowedEnv(t *testing.T) {
	got := allowedEnv([]string{"B", "A", "MISSING", "B", "TOKEND_TOKEN_METADATA"},
		[]string{"A=1", "B=2", "C=3", "junk", "A=4", "TOKEND_TOKEN_METADATA={}", "EMPTY="})
	if want := []string{"B=2", "A=4"}; !slices.Equal(got, want) {
		t.Errorf("allowedEnv = %q, want %q", got, want)
	}
}

func TestExcerpt(t *testing.T) {
	const secret = "SEKRET-0123456789"
	write := func(parts ...string) *tailBuffer {
		b := &tailBuffer{max: stderrTail}
		for _, p := range parts {
			_, _ = b.Write([]byte(p))
		}
		return b
	}
	for _, tc := range []struct {
		name string
		buf  *tailBuffer
		want string
	}{
		{"empty", write(), ""},
		{"trimmed", write("  oops\n"), "oops"},
		{"every occurrence", write(secret + " and " + secret + "\n"), "[redacted] and [redacted]"},
		{"cut at the end", write("writing " + secret[:9]), "writing [redacted]"},
		{"short overlap kept", write("exit code SEK"), "exit code SEK"},
		{"cut at the start", write(strings.Repeat("z", stderrTail-1), secret), "..." + strings.Repeat("z", maxStderrExcerpt-len("[redacted]")) + "[redacted]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.buf.excerpt(secret); got != tc.want {
				t.Errorf("excerpt = %q, want %q", got, tc.want)
			}
		})
	}

	// The kept tail starts inside a long token.
	long := "SEKRET-" + strings.Repeat("q", 2*stderrTail) + "-END"
	if got := write("prefix ", long, " failed").excerpt(long); got != "...[redacted] failed" {
		t.Errorf("excerpt = %q, want the token's kept end redacted", got)
	}

	// Long stderr is cut to its last KiB, on a rune boundary.
	got := write(strings.Repeat("é", 2000) + "end").excerpt("")
	if !strings.HasPrefix(got, "...") || !strings.HasSuffix(got, "end") || len(got) > maxStderrExcerpt+3 || !strings.Contains(got, "é") {
		t.Errorf("excerpt of long stderr: %d bytes, %q...", len(got), got[:10])
	}
	if strings.ContainsRune(got, '\uFFFD') {
		t.Error("excerpt cut a rune")
	}
}

// expires_in counts from before the command ran, not from when it ended: a
// slow command must not make its token look longer-lived than the issuer
// made it.
func TestExpiresInCountsFromStart(t *testing.T) {
	p := newProvider(t, tokens.ProviderSpec{Command: []string{script(t, printing(`{"token": "t", "expires_in": 60}`))}})
	calls := 0
	p.now = func() time.Time {
		calls++
		return testNow.Add(time.Duration(calls-1) * 5 * time.Second) // the command "took" 5 s
	}
	got, err := issue(t, p, tokens.IssueRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if want := testNow.Add(60 * time.Second); !got.ExpiresAt.Equal(want) {
		t.Fatalf("ExpiresAt = %s, want %s (60 s from the start)", got.ExpiresAt, want)
	}
}
