package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"github.com/tokend/tokend/api"
)

// Target is one agent's HTTP API.
type Target struct {
	// Name is the agent's node name (--node); faults are logged by it.
	Name string
	// URL is the API's base URL, such as http://127.0.0.1:8510.
	URL string
}

// client sends the workload's and the checks' requests.
type client struct {
	hc    *http.Client
	token string
}

// answer is one request's result.
type answer struct {
	status int
	header http.Header
	body   []byte
	err    error
	// refused says the connection was refused: the request was never
	// sent, so it certainly had no effect.
	refused bool
}

func (a answer) index() uint64 {
	if a.header == nil {
		return 0
	}
	n, _ := strconv.ParseUint(a.header.Get(api.HeaderIndex), 10, 64)
	return n
}

func (a answer) code() string {
	var e api.ErrorResponse
	_ = json.Unmarshal(a.body, &e)
	return e.Error.Code
}

func (a answer) decode(out any) error {
	if err := json.Unmarshal(a.body, out); err != nil {
		return fmt.Errorf("decode %q: %w", truncate(string(a.body), 200), err)
	}
	return nil
}

// failure says why a answered other than want, or nil.
func (a answer) failure(want int) error {
	switch {
	case a.err != nil:
		return a.err
	case a.status != want:
		return fmt.Errorf("status %d: %s", a.status, truncate(string(a.body), 300))
	}
	return nil
}

func (c *client) do(ctx context.Context, method, url string, body any) answer {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return answer{err: err}
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return answer{err: err}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set(api.HeaderToken, c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return answer{err: err, refused: errors.Is(err, syscall.ECONNREFUSED)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return answer{status: resp.StatusCode, header: resp.Header, err: err}
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: b}
}

// newHTTPClient is the default client: no proxy, a timeout longer than a
// write's (10 s with production timing) so that slow writes are answered.
func newHTTPClient() *http.Client {
	return &http.Client{
		Timeout: 15 * time.Second,
		Transport: &http.Transport{
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     30 * time.Second,
		},
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
