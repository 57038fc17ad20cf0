// Package floor is the physical floor the suite compares tokend's fetch
// with: a net/http server that answers every request with one response
// held in memory — the same status, headers and body bytes as a tokend
// fetch — and does nothing else (no routing, no state, no auth). It is
// what an HTTP design in Go costs on this machine, and the suite runs it
// as its own process (tokend-bench floor), like a tokend agent.
package floor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

// Response is the answer the floor gives, captured from a tokend fetch.
// Headers the server writes itself (Date, Content-Length) are left out.
type Response struct {
	Status int                 `json:"status"`
	Header map[string][]string `json:"header"`
	Body   []byte              `json:"body"`
}

// Capture makes a Response of a live answer whose body was read into body.
func Capture(resp *http.Response, body []byte) Response {
	h := map[string][]string{}
	for k, v := range resp.Header {
		if k == "Date" || k == "Content-Length" {
			continue
		}
		h[k] = v
	}
	return Response{Status: resp.StatusCode, Header: h, Body: body}
}

// Handler answers every request with r.
func Handler(r Response) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		for k, v := range r.Header {
			h[k] = v
		}
		w.WriteHeader(r.Status)
		_, _ = w.Write(r.Body)
	})
}

// Listen opens the floor's listeners: TCP on tcpAddr and a unix socket at
// socket, either may be empty.
func Listen(tcpAddr, socket string) ([]net.Listener, error) {
	var ls []net.Listener
	if tcpAddr != "" {
		l, err := net.Listen("tcp", tcpAddr)
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
	}
	if socket != "" {
		_ = os.Remove(socket)
		l, err := net.Listen("unix", socket)
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return nil, err
		}
		ls = append(ls, l)
	}
	if len(ls) == 0 {
		return nil, errors.New("floor: give a TCP address, a socket or both")
	}
	return ls, nil
}

// Serve answers on every listener with r until ctx ends.
func Serve(ctx context.Context, ls []net.Listener, r Response) error {
	srv := &http.Server{Handler: Handler(r), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, len(ls))
	for _, l := range ls {
		go func() { errc <- srv.Serve(l) }()
	}
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	case err := <-errc:
		_ = srv.Close()
		return err
	}
}

// ReadResponse reads a Response written by WriteResponse.
func ReadResponse(path string) (Response, error) {
	var r Response
	b, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%s: %w", path, err)
	}
	if r.Status == 0 {
		r.Status = http.StatusOK
	}
	return r, nil
}

// WriteResponse writes r to path as JSON.
func WriteResponse(path string, r Response) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}
