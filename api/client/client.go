// Package client talks to a tokend agent's HTTP API, over TCP or the agent's
// unix socket. Every method takes a context; a non-2xx answer comes back as
// an *Error carrying the API's error code.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tokend/tokend/api"
)

// EnvAddr names the environment variable FromEnv reads.
const EnvAddr = "TOKEND_ADDR"

// DefaultAddr is the address FromEnv uses when TOKEND_ADDR is unset: the
// default HTTP address of an agent.
const DefaultAddr = "http://127.0.0.1:8550"

// maxResponseBytes bounds how much of an answer the client reads.
const maxResponseBytes = 32 << 20

// Client is a connection to one agent. It is safe for concurrent use. It
// sets no timeout of its own: the context of each call bounds it, so a
// long poll (Events, a fetch with Wait) is held as long as it asks.
type Client struct {
	addr string // as the caller gave it, for messages
	base string // scheme://host[/prefix] that API paths are appended to
	hc   *http.Client
	// token is the ACL token secret sent with every request.
	token string
	// consistent makes every state read a consistent one.
	consistent bool
}

// EnvToken names the environment variable that holds the ACL token FromEnv
// sends.
const EnvToken = "TOKEND_TOKEN"

// SetToken makes the client send the ACL token secret with every request.
// Call it before the client is used.
func (c *Client) SetToken(secret string) { c.token = strings.TrimSpace(secret) }

// Environment variables FromEnv reads for TLS.
const (
	EnvCACert     = "TOKEND_CACERT"
	EnvClientCert = "TOKEND_CLIENT_CERT"
	EnvClientKey  = "TOKEND_CLIENT_KEY"
)

// TLS is how the client checks an https:// agent and proves itself to it.
// Agents started with TLS require a client certificate signed by their CA
// on the TCP API (`tokend tls cert create --client` makes one).
type TLS struct {
	// CAFile is a PEM file of the CA that signed the agent's certificate;
	// empty trusts the system's roots.
	CAFile string
	// CertFile and KeyFile are the client's PEM certificate and key; both
	// or neither.
	CertFile string
	KeyFile  string
	// ServerName is the name checked in the agent's certificate; empty
	// means the host of the address.
	ServerName string
}

// Set reports whether any TLS setting is given.
func (t TLS) Set() bool { return t != TLS{} }

// EnvTLS returns the TLS settings in TOKEND_CACERT, TOKEND_CLIENT_CERT and
// TOKEND_CLIENT_KEY.
func EnvTLS() TLS {
	return TLS{CAFile: os.Getenv(EnvCACert), CertFile: os.Getenv(EnvClientCert), KeyFile: os.Getenv(EnvClientKey)}
}

// Config builds the tls.Config the client uses; its errors name the file at
// fault.
func (t TLS) Config() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", t.CAFile)
		}
	}
	switch {
	case t.CertFile != "" && t.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate %s and key %s: %w", t.CertFile, t.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case t.CertFile != "":
		return nil, fmt.Errorf("client certificate %s is given without its key", t.CertFile)
	case t.KeyFile != "":
		return nil, fmt.Errorf("client key %s is given without its certificate", t.KeyFile)
	}
	return cfg, nil
}

// Option adjusts a client New makes.
type Option func(*options)

type options struct {
	tls        TLS
	consistent bool
}

// WithTLS sets how the client talks to an https:// agent. With it, a bare
// host:port address means https.
func WithTLS(t TLS) Option { return func(o *options) { o.tls = t } }

// WithConsistentReads makes every read of the replicated state the client
// makes — pools, tokens, fetches, events, ACL policies and tokens — a
// consistent one (?consistent): the agent answers only once the leader has
// confirmed it and the agent has applied every write committed before the
// request, so the answer is linearizable. It costs a quorum round trip, and
// without a quorum the read fails (503 no_leader) instead of answering from
// the agent's local state. FetchOptions.Consistent asks for one fetch.
func WithConsistentReads() Option { return func(o *options) { o.consistent = true } }

// DefaultAddress is DefaultAddr, over https when TLS settings are given.
func DefaultAddress(t TLS) string {
	if t.Set() {
		return "https://" + strings.TrimPrefix(DefaultAddr, "http://")
	}
	return DefaultAddr
}

// New returns a client for the agent at addr: unix:///abs/path/to.sock,
// http://host:port, https://host:port, or a bare host:port meaning http
// (https when WithTLS gives TLS settings). TLS settings never apply to the
// unix socket, which is plain HTTP, and are refused with an http://
// address, where they would protect nothing.
func New(addr string, opts ...Option) (*Client, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	addr = strings.TrimSpace(addr)
	if addr == "" {
		return nil, errors.New("address is empty: use unix:///path/to.sock or http://host:port")
	}
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	if path, ok := strings.CutPrefix(addr, "unix://"); ok {
		if !strings.HasPrefix(path, "/") {
			return nil, fmt.Errorf("address %q: a unix socket path must be absolute, like unix:///run/tokend.sock", addr)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.Proxy = nil // a proxy cannot reach this host's socket
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
		return &Client{
			addr:       addr,
			base:       "http://unix", // the host is never dialled
			hc:         &http.Client{Transport: tr, CheckRedirect: noRedirect},
			consistent: o.consistent,
		}, nil
	}

	raw := addr
	if !strings.Contains(addr, "://") {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("address %q is not host:port, http(s)://host:port or unix:///path", addr)
		}
		raw = "http://" + addr
		if o.tls.Set() {
			raw = "https://" + addr
		}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", addr, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("address %q: scheme %q is not supported: use unix, http or https", addr, u.Scheme)
	case u.Host == "":
		return nil, fmt.Errorf("address %q has no host", addr)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("address %q: only scheme, host, port and a path prefix are allowed", addr)
	case u.Scheme == "http" && o.tls.Set():
		return nil, fmt.Errorf("address %q is plain HTTP, but a CA or client certificate is given: use https://", addr)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if u.Scheme == "https" && o.tls.Set() {
		cfg, err := o.tls.Config()
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = cfg
	}
	return &Client{
		addr:       addr,
		base:       u.Scheme + "://" + u.Host + strings.TrimSuffix(u.EscapedPath(), "/"),
		hc:         &http.Client{Transport: tr, CheckRedirect: noRedirect},
		consistent: o.consistent,
	}, nil
}

// FromEnv returns a client for the agent named by TOKEND_ADDR, or
// DefaultAddress when it is unset, with the ACL token in TOKEND_TOKEN and
// the TLS settings in TOKEND_CACERT, TOKEND_CLIENT_CERT and
// TOKEND_CLIENT_KEY.
func FromEnv() (*Client, error) {
	t := EnvTLS()
	addr := os.Getenv(EnvAddr)
	if addr == "" {
		addr = DefaultAddress(t)
	}
	c, err := New(addr, WithTLS(t))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvAddr, err)
	}
	c.SetToken(os.Getenv(EnvToken))
	return c, nil
}

// Addr returns the address the client was made with.
func (c *Client) Addr() string { return c.addr }

// CloseIdleConnections closes the client's connections to the agent that
// are not in use.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// Error is a non-2xx answer from the agent.
type Error struct {
	StatusCode int
	// Code is the API's stable error code, such as "pool_not_found"; it is
	// empty when the answer did not hold an API error (a proxy's page, say).
	Code    string
	Message string
	// RetryAt is when a request refused for now (every token cooling down)
	// may succeed.
	RetryAt *time.Time
}

func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("HTTP %d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Message)
	}
	return e.Code + ": " + e.Message
}

// ErrorCode returns the API error code of err, or "" when err is not an
// *Error.
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// Meta says how fresh the agent's state was when it answered a read.
type Meta struct {
	// Index is the agent's applied Raft index.
	Index uint64
	// KnownLeader says whether the agent knew a leader.
	KnownLeader bool
	// LastContact is the time since the agent last heard from the leader:
	// 0 on the leader, negative if it never has. For a consistent read, the
	// time since the leader confirmed it.
	LastContact time.Duration
	// Consistent says the read was a consistent one: Index holds every
	// write committed before the request.
	Consistent bool
	// Cached says a Cache answered from memory, without asking the agent;
	// the other fields are those of the fetch that filled it.
	Cached bool
}

// response is what do hands back besides the decoded body.
type response struct {
	header http.Header
	body   []byte
}

// do sends one request. body, when not nil, is sent as JSON; a 2xx JSON
// answer is decoded into out when out is not nil.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any) (*response, error) {
	return c.send(ctx, request{method: method, path: path, query: query, body: body, out: out})
}

// request is one call to the agent.
type request struct {
	method, path string
	query        url.Values
	// accept is the media type asked for; JSON when empty.
	accept    string
	body, out any
	// raw, when not nil, is sent as the body as it is, as contentType.
	raw         []byte
	contentType string
	// limit bounds the answer read; maxResponseBytes when zero.
	limit int
}

// send is do with every option.
func (c *Client) send(ctx context.Context, r request) (*response, error) {
	method, path, query, body, out := r.method, r.path, r.query, r.body, r.out
	accept := r.accept
	if accept == "" {
		accept = "application/json"
	}
	target := c.base + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	var rd io.Reader
	contentType := "application/json"
	switch {
	case r.raw != nil:
		rd, contentType = bytes.NewReader(r.raw), r.contentType
	case body != nil:
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("%s %s: encode request: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", accept)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		// url.Error names the URL, whose host is made up for unix
		// sockets; name the address the caller knows instead.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("tokend at %s: %s %s: %w", c.addr, method, path, err)
	}
	defer resp.Body.Close()
	limit := r.limit
	if limit == 0 {
		limit = maxResponseBytes
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("tokend at %s: %s %s: read answer: %w", c.addr, method, path, err)
	}
	if len(data) > limit {
		return nil, fmt.Errorf("tokend at %s: %s %s: answer is larger than %d bytes", c.addr, method, path, limit)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, decodeError(resp, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return nil, fmt.Errorf("tokend at %s: %s %s: decode answer: %w", c.addr, method, path, err)
		}
	}
	return &response{header: resp.Header, body: data}, nil
}

func decodeError(resp *http.Response, data []byte) *Error {
	e := &Error{StatusCode: resp.StatusCode}
	var body api.ErrorResponse
	if json.Unmarshal(data, &body) == nil && body.Error.Code != "" {
		e.Code, e.Message, e.RetryAt = body.Error.Code, body.Error.Message, body.Error.RetryAt
	} else {
		msg := strings.TrimSpace(string(data))
		if len(msg) > 200 {
			msg = msg[:200] + "..."
		}
		if msg == "" {
			msg = "empty answer"
		}
		e.Message = msg
	}
	if e.RetryAt == nil {
		if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs >= 0 {
			t := time.Now().Add(time.Duration(secs) * time.Second)
			e.RetryAt = &t
		}
	}
	return e
}

// readQuery is q for a read of the replicated state: with ?consistent when
// the client makes consistent reads.
func (c *Client) readQuery(q url.Values) url.Values {
	return withConsistent(q, c.consistent)
}

func withConsistent(q url.Values, consistent bool) url.Values {
	if !consistent {
		return q
	}
	if q == nil {
		q = url.Values{}
	}
	q.Set("consistent", "true")
	return q
}

func parseMeta(h http.Header) Meta {
	var m Meta
	m.Index, _ = strconv.ParseUint(h.Get(api.HeaderIndex), 10, 64)
	m.KnownLeader, _ = strconv.ParseBool(h.Get(api.HeaderKnownLeader))
	m.Consistent = h.Get(api.HeaderConsistent) == "true"
	if ms, err := strconv.ParseInt(h.Get(api.HeaderLastContact), 10, 64); err == nil {
		if ms < 0 {
			m.LastContact = -1
		} else {
			m.LastContact = time.Duration(ms) * time.Millisecond
		}
	}
	return m
}

// segment escapes one path segment, refusing ones that cannot name
// anything: an empty or dot segment would address another endpoint.
func segment(kind, s string) (string, error) {
	switch s {
	case "":
		return "", fmt.Errorf("%s is empty", kind)
	case ".", "..":
		return "", fmt.Errorf("%s %q is invalid", kind, s)
	}
	return url.PathEscape(s), nil
}

func poolPath(pool string) (string, error) {
	p, err := segment("pool name", pool)
	if err != nil {
		return "", err
	}
	return "/v1/pools/" + p, nil
}

func tokenPath(pool, id string) (string, error) {
	p, err := poolPath(pool)
	if err != nil {
		return "", err
	}
	t, err := segment("token id", id)
	if err != nil {
		return "", err
	}
	return p + "/tokens/" + t, nil
}
