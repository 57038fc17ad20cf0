package floor

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
)

func TestCaptureAndServeTheSameBytes(t *testing.T) {
	// What tokend answers, in miniature.
	orig := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Tokend-Index", "42")
		_, _ = io.WriteString(w, `{"id":"tok_1","value":"v"}`)
	}))
	defer orig.Close()
	resp, err := http.Get(orig.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	r := Capture(resp, body)
	if _, ok := r.Header["Date"]; ok {
		t.Error("captured Date")
	}
	if _, ok := r.Header["Content-Length"]; ok {
		t.Error("captured Content-Length")
	}

	path := filepath.Join(t.TempDir(), "resp.json")
	if err := WriteResponse(path, r); err != nil {
		t.Fatal(err)
	}
	r2, err := ReadResponse(path)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "floor.sock")
	ls, err := Listen("127.0.0.1:0", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ls, r2) }()

	unix := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	for _, c := range []struct {
		name string
		c    *http.Client
		url  string
	}{{"tcp", http.DefaultClient, "http://" + ls[0].Addr().String() + "/v1/pools/x/token"}, {"unix", unix, "http://floor/anything"}} {
		resp, err := c.c.Get(c.url)
		if err != nil {
			t.Fatal(c.name, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(got) != string(body) || resp.StatusCode != 200 || resp.Header.Get("X-Tokend-Index") != "42" || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %v %q", c.name, resp.StatusCode, resp.Header, got)
		}
	}
	unix.CloseIdleConnections()
	http.DefaultClient.CloseIdleConnections()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

func TestListenNeedsAnAddress(t *testing.T) {
	if _, err := Listen("", ""); err == nil {
		t.Error("no address accepted")
	}
}
