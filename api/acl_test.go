package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/tokend/tokend/agent"
	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/tokens"
)

// aclAgent is an agent with ACLs on, bootstrapped, and a token per grant.
type aclAgent struct {
	*testAgent
	mgmt   string
	tokens map[string]string // grant name -> secret
}

func startACLAgent(t *testing.T) *aclAgent {
	t.Helper()
	gossipKey := tokens.GenerateKey()
	ta := startAgentWith(t, func(cfg *agent.Config) { cfg.ACL = true; cfg.GossipKey = gossipKey })
	ta.secret(gossipKey)
	r := expect(t, ta.tcp.do(t, http.MethodPost, "/v1/acl/bootstrap", nil), http.StatusOK)
	boot := decode[api.ACLTokenSecret](t, r)
	if !boot.Management || !strings.HasPrefix(boot.SecretID, "tkd_") || !tokens.ValidAccessorID(boot.AccessorID) {
		t.Fatalf("bootstrap answered %s", r.Body)
	}
	ta.secret(boot.SecretID)
	aa := &aclAgent{testAgent: ta, mgmt: boot.SecretID, tokens: map[string]string{}}
	mgmt := ta.tcp.as(aa.mgmt)
	caps := func(cs ...tokens.Capability) []tokens.PoolRule {
		return []tokens.PoolRule{{Pattern: "acl-*", Capabilities: cs}}
	}
	// One token per grant, and for each capability one holding every grant
	// but that one.
	grants := map[string]api.ACLPolicyRequest{
		"read":      {Pools: caps(tokens.CapRead)},
		"report":    {Pools: caps(tokens.CapReport)},
		"write":     {Pools: caps(tokens.CapWrite)},
		"operator":  {Operator: true},
		"no-read":   {Pools: caps(tokens.CapReport, tokens.CapWrite), Operator: true},
		"no-report": {Pools: caps(tokens.CapRead, tokens.CapWrite), Operator: true},
		"no-write":  {Pools: caps(tokens.CapRead, tokens.CapReport), Operator: true},
		"no-view":   {Pools: caps(tokens.CapReport), Operator: true},
		"no-op":     {Pools: caps(tokens.CapRead, tokens.CapReport, tokens.CapWrite)},
		"elsewhere": {Pools: []tokens.PoolRule{{Pattern: "other-*", Capabilities: []tokens.Capability{tokens.CapRead, tokens.CapReport, tokens.CapWrite}}}},
	}
	for name, p := range grants {
		expect(t, mgmt.do(t, http.MethodPut, "/v1/acl/policies/"+name, p), http.StatusOK)
		r := expect(t, mgmt.do(t, http.MethodPost, "/v1/acl/tokens", api.ACLTokenRequest{Description: name, Policies: []string{name}}), http.StatusCreated)
		tok := decode[api.ACLTokenSecret](t, r)
		aa.tokens[name] = ta.secret(tok.SecretID)
	}
	return aa
}

// Every endpoint, over TCP with ACLs on: refused without a token (401),
// refused with a token that lacks what it needs (403), served with one
// that has it. The socket needs no token.
func TestACLEveryEndpoint(t *testing.T) {
	aa := startACLAgent(t)
	mgmt := aa.tcp.as(aa.mgmt)
	// pool creates acl-NAME holding one token, and returns its path and
	// token id.
	pool := func(t *testing.T, name string) (string, string) {
		path := "/v1/pools/acl-" + name
		expect(t, mgmt.do(t, http.MethodPut, path, api.PoolRequest{}), http.StatusOK)
		r := expect(t, mgmt.do(t, http.MethodPost, path+"/tokens", api.TokenRequest{Value: aa.secret("value-of-" + name)}), http.StatusCreated)
		return path, decode[api.TokenInfo](t, r).ID
	}
	newKey := tokens.GenerateKey()
	aa.secret(newKey)
	type row struct {
		method, path string
		body         any
		// need is what the endpoint requires: a grant name of
		// startACLAgent, "view" (read or write), "any" (any valid token)
		// or "open".
		need string
		ok   int
		// socket is the status over the socket, when not ok.
		socket int
	}
	// build makes the row afresh for each call, so a call that succeeds
	// (a delete) leaves the next one something to act on.
	endpoints := []struct {
		name  string
		build func(t *testing.T, n int) row
	}{
		{"list pools", func(*testing.T, int) row { return row{"GET", "/v1/pools", nil, "any", 200, 0} }},
		{"create pool", func(_ *testing.T, n int) row {
			return row{"PUT", fmt.Sprintf("/v1/pools/acl-new%d", n), api.PoolRequest{}, "write", 200, 0}
		}},
		{"show pool", func(t *testing.T, n int) row {
			p, _ := pool(t, fmt.Sprint("show", n))
			return row{"GET", p, nil, "view", 200, 0}
		}},
		{"delete pool", func(t *testing.T, n int) row {
			p, _ := pool(t, fmt.Sprint("del", n))
			return row{"DELETE", p + "?force=true", nil, "write", 200, 0}
		}},
		{"list tokens", func(t *testing.T, n int) row {
			p, _ := pool(t, fmt.Sprint("lt", n))
			return row{"GET", p + "/tokens", nil, "view", 200, 0}
		}},
		{"add token", func(t *testing.T, n int) row {
			p, _ := pool(t, fmt.Sprint("at", n))
			return row{"POST", p + "/tokens", api.TokenRequest{Value: aa.secret(fmt.Sprint("added-value-", n))}, "write", 201, 0}
		}},
		{"show token", func(t *testing.T, n int) row {
			p, id := pool(t, fmt.Sprint("st", n))
			return row{"GET", p + "/tokens/" + id, nil, "view", 200, 0}
		}},
		{"remove token", func(t *testing.T, n int) row {
			p, id := pool(t, fmt.Sprint("rt", n))
			return row{"DELETE", p + "/tokens/" + id, nil, "write", 200, 0}
		}},
		{"report", func(t *testing.T, n int) row {
			p, id := pool(t, fmt.Sprint("rep", n))
			return row{"POST", p + "/tokens/" + id + "/report", api.ReportRequest{Outcome: "ok"}, "report", 200, 0}
		}},
		{"reset", func(t *testing.T, n int) row {
			p, id := pool(t, fmt.Sprint("res", n))
			return row{"POST", p + "/tokens/" + id + "/reset", nil, "write", 200, 0}
		}},
		{"rotate", func(t *testing.T, n int) row {
			p, _ := pool(t, fmt.Sprint("rot", n))
			// Authorized, then refused: a static pool cannot rotate.
			return row{"POST", p + "/rotate", nil, "write", 409, 0}
		}},
		{"fetch", func(t *testing.T, n int) row {
			p, _ := pool(t, fmt.Sprint("f", n))
			return row{"GET", p + "/token", nil, "read", 200, 0}
		}},
		{"events", func(*testing.T, int) row { return row{"GET", "/v1/events", nil, "operator", 200, 0} }},
		{"metrics", func(*testing.T, int) row { return row{"GET", "/v1/metrics", nil, "operator", 200, 0} }},
		{"alerts", func(*testing.T, int) row { return row{"GET", "/v1/alerts", nil, "operator", 200, 0} }},
		{"health", func(*testing.T, int) row { return row{"GET", "/v1/health", nil, "open", 200, 0} }},
		{"leader", func(*testing.T, int) row { return row{"GET", "/v1/status/leader", nil, "operator", 200, 0} }},
		{"peers", func(*testing.T, int) row { return row{"GET", "/v1/status/peers", nil, "operator", 200, 0} }},
		{"members", func(*testing.T, int) row { return row{"GET", "/v1/members", nil, "operator", 200, 0} }},
		{"keyring list", func(*testing.T, int) row { return row{"GET", "/v1/operator/keyring", nil, "operator", 200, 0} }},
		{"keyring install", func(*testing.T, int) row {
			return row{"POST", "/v1/operator/keyring", api.KeyringInstallRequest{Key: newKey}, "operator", 200, 0}
		}},
		{"keyring use", func(t *testing.T, _ int) row {
			var kr api.Keyring
			must(t, json.Unmarshal(expect(t, mgmt.do(t, "GET", "/v1/operator/keyring", nil), 200).Body, &kr))
			return row{"POST", "/v1/operator/keyring/" + kr.Primary + "/use", nil, "operator", 200, 0}
		}},
		{"keyring remove", func(*testing.T, int) row {
			// Not installed anywhere: removing it is a no-op that succeeds.
			return row{"DELETE", "/v1/operator/keyring/00000000", nil, "operator", 200, 0}
		}},
		{"gossip keyring list", func(*testing.T, int) row { return row{"GET", "/v1/operator/gossip-keyring", nil, "operator", 200, 0} }},
		{"gossip keyring install", func(*testing.T, int) row {
			return row{"POST", "/v1/operator/gossip-keyring", api.KeyringInstallRequest{Key: newKey}, "operator", 200, 0}
		}},
		{"gossip keyring use", func(t *testing.T, _ int) row {
			var kr api.GossipKeyring
			must(t, json.Unmarshal(expect(t, mgmt.do(t, "GET", "/v1/operator/gossip-keyring", nil), 200).Body, &kr))
			return row{"POST", "/v1/operator/gossip-keyring/" + kr.Nodes[0].Primary + "/use", nil, "operator", 200, 0}
		}},
		{"gossip keyring remove", func(*testing.T, int) row {
			// Not installed anywhere: removing it is a no-op that succeeds.
			return row{"DELETE", "/v1/operator/gossip-keyring/00000000", nil, "operator", 200, 0}
		}},
		{"policy list", func(*testing.T, int) row { return row{"GET", "/v1/acl/policies", nil, "operator", 200, 0} }},
		{"policy show", func(*testing.T, int) row { return row{"GET", "/v1/acl/policies/read", nil, "operator", 200, 0} }},
		{"policy apply", func(_ *testing.T, n int) row {
			return row{"PUT", fmt.Sprint("/v1/acl/policies/p", n), api.ACLPolicyRequest{Operator: true}, "operator", 200, 0}
		}},
		{"policy delete", func(t *testing.T, n int) row {
			expect(t, mgmt.do(t, "PUT", fmt.Sprint("/v1/acl/policies/d", n), api.ACLPolicyRequest{Operator: true}), 200)
			return row{"DELETE", fmt.Sprint("/v1/acl/policies/d", n), nil, "operator", 200, 0}
		}},
		{"token list", func(*testing.T, int) row { return row{"GET", "/v1/acl/tokens", nil, "operator", 200, 0} }},
		{"token create", func(*testing.T, int) row {
			return row{"POST", "/v1/acl/tokens", api.ACLTokenRequest{Policies: []string{"read"}}, "operator", 201, 0}
		}},
		{"token show", func(*testing.T, int) row {
			return row{"GET", "/v1/acl/tokens/" + aa.accessor(t, "read"), nil, "operator", 200, 0}
		}},
		{"token delete", func(t *testing.T, n int) row {
			r := expect(t, mgmt.do(t, "POST", "/v1/acl/tokens", api.ACLTokenRequest{Description: fmt.Sprint("doomed", n), Policies: []string{"read"}}), 201)
			tok := decode[api.ACLTokenSecret](t, r)
			aa.secret(tok.SecretID)
			return row{"DELETE", "/v1/acl/tokens/" + tok.AccessorID, nil, "operator", 200, 0}
		}},
		{"token self", func(*testing.T, int) row { return row{"GET", "/v1/acl/token/self", nil, "any", 200, 400} }},
		{"audit", func(*testing.T, int) row { return row{"GET", "/v1/audit", nil, "operator", 200, 0} }},
		// A consistent read needs what the plain read needs.
		{"list pools, consistent", func(*testing.T, int) row { return row{"GET", "/v1/pools?consistent", nil, "any", 200, 0} }},
		{"show pool, consistent", func(t *testing.T, n int) row {
			p, _ := pool(t, fmt.Sprint("cshow", n))
			return row{"GET", p + "?consistent", nil, "view", 200, 0}
		}},
		{"list tokens, consistent", func(t *testing.T, n int) row {
			p, _ := pool(t, fmt.Sprint("clt", n))
			return row{"GET", p + "/tokens?consistent=true", nil, "view", 200, 0}
		}},
		{"show token, consistent", func(t *testing.T, n int) row {
			p, id := pool(t, fmt.Sprint("cst", n))
			return row{"GET", p + "/tokens/" + id + "?consistent", nil, "view", 200, 0}
		}},
		{"fetch, consistent", func(t *testing.T, n int) row {
			p, _ := pool(t, fmt.Sprint("cf", n))
			return row{"GET", p + "/token?consistent", nil, "read", 200, 0}
		}},
		{"events, consistent", func(*testing.T, int) row { return row{"GET", "/v1/events?consistent", nil, "operator", 200, 0} }},
		{"policy list, consistent", func(*testing.T, int) row { return row{"GET", "/v1/acl/policies?consistent", nil, "operator", 200, 0} }},
		{"token self, consistent", func(*testing.T, int) row { return row{"GET", "/v1/acl/token/self?consistent", nil, "any", 200, 400} }},
		{"snapshot save", func(*testing.T, int) row { return row{"GET", "/v1/snapshot", nil, "operator", 200, 0} }},
		{"snapshot restore", func(*testing.T, int) row {
			// Authorized, then refused: not a snapshot file.
			return row{"PUT", "/v1/snapshot", "not a snapshot", "operator", 400, 0}
		}},
	}
	lacking := map[string]string{"read": "no-read", "report": "no-report", "write": "no-write", "view": "no-view", "operator": "no-op"}
	holding := map[string]string{"read": "read", "report": "report", "write": "write", "view": "read", "operator": "operator", "any": "elsewhere"}
	n := 0
	for _, e := range endpoints {
		t.Run(e.name, func(t *testing.T) {
			n++
			probe := e.build(t, n)
			if probe.need != "open" {
				r := aa.tcp.do(t, probe.method, probe.path, probe.body)
				if r.Status != http.StatusUnauthorized || !strings.Contains(string(r.Body), "needs an ACL token") {
					t.Fatalf("without a token: %s", r)
				}
				r = aa.tcp.as("tkd_not-a-token").do(t, probe.method, probe.path, probe.body)
				if r.Status != http.StatusUnauthorized || !strings.Contains(string(r.Body), "ACL token not found") {
					t.Fatalf("with an unknown token: %s", r)
				}
			}
			if grant, ok := lacking[probe.need]; ok {
				r := aa.tcp.as(aa.tokens[grant]).do(t, probe.method, probe.path, probe.body)
				if r.Status != http.StatusForbidden || !strings.Contains(string(r.Body), "permission_denied") {
					t.Fatalf("with token %s, which lacks %s: %s", grant, probe.need, r)
				}
				// A token for other pools is refused on these.
				if probe.need != "operator" {
					if r := aa.tcp.as(aa.tokens["elsewhere"]).do(t, probe.method, probe.path, probe.body); r.Status != http.StatusForbidden {
						t.Fatalf("with a token for other pools: %s", r)
					}
				}
			}
			// The refusals changed nothing: the same call now succeeds.
			c := aa.tcp
			if grant, ok := holding[probe.need]; ok {
				c = c.as(aa.tokens[grant])
			}
			if r := c.do(t, probe.method, probe.path, probe.body); r.Status != probe.ok {
				t.Fatalf("with a token that holds %s: %s, want %d", probe.need, r, probe.ok)
			}
			// The socket authorizes by peer credentials, not tokens.
			again := e.build(t, 1000+n)
			want := again.ok
			if again.socket != 0 {
				want = again.socket
			}
			if r := aa.unix.do(t, again.method, again.path, again.body); r.Status != want {
				t.Fatalf("over the socket, no token: %s, want %d", r, want)
			}
		})
	}
}

func (aa *aclAgent) accessor(t *testing.T, grant string) string {
	t.Helper()
	var toks []api.ACLToken
	must(t, json.Unmarshal(expect(t, aa.tcp.as(aa.mgmt).do(t, "GET", "/v1/acl/tokens", nil), 200).Body, &toks))
	for _, tk := range toks {
		if tk.Description == grant {
			return tk.AccessorID
		}
	}
	t.Fatalf("no token %q", grant)
	return ""
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// The pool list shows only the pools a token may see; a token list never
// shows a secret or its hash; a deleted token is refused at once.
func TestACLTokensAndListings(t *testing.T) {
	aa := startACLAgent(t)
	mgmt := aa.tcp.as(aa.mgmt)
	for _, p := range []string{"acl-a", "acl-b", "other-c", "private"} {
		expect(t, mgmt.do(t, http.MethodPut, "/v1/pools/"+p, api.PoolRequest{}), http.StatusOK)
	}
	names := func(c interface {
		do(*testing.T, string, string, any) *response
	}) []string {
		var pools []api.Pool
		must(t, json.Unmarshal(expect(t, c.do(t, "GET", "/v1/pools", nil), 200).Body, &pools))
		var out []string
		for _, p := range pools {
			out = append(out, p.Name)
		}
		return out
	}
	if got := fmt.Sprint(names(aa.tcp.as(aa.tokens["read"]))); got != "[acl-a acl-b]" {
		t.Fatalf("read on acl-* lists %s", got)
	}
	if got := fmt.Sprint(names(aa.tcp.as(aa.tokens["elsewhere"]))); got != "[other-c]" {
		t.Fatalf("a token for other-* lists %s", got)
	}
	if got := fmt.Sprint(names(aa.tcp.as(aa.tokens["operator"]))); got != "[]" {
		t.Fatalf("operator alone lists %s", got)
	}
	if got := names(mgmt); len(got) != 4 {
		t.Fatalf("management lists %v", got)
	}

	r := expect(t, mgmt.do(t, "GET", "/v1/acl/tokens", nil), 200)
	assertNoSecrets(t, "token list", r.String(), aa.secretList())
	for _, s := range aa.secretList() {
		if strings.Contains(r.String(), tokens.HashACLSecret(s)) {
			t.Fatalf("token list shows a secret's hash")
		}
	}
	var self api.ACLToken
	must(t, json.Unmarshal(expect(t, aa.tcp.as(aa.tokens["read"]).do(t, "GET", "/v1/acl/token/self", nil), 200).Body, &self))
	if self.Description != "read" || self.Policies[0] != "read" {
		t.Fatalf("self = %+v", self)
	}

	// Bootstrap is once only.
	if r := aa.tcp.do(t, http.MethodPost, "/v1/acl/bootstrap", nil); r.Status != http.StatusConflict {
		t.Fatalf("second bootstrap: %s", r)
	}
	// A policy in use cannot go; a deleted token is refused at once.
	if r := mgmt.do(t, "DELETE", "/v1/acl/policies/read", nil); r.Status != http.StatusConflict {
		t.Fatalf("delete of a policy in use: %s", r)
	}
	expect(t, mgmt.do(t, "DELETE", "/v1/acl/tokens/"+aa.accessor(t, "read"), nil), 200)
	if r := aa.tcp.as(aa.tokens["read"]).do(t, "GET", "/v1/pools/acl-a", nil); r.Status != http.StatusUnauthorized {
		t.Fatalf("a deleted token: %s", r)
	}
	// Bad input: clear errors, nothing changed.
	for _, c := range []struct {
		method, path string
		body         any
		want         string
	}{
		{"PUT", "/v1/acl/policies/x", api.ACLPolicyRequest{}, "grants nothing"},
		{"PUT", "/v1/acl/policies/x", `{"pools":[{"pattern":"a","capabilities":["fly"]}]}`, "not one of read, report, write"},
		{"PUT", "/v1/acl/policies/Bad", api.ACLPolicyRequest{Operator: true}, "policy name"},
		{"POST", "/v1/acl/tokens", api.ACLTokenRequest{Policies: []string{"nope"}}, "does not exist"},
		{"POST", "/v1/acl/tokens", api.ACLTokenRequest{}, "at least one policy"},
		{"GET", "/v1/acl/tokens/not-an-accessor", nil, "accessor id"},
	} {
		r := mgmt.do(t, c.method, c.path, c.body)
		if r.Status < 400 || r.Status >= 500 || !strings.Contains(string(r.Body), c.want) {
			t.Errorf("%s %s: %s, want a 4xx saying %q", c.method, c.path, r, c.want)
		}
	}
}

// Writes carry the caller's token to the state machine, so the events
// they cause name the token.
func TestACLEventsNamePrincipal(t *testing.T) {
	aa := startACLAgent(t)
	w := aa.tcp.as(aa.tokens["write"])
	expect(t, w.do(t, http.MethodPut, "/v1/pools/acl-ev", api.PoolRequest{}), http.StatusOK)
	var evs api.Events
	must(t, json.Unmarshal(expect(t, aa.tcp.as(aa.mgmt).do(t, "GET", "/v1/events", nil), 200).Body, &evs))
	want := "acl:" + aa.accessor(t, "write")
	for _, e := range evs.Events {
		if e.Type == tokens.EventPoolApplied && e.Pool == "acl-ev" {
			if e.Reporter != strings.TrimPrefix(want, "acl:") {
				t.Fatalf("pool_applied names %q, want the token %s", e.Reporter, want)
			}
			return
		}
	}
	t.Fatalf("no pool_applied event for acl-ev in %+v", evs.Events)
}
