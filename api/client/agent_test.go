package client

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/tokend/tokend/agent"
	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
)

// startAgent starts a single-node agent that leads its own cluster.
func startAgent(t *testing.T) *agent.Agent {
	t.Helper()
	return testutil.StartAgent(t, nil)
}

func ids(infos []api.TokenInfo) []string {
	var out []string
	for _, i := range infos {
		out = append(out, i.ID)
	}
	return out
}

// TestAgent runs every endpoint against a real agent, over the unix socket
// and over HTTP, and with consistent reads.
func TestAgent(t *testing.T) {
	a := startAgent(t)
	for _, tc := range []struct {
		name, addr string
		opts       []Option
	}{
		{"unix", "unix://" + a.SocketPath(), nil},
		{"http", "http://" + a.HTTPAddr(), nil},
		{"consistent", "http://" + a.HTTPAddr(), []Option{WithConsistentReads()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.addr, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			testEndpoints(t, c, "pool-"+tc.name)
		})
	}
}

func testEndpoints(t *testing.T, c *Client, pool string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wantCode := func(err error, status int, code string) {
		t.Helper()
		var e *Error
		if !errors.As(err, &e) || e.StatusCode != status || e.Code != code {
			t.Fatalf("error = %v, want %d %s", err, status, code)
		}
	}

	_, err := c.GetPool(ctx, pool)
	wantCode(err, http.StatusNotFound, "pool_not_found")
	_, err = c.ApplyPool(ctx, pool, api.PoolRequest{Selection: "sideways"})
	wantCode(err, http.StatusBadRequest, "invalid_request")

	p, err := c.ApplyPool(ctx, pool, api.PoolRequest{MinHealthy: 1, Labels: map[string]string{"team": "infra"}})
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != pool || p.Selection != "priority" || p.Provider.Type != "static" || p.ModifyIndex == 0 {
		t.Fatalf("applied pool = %+v", p)
	}
	if got, err := c.GetPool(ctx, pool); err != nil || got.Labels["team"] != "infra" {
		t.Fatalf("GetPool = %+v, %v", got, err)
	}
	pools, err := c.ListPools(ctx)
	if err != nil || !slices.ContainsFunc(pools, func(p api.Pool) bool { return p.Name == pool }) {
		t.Fatalf("ListPools = %+v, %v; want %s in it", pools, err, pool)
	}

	_, _, err = c.FetchToken(ctx, pool, FetchOptions{})
	wantCode(err, http.StatusServiceUnavailable, "pool_empty")

	expires := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	first, err := c.AddToken(ctx, pool, api.TokenRequest{Value: "value-one", Priority: 1, ExpiresAt: &expires})
	if err != nil {
		t.Fatal(err)
	}
	second, err := c.AddToken(ctx, pool, api.TokenRequest{Value: "value-two", Priority: 2})
	if err != nil {
		t.Fatal(err)
	}
	if first.ID == "" || first.ID == second.ID || first.Pool != pool {
		t.Fatalf("added tokens %+v and %+v", first, second)
	}
	_, err = c.AddToken(ctx, "no-such-pool", api.TokenRequest{Value: "v"})
	wantCode(err, http.StatusNotFound, "pool_not_found")

	infos, err := c.ListTokens(ctx, pool)
	if err != nil || !slices.Equal(ids(infos), []string{first.ID, second.ID}) {
		t.Fatalf("ListTokens = %v, %v; want [%s %s]", ids(infos), err, first.ID, second.ID)
	}
	info, err := c.GetTokenInfo(ctx, pool, first.ID)
	if err != nil || info.ExpiresAt == nil || !info.ExpiresAt.Equal(expires) {
		t.Fatalf("GetTokenInfo = %+v, %v", info, err)
	}
	_, err = c.GetTokenInfo(ctx, pool, "nope")
	wantCode(err, http.StatusNotFound, "token_not_found")

	tok, meta, err := c.FetchToken(ctx, pool, FetchOptions{})
	if err != nil || tok.ID != first.ID || tok.Value != "value-one" {
		t.Fatalf("FetchToken = %+v, %v; want %s", tok, err, first.ID)
	}
	if !meta.KnownLeader || meta.Index < second.CreateIndex || meta.LastContact != 0 || meta.Consistent != c.consistent {
		t.Fatalf("meta = %+v, want a known leader (this agent), index >= %d, consistent %v", meta, second.CreateIndex, c.consistent)
	}
	_, meta, err = c.FetchToken(ctx, pool, FetchOptions{Consistent: true})
	if err != nil || !meta.Consistent || meta.Index < second.CreateIndex {
		t.Fatalf("FetchToken, consistent = %+v, %v; want a consistent read at index >= %d", meta, err, second.CreateIndex)
	}
	raw, meta, err := c.FetchRaw(ctx, pool, FetchOptions{Exclude: []string{first.ID}})
	if err != nil || raw.ID != second.ID || raw.Value != "value-two" || !meta.KnownLeader {
		t.Fatalf("FetchRaw excluding %s = %+v, %+v, %v", first.ID, raw, meta, err)
	}

	rep, err := c.Report(ctx, pool, first.ID, api.ReportRequest{Outcome: "unauthorized"})
	if err != nil || !rep.Changed || rep.Health.State != "failed" {
		t.Fatalf("Report = %+v, %v", rep, err)
	}
	// The agent that takes a report applies it at once.
	if tok, _, err := c.FetchToken(ctx, pool, FetchOptions{}); err != nil || tok.ID != second.ID {
		t.Fatalf("FetchToken after failing %s = %+v, %v; want %s", first.ID, tok, err, second.ID)
	}
	secs := 120
	rep, err = c.Report(ctx, pool, second.ID, api.ReportRequest{Outcome: "rate_limited", RetryAfterSeconds: &secs})
	if err != nil || rep.Health.State != "cooldown" {
		t.Fatalf("Report rate_limited = %+v, %v", rep, err)
	}
	_, _, err = c.FetchToken(ctx, pool, FetchOptions{})
	wantCode(err, http.StatusServiceUnavailable, "all_cooling_down")
	var e *Error
	errors.As(err, &e) // wantCode checked that it is an *Error
	if e.RetryAt == nil || time.Until(*e.RetryAt) < 100*time.Second {
		t.Fatalf("all_cooling_down RetryAt = %v, want about 120s from now", e.RetryAt)
	}
	_, err = c.Report(ctx, pool, second.ID, api.ReportRequest{Outcome: "sideways"})
	wantCode(err, http.StatusBadRequest, "invalid_request")

	_, err = c.DeletePool(ctx, pool, false)
	wantCode(err, http.StatusConflict, "conflict")
	if _, err := c.RemoveToken(ctx, pool, first.ID); err != nil {
		t.Fatal(err)
	}
	_, err = c.RemoveToken(ctx, pool, first.ID)
	wantCode(err, http.StatusNotFound, "token_not_found")
	res, err := c.DeletePool(ctx, pool, true)
	if err != nil || res.Index == 0 {
		t.Fatalf("DeletePool force = %+v, %v", res, err)
	}
	_, err = c.ListTokens(ctx, pool)
	wantCode(err, http.StatusNotFound, "pool_not_found")

	// A name with a slash is one escaped segment: the agent rejects the
	// name rather than routing it elsewhere.
	_, err = c.GetPool(ctx, "a/b")
	wantCode(err, http.StatusBadRequest, "invalid_request")

	h, err := c.Health(ctx)
	if err != nil || h.Status != "ok" || h.Node != "n1" || !h.KnownLeader || h.RaftState != "leader" {
		t.Fatalf("Health = %+v, %v", h, err)
	}
	l, err := c.Leader(ctx)
	if err != nil || l.ID != h.ID || l.Node != "n1" || l.RaftAddr == "" {
		t.Fatalf("Leader = %+v, %v; want %s", l, err, h.ID)
	}
	peers, err := c.Peers(ctx)
	if err != nil || len(peers) != 1 || peers[0].ID != h.ID || !peers[0].Leader || peers[0].Suffrage == "" {
		t.Fatalf("Peers = %+v, %v", peers, err)
	}
	members, err := c.Members(ctx)
	if err != nil || len(members) != 1 || members[0].Name != "n1" || members[0].ID != h.ID {
		t.Fatalf("Members = %+v, %v", members, err)
	}

	file, snap, err := c.SnapshotSave(ctx)
	if err != nil || snap.Info.Index == 0 || snap.Info.Node != "n1" || snap.Size != int64(len(file)) {
		t.Fatalf("SnapshotSave = %+v, %v", snap, err)
	}
	restored, err := c.SnapshotRestore(ctx, file)
	if err != nil || restored.SHA256 != snap.SHA256 || restored.Index <= snap.Info.Index || restored.Snapshot.Index != snap.Info.Index {
		t.Fatalf("SnapshotRestore = %+v, %v", restored, err)
	}
	_, err = c.SnapshotRestore(ctx, []byte("not a snapshot"))
	wantCode(err, http.StatusBadRequest, "invalid_request")
}
