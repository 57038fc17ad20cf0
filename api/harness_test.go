package api_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tokend/tokend/agent"
	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
)

// logBuffer collects an agent's log output; the agent writes to it from many
// goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// testAgent is a real single-node agent, reachable over TCP and its unix
// socket.
type testAgent struct {
	*agent.Agent
	logs *logBuffer
	tcp  *conn
	unix *conn

	mu      sync.Mutex
	secrets []string
}

// conn is one way to reach the agent's API.
type conn struct {
	name string
	base string
	hc   *http.Client
	// token, when set, is sent as the ACL token.
	token string
}

// as returns c sending the ACL token secret.
func (c *conn) as(secret string) *conn {
	cp := *c
	cp.token = secret
	return &cp
}

// startAgent starts a single-node agent that bootstraps itself, logging at
// trace level into a buffer, and waits until it leads. When the test ends it
// shuts the agent down and checks that no value passed to secret appears in
// anything the agent logged.
func startAgent(t *testing.T) *testAgent {
	t.Helper()
	return startAgentWith(t, nil)
}

// startAgentWith is startAgent with mod applied to the configuration.
func startAgentWith(t *testing.T, mod func(*agent.Config)) *testAgent {
	t.Helper()
	logs := &logBuffer{}
	a := testutil.StartAgent(t, func(cfg *agent.Config) {
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "n1", Output: logs, Level: hclog.Trace})
		if mod != nil {
			mod(cfg)
		}
	})
	ta := &testAgent{Agent: a, logs: logs}
	tcpTransport := &http.Transport{}
	unixTransport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", a.SocketPath())
		},
	}
	ta.tcp = &conn{name: "tcp", base: "http://" + a.HTTPAddr(), hc: &http.Client{Transport: tcpTransport, Timeout: 30 * time.Second}}
	ta.unix = &conn{name: "unix", base: "http://tokend", hc: &http.Client{Transport: unixTransport, Timeout: 30 * time.Second}}
	t.Cleanup(func() {
		tcpTransport.CloseIdleConnections()
		unixTransport.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		out := logs.String()
		for _, s := range ta.secretList() {
			for _, form := range secretForms(s) {
				if strings.Contains(out, form) {
					t.Errorf("agent log holds secret %q (as %q)", s, form)
				}
			}
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", out)
		}
	})
	return ta
}

func (ta *testAgent) conns() []*conn { return []*conn{ta.tcp, ta.unix} }

// secret records v as a value that must never be logged, and returns it.
func (ta *testAgent) secret(v string) string {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	ta.secrets = append(ta.secrets, v)
	return v
}

func (ta *testAgent) secretList() []string {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	return append([]string(nil), ta.secrets...)
}

// secretForms are the ways a value could show up in text: as itself, and
// as the base64 that encoding/json makes of a []byte.
func secretForms(s string) []string {
	return []string{s, base64.StdEncoding.EncodeToString([]byte(s)), base64.RawStdEncoding.EncodeToString([]byte(s))}
}

// assertNoSecrets fails if text holds any of the secrets, in any form.
func assertNoSecrets(t *testing.T, what, text string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		for _, form := range secretForms(s) {
			if strings.Contains(text, form) {
				t.Errorf("%s holds secret %q: %s", what, s, text)
			}
		}
	}
}

type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r *response) String() string {
	return fmt.Sprintf("%d %s", r.Status, bytes.TrimSpace(r.Body))
}

// do sends a request. body is nil, a string or []byte sent as is, or a
// value sent as JSON.
func (c *conn) do(t *testing.T, method, path string, body any) *response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("encode request: %v", err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	res, err := c.hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s over %s: %v", method, path, c.name, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s over %s: read body: %v", method, path, c.name, err)
	}
	return &response{Status: res.StatusCode, Header: res.Header, Body: data}
}

func (c *conn) get(t *testing.T, path string) *response {
	t.Helper()
	return c.do(t, http.MethodGet, path, nil)
}

// expect fails the test unless r has status want.
func expect(t *testing.T, r *response, want int) *response {
	t.Helper()
	if r.Status != want {
		t.Fatalf("status %d, want %d; body: %s", r.Status, want, r.Body)
	}
	return r
}

// decode strictly decodes a JSON response body: a field the API should not
// send fails the test.
func decode[T any](t *testing.T, r *response) T {
	t.Helper()
	var v T
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json; body: %s", ct, r.Body)
	}
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %T: %v; body: %s", v, err, r.Body)
	}
	return v
}

// expectError checks an error response: status, JSON body, code, and a
// message that mentions each of mentions.
func expectError(t *testing.T, r *response, status int, code string, mentions ...string) api.ErrorBody {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d; body: %s", r.Status, status, r.Body)
	}
	body := decode[api.ErrorResponse](t, r).Error
	if body.Code != code {
		t.Errorf("error code %q, want %q; body: %s", body.Code, code, r.Body)
	}
	if body.Message == "" {
		t.Errorf("error has no message")
	}
	for _, m := range mentions {
		if !strings.Contains(body.Message, m) {
			t.Errorf("error message %q does not mention %q", body.Message, m)
		}
	}
	return body
}

func (c *conn) putPool(t *testing.T, name string, req api.PoolRequest) api.Pool {
	t.Helper()
	return decode[api.Pool](t, expect(t, c.do(t, http.MethodPut, "/v1/pools/"+name, req), http.StatusOK))
}

func (c *conn) addToken(t *testing.T, pool string, req api.TokenRequest) api.TokenInfo {
	t.Helper()
	return decode[api.TokenInfo](t, expect(t, c.do(t, http.MethodPost, "/v1/pools/"+pool+"/tokens", req), http.StatusCreated))
}

// fetch asks for a token from pool; query is "" or starts with "?".
func (c *conn) fetch(t *testing.T, pool, query string) *response {
	t.Helper()
	return c.get(t, "/v1/pools/"+pool+"/token"+query)
}

// fetchID fetches a token, expecting one, and returns its id.
func (c *conn) fetchID(t *testing.T, pool, query string) string {
	t.Helper()
	r := expect(t, c.fetch(t, pool, query), http.StatusOK)
	tok := decode[api.Token](t, r)
	if h := r.Header.Get(api.HeaderTokenID); h != tok.ID {
		t.Fatalf("%s header %q, body id %q", api.HeaderTokenID, h, tok.ID)
	}
	return tok.ID
}

func (c *conn) report(t *testing.T, pool, id string, req any) *response {
	t.Helper()
	return c.do(t, http.MethodPost, "/v1/pools/"+pool+"/tokens/"+id+"/report", req)
}

// freshness checks the freshness headers of a read on the leader and
// returns the index.
func freshness(t *testing.T, r *response) uint64 {
	t.Helper()
	index, err := strconv.ParseUint(r.Header.Get(api.HeaderIndex), 10, 64)
	if err != nil {
		t.Errorf("%s = %q, want an index", api.HeaderIndex, r.Header.Get(api.HeaderIndex))
	}
	if got := r.Header.Get(api.HeaderKnownLeader); got != "true" {
		t.Errorf("%s = %q, want true", api.HeaderKnownLeader, got)
	}
	if got := r.Header.Get(api.HeaderLastContact); got != "0" {
		t.Errorf("%s = %q, want 0 on the leader", api.HeaderLastContact, got)
	}
	return index
}

// writeIndex returns the X-Tokend-Index of a write, which must be set.
func writeIndex(t *testing.T, r *response) uint64 {
	t.Helper()
	index, err := strconv.ParseUint(r.Header.Get(api.HeaderIndex), 10, 64)
	if err != nil || index == 0 {
		t.Fatalf("%s = %q, want a positive index", api.HeaderIndex, r.Header.Get(api.HeaderIndex))
	}
	return index
}

var tokenIDPattern = regexp.MustCompile(`^tok_[0-9a-f]{16}$`)

// snapshot is everything a client can see of the replicated state.
type snapshot struct {
	index  string
	pools  string
	tokens map[string]string
}

func (c *conn) snapshot(t *testing.T) snapshot {
	t.Helper()
	r := expect(t, c.get(t, "/v1/pools"), http.StatusOK)
	s := snapshot{index: r.Header.Get(api.HeaderIndex), pools: string(r.Body), tokens: map[string]string{}}
	for _, p := range decode[[]api.Pool](t, r) {
		s.tokens[p.Name] = string(expect(t, c.get(t, "/v1/pools/"+p.Name+"/tokens"), http.StatusOK).Body)
	}
	return s
}

func (s snapshot) diff(o snapshot) string {
	var b strings.Builder
	if s.index != o.index {
		fmt.Fprintf(&b, "index %s -> %s; ", s.index, o.index)
	}
	if s.pools != o.pools {
		fmt.Fprintf(&b, "pools %s -> %s; ", s.pools, o.pools)
	}
	for name, v := range s.tokens {
		if o.tokens[name] != v {
			fmt.Fprintf(&b, "tokens of %s %s -> %s; ", name, v, o.tokens[name])
		}
	}
	return b.String()
}

func timeNear(got, want time.Time, within time.Duration) bool {
	d := got.Sub(want)
	return d >= -within && d <= within
}
