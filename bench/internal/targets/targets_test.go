package targets

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/bench/internal/load"
	"github.com/tokend/tokend/tokens"
)

func TestUniqueValue(t *testing.T) {
	base := strings.Repeat("x", 40)
	a, b := UniqueValue(base, 1), UniqueValue(base, 2)
	if len(a) != 40 || len(b) != 40 || a == b {
		t.Errorf("%q %q", a, b)
	}
	if a != strings.Repeat("x", 30)+"0000000001" {
		t.Errorf("%q", a)
	}
	if got := UniqueValue(strings.Repeat("y", 10), 12345678901); got != "2345678901" {
		t.Errorf("wrapped %q", got)
	}
}

func TestHTTPGetNeeds200(t *testing.T) {
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/pools/p/token" {
			t.Errorf("path %s", r.URL.Path)
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte("body"))
	}))
	defer srv.Close()
	w, err := HTTPGet(Endpoint{"tcp", strings.TrimPrefix(srv.URL, "http://")}, "/v1/pools/p/token")(0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Op(context.Background()); err != nil {
		t.Fatal(err)
	}
	status = http.StatusServiceUnavailable
	if err := w.Op(context.Background()); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("503 gave %v", err)
	}
}

// fakeAgent answers pool creation, token adds and forced pool deletion
// like a tokend agent, refusing a value a pool holds already.
type fakeAgent struct {
	mu      sync.Mutex
	pools   map[string]map[string]bool
	deleted []string
}

func (f *fakeAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/v1/pools/"), "/")
	switch {
	case r.Method == "PUT" && len(parts) == 1:
		f.pools[parts[0]] = map[string]bool{}
	case r.Method == "DELETE" && len(parts) == 1 && r.URL.Query().Get("force") == "true":
		delete(f.pools, parts[0])
		f.deleted = append(f.deleted, parts[0])
	case r.Method == "POST" && len(parts) == 2 && parts[1] == "tokens":
		var req api.TokenRequest
		p, ok := f.pools[parts[0]]
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || !ok || p[req.Value] || len(req.Value) != 20 {
			w.WriteHeader(http.StatusConflict)
			return
		}
		p[req.Value] = true
		w.WriteHeader(http.StatusCreated)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func TestTokendAddMovesToANewPoolAndCleansUp(t *testing.T) {
	f := &fakeAgent{pools: map[string]map[string]bool{}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	w, err := TokendAdd(Endpoint{"tcp", strings.TrimPrefix(srv.URL, "http://")}, "w7", strings.Repeat("v", 20))(3)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.pools) != 1 || f.pools["w7-3-0"] == nil {
		t.Fatalf("pools before the run: %v", f.pools)
	}
	ops, skips := 0, 0
	for range PoolTokenLimit + 2 {
		switch err := w.Op(context.Background()); {
		case errors.Is(err, load.ErrSkip):
			skips++
		case err != nil:
			t.Fatal(err)
		default:
			ops++
		}
	}
	if ops != PoolTokenLimit+1 || skips != 1 {
		t.Errorf("%d adds, %d skips", ops, skips)
	}
	// The full pool was replaced: deleted once the next was made.
	if len(f.pools) != 1 || len(f.pools["w7-3-1"]) != 1 || len(f.deleted) != 1 || f.deleted[0] != "w7-3-0" {
		t.Errorf("pools %v, deleted %v", f.pools, f.deleted)
	}
	w.Close()
	if len(f.pools) != 0 || len(f.deleted) != 2 {
		t.Errorf("after close: pools %d, deleted %v", len(f.pools), f.deleted)
	}
}

// TestTokendCachedServesFromMemory checks a cached worker fetches the
// pool once before the run and then makes no request per operation.
func TestTokendCachedServesFromMemory(t *testing.T) {
	var fetches, events atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/pools/p/token":
			fetches.Add(1)
			_ = json.NewEncoder(w).Encode(api.Token{ID: "tok_1", Pool: "p", Value: "v", Health: "healthy"})
		case "/v1/events":
			// Nothing happens: a watch request waits as asked, or until
			// the worker closes.
			events.Add(1)
			if wait, _ := time.ParseDuration(r.URL.Query().Get("wait")); wait > 0 {
				select {
				case <-time.After(wait):
				case <-r.Context().Done():
					return
				}
			}
			_ = json.NewEncoder(w).Encode(api.Events{Index: 5, Events: []tokens.Event{}})
		default:
			t.Errorf("unexpected %s %s", r.Method, r.URL.Path)
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()
	w, err := TokendCached(Endpoint{"tcp", strings.TrimPrefix(srv.URL, "http://")}, "p")(0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if n := fetches.Load(); n != 1 || events.Load() == 0 {
		t.Fatalf("%d fetches and %d event requests before the run, want 1 and some", n, events.Load())
	}
	for range 100 {
		if err := w.Op(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if n := fetches.Load(); n != 1 {
		t.Fatalf("%d fetches after 100 operations, want 1", n)
	}
}
