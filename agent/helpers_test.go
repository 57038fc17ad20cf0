package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
)

// httpc talks to one agent over HTTP or its unix socket.
type httpc struct {
	base string
	c    *http.Client
}

func tcpClient(n *testutil.Node) *httpc {
	return &httpc{base: "http://" + n.HTTPAddr(), c: &http.Client{Timeout: 10 * time.Second}}
}

func unixClient(n *testutil.Node) *httpc {
	path := n.SocketPath()
	return &httpc{base: "http://unix", c: &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) errorCode() string {
	var e api.ErrorResponse
	_ = json.Unmarshal(r.body, &e)
	return e.Error.Code
}

func (h *httpc) do(method, path string, body any) (response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return response{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, h.base+path, rd)
	if err != nil {
		return response{}, err
	}
	resp, err := h.c.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}, err
}

// must performs a request that must answer want, and decodes the body into
// out when out is not nil.
func (h *httpc) must(t *testing.T, method, path string, body any, want int, out any) response {
	t.Helper()
	r, err := h.do(method, path, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if r.status != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.status, want, r.body)
	}
	if out != nil {
		if err := json.Unmarshal(r.body, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, path, r.body, err)
		}
	}
	return r
}

// fetch returns the id of the token an agent serves for pool, or the error
// code it answers with.
func (h *httpc) fetch(pool string, exclude ...string) (id, code string, err error) {
	path := "/v1/pools/" + pool + "/token"
	if len(exclude) > 0 {
		path += "?exclude=" + strings.Join(exclude, "&exclude=")
	}
	r, err := h.do("GET", path, nil)
	if err != nil {
		return "", "", err
	}
	if r.status != http.StatusOK {
		return "", r.errorCode(), nil
	}
	var tok api.Token
	if err := json.Unmarshal(r.body, &tok); err != nil {
		return "", "", err
	}
	return tok.ID, "", nil
}

// waitServes polls until every node serves want for pool.
func waitServes(t *testing.T, nodes []*testutil.Node, pool, want string) {
	t.Helper()
	testutil.WaitFor(t, 5*time.Second, func() error {
		for _, n := range nodes {
			id, code, err := tcpClient(n).fetch(pool)
			if err != nil {
				return err
			}
			if id != want {
				return fmt.Errorf("%s serves %q (code %q), want %q", n.Name, id, code, want)
			}
		}
		return nil
	})
}

func addToken(t *testing.T, h *httpc, pool, value string, priority int) string {
	t.Helper()
	var info api.TokenInfo
	h.must(t, "POST", "/v1/pools/"+pool+"/tokens", api.TokenRequest{Value: value, Priority: priority}, http.StatusCreated, &info)
	return info.ID
}
