package testutil

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/tokend/tokend/api"
)

// HTTP is a test client for one agent's API, over TCP or its unix socket.
type HTTP struct {
	base   string
	client *http.Client
	// token, when set, is sent as the ACL token.
	token string
}

// WithToken returns h sending secret as its ACL token.
func (h *HTTP) WithToken(secret string) *HTTP {
	cp := *h
	cp.token = secret
	return &cp
}

func (h *HTTP) send(req *http.Request) (*http.Response, error) {
	if h.token != "" {
		req.Header.Set(api.HeaderToken, h.token)
	}
	return h.client.Do(req)
}

// TCP returns a client for the API at addr (host:port).
func TCP(addr string) *HTTP {
	return &HTTP{base: "http://" + addr, client: &http.Client{Timeout: 10 * time.Second}}
}

// Unix returns a client for the API on the unix socket at path.
func Unix(path string) *HTTP {
	return &HTTP{base: "http://tokend", client: &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}}
}

// Response is an answer read in full.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// ErrorCode is the API error code in the body, if any.
func (r Response) ErrorCode() string {
	var e api.ErrorResponse
	_ = json.Unmarshal(r.Body, &e)
	return e.Error.Code
}

// Do sends a request. A string body is sent as it is; any other non-nil
// body is encoded as JSON.
func (h *HTTP) Do(method, path string, body any) (Response, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			return Response{}, err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, h.base+path, rd)
	if err != nil {
		return Response{}, err
	}
	resp, err := h.send(req)
	if err != nil {
		return Response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, err
}

// Must sends a request that must be answered with status want, and decodes
// the body into out unless out is nil.
func (h *HTTP) Must(t TB, method, path string, body any, want int, out any) Response {
	t.Helper()
	r, err := h.Do(method, path, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if r.Status != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.Status, want, r.Body)
	}
	if out != nil {
		if err := json.Unmarshal(r.Body, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, path, r.Body, err)
		}
	}
	return r
}

// Fetch returns the id of the token the agent serves for pool, or the
// error code it answers with.
func (h *HTTP) Fetch(pool string, exclude ...string) (id, code string, err error) {
	path := "/v1/pools/" + pool + "/token"
	if len(exclude) > 0 {
		path += "?exclude=" + strings.Join(exclude, "&exclude=")
	}
	r, err := h.Do("GET", path, nil)
	if err != nil {
		return "", "", err
	}
	if r.Status != http.StatusOK {
		if code = r.ErrorCode(); code == "" {
			return "", "", fmt.Errorf("status %d: %s", r.Status, r.Body)
		}
		return "", code, nil
	}
	var tok api.Token
	if err := json.Unmarshal(r.Body, &tok); err != nil {
		return "", "", err
	}
	return tok.ID, "", nil
}

// AddToken adds a token with value and priority to pool and returns its id.
func (h *HTTP) AddToken(t TB, pool, value string, priority int) string {
	t.Helper()
	var info api.TokenInfo
	h.Must(t, "POST", "/v1/pools/"+pool+"/tokens", api.TokenRequest{Value: value, Priority: priority}, http.StatusCreated, &info)
	return info.ID
}

// Get sends a GET and returns the response unread, for benchmarks that
// measure the request and nothing else; the caller closes the body.
func (h *HTTP) Get(path string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, h.base+path, nil)
	if err != nil {
		return nil, err
	}
	return h.send(req)
}
