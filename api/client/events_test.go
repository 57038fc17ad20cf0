package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/tokens"
)

func agentClient(t *testing.T) *Client {
	t.Helper()
	a := startAgent(t)
	c, err := New("unix://" + a.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantErrCode(t *testing.T, err error, status int, code string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != status || e.Code != code {
		t.Fatalf("error = %v, want %d %s", err, status, code)
	}
}

// TestResetToken fails a token and brings it back. It adds two tokens: one
// agent's report does not fail a pool's last eligible token.
func TestResetToken(t *testing.T) {
	c, ctx := agentClient(t), testCtx(t)
	if _, err := c.ApplyPool(ctx, "p", api.PoolRequest{}); err != nil {
		t.Fatal(err)
	}
	one, err := c.AddToken(ctx, "p", api.TokenRequest{Value: "v1", Priority: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddToken(ctx, "p", api.TokenRequest{Value: "v2", Priority: 2}); err != nil {
		t.Fatal(err)
	}
	rep, err := c.Report(ctx, "p", one.ID, api.ReportRequest{Outcome: "unauthorized"})
	if err != nil || !rep.Committed || rep.Health.State != "failed" {
		t.Fatalf("Report unauthorized = %+v, %v; want failed and committed", rep, err)
	}
	if tok, _, err := c.FetchToken(ctx, "p", FetchOptions{}); err != nil || tok.ID == one.ID {
		t.Fatalf("FetchToken after failing %s = %+v, %v; want the other token", one.ID, tok, err)
	}

	info, err := c.ResetToken(ctx, "p", one.ID)
	if err != nil {
		t.Fatal(err)
	}
	if info.ID != one.ID || info.Health.State != "healthy" || info.Health.Reason == "" || info.ModifyIndex <= rep.Index {
		t.Fatalf("ResetToken = %+v; want %s healthy, with a reason, modified after index %d", info, one.ID, rep.Index)
	}
	if tok, _, err := c.FetchToken(ctx, "p", FetchOptions{}); err != nil || tok.ID != one.ID {
		t.Fatalf("FetchToken after the reset = %+v, %v; want %s (priority 1) again", tok, err, one.ID)
	}
	// Resetting a healthy token is harmless.
	if info, err := c.ResetToken(ctx, "p", one.ID); err != nil || info.Health.State != "healthy" {
		t.Fatalf("ResetToken of a healthy token = %+v, %v", info, err)
	}

	_, err = c.ResetToken(ctx, "p", "tok_nope")
	wantErrCode(t, err, http.StatusNotFound, "token_not_found")
	_, err = c.ResetToken(ctx, "nope", one.ID)
	wantErrCode(t, err, http.StatusNotFound, "pool_not_found")
	if _, err := c.ResetToken(ctx, "p", ".."); err == nil {
		t.Fatal("ResetToken(p, ..) succeeded")
	}
}

func findEvent(evs []tokens.Event, typ tokens.EventType, pool, token string) (tokens.Event, bool) {
	for _, e := range evs {
		if e.Type == typ && e.Pool == pool && (token == "" || e.Token == token) {
			return e, true
		}
	}
	return tokens.Event{}, false
}

func TestEvents(t *testing.T) {
	c, ctx := agentClient(t), testCtx(t)
	p, err := c.ApplyPool(ctx, "p", api.PoolRequest{})
	if err != nil {
		t.Fatal(err)
	}
	one, err := c.AddToken(ctx, "p", api.TokenRequest{Value: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddToken(ctx, "p", api.TokenRequest{Value: "v2"}); err != nil {
		t.Fatal(err)
	}
	rep, err := c.Report(ctx, "p", one.ID, api.ReportRequest{Outcome: "forbidden"})
	if err != nil || !rep.Committed {
		t.Fatalf("Report = %+v, %v", rep, err)
	}

	all, err := c.Events(ctx, EventsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := findEvent(all.Events, tokens.EventPoolApplied, "p", ""); !ok || e.Index != p.ModifyIndex {
		t.Fatalf("events %+v: want pool_applied at index %d", all.Events, p.ModifyIndex)
	}
	if _, ok := findEvent(all.Events, tokens.EventTokenAdded, "p", one.ID); !ok {
		t.Fatalf("events %+v: want token_added of %s", all.Events, one.ID)
	}
	e, ok := findEvent(all.Events, tokens.EventTokenHealth, "p", one.ID)
	if !ok || e.From != tokens.Healthy || e.To != tokens.Failed || e.Reason != "forbidden" || e.Reporter == "" || e.At.IsZero() {
		t.Fatalf("events %+v: want token_health of %s healthy→failed, forbidden, with a reporter", all.Events, one.ID)
	}
	if all.Index < rep.Index || all.Truncated {
		t.Fatalf("Events index %d truncated %v; want index >= %d, not truncated", all.Index, all.Truncated, rep.Index)
	}

	// since leaves out what came before; limit bounds the batch.
	later := 0
	for _, e := range all.Events {
		if e.Index > p.ModifyIndex {
			later++
		}
	}
	after, err := c.Events(ctx, EventsOptions{Since: p.ModifyIndex})
	if err != nil || len(after.Events) != later || after.Events[0].Index <= p.ModifyIndex {
		t.Fatalf("Events since %d = %+v, %v; want the %d after it", p.ModifyIndex, after, err, later)
	}
	if first, err := c.Events(ctx, EventsOptions{Limit: 1}); err != nil || len(first.Events) != 1 || first.Events[0] != all.Events[0] {
		t.Fatalf("Events limit 1 = %+v, %v; want %+v", first, err, all.Events[0])
	}

	// Nothing new: an answer without events once the wait has passed.
	start := time.Now()
	none, err := c.Events(ctx, EventsOptions{Since: all.Index, Wait: 200 * time.Millisecond})
	if err != nil || len(none.Events) != 0 || none.Index < all.Index {
		t.Fatalf("Events since %d = %+v, %v; want no events", all.Index, none, err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("Events with wait 200ms answered after %s, want it to wait", d)
	}

	// A blocking wait answers as soon as a write happens. The write starts
	// once the request is on the wire; if the agent had not begun waiting
	// by then, it answers at once with the event, which is fine too.
	type answer struct {
		evs api.Events
		err error
		at  time.Time
	}
	sent := make(chan struct{})
	var once sync.Once
	got := make(chan answer, 1)
	go func() {
		wrote := func(httptrace.WroteRequestInfo) { once.Do(func() { close(sent) }) }
		tctx := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteRequest: wrote})
		evs, err := c.Events(tctx, EventsOptions{Since: none.Index, Wait: 10 * time.Second})
		got <- answer{evs, err, time.Now()}
	}()
	select {
	case <-sent:
	case a := <-got:
		t.Fatalf("Events answered before the request was sent: %+v, %v", a.evs, a.err)
	}
	start = time.Now()
	three, err := c.AddToken(ctx, "p", api.TokenRequest{Value: "v3"})
	if err != nil {
		t.Fatal(err)
	}
	a := <-got
	if a.err != nil {
		t.Fatal(a.err)
	}
	if d := a.at.Sub(start); d > 5*time.Second {
		t.Fatalf("Events with wait 10s answered %s after the write; want at once", d)
	}
	if e, ok := findEvent(a.evs.Events, tokens.EventTokenAdded, "p", three.ID); !ok || e.Index != three.CreateIndex || a.evs.Index < e.Index {
		t.Fatalf("Events after the write = %+v; want token_added of %s at index %d", a.evs, three.ID, three.CreateIndex)
	}
	// The reset shows up as an event too.
	if _, err := c.ResetToken(ctx, "p", one.ID); err != nil {
		t.Fatal(err)
	}
	reset, err := c.Events(ctx, EventsOptions{Since: a.evs.Index, Wait: 10 * time.Second})
	if e, ok := findEvent(reset.Events, tokens.EventTokenReset, "p", one.ID); err != nil || !ok || e.From != tokens.Failed || e.To != tokens.Healthy {
		t.Fatalf("Events after a reset = %+v, %v; want token_reset of %s failed→healthy", reset, err, one.ID)
	}

	// A cancelled context ends a wait.
	cctx, cancel := context.WithCancel(ctx)
	go func() {
		_, err := c.Events(cctx, EventsOptions{Since: reset.Index, Wait: time.Minute})
		got <- answer{err: err}
	}()
	cancel()
	if a := <-got; !errors.Is(a.err, context.Canceled) {
		t.Fatalf("Events with a cancelled context = %v, want context.Canceled", a.err)
	}

	_, err = c.Events(ctx, EventsOptions{Wait: time.Hour})
	wantErrCode(t, err, http.StatusBadRequest, "invalid_request")
	_, err = c.Events(ctx, EventsOptions{Limit: api.MaxEventsLimit + 1})
	wantErrCode(t, err, http.StatusBadRequest, "invalid_request")
}

// TestFetchWait: a fetch with Wait outlasts the cooldown of the only token.
func TestFetchWait(t *testing.T) {
	c, ctx := agentClient(t), testCtx(t)
	if _, err := c.ApplyPool(ctx, "p", api.PoolRequest{}); err != nil {
		t.Fatal(err)
	}
	tok, err := c.AddToken(ctx, "p", api.TokenRequest{Value: "v"})
	if err != nil {
		t.Fatal(err)
	}
	secs := 1
	if rep, err := c.Report(ctx, "p", tok.ID, api.ReportRequest{Outcome: "rate_limited", RetryAfterSeconds: &secs}); err != nil || rep.Health.State != "cooldown" {
		t.Fatalf("Report rate_limited = %+v, %v", rep, err)
	}
	_, _, err = c.FetchToken(ctx, "p", FetchOptions{})
	wantErrCode(t, err, http.StatusServiceUnavailable, "all_cooling_down")
	got, _, err := c.FetchToken(ctx, "p", FetchOptions{Wait: 10 * time.Second})
	if err != nil || got.ID != tok.ID {
		t.Fatalf("FetchToken with wait = %+v, %v; want %s once its cooldown ends", got, err, tok.ID)
	}
	if raw, _, err := c.FetchRaw(ctx, "p", FetchOptions{Wait: time.Second}); err != nil || raw.Value != "v" {
		t.Fatalf("FetchRaw with wait = %+v, %v", raw, err)
	}
	_, _, err = c.FetchToken(ctx, "p", FetchOptions{Wait: time.Hour})
	wantErrCode(t, err, http.StatusBadRequest, "invalid_request")
}

func TestMetrics(t *testing.T) {
	c, ctx := agentClient(t), testCtx(t)
	if _, err := c.ApplyPool(ctx, "p", api.PoolRequest{}); err != nil {
		t.Fatal(err)
	}
	_, _, err := c.FetchToken(ctx, "p", FetchOptions{})
	wantErrCode(t, err, http.StatusServiceUnavailable, "pool_empty")
	text, err := c.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# TYPE tokend_fetches_total counter", `tokend_fetches_total{pool="p",result="pool_empty"} 1`} {
		if !strings.Contains(text, want) {
			t.Fatalf("metrics do not hold %q:\n%s", want, text)
		}
	}
}

func TestNewRequestShapes(t *testing.T) {
	type seen struct{ method, path, query, accept string }
	got := make(chan seen, 1)
	c := fakeAgent(t, func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Get("Accept")}
		w.Header().Set(api.HeaderTokenID, "tok1")
		w.Write([]byte(`{"id":"tok1"}`))
	})
	ctx := context.Background()
	check := func(err error, want seen) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if s := <-got; s != want {
			t.Fatalf("request = %+v, want %+v", s, want)
		}
	}
	_, err := c.ResetToken(ctx, "p", "t 1")
	check(err, seen{"POST", "/v1/pools/p/tokens/t%201/reset", "", "application/json"})
	_, err = c.Events(ctx, EventsOptions{})
	check(err, seen{"GET", "/v1/events", "", "application/json"})
	_, err = c.Events(ctx, EventsOptions{Since: 7, Wait: 90 * time.Second, Limit: 5})
	check(err, seen{"GET", "/v1/events", "limit=5&since=7&wait=1m30s", "application/json"})
	_, _, err = c.FetchToken(ctx, "p", FetchOptions{Wait: 2500 * time.Millisecond})
	check(err, seen{"GET", "/v1/pools/p/token", "wait=2.5s", "application/json"})
	_, _, err = c.FetchRaw(ctx, "p", FetchOptions{Exclude: []string{"a"}, Wait: time.Second})
	check(err, seen{"GET", "/v1/pools/p/token", "exclude=a&format=raw&wait=1s", "application/json"})
	text, err := c.Metrics(ctx)
	check(err, seen{"GET", "/v1/metrics", "", "text/plain"})
	if text != `{"id":"tok1"}` {
		t.Fatalf("Metrics = %q, want the body as it came", text)
	}
}
