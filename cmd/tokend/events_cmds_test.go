package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/api/client"
	"github.com/tokend/tokend/internal/testutil"
	"github.com/tokend/tokend/tokens"
)

// setupPool applies pool with two tokens, so that one can fail (one agent's
// report does not fail a pool's last eligible token), and returns their ids.
func setupPool(t *testing.T, addr, pool string) (string, string) {
	t.Helper()
	mustRun(t, `{"name":"`+pool+`"}`, "pool", "apply", "-", addr)
	one := strings.TrimSpace(mustRun(t, "v1-"+pool+"\n", "token", "add", pool, "--value-stdin", "--priority", "1", addr))
	two := strings.TrimSpace(mustRun(t, "v2-"+pool+"\n", "token", "add", pool, "--value-stdin", "--priority", "2", addr))
	return one, two
}

// tokenRow returns the cells of id's row in `token list`.
func tokenRow(t *testing.T, out, id string) []string {
	t.Helper()
	for line := range strings.SplitSeq(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == id {
			return f
		}
	}
	t.Fatalf("token list has no row for %s:\n%s", id, out)
	return nil
}

func TestTokenReset(t *testing.T) {
	a := startAgent(t)
	addr := "--addr=unix://" + a.SocketPath()
	one, _ := setupPool(t, addr, "rs")

	if out := mustRun(t, "", "token", "report", "rs", one, "unauthorized", addr); !strings.Contains(out, "now failed") {
		t.Fatalf("token report printed %q", out)
	}
	if got := tokenRow(t, mustRun(t, "", "token", "list", "rs", addr), one); got[3] != "failed" {
		t.Fatalf("token list row after the report: %q, want failed", got)
	}
	if out := mustRun(t, "", "token", "get", "rs", "--raw", addr); out != "v2-rs\n" {
		t.Fatalf("token get --raw with %s failed = %q, want the other token", one, out)
	}

	out := mustRun(t, "", "token", "reset", "rs", one, addr)
	var index uint64
	if _, err := fmt.Sscanf(out, "Token "+one+" reset to healthy (index %d).\n", &index); err != nil || index == 0 {
		t.Fatalf("token reset printed %q (%v)", out, err)
	}
	if got := tokenRow(t, mustRun(t, "", "token", "list", "rs", addr), one); got[3] != "healthy" {
		t.Fatalf("token list row after the reset: %q, want healthy", got)
	}
	if out := mustRun(t, "", "token", "get", "rs", "--raw", addr); out != "v1-rs\n" {
		t.Fatalf("token get --raw after the reset = %q, want %s again", out, one)
	}
	var info api.TokenInfo
	if err := json.Unmarshal([]byte(mustRun(t, "", "token", "reset", "rs", one, "--json", addr)), &info); err != nil || info.ID != one || info.Health.State != "healthy" || info.ModifyIndex <= index {
		t.Fatalf("token reset --json = %+v, %v", info, err)
	}

	mustFail(t, "", []string{"token", "reset", "rs", "tok_nope", addr}, "token_not_found")
	mustFail(t, "", []string{"token", "reset", "nope", one, addr}, "pool_not_found")
	mustFail(t, "", []string{"token", "reset", "rs", addr}, "POOL ID", "got 1")
}

// eventLines parses `events --json` output: one event per line.
func eventLines(t *testing.T, out string) []tokens.Event {
	t.Helper()
	var evs []tokens.Event
	for line := range strings.SplitSeq(strings.TrimSuffix(out, "\n"), "\n") {
		if line == "" {
			continue
		}
		var e tokens.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("events --json line %q: %v", line, err)
		}
		evs = append(evs, e)
	}
	return evs
}

// lineWith returns the line of out that holds every one of want, or "".
func lineWith(out string, want ...string) string {
	for line := range strings.SplitSeq(out, "\n") {
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(line, w)
		}
		if ok {
			return line
		}
	}
	return ""
}

func TestEvents(t *testing.T) {
	a := startAgent(t)
	addr := "--addr=http://" + a.HTTPAddr()
	// A new cluster's only event: its first leader chose the sealing key,
	// soon after it was elected.
	testutil.WaitFor(t, 5*time.Second, func() error {
		if out := mustRun(t, "", "events", addr); strings.Count(out, "\n") != 1 || lineWith(out, "keyring_use", "new secrets are sealed with key") == "" {
			return fmt.Errorf("events of a new cluster printed %q", out)
		}
		return nil
	})
	one, two := setupPool(t, addr, "ev")
	mustRun(t, "", "token", "report", "ev", one, "forbidden", addr)
	mustRun(t, "", "token", "reset", "ev", one, addr)
	mustRun(t, "", "token", "rm", "ev", two, addr)

	out := mustRun(t, "", "events", addr)
	for _, want := range [][]string{
		{"pool_applied", "  ev"},
		{"token_added", "ev/" + one, "-→healthy"},
		{"token_added", "ev/" + two},
		{"token_health", "ev/" + one, "healthy→failed", "forbidden", "(n1)"},
		{"token_reset", "ev/" + one, "failed→healthy", "reset by operator", "(n1)"},
		{"token_removed", "ev/" + two},
	} {
		line := lineWith(out, want...)
		if line == "" {
			t.Fatalf("events has no line with %q:\n%s", want, out)
		}
		if f := strings.Fields(line); len(f) < 4 || !strings.HasPrefix(f[1], "#") {
			t.Fatalf("events line %q: want time, #index, type, subject first", line)
		} else if _, err := time.Parse(time.RFC3339, f[0]); err != nil || !strings.HasSuffix(f[0], "Z") {
			t.Fatalf("events line %q: time %q is not RFC 3339 UTC", line, f[0])
		}
	}
	if n := strings.Count(out, "\n"); n != 7 {
		t.Fatalf("events printed %d lines, want 7 (the keyring's and 6):\n%s", n, out)
	}

	evs := eventLines(t, mustRun(t, "", "events", "--json", addr))
	if len(evs) != 7 || evs[4].Type != tokens.EventTokenHealth || evs[4].Token != one || evs[4].To != tokens.Failed {
		t.Fatalf("events --json = %+v", evs)
	}
	// --since leaves out what came before.
	out = mustRun(t, "", "events", "--since", fmt.Sprint(evs[4].Index), addr)
	if strings.Count(out, "\n") != 2 || lineWith(out, "token_reset") == "" || lineWith(out, "token_removed") == "" {
		t.Fatalf("events --since %d printed:\n%s", evs[4].Index, out)
	}
	last := evs[len(evs)-1].Index
	if out := mustRun(t, "", "events", "--since", fmt.Sprint(last), "--json", addr); out != "" {
		t.Fatalf("events --since %d --json printed %q, want nothing", last, out)
	}
	// --limit bounds the batch and says so on stderr.
	r := tokend(t, "", "events", "--limit", "2", addr)
	if r.err != nil || strings.Count(r.stdout, "\n") != 2 || lineWith(r.stdout, "keyring_use") == "" || lineWith(r.stdout, "pool_applied") == "" || !strings.Contains(r.stderr, "--limit 2") {
		t.Fatalf("events --limit 2: %v, stdout:\n%s\nstderr: %s", r.err, r.stdout, r.stderr)
	}
	mustFail(t, "", []string{"events", "--limit", "0", addr}, "--limit")
	mustFail(t, "", []string{"events", "extra", addr}, "no arguments")
}

// syncBuffer is a bytes.Buffer a command writes to while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startFollow runs `events --follow` with args until the returned stop is
// called; stop fails the test unless the command then ends cleanly.
func startFollow(t *testing.T, args ...string) (out *syncBuffer, stop func()) {
	t.Helper()
	out = &syncBuffer{}
	errOut := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := newRootCmd()
	cmd.SetArgs(append([]string{"events", "--follow"}, args...))
	cmd.SetIn(strings.NewReader(""))
	cmd.SetOut(out)
	cmd.SetErr(errOut)
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	stopped := false
	stop = func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("events --follow ended with %v after its context was cancelled (stderr %q)", err, errOut.String())
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("events --follow still runs 10s after its context was cancelled")
		}
	}
	t.Cleanup(stop)
	return out, stop
}

func waitForOutput(t *testing.T, out *syncBuffer, what string, want ...string) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, func() error {
		if s := out.String(); lineWith(s, want...) == "" {
			return fmt.Errorf("events --follow printed no %s line with %q:\n%s", what, want, s)
		}
		return nil
	})
}

func TestEventsFollow(t *testing.T) {
	a := startAgent(t)
	addr := "--addr=unix://" + a.SocketPath()
	one, _ := setupPool(t, addr, "fo")

	text, stopText := startFollow(t, addr)
	jsonOut, stopJSON := startFollow(t, addr, "--json", "--limit", "1")
	// What happened before it started is printed first.
	waitForOutput(t, text, "past", "token_added", "fo/"+one)
	waitForOutput(t, jsonOut, "past", `"type":"token_added"`, one)

	// Then what happens while it waits.
	mustRun(t, "", "token", "report", "fo", one, "unauthorized", addr)
	waitForOutput(t, text, "new", "token_health", "fo/"+one, "healthy→failed", "unauthorized", "(n1)")
	mustRun(t, "", "token", "reset", "fo", one, addr)
	waitForOutput(t, text, "new", "token_reset", "fo/"+one, "failed→healthy")
	waitForOutput(t, jsonOut, "new", `"type":"token_reset"`, one)

	stopText()
	stopJSON()
	// Every event exactly once, in order, however the batches fell.
	evs := eventLines(t, jsonOut.String())
	want := eventLines(t, mustRun(t, "", "events", "--json", addr))
	if len(evs) != len(want) {
		t.Fatalf("events --follow --json --limit 1 printed %d events, want %d:\n%s", len(evs), len(want), jsonOut.String())
	}
	for i := range want {
		if evs[i] != want[i] {
			t.Fatalf("events --follow --json event %d = %+v, want %+v", i, evs[i], want[i])
		}
	}
	if n := strings.Count(text.String(), "\n"); n != len(want) {
		t.Fatalf("events --follow printed %d lines, want %d:\n%s", n, len(want), text.String())
	}
}

func TestPoolHealthPolicy(t *testing.T) {
	a := startAgent(t)
	addr := "--addr=unix://" + a.SocketPath()
	file := writeFile(t, "pool.json", `{
  "name": "hp",
  "health": {
    "window": 10,
    "degraded_failures": 3,
    "degraded_ratio": 0.25,
    "outcome_ttl": "2m",
    "default_cooldown": "30s",
    "report_quorum": 2,
    "report_window": "90s"
  }
}`)
	mustRun(t, "", "pool", "apply", file, addr)
	var p api.Pool
	if err := json.Unmarshal([]byte(mustRun(t, "", "pool", "show", "hp", "--json", addr)), &p); err != nil {
		t.Fatal(err)
	}
	want := tokens.HealthPolicy{
		Window: 10, DegradedFailures: 3, DegradedRatio: 0.25,
		OutcomeTTL: tokens.Duration(2 * time.Minute), DefaultCooldown: tokens.Duration(30 * time.Second),
		ReportQuorum: 2, ReportWindow: tokens.Duration(90 * time.Second),
	}
	if p.Health != want {
		t.Fatalf("pool show --json health = %+v, want %+v", p.Health, want)
	}
	out := mustRun(t, "", "pool", "show", "hp", addr)
	if line := lineWith(out, "Health:"); !strings.Contains(line, "window=10 degraded_failures=3 degraded_ratio=0.25 outcome_ttl=2m default_cooldown=30s report_quorum=2 report_window=1m30s") {
		t.Fatalf("pool show health line %q:\n%s", line, out)
	}

	// Fields left out take their defaults, which pool show prints.
	mustRun(t, `{"name":"hp","health":{"report_quorum":3}}`, "pool", "apply", "-", addr)
	if err := json.Unmarshal([]byte(mustRun(t, "", "pool", "show", "hp", "--json", addr)), &p); err != nil {
		t.Fatal(err)
	}
	if want := (tokens.HealthPolicy{ReportQuorum: 3}).WithDefaults(); p.Health != want {
		t.Fatalf("pool show --json health = %+v, want %+v", p.Health, want)
	}
	out = mustRun(t, "", "pool", "show", "hp", addr)
	if line := lineWith(out, "Health:"); !strings.Contains(line, "window=20 ") || !strings.Contains(line, "report_quorum=3 report_window=5m") {
		t.Fatalf("pool show health line %q:\n%s", line, out)
	}

	for _, tc := range []struct {
		file string
		want []string
	}{
		{`{"name":"hp","health":{"outcome_ttl":5}}`, []string{`field "health.outcome_ttl"`, "duration"}},
		{`{"name":"hp","health":{"report_window":"soon"}}`, []string{`field "health.report_window"`, "soon"}},
		{`{"name":"hp","health":{"window":"ten"}}`, []string{`"health.window" must be a number`}},
		{`{"name":"hp","health":{"windw":10}}`, []string{`unknown field "windw"`}},
		{`{"name":"hp","health":[]}`, []string{`"health" must be an object`}},
		// The agent's own checks.
		{`{"name":"hp","health":{"window":1000}}`, []string{"invalid_request", "health.window"}},
	} {
		mustFail(t, tc.file, []string{"pool", "apply", "-", addr}, tc.want...)
	}
}

func TestReportLatencyAndWait(t *testing.T) {
	a := startAgent(t)
	addr := "--addr=http://" + a.HTTPAddr()
	one, two := setupPool(t, addr, "lat")
	out := mustRun(t, "", "token", "list", "lat", addr)
	for _, h := range []string{"OK", "ERR", "LATENCY"} {
		if !strings.Contains(lineWith(out, "ID", "HEALTH"), h) {
			t.Fatalf("token list has no %s column:\n%s", h, out)
		}
	}
	if got := tokenRow(t, out, one); got[4] != "0" || got[5] != "0" || got[6] != "-" {
		t.Fatalf("token list row before any report: %q", got)
	}

	mustRun(t, "", "token", "report", "lat", one, "ok", "--latency-ms", "250", addr)
	mustRun(t, "", "token", "report", "lat", one, "ok", "--latency-ms", "123", addr)
	mustRun(t, "", "token", "report", "lat", one, "error", addr)
	mustRun(t, "", "token", "report", "lat", one, "timeout", addr)
	out = mustRun(t, "", "token", "list", "lat", addr)
	if got := tokenRow(t, out, one); got[4] != "2" || got[5] != "2" || got[6] != "123ms" {
		t.Fatalf("token list row after 2 ok and 2 failed reports: %q, want OK 2, ERR 2, LATENCY 123ms\n%s", got, out)
	}
	var infos []api.TokenInfo
	if err := json.Unmarshal([]byte(mustRun(t, "", "token", "list", "lat", "--json", addr)), &infos); err != nil || infos[0].Reports == nil || infos[0].Reports.LastLatencyMS != 123 {
		t.Fatalf("token list --json = %+v, %v", infos, err)
	}
	mustFail(t, "", []string{"token", "report", "lat", one, "error", "--latency-ms", "5", addr}, "--latency-ms only applies to outcome ok")
	mustFail(t, "", []string{"token", "report", "lat", one, "ok", "--latency-ms", "-1", addr}, "invalid_request", "latency_ms")

	// token get --wait outlasts a short cooldown of every token.
	for _, id := range []string{one, two} {
		mustRun(t, "", "token", "report", "lat", id, "rate_limited", "--retry-after", "1", addr)
	}
	mustFail(t, "", []string{"token", "get", "lat", addr}, "all_cooling_down")
	if out := mustRun(t, "", "token", "get", "lat", "--raw", "--wait", "10s", addr); out != "v1-lat\n" {
		t.Fatalf("token get --raw --wait 10s = %q, want the first token once its cooldown ends", out)
	}
	mustFail(t, "", []string{"token", "get", "lat", "--wait", "2m", addr}, "--wait")
	mustFail(t, "", []string{"token", "get", "lat", "--wait", "soon", addr}, "--wait")
}

// TestFollowPaging: `events --follow` prints every event once, in order,
// over pages of any limit, against a server that keeps the API's paging
// contract: a page ends on a Raft entry's last event, and index says where
// to resume.
func TestFollowPaging(t *testing.T) {
	at := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	var all []tokens.Event
	for _, e := range []struct {
		index uint64
		token string
	}{{3, "a"}, {5, "b"}, {5, "c"}, {5, "d"}, {6, "e"}, {9, "f"}} {
		all = append(all, tokens.Event{Index: e.index, At: at, Type: tokens.EventTokenHealth, Pool: "p", Token: e.token})
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		since, _ := strconv.ParseUint(q.Get("since"), 10, 64)
		limit, _ := strconv.Atoi(q.Get("limit"))
		var out api.Events
		out.Events = []tokens.Event{}
		for _, e := range all {
			n := len(out.Events)
			if e.Index > since && (n < limit || out.Events[n-1].Index == e.Index) {
				out.Events = append(out.Events, e)
			}
		}
		if len(out.Events) == 0 {
			<-r.Context().Done() // nothing new: wait until the client gives up
			return
		}
		out.Index = out.Events[len(out.Events)-1].Index
		out.Truncated = since == 0
		json.NewEncoder(w).Encode(out)
	}))
	defer srv.Close()
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int{1, 2, 100} {
		out, errOut := &syncBuffer{}, &syncBuffer{}
		p := &eventPrinter{out: out, errOut: errOut, json: true}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- followEvents(ctx, c, p, 0, limit) }()
		testutil.WaitFor(t, 10*time.Second, func() error {
			if n := strings.Count(out.String(), "\n"); n < len(all) {
				return fmt.Errorf("limit %d: %d of %d events printed:\n%s", limit, n, len(all), out.String())
			}
			return nil
		})
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("limit %d: followEvents = %v after cancel", limit, err)
		}
		got := eventLines(t, out.String())
		if len(got) != len(all) {
			t.Fatalf("limit %d: printed %+v, want %+v", limit, got, all)
		}
		for i := range all {
			if got[i] != all[i] {
				t.Fatalf("limit %d: event %d = %+v, want %+v", limit, i, got[i], all[i])
			}
		}
		if n := strings.Count(errOut.String(), "events were dropped"); n != 1 {
			t.Fatalf("limit %d: stderr %q, want the dropped note once", limit, errOut.String())
		}
	}
}

// TestEventsFollowInterrupt runs the real main: SIGINT ends `events
// --follow` with status 0.
func TestEventsFollowInterrupt(t *testing.T) {
	a := startAgent(t)
	addr := "--addr=unix://" + a.SocketPath()
	mustRun(t, `{"name":"sig"}`, "pool", "apply", "-", addr)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "events", "--follow", addr)
	cmd.Env = append(os.Environ(), envRunMain+"=1")
	out, errOut := &syncBuffer{}, &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	waitForOutput(t, out, "past", "pool_applied", "sig")
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("events --follow after SIGINT: %v (stderr %q)", err, errOut.String())
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("events --follow still runs 10s after SIGINT")
	}
	if errOut.String() != "" {
		t.Fatalf("events --follow wrote to stderr: %q", errOut.String())
	}
}
