package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
	"github.com/tokend/tokend/tokens"
)

// countFetches makes c count the token fetches it sends.
func countFetches(c *Client) *atomic.Int64 {
	var n atomic.Int64
	next := c.hc.Transport
	c.hc.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if strings.HasSuffix(r.URL.Path, "/token") {
			n.Add(1)
		}
		return next.RoundTrip(r)
	})
	return &n
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// steadyMaxStale is the MaxStale of tests that count requests: long enough
// that a loaded machine's stall cannot make the watch miss it.
const steadyMaxStale = 5 * time.Second

// newCache returns a cache that is closed when the test ends, once its
// watch has confirmed freshness.
func newCache(t *testing.T, c *Client, opts CacheOptions) *Cache {
	t.Helper()
	k := NewCache(c, opts)
	t.Cleanup(func() { _ = k.Close() })
	testutil.WaitFor(t, 10*time.Second, func() error {
		if s := k.Stats(); !s.Fresh {
			return fmt.Errorf("the cache's watch has not confirmed freshness: %q", s.WatchError)
		}
		return nil
	})
	return k
}

// cachedPool makes pool on the agent with a primary token and a backup.
func cachedPool(t *testing.T, ctx context.Context, c *Client, pool string, primaryExpires *time.Time) (primary, backup api.TokenInfo) {
	t.Helper()
	if _, err := c.ApplyPool(ctx, pool, api.PoolRequest{}); err != nil {
		t.Fatal(err)
	}
	primary, err := c.AddToken(ctx, pool, api.TokenRequest{Value: pool + "-primary", Priority: 1, ExpiresAt: primaryExpires})
	if err != nil {
		t.Fatal(err)
	}
	if backup, err = c.AddToken(ctx, pool, api.TokenRequest{Value: pool + "-backup", Priority: 2}); err != nil {
		t.Fatal(err)
	}
	return primary, backup
}

// fetchVia fetches pool through k and fails the test on an error.
func fetchVia(t *testing.T, ctx context.Context, k *Cache, pool string) (api.Token, Meta) {
	t.Helper()
	tok, meta, err := k.FetchToken(ctx, pool, FetchOptions{})
	if err != nil {
		t.Fatalf("fetch %s through the cache: %v", pool, err)
	}
	return tok, meta
}

// TestCacheHit checks a repeat fetch is served from memory, without a
// request and without allocating, and that what must not be cached is not.
func TestCacheHit(t *testing.T) {
	a := startAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := New("unix://" + a.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	primary, backup := cachedPool(t, ctx, c, "hits", nil)
	fetches := countFetches(c)
	k := newCache(t, c, CacheOptions{MaxStale: steadyMaxStale})

	tok, meta := fetchVia(t, ctx, k, "hits")
	if tok.ID != primary.ID || tok.Value != "hits-primary" || meta.Cached || meta.Index == 0 {
		t.Fatalf("first fetch = %+v, %+v; want %s from the agent", tok, meta, primary.ID)
	}
	for range 10 {
		tok, meta = fetchVia(t, ctx, k, "hits")
		if tok.ID != primary.ID || tok.Value != "hits-primary" || !meta.Cached {
			t.Fatalf("repeat fetch = %+v, %+v; want %s from the cache", tok, meta, primary.ID)
		}
	}
	raw, meta, err := k.FetchRaw(ctx, "hits", FetchOptions{})
	if err != nil || raw.ID != primary.ID || raw.Value != "hits-primary" || !meta.Cached {
		t.Fatalf("FetchRaw = %+v, %+v, %v; want %s from the cache", raw, meta, err, primary.ID)
	}
	if n := fetches.Load(); n != 1 {
		t.Fatalf("%d fetches reached the agent, want 1", n)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, _, err := k.FetchToken(ctx, "hits", FetchOptions{}); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("a cache hit allocates %v times, want 0", allocs)
	}

	// Exclude and consistent fetches always ask the agent.
	tok, meta, err = k.FetchToken(ctx, "hits", FetchOptions{Exclude: []string{primary.ID}})
	if err != nil || tok.ID != backup.ID || meta.Cached {
		t.Fatalf("fetch excluding %s = %+v, %+v, %v; want %s from the agent", primary.ID, tok, meta, err, backup.ID)
	}
	if _, meta, err = k.FetchToken(ctx, "hits", FetchOptions{Consistent: true}); err != nil || meta.Cached || !meta.Consistent {
		t.Fatalf("consistent fetch = %+v, %v; want a consistent read from the agent", meta, err)
	}
	if n := fetches.Load(); n != 3 {
		t.Fatalf("%d fetches reached the agent, want 3", n)
	}
	// An error is not cached.
	for range 2 {
		if _, _, err := k.FetchToken(ctx, "no-such-pool", FetchOptions{}); ErrorCode(err) != "pool_not_found" {
			t.Fatalf("fetch of a missing pool: %v, want pool_not_found", err)
		}
	}
	if n := fetches.Load(); n != 5 {
		t.Fatalf("%d fetches reached the agent, want 5", n)
	}
	if s := k.Stats(); s.Hits < 111 || s.Bypassed != 2 || s.Entries != 1 || !s.Fresh {
		t.Fatalf("stats = %+v", s)
	}
}

// TestCacheExpiry checks a token is never served from memory within the
// expiry margin, and is asked for again from then on.
func TestCacheExpiry(t *testing.T) {
	a := startAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := New("unix://" + a.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	// The agent serves the primary until 1 s before it expires; the cache
	// only until 2 s before.
	const margin = 2 * time.Second
	expires := time.Now().Add(margin + 2*time.Second)
	primary, backup := cachedPool(t, ctx, c, "expiry", &expires)
	fetches := countFetches(c)
	k := newCache(t, c, CacheOptions{ExpiryMargin: margin})

	var cached, uncached int
	testutil.WaitFor(t, 10*time.Second, func() error {
		before := time.Now()
		tok, meta := fetchVia(t, ctx, k, "expiry")
		switch {
		case meta.Cached && !before.Add(margin).Before(expires):
			t.Fatalf("served %s from memory at %s, within %s of its expiry at %s", tok.ID, before, margin, expires)
		case meta.Cached:
			cached++
		case tok.ID == primary.ID && before.Add(margin).After(expires):
			uncached++ // within the margin: asked for every time
		}
		if uncached < 3 {
			return fmt.Errorf("%d fetches from memory, %d of the primary within the margin from the agent", cached, uncached)
		}
		return nil
	})
	if cached == 0 {
		t.Fatal("nothing was served from memory before the margin")
	}
	if n := fetches.Load(); n < int64(uncached) {
		t.Fatalf("%d fetches reached the agent, want at least %d", n, uncached)
	}
	// Once the agent serves the backup, which does not expire, it is
	// cached again.
	testutil.WaitFor(t, 10*time.Second, func() error {
		if tok, meta := fetchVia(t, ctx, k, "expiry"); tok.ID != backup.ID || !meta.Cached {
			return fmt.Errorf("fetch = %s (cached %v), want %s from memory", tok.ID, meta.Cached, backup.ID)
		}
		return nil
	})
}

// TestCacheReport checks a report through the cache drops the pool's
// answer at once.
func TestCacheReport(t *testing.T) {
	a := startAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := New("unix://" + a.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	primary, backup := cachedPool(t, ctx, c, "report", nil)
	fetches := countFetches(c)
	k := newCache(t, c, CacheOptions{MaxStale: steadyMaxStale})

	fetchVia(t, ctx, k, "report")
	if _, meta := fetchVia(t, ctx, k, "report"); !meta.Cached {
		t.Fatal("repeat fetch was not cached")
	}
	// ok changes nothing.
	if _, err := k.Report(ctx, "report", primary.ID, api.ReportRequest{Outcome: "ok"}); err != nil {
		t.Fatal(err)
	}
	if tok, meta := fetchVia(t, ctx, k, "report"); !meta.Cached || tok.ID != primary.ID {
		t.Fatalf("fetch after an ok report = %s (cached %v), want %s from memory", tok.ID, meta.Cached, primary.ID)
	}
	if _, err := k.Report(ctx, "report", primary.ID, api.ReportRequest{Outcome: "unauthorized"}); err != nil {
		t.Fatal(err)
	}
	tok, meta := fetchVia(t, ctx, k, "report")
	if tok.ID != backup.ID || meta.Cached {
		t.Fatalf("fetch after reporting %s = %s (cached %v), want %s from the agent", primary.ID, tok.ID, meta.Cached, backup.ID)
	}
	if n := fetches.Load(); n != 2 {
		t.Fatalf("%d fetches reached the agent, want 2", n)
	}
}

// TestCacheSeesChanges checks changes made through another client reach
// the cache through its watch: another agent's report, a removal, a reset,
// a new token and the pool's deletion.
func TestCacheSeesChanges(t *testing.T) {
	a := startAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	other, err := New("http://" + a.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	c, err := New("unix://" + a.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	primary, backup := cachedPool(t, ctx, other, "changes", nil)
	k := newCache(t, c, CacheOptions{})

	// expect polls until the cache serves want, and returns how long that
	// took after the change.
	expect := func(what, want string) {
		t.Helper()
		start := time.Now()
		testutil.WaitFor(t, 10*time.Second, func() error {
			tok, _, err := k.FetchToken(ctx, "changes", FetchOptions{})
			if want == "" {
				if ErrorCode(err) != "pool_not_found" {
					return fmt.Errorf("after %s: fetch = %s, %v; want pool_not_found", what, tok.ID, err)
				}
				return nil
			}
			if err != nil || tok.ID != want {
				return fmt.Errorf("after %s: fetch = %s, %v; want %s", what, tok.ID, err, want)
			}
			return nil
		})
		t.Logf("after %s: the cache served the change %v later", what, time.Since(start))
		// Served from memory again afterwards.
		if want != "" {
			testutil.WaitFor(t, 10*time.Second, func() error {
				if _, meta := fetchVia(t, ctx, k, "changes"); !meta.Cached {
					return fmt.Errorf("after %s: not served from memory", what)
				}
				return nil
			})
		}
	}
	expect("the start", primary.ID)

	// Another client's report makes the agent fail the token through Raft
	// (a second reporter: the last-eligible guard does not apply, there is
	// a backup).
	if _, err := other.Report(ctx, "changes", primary.ID, api.ReportRequest{Outcome: "unauthorized"}); err != nil {
		t.Fatal(err)
	}
	expect("a report elsewhere", backup.ID)
	if _, err := other.ResetToken(ctx, "changes", primary.ID); err != nil {
		t.Fatal(err)
	}
	expect("a reset", primary.ID)
	if _, err := other.RemoveToken(ctx, "changes", primary.ID); err != nil {
		t.Fatal(err)
	}
	expect("a removal", backup.ID)
	added, err := other.AddToken(ctx, "changes", api.TokenRequest{Value: "changes-new", Priority: 0})
	if err != nil {
		t.Fatal(err)
	}
	expect("a new token", added.ID)
	if _, err := other.DeletePool(ctx, "changes", true); err != nil {
		t.Fatal(err)
	}
	expect("the pool's deletion", "")
}

// cacheAgent answers token fetches and events like an agent, counting
// fetches, and can hold fetches or break the events endpoint.
type cacheAgent struct {
	srv     *httptest.Server
	fetches atomic.Int64

	mu      sync.Mutex
	index   uint64
	events  []tokens.Event
	changed chan struct{} // closed and replaced on every event
	token   string        // the id served
	broken  bool          // events answer 500
	hold    chan struct{} // when not nil, fetches wait for it
	hang    chan struct{} // when not nil, events wait for it
}

func newCacheAgent(t *testing.T) *cacheAgent {
	f := &cacheAgent{index: 10, changed: make(chan struct{}), token: "tok_1"}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/pools/{pool}/token", func(w http.ResponseWriter, r *http.Request) {
		f.fetches.Add(1)
		f.mu.Lock()
		hold, id, index := f.hold, f.token, f.index
		f.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set(api.HeaderIndex, strconv.FormatUint(index, 10))
		_ = json.NewEncoder(w).Encode(api.Token{ID: id, Pool: r.PathValue("pool"), Value: "value-" + id, Health: "healthy"})
	})
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		hang := f.hang
		f.mu.Unlock()
		if hang != nil {
			select {
			case <-hang:
			case <-r.Context().Done():
				return
			}
		}
		since, _ := strconv.ParseUint(r.URL.Query().Get("since"), 10, 64)
		wait, _ := time.ParseDuration(r.URL.Query().Get("wait"))
		deadline := time.NewTimer(wait)
		defer deadline.Stop()
		for {
			f.mu.Lock()
			broken, changed, index := f.broken, f.changed, f.index
			var out []tokens.Event
			for _, ev := range f.events {
				if ev.Index > since {
					out = append(out, ev)
				}
			}
			f.mu.Unlock()
			if broken {
				http.Error(w, `{"error":{"code":"unavailable","message":"broken"}}`, http.StatusServiceUnavailable)
				return
			}
			if len(out) > 0 || wait == 0 {
				_ = json.NewEncoder(w).Encode(api.Events{Index: index, Events: append([]tokens.Event{}, out...)})
				return
			}
			select {
			case <-changed:
			case <-deadline.C:
				wait = 0
			case <-r.Context().Done():
				return
			}
		}
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

// change records an event for pool and serves id from then on.
func (f *cacheAgent) change(pool, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index++
	f.token = id
	f.events = append(f.events, tokens.Event{Index: f.index, Type: tokens.EventTokenHealth, Pool: pool})
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *cacheAgent) setBroken(b bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.broken = b
	close(f.changed) // wake held watch requests
	f.changed = make(chan struct{})
}

func (f *cacheAgent) client(t *testing.T) *Client {
	c, err := New(f.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCacheWatchBroken checks the cache asks the agent every time while its
// watch cannot confirm freshness, whether the watch fails or hangs, and
// serves from memory again once the watch is back.
func TestCacheWatchBroken(t *testing.T) {
	f := newCacheAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const maxStale = 200 * time.Millisecond
	k := newCache(t, f.client(t), CacheOptions{MaxStale: maxStale})

	cachedNext := func() bool {
		_, meta := fetchVia(t, ctx, k, "p")
		return meta.Cached
	}
	cachedNext()
	if !cachedNext() {
		t.Fatal("repeat fetch was not cached")
	}
	f.setBroken(true)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if s := k.Stats(); s.Fresh || s.WatchError == "" {
			return fmt.Errorf("stats = %+v, want the watch's error", s)
		}
		return nil
	})
	before := f.fetches.Load()
	for i := range 5 {
		if cachedNext() {
			t.Fatalf("fetch %d was served from memory while the watch is broken", i)
		}
	}
	if n := f.fetches.Load() - before; n != 5 {
		t.Fatalf("%d of 5 fetches reached the agent while the watch is broken", n)
	}
	// A change made while the watch was down is seen once it is back.
	f.change("p", "tok_2")
	f.setBroken(false)
	testutil.WaitFor(t, 10*time.Second, func() error {
		tok, meta := fetchVia(t, ctx, k, "p")
		if tok.ID != "tok_2" || !meta.Cached {
			return fmt.Errorf("fetch = %s (cached %v), want tok_2 from memory", tok.ID, meta.Cached)
		}
		return nil
	})
	if s := k.Stats(); s.WatchError != "" {
		t.Fatalf("stats = %+v, want no watch error", s)
	}

	// A watch request that hangs confirms nothing: after MaxStale every
	// fetch is a round trip.
	hang := make(chan struct{})
	f.mu.Lock()
	f.hang = hang
	f.mu.Unlock()
	defer close(hang)
	start := time.Now()
	testutil.WaitFor(t, 10*time.Second, func() error {
		if cachedNext() {
			return fmt.Errorf("served from memory %v after the watch hung", time.Since(start))
		}
		return nil
	})
	t.Logf("the cache stopped serving from memory %v after the watch hung (MaxStale %v)", time.Since(start), maxStale)
}

// TestCacheSingleflight checks concurrent misses of one pool share one
// fetch, and that a report while a fetch is in flight keeps its answer out
// of the cache.
func TestCacheSingleflight(t *testing.T) {
	f := newCacheAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	k := newCache(t, f.client(t), CacheOptions{})

	hold := func() chan struct{} {
		h := make(chan struct{})
		f.mu.Lock()
		f.hold = h
		f.mu.Unlock()
		return h
	}
	h := hold()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if tok, _, err := k.FetchToken(ctx, "p", FetchOptions{}); err != nil || tok.ID != "tok_1" {
				t.Errorf("concurrent fetch = %+v, %v", tok, err)
			}
		})
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if s := k.Stats(); s.Misses != 8 {
			return fmt.Errorf("%d of 8 fetches missed so far", s.Misses)
		}
		return nil
	})
	close(h)
	wg.Wait()
	if n := f.fetches.Load(); n != 1 {
		t.Fatalf("8 concurrent misses made %d fetches, want 1", n)
	}

	// A fetch in flight while a report is made is not kept.
	k.Invalidate("p")
	h = hold()
	got := make(chan api.Token, 1)
	go func() {
		tok, _, _ := k.FetchToken(ctx, "p", FetchOptions{})
		got <- tok
	}()
	testutil.WaitFor(t, 10*time.Second, func() error {
		if n := f.fetches.Load(); n != 2 {
			return fmt.Errorf("%d fetches, want the second in flight", n)
		}
		return nil
	})
	if _, err := k.Report(ctx, "p", "tok_1", api.ReportRequest{Outcome: "unauthorized"}); err == nil {
		t.Fatal("the fake agent took a report") // it has no such endpoint
	}
	close(h)
	<-got
	f.mu.Lock()
	f.hold = nil
	f.mu.Unlock()
	if _, meta := fetchVia(t, ctx, k, "p"); meta.Cached {
		t.Fatal("the answer of a fetch that began before the report was kept")
	}
	if n := f.fetches.Load(); n != 3 {
		t.Fatalf("%d fetches, want 3", n)
	}
}

// TestCacheClose checks Close ends the watch and leaves fetches to the
// agent.
func TestCacheClose(t *testing.T) {
	f := newCacheAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	k := newCache(t, f.client(t), CacheOptions{})
	fetchVia(t, ctx, k, "p")
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-k.done:
	default:
		t.Fatal("Close returned before the watch ended")
	}
	if _, meta := fetchVia(t, ctx, k, "p"); meta.Cached {
		t.Fatal("served from memory after Close")
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCacheCluster checks, on three agents, that a report taken by another
// agent reaches a cache on a follower through Raft and the watch, and that
// the cache survives its agent's restart: no answer from memory while the
// agent is down, a change made meanwhile seen afterwards, and answers from
// memory again once the watch is back.
func TestCacheCluster(t *testing.T) {
	cl := testutil.NewCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	followers := cl.Followers()
	near, far := followers[0], followers[1]
	other, err := New("http://" + far.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	primary, backup := cachedPool(t, ctx, other, "cluster", nil)
	c, err := New("unix://" + near.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	k := newCache(t, c, CacheOptions{})
	serves := func(what, want string, cached bool) {
		t.Helper()
		start := time.Now()
		testutil.WaitFor(t, 15*time.Second, func() error {
			tok, meta, err := k.FetchToken(ctx, "cluster", FetchOptions{})
			if err != nil || tok.ID != want || meta.Cached != cached {
				return fmt.Errorf("%s: fetch = %s (cached %v), %v; want %s (cached %v)", what, tok.ID, meta.Cached, err, want, cached)
			}
			return nil
		})
		t.Logf("%s: %v", what, time.Since(start))
	}
	serves("the start", primary.ID, true)

	if _, err := other.Report(ctx, "cluster", primary.ID, api.ReportRequest{Outcome: "unauthorized"}); err != nil {
		t.Fatal(err)
	}
	serves("a report to another agent", backup.ID, true)

	cl.Stop(near)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if s := k.Stats(); s.Fresh {
			return fmt.Errorf("the watch still confirms freshness with its agent down")
		}
		return nil
	})
	if tok, meta, err := k.FetchToken(ctx, "cluster", FetchOptions{}); err == nil || meta.Cached {
		t.Fatalf("fetch with the agent down = %s (cached %v), %v; want an error", tok.ID, meta.Cached, err)
	}
	// Meanwhile the primary comes back.
	if _, err := other.ResetToken(ctx, "cluster", primary.ID); err != nil {
		t.Fatal(err)
	}
	cl.Restart(near)
	serves("the agent's restart and a reset meanwhile", primary.ID, true)
}

// TestCacheConsistentClient checks a cache in front of a client that makes
// consistent reads passes every fetch through and watches nothing.
func TestCacheConsistentClient(t *testing.T) {
	f := newCacheAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := New(f.srv.URL, WithConsistentReads())
	if err != nil {
		t.Fatal(err)
	}
	k := NewCache(c, CacheOptions{})
	defer k.Close()
	for range 3 {
		if _, meta := fetchVia(t, ctx, k, "p"); meta.Cached {
			t.Fatal("a consistent client's fetch was served from memory")
		}
	}
	if s := k.Stats(); f.fetches.Load() != 3 || s.Bypassed != 3 || s.Fresh {
		t.Fatalf("%d fetches, stats %+v; want 3 bypassed and no watch", f.fetches.Load(), s)
	}
}
