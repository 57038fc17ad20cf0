package oauth2

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokend/tokend/tokens"
)

// t0 is the injected clock of the tests that check ExpiresAt exactly.
var t0 = time.Date(2030, time.January, 2, 3, 4, 5, 0, time.UTC)

// Secrets with characters that the Basic credentials must form-encode.
const (
	secretA = "sEcReT-a:with/odd+chars&=%é"
	secretB = "sEcReT-b-0123456789abcdef"
	secretC = "sEcReT-c-fedcba9876543210"
)

var allSecrets = []string{secretA, secretB, secretC}

// grant is one request the endpoint received.
type grant struct {
	clientID string
	form     url.Values
}

// endpoint is a client-credentials token endpoint on loopback. It
// authenticates clients by HTTP Basic (form-encoded, RFC 6749 §2.3.1) and
// by default answers with a new token per call.
type endpoint struct {
	t       *testing.T
	srv     *httptest.Server
	clients map[string]string

	mu     sync.Mutex
	grants []grant
	issued []string // every access token it handed out

	// answer, when set, answers authenticated requests instead of the
	// default; n counts calls from 1.
	answer func(w http.ResponseWriter, r *http.Request, g grant, n int)
}

func newEndpoint(t *testing.T, answer func(w http.ResponseWriter, r *http.Request, g grant, n int)) *endpoint {
	t.Helper()
	e := &endpoint{
		t:       t,
		clients: map[string]string{"a": secretA, "b": secretB, "c": secretC},
		answer:  answer,
	}
	e.srv = httptest.NewServer(http.HandlerFunc(e.serve))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *endpoint) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/token" {
		http.Error(w, "not here", http.StatusNotFound)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_request", "error_description": "content type " + ct})
		return
	}
	if err := r.ParseForm(); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_request"})
		return
	}
	user, pass, ok := r.BasicAuth()
	id, err1 := url.QueryUnescape(user)
	secret, err2 := url.QueryUnescape(pass)
	if !ok || err1 != nil || err2 != nil || e.clients[id] == "" || e.clients[id] != secret {
		w.Header().Set("WWW-Authenticate", `Basic realm="token"`)
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "invalid_client", "error_description": "Client authentication failed"})
		return
	}
	g := grant{clientID: id, form: r.PostForm}
	e.mu.Lock()
	e.grants = append(e.grants, g)
	n := len(e.grants)
	e.mu.Unlock()
	if e.answer != nil {
		e.answer(w, r, g, n)
		return
	}
	body := map[string]any{
		"access_token": e.token(fmt.Sprintf("at-%s-%d", id, n)),
		"token_type":   "bearer",
		"expires_in":   3600,
	}
	if s := r.PostForm.Get("scope"); s != "" {
		body["scope"] = s
	}
	writeJSON(w, http.StatusOK, body)
}

// token records v as issued and returns it.
func (e *endpoint) token(v string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.issued = append(e.issued, v)
	return v
}

func (e *endpoint) calls() []grant {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.grants)
}

// assertClean fails if err, however it is printed, holds a secret or a
// token the endpoint issued.
func (e *endpoint) assertClean(err error) {
	e.t.Helper()
	e.mu.Lock()
	leaks := append(slices.Clone(allSecrets), e.issued...)
	e.mu.Unlock()
	for _, s := range allSecrets {
		leaks = append(leaks, url.QueryEscape(s))
	}
	for _, form := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
		for _, l := range leaks {
			if strings.Contains(form, l) {
				e.t.Errorf("error leaks %q: %s", l, form)
			}
		}
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (e *endpoint) spec(clients ...string) tokens.ProviderSpec {
	s := tokens.ProviderSpec{Type: tokens.ProviderOAuth2, TokenURL: e.srv.URL + "/token"}
	if len(clients) == 1 {
		s.ClientID, s.ClientSecret = clients[0], tokens.Secret(e.clients[clients[0]])
		return s
	}
	for _, id := range clients {
		s.Clients = append(s.Clients, tokens.OAuth2Client{ClientID: id, ClientSecret: tokens.Secret(e.clients[id])})
	}
	return s
}

func (e *endpoint) provider(spec tokens.ProviderSpec) *Provider {
	e.t.Helper()
	p, err := New(spec, e.srv.Client())
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	return p
}

func issue(t *testing.T, p *Provider, req tokens.IssueRequest) tokens.Issued {
	t.Helper()
	out, err := p.Issue(context.Background(), req)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	return out
}

func TestIssue(t *testing.T) {
	e := newEndpoint(t, nil)
	spec := e.spec("a")
	spec.Scopes = []string{"read", "write"}
	spec.Params = map[string]string{"audience": "https://api.example/", "resource": "urn:x"}
	p := e.provider(spec)
	p.now = func() time.Time { return t0 }

	out := issue(t, p, tokens.IssueRequest{Key: "rot-1"})

	if got := out.Value.Reveal(); got != "at-a-1" {
		t.Errorf("Value = %q, want at-a-1", got)
	}
	if want := t0.Add(time.Hour); !out.ExpiresAt.Equal(want) {
		t.Errorf("ExpiresAt = %v, want %v", out.ExpiresAt, want)
	}
	want := map[string]string{"client_id": "a", "token_type": "Bearer", "scope": "read write"}
	if !maps.Equal(out.Metadata, want) {
		t.Errorf("Metadata = %v, want %v", out.Metadata, want)
	}
	calls := e.calls()
	if len(calls) != 1 {
		t.Fatalf("endpoint saw %d grants, want 1", len(calls))
	}
	f := calls[0].form
	for k, v := range map[string]string{
		"grant_type": "client_credentials",
		"scope":      "read write",
		"audience":   "https://api.example/",
		"resource":   "urn:x",
	} {
		if got := f.Get(k); got != v {
			t.Errorf("form %s = %q, want %q", k, got, v)
		}
	}
	// The credentials travel in the Authorization header only.
	for _, k := range []string{"client_id", "client_secret"} {
		if f.Has(k) {
			t.Errorf("form carries %s", k)
		}
	}
	if len(f) != 4 {
		t.Errorf("form = %v, want exactly grant_type, scope, audience, resource", f)
	}
}

func TestNoScopeNoParams(t *testing.T) {
	e := newEndpoint(t, nil)
	out := issue(t, e.provider(e.spec("a")), tokens.IssueRequest{})
	if _, ok := out.Metadata["scope"]; ok {
		t.Errorf("Metadata = %v: scope set though the answer had none", out.Metadata)
	}
	if f := e.calls()[0].form; len(f) != 1 || f.Get("grant_type") != "client_credentials" {
		t.Errorf("form = %v, want only grant_type", f)
	}
}

func TestExpiresAt(t *testing.T) {
	for _, tc := range []struct {
		name string
		ct   string
		body string
		want time.Duration // 0: no expiry
	}{
		{"json number", "application/json", `{"access_token":"x","token_type":"bearer","expires_in":120}`, 120 * time.Second},
		{"json string", "application/json", `{"access_token":"x","expires_in":"90"}`, 90 * time.Second},
		{"form", "application/x-www-form-urlencoded", `access_token=x&token_type=bearer&expires_in=60`, 60 * time.Second},
		{"absent", "application/json", `{"access_token":"x"}`, 0},
		{"zero", "application/json", `{"access_token":"x","expires_in":0}`, 0},
		{"form absent", "application/x-www-form-urlencoded", `access_token=x`, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEndpoint(t, func(w http.ResponseWriter, _ *http.Request, _ grant, _ int) {
				w.Header().Set("Content-Type", tc.ct)
				_, _ = w.Write([]byte(tc.body))
			})
			p := e.provider(e.spec("b"))
			before := time.Now()
			out := issue(t, p, tokens.IssueRequest{})
			after := time.Now()
			if tc.want == 0 {
				if !out.ExpiresAt.IsZero() {
					t.Errorf("ExpiresAt = %v, want zero (never expires)", out.ExpiresAt)
				}
				return
			}
			if out.ExpiresAt.Before(before.Add(tc.want)) || out.ExpiresAt.After(after.Add(tc.want)) {
				t.Errorf("ExpiresAt = %v, want within [%v, %v]", out.ExpiresAt, before.Add(tc.want), after.Add(tc.want))
			}
			if out.Metadata["token_type"] != "Bearer" {
				t.Errorf("token_type = %q, want Bearer (the default)", out.Metadata["token_type"])
			}
		})
	}
}

func TestNegativeExpiresIn(t *testing.T) {
	e := newEndpoint(t, func(w http.ResponseWriter, _ *http.Request, _ grant, n int) {
		writeJSON(w, http.StatusOK, map[string]any{"access_token": negToken(n), "expires_in": -5})
	})
	_, err := e.provider(e.spec("a")).Issue(context.Background(), tokens.IssueRequest{})
	if err == nil || !strings.Contains(err.Error(), "expires_in") {
		t.Fatalf("Issue error = %v, want one about expires_in", err)
	}
	e.assertClean(err)
	if strings.Contains(err.Error(), negToken(1)) {
		t.Errorf("error leaks the token: %v", err)
	}
}

func negToken(n int) string { return fmt.Sprintf("neg-token-%d", n) }

func TestNoCaching(t *testing.T) {
	e := newEndpoint(t, nil)
	p := e.provider(e.spec("a"))
	first := issue(t, p, tokens.IssueRequest{Key: "k"})
	second := issue(t, p, tokens.IssueRequest{Key: "k"}) // same key: still a new grant
	if n := len(e.calls()); n != 2 {
		t.Fatalf("endpoint saw %d grants for two Issues, want 2", n)
	}
	if first.Value.Reveal() == second.Value.Reveal() {
		t.Errorf("two Issues returned the same token %q", first.Value.Reveal())
	}
}

func TestChoosesClient(t *testing.T) {
	e := newEndpoint(t, nil)
	p := e.provider(e.spec("a", "b", "c"))
	meta := func(ids ...string) []map[string]string {
		var out []map[string]string
		for _, id := range ids {
			out = append(out, map[string]string{"client_id": id, "token_type": "Bearer"})
		}
		return out
	}
	for _, tc := range []struct {
		name string
		req  tokens.IssueRequest
		want string
	}{
		{"replacing keeps its client", tokens.IssueRequest{Replacing: map[string]string{"client_id": "b"}, Active: meta("a", "b", "b", "b", "c")}, "b"},
		{"replacing an unknown client tops up", tokens.IssueRequest{Replacing: map[string]string{"client_id": "gone"}, Active: meta("gone", "a", "b")}, "c"},
		{"replacing without client_id tops up", tokens.IssueRequest{Replacing: map[string]string{"token_type": "Bearer"}, Active: meta("a", "c")}, "b"},
		{"top-up picks the least used", tokens.IssueRequest{Active: meta("a", "a", "b", "c", "c")}, "b"},
		{"top-up skips used ones", tokens.IssueRequest{Active: meta("a", "b")}, "c"},
		{"tie goes to configuration order", tokens.IssueRequest{Active: meta("c", "b", "a")}, "a"},
		{"tie among the least used", tokens.IssueRequest{Active: meta("a", "a", "c")}, "b"},
		{"unknown and missing client ids are ignored", tokens.IssueRequest{Active: append(meta("x", "x", "a"), map[string]string{}, nil)}, "b"},
		{"empty pool", tokens.IssueRequest{}, "a"},
		{"empty pool again: no alternation", tokens.IssueRequest{}, "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := issue(t, p, tc.req)
			if got := out.Metadata["client_id"]; got != tc.want {
				t.Errorf("issued by client %q, want %q", got, tc.want)
			}
			calls := e.calls()
			if got := calls[len(calls)-1].clientID; got != tc.want {
				t.Errorf("endpoint authenticated client %q, want %q", got, tc.want)
			}
			if !strings.HasPrefix(out.Value.Reveal(), "at-"+tc.want+"-") {
				t.Errorf("token %q is not client %s's", out.Value.Reveal(), tc.want)
			}
		})
	}
}

// Issues that overlap see each other: three concurrent top-ups from the
// same empty Active go to three different clients.
func TestConcurrentIssuesSpread(t *testing.T) {
	const n = 3
	arrived := make(chan struct{}, n)
	release := make(chan struct{})
	e := newEndpoint(t, func(w http.ResponseWriter, r *http.Request, g grant, k int) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"access_token": fmt.Sprintf("at-%s-%d", g.clientID, k), "expires_in": 60})
	})
	p := e.provider(e.spec("a", "b", "c"))

	type result struct {
		out tokens.Issued
		err error
	}
	results := make(chan result, n)
	for range n {
		go func() {
			out, err := p.Issue(context.Background(), tokens.IssueRequest{})
			results <- result{out, err}
		}()
	}
	for range n {
		<-arrived // every Issue is running before any answers
	}
	close(release)
	var got []string
	for range n {
		r := <-results
		if r.err != nil {
			t.Fatalf("Issue: %v", r.err)
		}
		got = append(got, r.out.Metadata["client_id"])
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("concurrent Issues used clients %v, want a, b, c once each", got)
	}
	// Once they are done, nothing is in flight: the choice is the request's.
	if out := issue(t, p, tokens.IssueRequest{}); out.Metadata["client_id"] != "a" {
		t.Errorf("after the overlap, empty pool issued by %q, want a", out.Metadata["client_id"])
	}
}

func TestErrorAnswer(t *testing.T) {
	e := newEndpoint(t, nil)
	spec := e.spec("a")
	spec.ClientSecret = tokens.Secret("wrong-" + secretA) // holds secretA: scrubbed too
	p := e.provider(spec)

	_, err := p.Issue(context.Background(), tokens.IssueRequest{})
	if err == nil {
		t.Fatal("Issue with a wrong secret succeeded")
	}
	var oe *Error
	if !errors.As(err, &oe) {
		t.Fatalf("error %T is not an *Error", err)
	}
	if oe.StatusCode != http.StatusUnauthorized || oe.Code != "invalid_client" || oe.Description != "Client authentication failed" || oe.ClientID != "a" {
		t.Errorf("Error = %+v", *oe)
	}
	for _, want := range []string{"401", "invalid_client", "Client authentication failed", `client "a"`, e.srv.URL + "/token"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "wrong-") {
		t.Errorf("error leaks the configured secret: %v", err)
	}
	e.assertClean(err)
}

// A hostile or careless server echoes the credentials in its error answer.
func TestErrorAnswerEchoingSecrets(t *testing.T) {
	e := newEndpoint(t, func(w http.ResponseWriter, r *http.Request, _ grant, _ int) {
		user, pass, _ := r.BasicAuth()
		raw, _ := url.QueryUnescape(pass)
		writeJSON(w, http.StatusBadRequest, map[string]any{
			"error":             "invalid_scope " + raw,
			"error_description": "you sent " + r.Header.Get("Authorization") + " = " + user + ":" + pass + " = " + raw,
			"error_uri":         "https://idp.example/help?secret=" + url.QueryEscape(raw),
		})
	})
	_, err := e.provider(e.spec("a")).Issue(context.Background(), tokens.IssueRequest{})
	if err == nil {
		t.Fatal("Issue succeeded")
	}
	if !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "[redacted]") {
		t.Errorf("error = %v", err)
	}
	e.assertClean(err)
}

func TestErrorBodyCapped(t *testing.T) {
	page := "<html>" + strings.Repeat("bad gateway ", 2000) + "</html>"
	e := newEndpoint(t, func(w http.ResponseWriter, _ *http.Request, _ grant, _ int) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = w.Write([]byte(page))
	})
	_, err := e.provider(e.spec("a")).Issue(context.Background(), tokens.IssueRequest{})
	if err == nil {
		t.Fatal("Issue succeeded")
	}
	var oe *Error
	if !errors.As(err, &oe) || oe.StatusCode != http.StatusBadGateway || oe.Code != "" {
		t.Errorf("error = %#v", err)
	}
	if !strings.Contains(err.Error(), "502") || !strings.Contains(err.Error(), "<html>bad gateway") {
		t.Errorf("error %q lacks the status or the body's start", err)
	}
	if len(err.Error()) > 1024 {
		t.Errorf("error is %d bytes long: the body is not capped", len(err.Error()))
	}
	e.assertClean(err)
}

func TestBadAnswers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		ct     string
		body   string
		want   string
	}{
		{"garbage", http.StatusOK, "application/json", "}{ not json at all", "cannot parse"},
		{"truncated", http.StatusOK, "application/json", `{"access_token":"at-trunc`, "cannot parse"},
		{"no access_token", http.StatusOK, "application/json", `{"token_type":"bearer","expires_in":3600}`, "access_token"},
		{"empty access_token", http.StatusOK, "application/json", `{"access_token":"","expires_in":3600}`, "access_token"},
		{"error in a 200", http.StatusOK, "application/json", `{"error":"invalid_scope","error_description":"scope admin is not allowed"}`, `error "invalid_scope": "scope admin is not allowed"`},
		{"form without a token", http.StatusOK, "application/x-www-form-urlencoded", "token_type=bearer", "access_token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEndpoint(t, func(w http.ResponseWriter, _ *http.Request, _ grant, _ int) {
				w.Header().Set("Content-Type", tc.ct)
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			})
			out, err := e.provider(e.spec("c")).Issue(context.Background(), tokens.IssueRequest{})
			if err == nil {
				t.Fatalf("Issue succeeded with %q", out.Value.Reveal())
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `client "c"`) {
				t.Errorf("error %q does not mention %q and the client", err, tc.want)
			}
			var oe *Error
			if !errors.As(err, &oe) {
				t.Errorf("error %T is not an *Error", err)
			}
			e.assertClean(err)
			if strings.Contains(err.Error(), "at-trunc") {
				t.Errorf("error quotes the partial token: %v", err)
			}
		})
	}
}

// slowEndpoint answers only when the client goes away or the test ends.
func slowEndpoint(t *testing.T) (*endpoint, chan struct{}) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 8)
	e := newEndpoint(t, func(w http.ResponseWriter, r *http.Request, _ grant, _ int) {
		arrived <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) }) // runs before the server closes
	return e, arrived
}

func TestTimeout(t *testing.T) {
	e, _ := slowEndpoint(t)
	spec := e.spec("a")
	spec.Timeout = tokens.Duration(200 * time.Millisecond)
	p := e.provider(spec)

	start := time.Now()
	_, err := p.Issue(context.Background(), tokens.IssueRequest{})
	elapsed := time.Since(start)
	if err == nil {
		t.Fatal("Issue against a silent endpoint succeeded")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
	}
	if elapsed < 200*time.Millisecond || elapsed > 400*time.Millisecond {
		t.Errorf("Issue returned after %v, want between the 200ms timeout and twice it", elapsed)
	}
	if !strings.Contains(err.Error(), "200ms") {
		t.Errorf("error %q does not name the timeout", err)
	}
	e.assertClean(err)
}

func TestCallerCancels(t *testing.T) {
	e, arrived := slowEndpoint(t)
	p := e.provider(e.spec("a"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := p.Issue(ctx, tokens.IssueRequest{})
		done <- err
	}()
	<-arrived
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error = %v, want one wrapping context.Canceled", err)
	}
	if !strings.Contains(err.Error(), "caller") {
		t.Errorf("error %q does not say the caller ended it", err)
	}
	e.assertClean(err)
}

func TestUnreachable(t *testing.T) {
	e := newEndpoint(t, nil)
	spec := e.spec("a")
	e.srv.Close()
	_, err := e.provider(spec).Issue(context.Background(), tokens.IssueRequest{})
	if err == nil {
		t.Fatal("Issue against a closed endpoint succeeded")
	}
	var oe *Error
	if !errors.As(err, &oe) || oe.StatusCode != 0 || errors.Unwrap(err) == nil {
		t.Errorf("error = %#v, want an *Error with its transport cause", err)
	}
	e.assertClean(err)
}

func TestDefaultHTTPClient(t *testing.T) {
	e := newEndpoint(t, nil)
	p, err := New(e.spec("b"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.client == http.DefaultClient || p.client.Transport == http.DefaultTransport || p.client.Transport == nil {
		t.Errorf("default client shares net/http's defaults: %+v", p.client)
	}
	if out := issue(t, p, tokens.IssueRequest{}); out.Metadata["client_id"] != "b" {
		t.Errorf("Metadata = %v", out.Metadata)
	}
}

func TestNotARevoker(t *testing.T) {
	e := newEndpoint(t, nil)
	var p tokens.Provider = e.provider(e.spec("a"))
	if _, ok := p.(tokens.Revoker); ok {
		t.Error("Provider implements tokens.Revoker; client-credentials tokens are not revoked")
	}
}

func TestNewRejects(t *testing.T) {
	e := newEndpoint(t, nil)
	base := e.spec("a")
	for _, tc := range []struct {
		name string
		mod  func(*tokens.ProviderSpec)
		want string
	}{
		{"other type", func(s *tokens.ProviderSpec) { s.Type = tokens.ProviderHTTP }, "not oauth2"},
		{"no token url", func(s *tokens.ProviderSpec) { s.TokenURL = "" }, "token_url"},
		{"no secret", func(s *tokens.ProviderSpec) { s.ClientSecret = nil }, "client_secret"},
		{"grant_type param", func(s *tokens.ProviderSpec) { s.Params = map[string]string{"grant_type": "password"} }, "grant_type"},
		{"scope param", func(s *tokens.ProviderSpec) { s.Params = map[string]string{"scope": "x"} }, "provider.scopes"},
		{"client_id param", func(s *tokens.ProviderSpec) { s.Params = map[string]string{"client_id": "x"} }, "client_id"},
		{"client_secret param", func(s *tokens.ProviderSpec) { s.Params = map[string]string{"client_secret": "x"} }, "client_secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := base
			tc.mod(&spec)
			_, err := New(spec, nil)
			if err == nil || !errors.Is(err, tokens.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New error = %v, want an invalid-request error about %s", err, tc.want)
			}
			if err != nil {
				e.assertClean(err)
			}
		})
	}
}
