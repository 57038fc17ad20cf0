package api_test

import (
	"fmt"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
	"github.com/tokend/tokend/tokens"
)

// These tests drive the real handler through a real single-node agent, over
// both its TCP address and its unix socket.

func TestPoolAndTokenRoutes(t *testing.T) {
	t.Parallel()
	ta := startAgent(t)
	for _, c := range ta.conns() {
		t.Run(c.name, func(t *testing.T) { testPoolAndTokenRoutes(t, ta, c) })
	}
}

func testPoolAndTokenRoutes(t *testing.T, ta *testAgent, c *conn) {
	pool := c.name + "-routes"
	before := time.Now()

	// Create.
	r := expect(t, c.do(t, http.MethodPut, "/v1/pools/"+pool, api.PoolRequest{MinHealthy: 1, Labels: map[string]string{"team": "core"}}), http.StatusOK)
	created := decode[api.Pool](t, r)
	index := writeIndex(t, r)
	want := api.Pool{
		Name: pool, Selection: "priority", MinHealthy: 1, Provider: api.Provider{Type: "static"},
		Labels: map[string]string{"team": "core"}, CreateIndex: index, ModifyIndex: index,
		CreatedAt: created.CreatedAt, UpdatedAt: created.CreatedAt,
	}
	if !poolEqual(created, want) {
		t.Errorf("created pool\n got %+v\nwant %+v", created, want)
	}
	if created.CreatedAt.Before(before.Add(-time.Second)) || created.CreatedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("created_at %s is not the time of the request (%s)", created.CreatedAt, before)
	}

	// Update keeps the creation and moves the modification.
	r = expect(t, c.do(t, http.MethodPut, "/v1/pools/"+pool, api.PoolRequest{
		Selection: "round_robin", MinHealthy: 2, Provider: &api.Provider{Type: "static"}, Labels: map[string]string{"team": "edge"},
	}), http.StatusOK)
	updated := decode[api.Pool](t, r)
	index = writeIndex(t, r)
	want.Selection, want.MinHealthy, want.Labels, want.ModifyIndex, want.UpdatedAt = "round_robin", 2, map[string]string{"team": "edge"}, index, updated.UpdatedAt
	if !poolEqual(updated, want) || index <= created.ModifyIndex || updated.UpdatedAt.Before(created.UpdatedAt) {
		t.Errorf("updated pool\n got %+v\nwant %+v", updated, want)
	}

	// Reads see the write, with freshness headers.
	r = expect(t, c.get(t, "/v1/pools/"+pool), http.StatusOK)
	if got := freshness(t, r); got < index {
		t.Errorf("read index %d is behind the write at %d", got, index)
	}
	if got := decode[api.Pool](t, r); !poolEqual(got, updated) {
		t.Errorf("GET pool\n got %+v\nwant %+v", got, updated)
	}
	r = expect(t, c.get(t, "/v1/pools"), http.StatusOK)
	freshness(t, r)
	if got := findPool(t, decode[[]api.Pool](t, r), pool); !poolEqual(got, updated) {
		t.Errorf("listed pool\n got %+v\nwant %+v", got, updated)
	}

	// Add a token: 201 with a generated id and no value.
	value := ta.secret("routes-" + c.name + "-S3cr3tV4lue")
	expires := time.Now().Add(time.Hour).Truncate(time.Second).UTC()
	r = expect(t, c.do(t, http.MethodPost, "/v1/pools/"+pool+"/tokens", api.TokenRequest{
		Value: value, ExpiresAt: &expires, Priority: 7, Labels: map[string]string{"env": "prod"},
	}), http.StatusCreated)
	assertNoSecrets(t, "add token response", r.String(), []string{value})
	info := decode[api.TokenInfo](t, r)
	index = writeIndex(t, r)
	if !tokenIDPattern.MatchString(info.ID) {
		t.Errorf("token id %q does not look like tok_ and 16 hex digits", info.ID)
	}
	if info.Pool != pool || info.Priority != 7 || !maps.Equal(info.Labels, map[string]string{"env": "prod"}) ||
		info.ExpiresAt == nil || !info.ExpiresAt.Equal(expires) || info.NotBefore != nil ||
		info.Lifecycle != "active" || info.Health.State != "healthy" ||
		info.CreateIndex != index || info.ModifyIndex != index || info.CreatedAt.IsZero() {
		t.Errorf("added token: %+v (write index %d)", info, index)
	}

	// List, and get one: metadata only.
	r = expect(t, c.get(t, "/v1/pools/"+pool+"/tokens"), http.StatusOK)
	freshness(t, r)
	assertNoSecrets(t, "token list", r.String(), []string{value})
	list := decode[[]api.TokenInfo](t, r)
	if len(list) != 1 || list[0].ID != info.ID || list[0].CreateIndex != info.CreateIndex {
		t.Errorf("token list %+v, want just %s", list, info.ID)
	}
	r = expect(t, c.get(t, "/v1/pools/"+pool+"/tokens/"+info.ID), http.StatusOK)
	freshness(t, r)
	assertNoSecrets(t, "token info", r.String(), []string{value})
	if got := decode[api.TokenInfo](t, r); got.ID != info.ID || got.Priority != 7 || !got.ExpiresAt.Equal(expires) {
		t.Errorf("token info %+v, want %+v", got, info)
	}
	got := decode[api.Pool](t, expect(t, c.get(t, "/v1/pools/"+pool), http.StatusOK))
	if got.Tokens != 1 || got.Eligible != 1 {
		t.Errorf("pool counts tokens=%d eligible=%d, want 1 and 1", got.Tokens, got.Eligible)
	}

	// Fetch as JSON.
	r = expect(t, c.fetch(t, pool, ""), http.StatusOK)
	freshness(t, r)
	checkFetchHeaders(t, r, info.ID)
	tok := decode[api.Token](t, r)
	if tok.ID != info.ID || tok.Pool != pool || tok.Value != value || tok.ExpiresAt == nil || !tok.ExpiresAt.Equal(expires) ||
		tok.Priority != 7 || !maps.Equal(tok.Labels, info.Labels) || tok.Health != "healthy" {
		t.Errorf("fetched %+v, want token %s with its value", tok, info.ID)
	}
	r = expect(t, c.fetch(t, pool, "?format=json"), http.StatusOK)
	checkFetchHeaders(t, r, info.ID)
	if got := decode[api.Token](t, r); got.Value != value {
		t.Errorf("format=json fetched value %q, want %q", got.Value, value)
	}

	// Fetch raw: the bare value as text.
	r = expect(t, c.fetch(t, pool, "?format=raw"), http.StatusOK)
	freshness(t, r)
	checkFetchHeaders(t, r, info.ID)
	if ct := r.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Errorf("raw Content-Type %q, want text/plain; charset=utf-8", ct)
	}
	if string(r.Body) != value {
		t.Errorf("raw body %q, want exactly %q", r.Body, value)
	}

	// A report that changes nothing.
	r = expect(t, c.report(t, pool, info.ID, api.ReportRequest{Outcome: "ok"}), http.StatusOK)
	assertNoSecrets(t, "report response", r.String(), []string{value})
	if rep := decode[api.ReportResponse](t, r); rep.Pool != pool || rep.ID != info.ID || rep.Changed || rep.Health.State != "healthy" {
		t.Errorf("report ok: %+v", rep)
	}

	// Remove the token.
	r = expect(t, c.do(t, http.MethodDelete, "/v1/pools/"+pool+"/tokens/"+info.ID, nil), http.StatusOK)
	if wr := decode[api.WriteResponse](t, r); wr.Index == 0 || wr.Index != writeIndex(t, r) || wr.Index <= info.CreateIndex {
		t.Errorf("remove token: %+v, header %s", wr, r.Header.Get(api.HeaderIndex))
	}
	expectError(t, c.get(t, "/v1/pools/"+pool+"/tokens/"+info.ID), http.StatusNotFound, tokens.CodeTokenNotFound, info.ID)
	if list := decode[[]api.TokenInfo](t, expect(t, c.get(t, "/v1/pools/"+pool+"/tokens"), http.StatusOK)); len(list) != 0 {
		t.Errorf("tokens after remove: %+v", list)
	}
	expectError(t, c.fetch(t, pool, ""), http.StatusServiceUnavailable, tokens.CodePoolEmpty, pool)

	// Delete the empty pool.
	r = expect(t, c.do(t, http.MethodDelete, "/v1/pools/"+pool, nil), http.StatusOK)
	if wr := decode[api.WriteResponse](t, r); wr.Index == 0 || wr.Index != writeIndex(t, r) {
		t.Errorf("delete pool: %+v, header %s", wr, r.Header.Get(api.HeaderIndex))
	}
	expectError(t, c.get(t, "/v1/pools/"+pool), http.StatusNotFound, tokens.CodePoolNotFound, pool)
	if slices.ContainsFunc(decode[[]api.Pool](t, expect(t, c.get(t, "/v1/pools"), http.StatusOK)), func(p api.Pool) bool { return p.Name == pool }) {
		t.Errorf("deleted pool %s is still listed", pool)
	}

	// Force-delete a pool that still has tokens.
	forced := c.name + "-forced"
	c.putPool(t, forced, api.PoolRequest{})
	c.addToken(t, forced, api.TokenRequest{Value: ta.secret("forced-" + c.name + "-Xy9")})
	r = expect(t, c.do(t, http.MethodDelete, "/v1/pools/"+forced+"?force=true", nil), http.StatusOK)
	writeIndex(t, r)
	expectError(t, c.get(t, "/v1/pools/"+forced+"/tokens"), http.StatusNotFound, tokens.CodePoolNotFound, forced)
}

func checkFetchHeaders(t *testing.T, r *response, id string) {
	t.Helper()
	if got := r.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", got)
	}
	if got := r.Header.Get(api.HeaderTokenID); got != id {
		t.Errorf("%s %q, want %q", api.HeaderTokenID, got, id)
	}
}

func poolEqual(a, b api.Pool) bool {
	return a.Name == b.Name && a.Selection == b.Selection && a.MinHealthy == b.MinHealthy && reflect.DeepEqual(a.Provider, b.Provider) &&
		maps.Equal(a.Labels, b.Labels) && a.Tokens == b.Tokens && a.Eligible == b.Eligible &&
		a.CreatedAt.Equal(b.CreatedAt) && a.UpdatedAt.Equal(b.UpdatedAt) &&
		a.CreateIndex == b.CreateIndex && a.ModifyIndex == b.ModifyIndex
}

func findPool(t *testing.T, pools []api.Pool, name string) api.Pool {
	t.Helper()
	for _, p := range pools {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("pool %s not in %+v", name, pools)
	return api.Pool{}
}

func TestStatusRoutes(t *testing.T) {
	t.Parallel()
	ta := startAgent(t)
	for _, c := range ta.conns() {
		t.Run(c.name, func(t *testing.T) {
			r := expect(t, c.get(t, "/v1/health"), http.StatusOK)
			index := freshness(t, r)
			h := decode[api.AgentHealth](t, r)
			if h.Status != "ok" || h.Node != "n1" || h.ID != ta.NodeID() || h.RaftState != "leader" ||
				!h.KnownLeader || h.LastContactMS != 0 || h.AppliedIndex < index {
				t.Errorf("health %+v (header index %d)", h, index)
			}

			r = expect(t, c.get(t, "/v1/status/leader"), http.StatusOK)
			freshness(t, r)
			if l := decode[api.Leader](t, r); l != (api.Leader{ID: ta.NodeID(), Node: "n1", RaftAddr: ta.RaftAddr()}) {
				t.Errorf("leader %+v, want %s at %s", l, ta.NodeID(), ta.RaftAddr())
			}

			r = expect(t, c.get(t, "/v1/status/peers"), http.StatusOK)
			freshness(t, r)
			wantPeers := []api.Peer{{ID: ta.NodeID(), Node: "n1", Address: ta.RaftAddr(), Suffrage: "voter", Leader: true}}
			if peers := decode[[]api.Peer](t, r); !slices.Equal(peers, wantPeers) {
				t.Errorf("peers %+v, want %+v", peers, wantPeers)
			}

			r = expect(t, c.get(t, "/v1/members"), http.StatusOK)
			members := decode[[]api.Member](t, r)
			if len(members) != 1 {
				t.Fatalf("members %+v, want just n1", members)
			}
			m := members[0]
			if m.Name != "n1" || m.ID != ta.NodeID() || m.Status != "alive" || m.GossipAddr != ta.GossipAddr() ||
				m.RaftAddr != ta.RaftAddr() || m.APIAddr != ta.HTTPAddr() || !m.Voter || m.Since.IsZero() {
				t.Errorf("member %+v", m)
			}
		})
	}
}

func TestSelection(t *testing.T) {
	t.Parallel()
	ta := startAgent(t)
	for _, c := range ta.conns() {
		t.Run(c.name, func(t *testing.T) {
			t.Run("priority", func(t *testing.T) { testPriority(t, ta, c) })
			t.Run("round_robin", func(t *testing.T) { testRoundRobin(t, ta, c) })
			t.Run("unauthorized", func(t *testing.T) { testUnauthorized(t, ta, c) })
			t.Run("rate_limited", func(t *testing.T) { testRateLimited(t, ta, c) })
			t.Run("not_before", func(t *testing.T) { testNotBefore(t, ta, c) })
			t.Run("expiry", func(t *testing.T) { testExpiry(t, ta, c) })
		})
	}
}

var valueSeq atomic.Int64

// addTokens adds one token per priority to pool and returns their ids in
// the same order.
func addTokens(t *testing.T, ta *testAgent, c *conn, pool string, priorities ...int) []string {
	t.Helper()
	ids := make([]string, len(priorities))
	for i, p := range priorities {
		v := ta.secret(fmt.Sprintf("%s-value-%d-Qz", pool, valueSeq.Add(1)))
		ids[i] = c.addToken(t, pool, api.TokenRequest{Value: v, Priority: p}).ID
	}
	return ids
}

func testPriority(t *testing.T, ta *testAgent, c *conn) {
	pool := c.name + "-prio"
	c.putPool(t, pool, api.PoolRequest{Selection: "priority"})
	ids := addTokens(t, ta, c, pool, 5, 1, 3)
	p5, p1, p3 := ids[0], ids[1], ids[2]
	for range 3 {
		if got := c.fetchID(t, pool, ""); got != p1 {
			t.Fatalf("served %s, want the priority 1 token %s", got, p1)
		}
	}
	if got := c.fetchID(t, pool, "?exclude="+p1); got != p3 {
		t.Errorf("excluding %s served %s, want the priority 3 token %s", p1, got, p3)
	}
	if got := c.fetchID(t, pool, "?exclude="+p1+"&exclude="+p3); got != p5 {
		t.Errorf("excluding %s and %s served %s, want %s", p1, p3, got, p5)
	}
	r := c.fetch(t, pool, "?exclude="+p1+"&exclude="+p3+"&exclude="+p5+"&format=raw")
	expectError(t, r, http.StatusServiceUnavailable, tokens.CodeNoHealthy, pool)
	if ra := r.Header.Get("Retry-After"); ra != "" {
		t.Errorf("Retry-After %q on no_healthy_token: nothing is cooling down", ra)
	}
	// A better token added later takes over at once.
	neg := addTokens(t, ta, c, pool, -2)[0]
	if got := c.fetchID(t, pool, ""); got != neg {
		t.Errorf("served %s, want the new priority -2 token %s", got, neg)
	}
}

func testRoundRobin(t *testing.T, ta *testAgent, c *conn) {
	pool := c.name + "-rr"
	c.putPool(t, pool, api.PoolRequest{Selection: "round_robin"})
	ids := addTokens(t, ta, c, pool, 3, 1, 2)
	var served []string
	for range 3 * len(ids) {
		served = append(served, c.fetchID(t, pool, ""))
	}
	for i := range served {
		if i > 0 && served[i] == served[i-1] {
			t.Errorf("round_robin served %s twice in a row: %v", served[i], served)
		}
		if i >= len(ids) && served[i] != served[i-len(ids)] {
			t.Errorf("round_robin does not cycle through all %d tokens: %v", len(ids), served)
		}
	}
	if first := slices.Sorted(slices.Values(served[:len(ids)])); !slices.Equal(first, slices.Sorted(slices.Values(ids))) {
		t.Errorf("one round served %v, want each of %v once", served[:len(ids)], ids)
	}
	// Excluding one alternates between the other two.
	var prev string
	for range 4 {
		got := c.fetchID(t, pool, "?exclude="+ids[0])
		if got == ids[0] || got == prev {
			t.Errorf("excluding %s, served %s after %s", ids[0], got, prev)
		}
		prev = got
	}
}

func testUnauthorized(t *testing.T, ta *testAgent, c *conn) {
	pool := c.name + "-unauth"
	c.putPool(t, pool, api.PoolRequest{})
	ids := addTokens(t, ta, c, pool, 0, 1)
	primary, backup := ids[0], ids[1]
	if got := c.fetchID(t, pool, ""); got != primary {
		t.Fatalf("served %s, want %s", got, primary)
	}

	r := c.report(t, pool, primary, api.ReportRequest{Outcome: "unauthorized"})
	rep := checkReport(t, r, pool, primary, "failed", "unauthorized", true)
	if rep.Index > 0 && r.Header.Get(api.HeaderIndex) != strconv.FormatUint(rep.Index, 10) {
		t.Errorf("%s %q, want the report's index %d", api.HeaderIndex, r.Header.Get(api.HeaderIndex), rep.Index)
	}
	// The very next request gets the backup.
	if got := c.fetchID(t, pool, ""); got != backup {
		t.Fatalf("after unauthorized, served %s, want the backup %s", got, backup)
	}
	info := decode[api.TokenInfo](t, expect(t, c.get(t, "/v1/pools/"+pool+"/tokens/"+primary), http.StatusOK))
	if info.Health.State != "failed" || info.Health.Reason != "unauthorized" || info.Health.Reporter != "n1" {
		t.Errorf("reported token health %+v, want failed (unauthorized) by n1", info.Health)
	}
	if p := decode[api.Pool](t, expect(t, c.get(t, "/v1/pools/"+pool), http.StatusOK)); p.Tokens != 2 || p.Eligible != 1 {
		t.Errorf("pool tokens=%d eligible=%d, want 2 and 1", p.Tokens, p.Eligible)
	}
	// Reporting a failed token again changes nothing.
	checkReport(t, c.report(t, pool, primary, api.ReportRequest{Outcome: "unauthorized"}), pool, primary, "failed", "unauthorized", false)

	// The backup is now the pool's last eligible token: one agent's report
	// does not fail it (a single node cannot give the independent second
	// report), so it is still served and the answer says why.
	r = c.report(t, pool, backup, api.ReportRequest{Outcome: "forbidden"})
	rep = decode[api.ReportResponse](t, expect(t, r, http.StatusAccepted))
	if rep.Changed || rep.Committed || rep.Health.State != "healthy" || !strings.Contains(rep.Pending, "last eligible token") {
		t.Errorf("report of the last eligible token = %+v, want unchanged and pending on a second agent", rep)
	}
	if got := c.fetchID(t, pool, ""); got != backup {
		t.Fatalf("after reporting the last eligible token, served %s, want it still served", got)
	}
	// With the primary reset it is not the last one any more, and fails.
	expect(t, c.do(t, "POST", "/v1/pools/"+pool+"/tokens/"+primary+"/reset", nil), http.StatusOK)
	checkReport(t, c.report(t, pool, backup, api.ReportRequest{Outcome: "forbidden"}), pool, backup, "failed", "forbidden", true)
	if got := c.fetchID(t, pool, ""); got != primary {
		t.Fatalf("after reset and failing the backup, served %s, want the reset primary %s", got, primary)
	}
}

// checkReport checks a report answer on a single healthy node, which
// commits at once.
func checkReport(t *testing.T, r *response, pool, id, state, reason string, changed bool) api.ReportResponse {
	t.Helper()
	rep := decode[api.ReportResponse](t, expect(t, r, http.StatusOK))
	if rep.Pool != pool || rep.ID != id || rep.Changed != changed || rep.Health.State != state || rep.Health.Reason != reason {
		t.Errorf("report answer %+v, want %s (%s), changed=%v", rep, state, reason, changed)
	}
	if changed && (!rep.Committed || rep.Index == 0 || rep.Pending != "") {
		t.Errorf("report on a healthy single node not committed: %+v", rep)
	}
	return rep
}

func testRateLimited(t *testing.T, ta *testAgent, c *conn) {
	pool := c.name + "-rl"
	c.putPool(t, pool, api.PoolRequest{})
	only := addTokens(t, ta, c, pool, 0)[0]
	secs := 30
	sent := time.Now()
	rep := checkReport(t, c.report(t, pool, only, api.ReportRequest{Outcome: "rate_limited", RetryAfterSeconds: &secs}), pool, only, "cooldown", "rate_limited", true)
	if rep.Health.Until == nil || !timeNear(*rep.Health.Until, sent.Add(30*time.Second), 5*time.Second) {
		t.Fatalf("cooldown until %v, want about 30s from now", rep.Health.Until)
	}

	r := c.fetch(t, pool, "")
	body := expectError(t, r, http.StatusServiceUnavailable, tokens.CodeAllCoolingDown, pool)
	ra, err := strconv.Atoi(r.Header.Get("Retry-After"))
	if err != nil || ra < 25 || ra > 31 {
		t.Errorf("Retry-After %q, want about 30 seconds", r.Header.Get("Retry-After"))
	}
	if body.RetryAt == nil || !body.RetryAt.Equal(*rep.Health.Until) {
		t.Errorf("retry_at %v, want the cooldown end %v", body.RetryAt, rep.Health.Until)
	}
	info := decode[api.TokenInfo](t, expect(t, c.get(t, "/v1/pools/"+pool+"/tokens/"+only), http.StatusOK))
	if info.Health.State != "cooldown" || info.Health.Until == nil || !info.Health.Until.Equal(*rep.Health.Until) {
		t.Errorf("token health %+v, want cooldown until %v", info.Health, rep.Health.Until)
	}

	// Another token is served while the first cools down.
	other := addTokens(t, ta, c, pool, 5)[0]
	if got := c.fetchID(t, pool, ""); got != other {
		t.Errorf("served %s, want %s: %s is cooling down", got, other, only)
	}

	// Without retry_after_seconds the cooldown is the default.
	sent = time.Now()
	rep = checkReport(t, c.report(t, pool, other, api.ReportRequest{Outcome: "rate_limited"}), pool, other, "cooldown", "rate_limited", true)
	if rep.Health.Until == nil || !timeNear(*rep.Health.Until, sent.Add(tokens.DefaultCooldown), 5*time.Second) {
		t.Errorf("default cooldown until %v, want about %s from now", rep.Health.Until, tokens.DefaultCooldown)
	}
	r = c.fetch(t, pool, "?format=raw")
	body = expectError(t, r, http.StatusServiceUnavailable, tokens.CodeAllCoolingDown, pool)
	if body.RetryAt == nil || !body.RetryAt.Equal(*info.Health.Until) {
		t.Errorf("retry_at %v, want the earliest cooldown end %v", body.RetryAt, info.Health.Until)
	}
	if r.Header.Get("Retry-After") == "" {
		t.Errorf("no Retry-After on all_cooling_down")
	}
}

func testNotBefore(t *testing.T, ta *testAgent, c *conn) {
	pool := c.name + "-nbf"
	c.putPool(t, pool, api.PoolRequest{})
	nbf := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	future := c.addToken(t, pool, api.TokenRequest{Value: ta.secret(pool + "-future-Wq"), NotBefore: &nbf, Priority: -5})
	if future.NotBefore == nil || !future.NotBefore.Equal(nbf) {
		t.Errorf("not_before %v, want %s", future.NotBefore, nbf)
	}
	expectError(t, c.fetch(t, pool, ""), http.StatusServiceUnavailable, tokens.CodeNoHealthy, pool)
	now := addTokens(t, ta, c, pool, 10)[0]
	if got := c.fetchID(t, pool, ""); got != now {
		t.Errorf("served %s, want %s: %s is not valid yet", got, now, future.ID)
	}
}

// testExpiry adds a token that expires in about 2 s, polls until it stops
// being served, and checks it was never served within tokens.ExpiryMargin
// of expiring, and never refused before.
func testExpiry(t *testing.T, ta *testAgent, c *conn) {
	pool := c.name + "-exp"
	c.putPool(t, pool, api.PoolRequest{})
	backup := addTokens(t, ta, c, pool, 10)[0]
	expiresAt := time.Now().Add(2 * time.Second)
	expiring := c.addToken(t, pool, api.TokenRequest{Value: ta.secret(pool + "-soon-Jk"), ExpiresAt: &expiresAt, Priority: 0}).ID
	addedAt := time.Now()
	servedExpiring := false
	testutil.WaitFor(t, 10*time.Second, func() error {
		start := time.Now()
		got := c.fetchID(t, pool, "")
		end := time.Now()
		switch got {
		case expiring:
			if !start.Add(tokens.ExpiryMargin).Before(expiresAt) {
				t.Fatalf("token served at %s, within %s of its expiry at %s", start, tokens.ExpiryMargin, expiresAt)
			}
			servedExpiring = true
			return fmt.Errorf("expiring token %s still served", expiring)
		case backup:
			if end.Add(tokens.ExpiryMargin).Before(expiresAt) {
				t.Fatalf("token refused at %s, before %s of its expiry at %s", end, tokens.ExpiryMargin, expiresAt)
			}
			return nil
		}
		t.Fatalf("served unknown token %s", got)
		return nil
	})
	// Only a host too slow to add a token in a second could miss the window.
	if !servedExpiring && addedAt.Add(tokens.ExpiryMargin+200*time.Millisecond).Before(expiresAt) {
		t.Errorf("token %s expiring at %s was never served", expiring, expiresAt)
	}
	// From now on it is refused, also once it has really expired.
	refused := func() {
		t.Helper()
		if got := c.fetchID(t, pool, ""); got != backup {
			t.Fatalf("served %s after the expiry margin, want %s", got, backup)
		}
		expectError(t, c.fetch(t, pool, "?exclude="+backup), http.StatusServiceUnavailable, tokens.CodeNoHealthy, pool)
	}
	refused()
	testutil.WaitFor(t, 5*time.Second, func() error {
		if now := time.Now(); !now.After(expiresAt) {
			return fmt.Errorf("it is %s, the token expires at %s", now, expiresAt)
		}
		return nil
	})
	refused()
	p := decode[api.Pool](t, expect(t, c.get(t, "/v1/pools/"+pool), http.StatusOK))
	if p.Tokens != 2 || p.Eligible != 1 {
		t.Errorf("pool tokens=%d eligible=%d, want 2 and 1 (the expired token stays listed)", p.Tokens, p.Eligible)
	}
	list := expect(t, c.get(t, "/v1/pools/"+pool+"/tokens"), http.StatusOK)
	if !strings.Contains(string(list.Body), expiring) {
		t.Errorf("expired token %s not listed: %s", expiring, list.Body)
	}
}

// Provider secrets are write-only: they never come back from the API, nor
// reach the log; the rest of the spec does.
func TestProviderSecretsAreWriteOnly(t *testing.T) {
	ta := startAgent(t)
	for _, c := range ta.conns() {
		secret := ta.secret("client-secret-" + c.name + "-Kq7")
		header := ta.secret("Bearer hdr-" + c.name + "-Zp3")
		other := ta.secret("second-client-" + c.name + "-Wv2")
		c.putPool(t, c.name+"-oauth", api.PoolRequest{Provider: &api.Provider{
			Type: "oauth2", TokenURL: "http://127.0.0.1:1/token", ClientID: "app", ClientSecret: secret, Scopes: []string{"read"},
		}, Size: 1})
		c.putPool(t, c.name+"-multi", api.PoolRequest{Provider: &api.Provider{
			Type: "oauth2", TokenURL: "http://127.0.0.1:1/token",
			Clients: []api.OAuth2Client{{ClientID: "a", ClientSecret: other}, {ClientID: "b", ClientSecret: other + "x"}},
		}})
		c.putPool(t, c.name+"-http", api.PoolRequest{Provider: &api.Provider{
			Type: "http", URL: "http://127.0.0.1:1/issue", Headers: map[string]string{"Authorization": header},
		}})
		for _, path := range []string{"/v1/pools", "/v1/pools/" + c.name + "-oauth", "/v1/pools/" + c.name + "-multi", "/v1/pools/" + c.name + "-http"} {
			r := expect(t, c.get(t, path), http.StatusOK)
			assertNoSecrets(t, path, r.String(), []string{secret, header, other})
		}
		p := decode[api.Pool](t, expect(t, c.get(t, "/v1/pools/"+c.name+"-oauth"), http.StatusOK))
		if p.Provider.Type != "oauth2" || p.Provider.ClientID != "app" || p.Provider.TokenURL != "http://127.0.0.1:1/token" || p.Provider.ClientSecret != "" || p.Size != 1 {
			t.Errorf("oauth2 pool read back as %+v", p.Provider)
		}
		h := decode[api.Pool](t, expect(t, c.get(t, "/v1/pools/"+c.name+"-http"), http.StatusOK))
		if v, ok := h.Provider.Headers["Authorization"]; !ok || v != "" {
			t.Errorf("http pool headers read back as %v, want the name with no value", h.Provider.Headers)
		}
	}
}
