package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokend/tokend/api"
)

// Defaults of CacheOptions.
const (
	DefaultCacheExpiryMargin = 5 * time.Second
	DefaultCacheMaxStale     = time.Second
	DefaultCacheMaxAge       = 10 * time.Second
)

// agentExpiryMargin is how long before its expires_at the agent stops
// serving a token (tokens.ExpiryMargin, which this package may not import).
const agentExpiryMargin = time.Second

// CacheOptions tune a Cache. Zero fields take the defaults above.
type CacheOptions struct {
	// ExpiryMargin: a cached token is served only while it stays valid at
	// least this long by its expires_at. It is never less than the agent's
	// own margin (1 s).
	ExpiryMargin time.Duration
	// MaxStale bounds how long the cache serves from memory without having
	// heard from the agent that nothing changed: a hit needs an answer of
	// the change watch that was asked for at most MaxStale ago. When the
	// watch cannot confirm that (agent down, hung, restarting, access
	// refused), every fetch is a round trip to the agent.
	MaxStale time.Duration
	// MaxAge bounds how long one answer is served at all, whatever the
	// watch says: it covers what the change watch does not carry (see
	// Cache).
	MaxAge time.Duration
}

// Cache serves repeat token fetches from memory, without a round trip to
// the agent, for as long as the answer is known to be the agent's answer.
// It is opt-in: NewCache wraps a Client, which stays as it was.
//
// What it guarantees, for a pool fetched through it:
//
//   - it never serves a token within ExpiryMargin of its expires_at;
//   - after Report through the cache of any outcome but ok, it serves
//     nothing fetched before that report was answered;
//   - a change the agent has applied to the pool — a token failed, cooling
//     down or degraded by any agent's report, reset, added, removed,
//     rotated or retired, the pool applied or deleted, a snapshot restored,
//     an ACL change — reaches it through one background watch of the
//     agent's events (GET /v1/events with wait, a blocking query), usually
//     within milliseconds, and drops the pool's answer;
//   - it serves from memory only while that watch has an answer asked for
//     at most MaxStale ago: an answer served at time t was current on the
//     agent at some moment after t − MaxStale. When the watch breaks, the
//     cache makes every fetch a round trip until the watch answers again,
//     and it retries with backoff (an agent restart is a broken watch).
//
// What the watch does not carry, MaxAge bounds: a report another process
// made to the same agent that the cluster has not committed (no leader,
// or below the pool's report_quorum) makes that agent skip the token at
// once but is not an event; a cooldown ending and a token reaching its
// not_before make more tokens eligible without one; and selection
// policies other than priority (round_robin, least_used, random) pick per
// fetch, which the cache defeats for up to MaxAge.
//
// Fetches with Exclude or Consistent, and every fetch of a client made
// WithConsistentReads, bypass the cache. Errors are never cached.
// Concurrent misses of one pool share one fetch. A Cache is safe for
// concurrent use; Close stops its watch.
//
// Over TCP with ACLs the watch needs a token with operator (events are a
// cluster read); without it the watch is refused and every fetch is a
// round trip (Stats says why). Over the unix socket events are open.
type Cache struct {
	c    *Client
	opts CacheOptions
	wait time.Duration // how long one watch request may block
	base time.Time     // monotonic origin of confirmed

	// confirmed is when (nanoseconds since base) the watch request whose
	// answer came back last was sent; 0 while the watch is broken.
	confirmed atomic.Int64

	hits, misses, bypassed atomic.Uint64

	// entries maps a pool to its answer. The map is never modified: a
	// writer, holding mu, swaps in a changed copy, so a hit takes no lock.
	entries atomic.Pointer[map[string]*cacheEntry]

	mu sync.Mutex
	// flights are the fetches running, by pool and wait. Invalidating a
	// pool marks its flights stale and forgets them, so that their answers
	// are not kept and later misses do not share them.
	flights  map[flightKey]*flight
	watchErr string
	closed   bool

	cancel context.CancelFunc
	done   chan struct{}
}

type cacheEntry struct {
	tok     api.Token
	meta    Meta
	fetched time.Time
	expires time.Time // zero: the token does not expire
}

// flight is one fetch that concurrent misses of a pool share.
type flight struct {
	stale bool // guarded by Cache.mu
	done  chan struct{}
	tok   api.Token
	meta  Meta
	err   error
}

type flightKey struct {
	pool string
	wait time.Duration
}

// NewCache returns a cache in front of c and starts its change watch.
// Close it when done.
func NewCache(c *Client, opts CacheOptions) *Cache {
	if opts.ExpiryMargin <= 0 {
		opts.ExpiryMargin = DefaultCacheExpiryMargin
	}
	if opts.ExpiryMargin < agentExpiryMargin {
		opts.ExpiryMargin = agentExpiryMargin
	}
	if opts.MaxStale <= 0 {
		opts.MaxStale = DefaultCacheMaxStale
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = DefaultCacheMaxAge
	}
	ctx, cancel := context.WithCancel(context.Background())
	k := &Cache{
		c:    c,
		opts: opts,
		// A watch request answers within wait when nothing happens, so
		// an answer asked for at most 2·wait (plus two round trips) ago is
		// always at hand while the agent is well.
		wait:    min(opts.MaxStale/4, api.MaxEventsWait),
		base:    time.Now(),
		flights: map[flightKey]*flight{},
		cancel:  cancel,
		done:    make(chan struct{}),
	}
	k.entries.Store(&map[string]*cacheEntry{})
	if c.consistent {
		// Every fetch bypasses the cache: nothing to watch for.
		close(k.done)
		return k
	}
	go k.watch(ctx)
	return k
}

// Client returns the client the cache fetches through.
func (k *Cache) Client() *Client { return k.c }

// Close stops the change watch and waits for it to end. Afterwards every
// fetch is a round trip.
func (k *Cache) Close() error {
	k.mu.Lock()
	k.closed = true
	k.mu.Unlock()
	k.cancel()
	<-k.done
	k.confirmed.Store(0)
	k.dropAll("")
	return nil
}

// CacheStats count what the cache did.
type CacheStats struct {
	// Hits were served from memory; Misses went to the agent (including
	// while the watch could not confirm freshness); Bypassed were not
	// cacheable (Exclude, Consistent).
	Hits, Misses, Bypassed uint64
	// Entries is how many pools have an answer held.
	Entries int
	// Fresh says the change watch has confirmed freshness within MaxStale.
	Fresh bool
	// WatchError is why the watch last failed, empty once it answers.
	WatchError string
}

// Stats returns the cache's counters and the state of its watch.
func (k *Cache) Stats() CacheStats {
	k.mu.Lock()
	defer k.mu.Unlock()
	return CacheStats{
		Hits: k.hits.Load(), Misses: k.misses.Load(), Bypassed: k.bypassed.Load(),
		Entries: len(*k.entries.Load()), Fresh: k.fresh(time.Now()), WatchError: k.watchErr,
	}
}

// Invalidate drops what the cache holds for pool: the next fetch asks the
// agent.
func (k *Cache) Invalidate(pool string) {
	k.mu.Lock()
	k.invalidateLocked(pool)
	k.mu.Unlock()
}

func (k *Cache) invalidateLocked(pool string) {
	for key, f := range k.flights {
		if key.pool == pool {
			f.stale = true
			delete(k.flights, key)
		}
	}
	if _, ok := (*k.entries.Load())[pool]; ok {
		k.setEntryLocked(pool, nil)
	}
}

// setEntryLocked holds e as pool's answer, or drops pool's answer when e is
// nil.
func (k *Cache) setEntryLocked(pool string, e *cacheEntry) {
	old := *k.entries.Load()
	m := make(map[string]*cacheEntry, len(old)+1)
	for p, o := range old {
		if p != pool {
			m[p] = o
		}
	}
	if e != nil {
		m[pool] = e
	}
	k.entries.Store(&m)
}

// dropAllLocked drops every pool's answer.
func (k *Cache) dropAllLocked() {
	for _, f := range k.flights {
		f.stale = true
	}
	clear(k.flights)
	k.entries.Store(&map[string]*cacheEntry{})
}

// dropAll drops every answer; reason, when not empty, is kept as the
// watch's error.
func (k *Cache) dropAll(reason string) {
	k.mu.Lock()
	k.dropAllLocked()
	k.watchErr = reason
	k.mu.Unlock()
}

// fresh reports whether the watch has confirmed the agent's state within
// MaxStale of now.
func (k *Cache) fresh(now time.Time) bool {
	c := k.confirmed.Load()
	return c != 0 && int64(now.Sub(k.base))-c <= int64(k.opts.MaxStale)
}

// lookup returns the answer held for pool if it may be served at now.
func (k *Cache) lookup(pool string, now time.Time) (*cacheEntry, bool) {
	if !k.fresh(now) {
		return nil, false
	}
	e := (*k.entries.Load())[pool]
	if e == nil || !k.servable(e, now) {
		return nil, false
	}
	return e, true
}

func (k *Cache) servable(e *cacheEntry, now time.Time) bool {
	if now.Sub(e.fetched) >= k.opts.MaxAge {
		return false
	}
	return e.expires.IsZero() || now.Add(k.opts.ExpiryMargin).Before(e.expires)
}

func cacheable(opts FetchOptions) bool { return len(opts.Exclude) == 0 && !opts.Consistent }

// FetchToken is Client.FetchToken, served from memory when the cache may.
// Meta.Cached says it was; Meta then describes the fetch that filled the
// cache. The token's Labels map is shared: do not modify it.
func (k *Cache) FetchToken(ctx context.Context, pool string, opts FetchOptions) (api.Token, Meta, error) {
	if !cacheable(opts) || k.c.consistent {
		k.bypassed.Add(1)
		return k.c.FetchToken(ctx, pool, opts)
	}
	if e, ok := k.lookup(pool, time.Now()); ok {
		k.hits.Add(1)
		meta := e.meta
		meta.Cached = true
		return e.tok, meta, nil
	}
	k.misses.Add(1)
	return k.fill(ctx, pool, opts.Wait)
}

// FetchRaw is FetchToken returning the value and id alone, like
// Client.FetchRaw. A miss fetches JSON, which carries the expiry.
func (k *Cache) FetchRaw(ctx context.Context, pool string, opts FetchOptions) (RawToken, Meta, error) {
	if !cacheable(opts) || k.c.consistent {
		k.bypassed.Add(1)
		return k.c.FetchRaw(ctx, pool, opts)
	}
	tok, meta, err := k.FetchToken(ctx, pool, opts)
	if err != nil {
		return RawToken{}, Meta{}, err
	}
	return RawToken{ID: tok.ID, Value: tok.Value}, meta, nil
}

// Report is Client.Report. Any outcome but ok drops the pool's answer
// before the report is sent and again once it is answered, so no answer
// fetched before the agent took the report is served afterwards (the agent
// that takes a report skips the token at once).
func (k *Cache) Report(ctx context.Context, pool, id string, req api.ReportRequest) (api.ReportResponse, error) {
	if req.Outcome != "ok" {
		k.Invalidate(pool)
		defer k.Invalidate(pool)
	}
	return k.c.Report(ctx, pool, id, req)
}

// fill fetches pool from the agent, sharing the fetch with concurrent
// misses that started since the pool was last invalidated, and keeps the
// answer if nothing invalidated the pool meanwhile.
func (k *Cache) fill(ctx context.Context, pool string, wait time.Duration) (api.Token, Meta, error) {
	for {
		k.mu.Lock()
		key := flightKey{pool, wait}
		f := k.flights[key]
		if f == nil {
			f = &flight{done: make(chan struct{})}
			k.flights[key] = f
			k.mu.Unlock()
			f.tok, f.meta, f.err = k.c.FetchToken(ctx, pool, FetchOptions{Wait: wait})
			k.land(key, f)
			return f.tok, f.meta, f.err
		}
		k.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return api.Token{}, Meta{}, ctx.Err()
		}
		// The caller that ran the fetch gave up; this one has not.
		if f.err != nil && (errors.Is(f.err, context.Canceled) || errors.Is(f.err, context.DeadlineExceeded)) && ctx.Err() == nil {
			continue
		}
		return f.tok, f.meta, f.err
	}
}

// land ends flight f and keeps its answer when it may be served.
func (k *Cache) land(key flightKey, f *flight) {
	now := time.Now()
	e := &cacheEntry{tok: f.tok, meta: f.meta, fetched: now}
	if f.tok.ExpiresAt != nil {
		e.expires = *f.tok.ExpiresAt
	}
	k.mu.Lock()
	if k.flights[key] == f {
		delete(k.flights, key)
	}
	if f.err == nil && !f.stale && !k.closed && k.fresh(now) && k.servable(e, now) {
		k.setEntryLocked(key.pool, e)
	}
	k.mu.Unlock()
	close(f.done)
}

// Bounds of the watch's retry backoff.
const (
	watchBackoffMin = 50 * time.Millisecond
	watchBackoffMax = 5 * time.Second
)

// watch follows the agent's events until ctx ends, dropping the answers of
// every pool an event names, and confirming freshness with each answer.
func (k *Cache) watch(ctx context.Context) {
	defer close(k.done)
	var since uint64
	synced := false // since is the agent's index, not a guess
	backoff := watchBackoffMin
	for ctx.Err() == nil {
		opts := EventsOptions{Since: since, Limit: api.MaxEventsLimit}
		if synced {
			opts.Wait = k.wait
		}
		sent := time.Now()
		// A hung agent or a lost connection must not hold the watch
		// forever: a request gets its wait and MaxStale on top.
		rctx, cancel := context.WithTimeout(ctx, opts.Wait+k.opts.MaxStale+time.Second)
		evs, err := k.c.Events(rctx, opts)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// Whatever happened while the watch was down is unknown: drop
			// everything, and serve nothing until it answers again.
			k.confirmed.Store(0)
			k.dropAll(err.Error())
			synced = false
			d := backoff/2 + rand.N(backoff/2+1)
			backoff = min(2*backoff, watchBackoffMax)
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		backoff = watchBackoffMin
		// The agent lost events after since, or its index went back (a
		// new agent at this address): anything may have changed.
		if evs.Truncated || evs.Index < since {
			k.dropAll("")
		}
		k.apply(evs)
		since = evs.Index
		if len(evs.Events) >= opts.Limit {
			continue // more to read before the state is current
		}
		synced = true
		k.mu.Lock()
		k.watchErr = ""
		k.mu.Unlock()
		// Every change the agent applied up to at least sent is applied
		// here now.
		k.confirmed.Store(max(int64(sent.Sub(k.base)), 1))
	}
}

// apply drops the answers that events may have changed.
func (k *Cache) apply(events api.Events) {
	if len(events.Events) == 0 {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, ev := range events.Events {
		if ev.Pool == "" || ev.Type == "snapshot_restored" {
			// ACL and cluster-wide changes (a policy may no longer allow
			// this caller): every pool.
			k.dropAllLocked()
			continue
		}
		k.invalidateLocked(ev.Pool)
	}
}
