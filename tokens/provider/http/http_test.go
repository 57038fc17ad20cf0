package httpprovider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokend/tokend/tokens"
)

const (
	headerSecret = "hdr-s3cr3t-0f9a8b7c6d"
	bearerSecret = "bearer-cred-1a2b3c4d5e"
	tokenValue   = "tok-VALUE-5e4d3c2b1a"
	rotationKey  = "rotation-42"
)

var fixedNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// serve starts a real local server for the test.
func serve(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

// jsonAnswer answers every request with status and body.
func jsonAnswer(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// spec is an http provider spec for url with a secret-bearing header.
func spec(url string) tokens.ProviderSpec {
	return tokens.ProviderSpec{
		Type: tokens.ProviderHTTP,
		URL:  url,
		Headers: map[string]tokens.Secret{
			"X-Api-Key":     tokens.Secret(headerSecret),
			"Authorization": tokens.Secret("Bearer " + bearerSecret),
		},
	}
}

func newProvider(t *testing.T, s tokens.ProviderSpec) *Provider {
	t.Helper()
	p, err := New(s, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	p.now = func() time.Time { return fixedNow }
	return p
}

func issue(p *Provider) (tokens.Issued, error) {
	return p.Issue(context.Background(), tokens.IssueRequest{Key: rotationKey})
}

// assertClean fails if err, however formatted, shows a secret.
func assertClean(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	for _, text := range []string{err.Error(), fmt.Sprintf("%v", err), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
		for _, secret := range []string{headerSecret, bearerSecret, tokenValue} {
			if strings.Contains(text, secret) {
				t.Errorf("error shows a secret %q: %s", secret, text)
			}
		}
	}
}

// wantErr checks err is a clean provider error holding every want.
func wantErr(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want an error holding %q, got none", want)
	}
	assertClean(t, err)
	msg := err.Error()
	if !strings.HasPrefix(msg, "http provider: ") {
		t.Errorf("error %q lacks the prefix %q", msg, "http provider: ")
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q does not hold %q", msg, w)
		}
	}
}

func hostOf(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

func TestIssueDefaultFields(t *testing.T) {
	var method, contentType string
	var body []byte
	s := serve(t, func(w http.ResponseWriter, r *http.Request) {
		method, contentType = r.Method, r.Header.Get("Content-Type")
		body, _ = io.ReadAll(r.Body)
		jsonAnswer(200, `{"token":"`+tokenValue+`","expires_in":3600,"token_type":"Bearer","other":1}`)(w, r)
	})
	got, err := issue(newProvider(t, spec(s.URL)))
	if err != nil {
		t.Fatal(err)
	}
	if got.Value.Reveal() != tokenValue {
		t.Errorf("value = %q, want %q", got.Value.Reveal(), tokenValue)
	}
	if want := fixedNow.Add(time.Hour); !got.ExpiresAt.Equal(want) {
		t.Errorf("expires at %s, want %s", got.ExpiresAt, want)
	}
	want := map[string]string{"issuer": hostOf(t, s.URL), "token_type": "Bearer"}
	if fmt.Sprint(got.Metadata) != fmt.Sprint(want) {
		t.Errorf("metadata = %v, want %v", got.Metadata, want)
	}
	if method != http.MethodPost {
		t.Errorf("method = %s, want POST by default", method)
	}
	if contentType != "" || len(body) != 0 {
		t.Errorf("no body configured, yet the request had content type %q and body %q", contentType, body)
	}
}

func TestIssueWithoutExpiry(t *testing.T) {
	s := serve(t, jsonAnswer(201, `{"token":"`+tokenValue+`","token_type":7}`))
	got, err := issue(newProvider(t, spec(s.URL)))
	if err != nil {
		t.Fatal(err)
	}
	if !got.ExpiresAt.IsZero() {
		t.Errorf("expires at %s; the default expires_in field is missing, so the token should not expire", got.ExpiresAt)
	}
	if len(got.Metadata) != 1 || got.Metadata["issuer"] != hostOf(t, s.URL) {
		t.Errorf("metadata = %v, want only the issuer (token_type is not a string)", got.Metadata)
	}
	if v, ok := got.Metadata["token_type"]; ok {
		t.Errorf("token_type %q recorded from a number", v)
	}
}

func TestIssueNestedFieldsAndExpiresAt(t *testing.T) {
	s := serve(t, jsonAnswer(200, `{"data":{"attributes":{"token":"`+tokenValue+`","expires":"2025-06-01T14:30:00+02:00"}},"expires_in":5}`))
	sp := spec(s.URL)
	sp.TokenField = "data.attributes.token"
	sp.ExpiresAtField = "data.attributes.expires"
	got, err := issue(newProvider(t, sp))
	if err != nil {
		t.Fatal(err)
	}
	if got.Value.Reveal() != tokenValue {
		t.Errorf("value = %q", got.Value.Reveal())
	}
	if want := time.Date(2025, 6, 1, 12, 30, 0, 0, time.UTC); !got.ExpiresAt.Equal(want) {
		t.Errorf("expires at %s, want %s (expires_at wins; expires_in is ignored)", got.ExpiresAt, want)
	}
}

func TestIssueExpiresInField(t *testing.T) {
	for _, tc := range []struct {
		name, ttl string
		want      time.Duration
	}{
		{"number", `120`, 2 * time.Minute},
		{"fraction", `1.5e2`, 150 * time.Second},
		{"numeric string", `"90"`, 90 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := serve(t, jsonAnswer(200, `{"token":"`+tokenValue+`","meta":{"ttl":`+tc.ttl+`}}`))
			sp := spec(s.URL)
			sp.ExpiresInField = "meta.ttl"
			got, err := issue(newProvider(t, sp))
			if err != nil {
				t.Fatal(err)
			}
			if want := fixedNow.Add(tc.want); !got.ExpiresAt.Equal(want) {
				t.Errorf("expires at %s, want %s", got.ExpiresAt, want)
			}
		})
	}
}

func TestIssueSendsHeadersAndIdempotencyKey(t *testing.T) {
	got := make(chan http.Header, 1)
	s := serve(t, func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
		jsonAnswer(200, `{"token":"`+tokenValue+`"}`)(w, r)
	})
	sp := spec(s.URL)
	sp.Headers["x-lower-case"] = tokens.Secret("lower-value-123")
	if _, err := issue(newProvider(t, sp)); err != nil {
		t.Fatal(err)
	}
	h := <-got
	for name, want := range map[string]string{
		"X-Api-Key":       headerSecret,
		"Authorization":   "Bearer " + bearerSecret,
		"X-Lower-Case":    "lower-value-123",
		"Idempotency-Key": rotationKey,
		"Accept":          "application/json",
	} {
		if v := h.Get(name); v != want {
			t.Errorf("header %s = %q, want %q", name, v, want)
		}
	}
}

func TestIssueSendsBodyWithContentType(t *testing.T) {
	type seen struct {
		method, contentType, body string
	}
	got := make(chan seen, 1)
	s := serve(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.Header.Get("Content-Type"), string(b)}
		jsonAnswer(200, `{"token":"`+tokenValue+`"}`)(w, r)
	})
	sp := spec(s.URL)
	sp.Method = http.MethodPut
	sp.Body = `{"scopes":["read"],"ttl":3600}`
	if _, err := issue(newProvider(t, sp)); err != nil {
		t.Fatal(err)
	}
	want := seen{http.MethodPut, "application/json", sp.Body}
	if g := <-got; g != want {
		t.Errorf("request = %+v, want %+v", g, want)
	}
}

func TestIssueConfiguredContentTypeWins(t *testing.T) {
	got := make(chan string, 1)
	s := serve(t, func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Content-Type")
		jsonAnswer(200, `{"token":"`+tokenValue+`"}`)(w, r)
	})
	sp := spec(s.URL)
	sp.Body = "grant=x"
	sp.Headers["Content-Type"] = tokens.Secret("application/x-www-form-urlencoded")
	if _, err := issue(newProvider(t, sp)); err != nil {
		t.Fatal(err)
	}
	if ct := <-got; ct != "application/x-www-form-urlencoded" {
		t.Errorf("content type = %q, want the configured one", ct)
	}
}

func TestIssueGET(t *testing.T) {
	got := make(chan string, 1)
	s := serve(t, func(w http.ResponseWriter, r *http.Request) {
		got <- r.Method
		jsonAnswer(200, `{"token":"`+tokenValue+`"}`)(w, r)
	})
	sp := spec(s.URL)
	sp.Method = http.MethodGet
	if _, err := issue(newProvider(t, sp)); err != nil {
		t.Fatal(err)
	}
	if m := <-got; m != http.MethodGet {
		t.Errorf("method = %s, want GET", m)
	}
}

func TestIssueServerError(t *testing.T) {
	// The answer echoes the credentials, as a careless debug page might.
	s := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, "backend exploded; key=%s auth=%q raw=%s", r.Header.Get("X-Api-Key"), r.Header.Get("Authorization"), bearerSecret)
	})
	_, err := issue(newProvider(t, spec(s.URL)))
	wantErr(t, err, "issue", "500", "Internal Server Error", "backend exploded", "[redacted]")
	var se *StatusError
	if !errors.As(err, &se) || se.StatusCode != 500 || se.Op != "issue" {
		t.Fatalf("error %v is not a StatusError for 500", err)
	}
	if strings.Contains(se.Body, headerSecret) || strings.Contains(se.Body, bearerSecret) {
		t.Errorf("StatusError.Body shows a secret: %q", se.Body)
	}
}

func TestIssueUnauthorized(t *testing.T) {
	s := serve(t, jsonAnswer(http.StatusUnauthorized, `{"error":"bad credentials"}`))
	_, err := issue(newProvider(t, spec(s.URL)))
	wantErr(t, err, "401", "Unauthorized", "bad credentials")
	var se *StatusError
	if !errors.As(err, &se) || se.StatusCode != 401 {
		t.Fatalf("error %v is not a StatusError for 401", err)
	}
}

func TestIssueBadAnswers(t *testing.T) {
	for _, tc := range []struct {
		name, field, body string
		want              []string
	}{
		{"malformed JSON", "", `{"token": "` + tokenValue, []string{"not JSON"}},
		{"not an object", "", `["` + tokenValue + `"]`, []string{"array, not an object"}},
		{"trailing data", "", `{"token":"` + tokenValue + `"} {}`, []string{"more than one JSON value"}},
		{"empty answer", "", ``, []string{"not JSON"}},
		{"token missing", "", `{"access_token":"` + tokenValue + `"}`, []string{`"token"`, "missing"}},
		{"token a number", "", `{"token":12345}`, []string{"number, not a string"}},
		{"token null", "", `{"token":null}`, []string{"null, not a string"}},
		{"token an object", "", `{"token":{"v":"` + tokenValue + `"}}`, []string{"object, not a string"}},
		{"token empty", "", `{"token":""}`, []string{"empty"}},
		{"token blank", "", `{"token":"   "}`, []string{"empty"}},
		{"token control character", "", `{"token":"` + tokenValue + `\n"}`, []string{"control character"}},
		{"token too long", "", `{"token":"` + strings.Repeat("a", tokens.MaxTokenValueLen+1) + `"}`, []string{"at most"}},
		{"nested missing", "data.token", `{"data":{"tok":"x"}}`, []string{`"data.token"`, "missing"}},
		{"path through a string", "data.token", `{"data":"` + tokenValue + `"}`, []string{`"data" is a string, not an object`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := serve(t, jsonAnswer(200, tc.body))
			sp := spec(s.URL)
			sp.TokenField = tc.field
			_, err := issue(newProvider(t, sp))
			wantErr(t, err, tc.want...)
		})
	}
}

func TestIssueBadExpiry(t *testing.T) {
	tok := `"token":"` + tokenValue + `"`
	for _, tc := range []struct {
		name, atField, inField, body string
		want                         []string
	}{
		{"expires_in negative", "", "", `{` + tok + `,"expires_in":-30}`, []string{"expires_in", "-30", "above 0"}},
		{"expires_in zero", "", "", `{` + tok + `,"expires_in":0}`, []string{"above 0"}},
		{"expires_in huge", "", "", `{` + tok + `,"expires_in":1e300}`, []string{"at most"}},
		{"expires_in a bool", "", "", `{` + tok + `,"expires_in":true}`, []string{"boolean, not a number"}},
		{"expires_in bad string", "", "", `{` + tok + `,"expires_in":"soon"}`, []string{"not a number of seconds"}},
		{"expires_in NaN", "", "", `{` + tok + `,"expires_in":"NaN"}`, []string{"not a number of seconds"}},
		{"expires_in under the margin", "", "", `{` + tok + `,"expires_in":0.5}`, []string{"in the past or less than"}},
		{"explicit expires_in missing", "", "ttl", `{` + tok + `,"expires_in":60}`, []string{`"ttl"`, "missing"}},
		{"explicit expires_in null", "", "ttl", `{` + tok + `,"ttl":null}`, []string{`"ttl"`, "missing"}},
		{"expires_at missing", "exp", "", `{` + tok + `}`, []string{`"exp"`, "missing"}},
		{"expires_at a number", "exp", "", `{` + tok + `,"exp":1700000000}`, []string{"number, not an RFC 3339"}},
		{"expires_at not RFC 3339", "exp", "", `{` + tok + `,"exp":"2030-01-01 00:00"}`, []string{"2030-01-01 00:00", "not an RFC 3339 time"}},
		{"expires_at echoes the token", "exp", "", `{` + tok + `,"exp":"` + tokenValue + `"}`, []string{"[redacted]", "not an RFC 3339 time"}},
		{"expires_at in the past", "exp", "", `{` + tok + `,"exp":"2001-02-03T04:05:06Z"}`, []string{"2001-02-03T04:05:06Z", "in the past"}},
		{"expires_at now", "exp", "", `{` + tok + `,"exp":"2025-06-01T12:00:00Z"}`, []string{"in the past"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := serve(t, jsonAnswer(200, tc.body))
			sp := spec(s.URL)
			sp.ExpiresAtField, sp.ExpiresInField = tc.atField, tc.inField
			_, err := issue(newProvider(t, sp))
			wantErr(t, err, tc.want...)
		})
	}
}

func TestIssueDoesNotFollowRedirects(t *testing.T) {
	var elsewhere atomic.Int32
	target := serve(t, func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		jsonAnswer(200, `{"token":"`+tokenValue+`"}`)(w, r)
	})
	s := serve(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/steal", http.StatusFound)
	})
	_, err := issue(newProvider(t, spec(s.URL)))
	wantErr(t, err, "302", "redirects are not followed")
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the redirect was followed %d times: the headers reached another server", n)
	}

	// A caller's client that follows redirects is not changed, and its
	// policy is not used.
	follows := &http.Client{}
	p, err := New(spec(s.URL), follows)
	if err != nil {
		t.Fatal(err)
	}
	_, err = issue(p)
	wantErr(t, err, "302")
	if follows.CheckRedirect != nil {
		t.Error("New changed the caller's client")
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the redirect was followed %d times with a caller's client", n)
	}
}

// stallServer starts a server that holds each request until the client goes
// away or the test ends; with headersFirst it sends the headers and a start
// of the body first.
func stallServer(t *testing.T, headersFirst bool) *httptest.Server {
	release := make(chan struct{})
	s := serve(t, func(w http.ResponseWriter, r *http.Request) {
		// The server notices a client going away only once the request
		// body is read.
		_, _ = io.Copy(io.Discard, r.Body)
		if headersFirst {
			w.WriteHeader(200)
			_, _ = io.WriteString(w, `{"token":`)
			w.(http.Flusher).Flush()
		}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) }) // runs before the server's Close
	return s
}

func TestIssueTimeout(t *testing.T) {
	for _, tc := range []struct {
		name         string
		headersFirst bool
	}{{"no headers", false}, {"stalled body", true}} {
		t.Run(tc.name, func(t *testing.T) {
			s := stallServer(t, tc.headersFirst)
			sp := spec(s.URL)
			sp.Timeout = tokens.Duration(200 * time.Millisecond)
			p := newProvider(t, sp)
			start := time.Now()
			_, err := issue(p)
			elapsed := time.Since(start)
			wantErr(t, err, "deadline", "200ms")
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
			}
			if elapsed > 2*time.Second {
				t.Errorf("Issue took %s with a 200ms timeout", elapsed)
			}
		})
	}
}

func TestIssueCanceled(t *testing.T) {
	s := stallServer(t, false)
	ctx, cancel := context.WithCancel(context.Background())
	p := newProvider(t, spec(s.URL))
	errc := make(chan error, 1)
	go func() {
		_, err := p.Issue(ctx, tokens.IssueRequest{Key: rotationKey})
		errc <- err
	}()
	cancel()
	select {
	case err := <-errc:
		wantErr(t, err)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("error %v does not wrap context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Issue did not return after its context was canceled")
	}
}

// huge writes n bytes after prefix, stopping when the client goes away.
func huge(status int, prefix string, n int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(status)
		if _, err := io.WriteString(w, prefix); err != nil {
			return
		}
		chunk := strings.Repeat("x", 32<<10)
		for written := 0; written < n; written += len(chunk) {
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
		}
	}
}

func TestIssueHugeAnswerIsCapped(t *testing.T) {
	s := serve(t, huge(200, `{"token":"`+tokenValue+`","pad":"`, 8<<20))
	_, err := issue(newProvider(t, spec(s.URL)))
	wantErr(t, err, "larger than 1048576 bytes")
}

func TestIssueHugeErrorBodyIsCut(t *testing.T) {
	// The secret straddles the quote's cut: it must be redacted whole, not
	// half-quoted.
	prefix := strings.Repeat("e", MaxErrorBodyBytes-5) + headerSecret
	s := serve(t, huge(503, prefix, 8<<20))
	_, err := issue(newProvider(t, spec(s.URL)))
	wantErr(t, err, "503")
	var se *StatusError
	if !errors.As(err, &se) {
		t.Fatalf("error %v is not a StatusError", err)
	}
	if len(se.Body) > MaxErrorBodyBytes {
		t.Errorf("quoted body is %d bytes, want at most %d", len(se.Body), MaxErrorBodyBytes)
	}
	if strings.Contains(se.Body, headerSecret[:5]) {
		t.Errorf("quoted body shows part of the secret: ...%q", se.Body[len(se.Body)-20:])
	}
	if len(err.Error()) > 2*MaxErrorBodyBytes {
		t.Errorf("error is %d bytes long", len(err.Error()))
	}
}

func TestIssueConnectionFailureHidesURL(t *testing.T) {
	s := httptest.NewServer(http.NotFoundHandler())
	addr := s.URL
	s.Close()
	p := newProvider(t, spec(addr+"/issue?api_key="+headerSecret))
	_, err := issue(p)
	wantErr(t, err, "issue", hostOf(t, addr))
	if strings.Contains(err.Error(), "/issue") || strings.Contains(err.Error(), "api_key") {
		t.Errorf("error %q shows the URL's path or query", err)
	}
}

func TestRevoke(t *testing.T) {
	type seen struct {
		method, path, contentType, key string
		body                           map[string]string
	}
	got := make(chan seen, 1)
	var status atomic.Int32
	s := serve(t, func(w http.ResponseWriter, r *http.Request) {
		var body map[string]string
		_ = json.NewDecoder(r.Body).Decode(&body)
		got <- seen{r.Method, r.URL.Path, r.Header.Get("Content-Type"), r.Header.Get("X-Api-Key"), body}
		w.WriteHeader(int(status.Load()))
		fmt.Fprintf(w, "echo: %v %s", body, r.Header.Get("X-Api-Key"))
	})
	sp := spec(s.URL + "/issue")
	sp.RevokeURL = s.URL + "/revoke"
	p := newProvider(t, sp)
	if !p.CanRevoke() {
		t.Fatal("CanRevoke is false with a revoke URL")
	}
	req := tokens.RevokeRequest{Value: tokens.Secret(tokenValue), Metadata: map[string]string{"issuer": "x"}}

	for _, tc := range []struct {
		name   string
		status int
		want   []string // nil: success
	}{
		{"ok", 200, nil},
		{"no content", 204, nil},
		{"already gone", 404, nil},
		{"server error", 500, []string{"revoke", "500", "[redacted]"}},
		{"forbidden", 403, []string{"revoke", "403"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status.Store(int32(tc.status))
			err := p.Revoke(context.Background(), req)
			g := <-got
			want := seen{http.MethodPost, "/revoke", "application/json", headerSecret, map[string]string{"token": tokenValue}}
			if fmt.Sprint(g) != fmt.Sprint(want) {
				t.Errorf("request = %+v, want %+v", g, want)
			}
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Revoke: %v", err)
				}
				return
			}
			wantErr(t, err, tc.want...)
		})
	}
}

func TestRevokeTimeout(t *testing.T) {
	s := stallServer(t, false)
	sp := spec(s.URL)
	sp.RevokeURL = s.URL
	sp.Timeout = tokens.Duration(200 * time.Millisecond)
	err := newProvider(t, sp).Revoke(context.Background(), tokens.RevokeRequest{Value: tokens.Secret(tokenValue)})
	wantErr(t, err, "revoke")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
	}
}

func TestRevokeUnsupported(t *testing.T) {
	p := newProvider(t, spec("https://issuer.example/token"))
	if p.CanRevoke() {
		t.Error("CanRevoke is true without a revoke URL")
	}
	err := p.Revoke(context.Background(), tokens.RevokeRequest{Value: tokens.Secret(tokenValue)})
	wantErr(t, err, "revoke_url is not set")
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("error %v does not wrap errors.ErrUnsupported", err)
	}
}

func TestRevokeEmptyValue(t *testing.T) {
	sp := spec("https://issuer.example/token")
	sp.RevokeURL = "https://issuer.example/revoke"
	err := newProvider(t, sp).Revoke(context.Background(), tokens.RevokeRequest{})
	wantErr(t, err, "no token value")
}

func TestNewRejectsBadSpecs(t *testing.T) {
	base := func() tokens.ProviderSpec { return spec("https://issuer.example/token") }
	for _, tc := range []struct {
		name   string
		modify func(*tokens.ProviderSpec)
		want   string
	}{
		{"no url", func(s *tokens.ProviderSpec) { s.URL = "" }, "provider.url is required"},
		{"not http", func(s *tokens.ProviderSpec) { s.URL = "ftp://x/y" }, "http or https"},
		{"bad revoke url", func(s *tokens.ProviderSpec) { s.RevokeURL = "nope" }, "provider.revoke_url"},
		{"bad method", func(s *tokens.ProviderSpec) { s.Method = "DELETE" }, "provider.method"},
		{"both expiry fields", func(s *tokens.ProviderSpec) { s.ExpiresAtField, s.ExpiresInField = "a", "b" }, "not both"},
		{"bad field path", func(s *tokens.ProviderSpec) { s.TokenField = "data..token" }, "dotted field path"},
		{"other type", func(s *tokens.ProviderSpec) { s.Type = tokens.ProviderExec }, `not "http"`},
		{"header value with a newline", func(s *tokens.ProviderSpec) {
			s.Headers["X-Api-Key"] = tokens.Secret(headerSecret + "\r\nX-Evil: 1")
		}, `"X-Api-Key" holds a control character`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := base()
			tc.modify(&s)
			p, err := New(s, nil)
			if p != nil {
				t.Error("New returned a provider with an error")
			}
			wantErr(t, err, tc.want)
		})
	}

	// The type may be left empty.
	s := base()
	s.Type = ""
	if _, err := New(s, nil); err != nil {
		t.Errorf("New without a type: %v", err)
	}
}

func TestConcurrentIssues(t *testing.T) {
	var n atomic.Int32
	s := serve(t, func(w http.ResponseWriter, r *http.Request) {
		jsonAnswer(200, fmt.Sprintf(`{"token":"t-%d","expires_in":60}`, n.Add(1)))(w, r)
	})
	p := newProvider(t, spec(s.URL))
	errc := make(chan error, 16)
	for range cap(errc) {
		go func() {
			_, err := issue(p)
			errc <- err
		}()
	}
	for range cap(errc) {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
}
