package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/api"
)

func TestNewAddresses(t *testing.T) {
	for _, tc := range []struct {
		addr, base, err string
	}{
		{addr: "unix:///run/tokend.sock", base: "http://unix"},
		{addr: "http://127.0.0.1:8550", base: "http://127.0.0.1:8550"},
		{addr: "http://127.0.0.1:8550/", base: "http://127.0.0.1:8550"},
		{addr: "https://tokend.example:8443", base: "https://tokend.example:8443"},
		{addr: "https://proxy.example/tokend/", base: "https://proxy.example/tokend"},
		{addr: "localhost:8550", base: "http://localhost:8550"},
		{addr: "[::1]:8550", base: "http://[::1]:8550"},
		{addr: "", err: "address is empty"},
		{addr: "unix://run/tokend.sock", err: "must be absolute"},
		{addr: "ftp://host:21", err: `scheme "ftp" is not supported`},
		{addr: "localhost", err: "is not host:port"},
		{addr: "http://", err: "has no host"},
		{addr: "http://user:pw@host:1", err: "only scheme, host, port"},
	} {
		c, err := New(tc.addr)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("New(%q) = %v, want error containing %q", tc.addr, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("New(%q): %v", tc.addr, err)
			continue
		}
		if c.base != tc.base || c.Addr() != tc.addr {
			t.Errorf("New(%q): base %q addr %q, want base %q", tc.addr, c.base, c.Addr(), tc.base)
		}
	}
}

func TestFromEnv(t *testing.T) {
	t.Setenv(EnvAddr, "")
	for _, v := range []string{EnvCACert, EnvClientCert, EnvClientKey} {
		t.Setenv(v, "")
	}
	c, err := FromEnv()
	if err != nil || c.Addr() != DefaultAddr {
		t.Fatalf("FromEnv() without %s = %v, %v; want %s", EnvAddr, c, err, DefaultAddr)
	}
	t.Setenv(EnvAddr, "unix:///tmp/x.sock")
	if c, err = FromEnv(); err != nil || c.Addr() != "unix:///tmp/x.sock" {
		t.Fatalf("FromEnv() = %v, %v", c, err)
	}
	t.Setenv(EnvAddr, "gopher://x:1")
	if _, err = FromEnv(); err == nil || !strings.HasPrefix(err.Error(), EnvAddr+": ") {
		t.Fatalf("FromEnv() with a bad address = %v, want an error naming %s", err, EnvAddr)
	}
}

// fakeAgent serves handler on httptest and returns a client for it.
func fakeAgent(t *testing.T, handler http.HandlerFunc) *Client {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	c, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestAPIError(t *testing.T) {
	retryAt := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	c := fakeAgent(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"error":{"code":"all_cooling_down","message":"every usable token in pool \"x\" is rate limited","retry_at":"2030-01-02T03:04:05Z"}}`))
	})
	_, _, err := c.FetchToken(context.Background(), "x", FetchOptions{})
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("FetchToken error = %#v, want *Error", err)
	}
	if e.StatusCode != 503 || e.Code != "all_cooling_down" || e.RetryAt == nil || !e.RetryAt.Equal(retryAt) {
		t.Fatalf("error = %+v", e)
	}
	if got, want := err.Error(), `all_cooling_down: every usable token in pool "x" is rate limited`; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	if ErrorCode(err) != "all_cooling_down" || ErrorCode(errors.New("x")) != "" {
		t.Fatalf("ErrorCode is wrong")
	}
}

func TestNonAPIError(t *testing.T) {
	c := fakeAgent(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(http.StatusBadGateway)
		w.Write([]byte("<html>bad gateway</html>\n"))
	})
	before := time.Now()
	_, err := c.ListPools(context.Background())
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("ListPools error = %#v, want *Error", err)
	}
	if e.Code != "" || e.StatusCode != 502 || e.Message != "<html>bad gateway</html>" {
		t.Fatalf("error = %+v", e)
	}
	if e.RetryAt == nil || e.RetryAt.Before(before.Add(30*time.Second)) {
		t.Fatalf("RetryAt = %v, want 30s from the Retry-After header", e.RetryAt)
	}
	if got := err.Error(); got != "HTTP 502 Bad Gateway: <html>bad gateway</html>" {
		t.Fatalf("Error() = %q", got)
	}
}

func TestNoRedirects(t *testing.T) {
	c := fakeAgent(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/health" {
			t.Errorf("the client followed a redirect to %s", r.URL.Path)
		}
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	})
	_, err := c.Health(context.Background())
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != http.StatusFound {
		t.Fatalf("Health error = %v, want the 302 as an *Error", err)
	}
}

func TestRequestShape(t *testing.T) {
	type seen struct{ method, path, query, ctype string }
	got := make(chan seen, 1)
	c := fakeAgent(t, func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Get("Content-Type")}
		w.Header().Set(api.HeaderIndex, "42")
		w.Header().Set(api.HeaderKnownLeader, "true")
		w.Header().Set(api.HeaderLastContact, "1500")
		w.Header().Set(api.HeaderTokenID, "tok1")
		w.Write([]byte(`{"id":"tok1","value":"v","index":7}`))
	})
	ctx := context.Background()
	check := func(want seen) {
		t.Helper()
		if s := <-got; s != want {
			t.Fatalf("request = %+v, want %+v", s, want)
		}
	}

	_, meta, err := c.FetchToken(ctx, "a/b c", FetchOptions{Exclude: []string{"t1", "t2"}})
	if err != nil {
		t.Fatal(err)
	}
	check(seen{"GET", "/v1/pools/a%2Fb%20c/token", "exclude=t1&exclude=t2", ""})
	if want := (Meta{Index: 42, KnownLeader: true, LastContact: 1500 * time.Millisecond}); meta != want {
		t.Fatalf("meta = %+v, want %+v", meta, want)
	}

	raw, _, err := c.FetchRaw(ctx, "p", FetchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	check(seen{"GET", "/v1/pools/p/token", "format=raw", ""})
	if raw.ID != "tok1" || raw.Value != `{"id":"tok1","value":"v","index":7}` {
		t.Fatalf("raw = %+v", raw)
	}

	_, meta, err = c.FetchToken(ctx, "p", FetchOptions{Consistent: true})
	if err != nil {
		t.Fatal(err)
	}
	check(seen{"GET", "/v1/pools/p/token", "consistent=true", ""})
	if meta.Consistent {
		t.Fatalf("meta = %+v without %s", meta, api.HeaderConsistent)
	}

	if _, err := c.DeletePool(ctx, "p", true); err != nil {
		t.Fatal(err)
	}
	check(seen{"DELETE", "/v1/pools/p", "force=true", ""})
	if _, err := c.DeletePool(ctx, "p", false); err != nil {
		t.Fatal(err)
	}
	check(seen{"DELETE", "/v1/pools/p", "", ""})
	if _, err := c.Report(ctx, "p", "t 1", api.ReportRequest{Outcome: "ok"}); err != nil {
		t.Fatal(err)
	}
	check(seen{"POST", "/v1/pools/p/tokens/t%201/report", "", "application/json"})

	// Names that cannot be a path segment never reach the agent.
	for _, name := range []string{"", ".", ".."} {
		if _, err := c.GetPool(ctx, name); err == nil {
			t.Fatalf("GetPool(%q) succeeded", name)
		}
		if _, err := c.RemoveToken(ctx, "p", name); err == nil {
			t.Fatalf("RemoveToken(p, %q) succeeded", name)
		}
	}
	select {
	case s := <-got:
		t.Fatalf("unexpected request %+v", s)
	default:
	}
}

func TestTransportErrorNamesAddress(t *testing.T) {
	addr := "unix://" + filepath.Join(t.TempDir(), "missing.sock")
	c, err := New(addr)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Health(context.Background())
	if err == nil || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "GET /v1/health") {
		t.Fatalf("Health error = %v, want one naming %s", err, addr)
	}
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Health error = %v, want it to wrap the dial error", err)
	}
	var e *Error
	if errors.As(err, &e) {
		t.Fatalf("transport error came back as *Error")
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Health(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Health with a cancelled context = %v, want context.Canceled", err)
	}
}

// WithConsistentReads adds ?consistent to every read of the replicated
// state and to nothing else; Meta says when a read was consistent.
func TestConsistentReadsOption(t *testing.T) {
	type seen struct{ method, path, query string }
	got := make(chan seen, 1)
	fake := fakeAgent(t, func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Method, r.URL.EscapedPath(), r.URL.RawQuery}
		if r.URL.Query().Has("consistent") {
			w.Header().Set(api.HeaderConsistent, "true")
		}
		w.Header().Set(api.HeaderTokenID, "tok1")
		switch {
		case r.URL.Path == "/v1/events":
			w.Write([]byte(`{"index":1,"events":[]}`))
		case strings.HasSuffix(r.URL.Path, "/tokens") || r.URL.Path == "/v1/pools" || r.URL.Path == "/v1/members" || strings.HasPrefix(r.URL.Path, "/v1/acl/"):
			w.Write([]byte(`[]`))
		default:
			w.Write([]byte(`{}`))
		}
	})
	c, err := New(fake.Addr(), WithConsistentReads())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	reads := []struct {
		call func() error
		want seen
	}{
		{func() error { _, err := c.ListPools(ctx); return err }, seen{"GET", "/v1/pools", "consistent=true"}},
		{func() error { _, err := c.GetPool(ctx, "p"); return err }, seen{"GET", "/v1/pools/p", "consistent=true"}},
		{func() error { _, err := c.ListTokens(ctx, "p"); return err }, seen{"GET", "/v1/pools/p/tokens", "consistent=true"}},
		{func() error { _, err := c.GetTokenInfo(ctx, "p", "t1"); return err }, seen{"GET", "/v1/pools/p/tokens/t1", "consistent=true"}},
		{func() error {
			_, m, err := c.FetchToken(ctx, "p", FetchOptions{Exclude: []string{"t1"}})
			if err == nil && !m.Consistent {
				err = errors.New("meta does not say consistent")
			}
			return err
		}, seen{"GET", "/v1/pools/p/token", "consistent=true&exclude=t1"}},
		{func() error { _, _, err := c.FetchRaw(ctx, "p", FetchOptions{}); return err }, seen{"GET", "/v1/pools/p/token", "consistent=true&format=raw"}},
		{func() error { _, err := c.Events(ctx, EventsOptions{Since: 3}); return err }, seen{"GET", "/v1/events", "consistent=true&since=3"}},
		{func() error { _, err := c.ACLPolicies(ctx); return err }, seen{"GET", "/v1/acl/policies", "consistent=true"}},
		{func() error { _, err := c.ACLTokens(ctx); return err }, seen{"GET", "/v1/acl/tokens", "consistent=true"}},
		// Not reads of the replicated state, or not reads at all.
		{func() error { _, err := c.Members(ctx); return err }, seen{"GET", "/v1/members", ""}},
		{func() error { _, err := c.Health(ctx); return err }, seen{"GET", "/v1/health", ""}},
		{func() error { _, err := c.DeletePool(ctx, "p", false); return err }, seen{"DELETE", "/v1/pools/p", ""}},
		{func() error { _, err := c.ApplyPool(ctx, "p", api.PoolRequest{}); return err }, seen{"PUT", "/v1/pools/p", ""}},
	}
	for _, r := range reads {
		if err := r.call(); err != nil {
			t.Fatalf("%+v: %v", r.want, err)
		}
		if s := <-got; s != r.want {
			t.Fatalf("request = %+v, want %+v", s, r.want)
		}
	}
}
