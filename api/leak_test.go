package api_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
	"github.com/tokend/tokend/tokens"
)

// TestCanariesNeverLeak runs the whole API, with ACLs on, over a pool of
// token values, an oauth2 and an http provider whose issuers echo every
// credential they are sent back in their error answers, ACL tokens, and
// denied requests carrying wrong secrets; then it reads everything the
// agent shows — every listing, events, alerts, metrics, the audit log, ACL
// listings, the keyring, a snapshot file — and its log, and searches them
// for every secret.
// Only a fetch may show a token value, and only the ACL token's creation its
// secret.
func TestCanariesNeverLeak(t *testing.T) {
	t.Parallel()
	aa := startACLAgent(t)
	canary := func(what string) string { return aa.secret("Canary-" + what + "-7hQ2xLw9") }

	// An issuer that refuses, quoting the whole request back: headers, query
	// and body, where the credentials are.
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"error":"invalid_client","error_description":%q}`, fmt.Sprint(r.Header, " ", r.URL.RawQuery, " ", string(body)))
	}))
	t.Cleanup(echo.Close)

	mgmt := aa.tcp.as(aa.mgmt)
	values := []string{canary("value-a"), canary("value-b")}
	clientSecret, otherSecret, header := canary("client-secret"), canary("clients-secret"), canary("header")
	var seen []*response
	do := func(c *conn, method, path string, body any, want int) *response {
		t.Helper()
		r := expect(t, c.do(t, method, path, body), want)
		seen = append(seen, r)
		return r
	}

	do(mgmt, http.MethodPut, "/v1/pools/acl-static", api.PoolRequest{}, http.StatusOK)
	var ids []string
	for _, v := range values {
		r := do(mgmt, http.MethodPost, "/v1/pools/acl-static/tokens", api.TokenRequest{Value: v}, http.StatusCreated)
		ids = append(ids, decode[api.TokenInfo](t, r).ID)
	}
	retry := &tokens.RotationPolicy{RetryMin: tokens.Duration(50 * time.Millisecond), RetryMax: tokens.Duration(200 * time.Millisecond)}
	do(mgmt, http.MethodPut, "/v1/pools/acl-oauth", api.PoolRequest{Size: 1, Rotation: retry, Provider: &api.Provider{
		Type: "oauth2", TokenURL: echo.URL + "/token", ClientID: "c0", ClientSecret: clientSecret,
	}}, http.StatusOK)
	do(mgmt, http.MethodPut, "/v1/pools/acl-multi", api.PoolRequest{Size: 1, Rotation: retry, Provider: &api.Provider{
		Type: "oauth2", TokenURL: echo.URL + "/token", Clients: []api.OAuth2Client{{ClientID: "c1", ClientSecret: otherSecret}},
	}}, http.StatusOK)
	do(mgmt, http.MethodPut, "/v1/pools/acl-http", api.PoolRequest{Size: 1, Rotation: retry, Provider: &api.Provider{
		Type: "http", URL: echo.URL + "/issue", Method: "POST", Headers: map[string]string{"Authorization": "Bearer " + header}, TokenField: "token",
	}}, http.StatusOK)

	// A new ACL token: its secret is shown once, in the answer to its
	// creation, and nowhere after.
	do(mgmt, http.MethodPut, "/v1/acl/policies/leak", api.ACLPolicyRequest{Pools: []tokens.PoolRule{{Pattern: "acl-*", Capabilities: []tokens.Capability{tokens.CapRead, tokens.CapReport}}}}, http.StatusOK)
	created := do(mgmt, http.MethodPost, "/v1/acl/tokens", api.ACLTokenRequest{Policies: []string{"leak"}}, http.StatusCreated)
	aclSecret := aa.secret(decode[api.ACLTokenSecret](t, created).SecretID)
	seen = seen[:len(seen)-1] // the one answer that may hold it
	reader := aa.tcp.as(aclSecret)
	if got := string(do(reader, http.MethodGet, "/v1/pools/acl-static/token?format=raw", nil, http.StatusOK).Body); got != values[0] && got != values[1] {
		t.Fatalf("fetch served %q, none of the values added", got)
	}
	seen = seen[:len(seen)-1] // a fetch shows a value: that is its job
	do(reader, http.MethodPost, "/v1/pools/acl-static/tokens/"+ids[0]+"/report", api.ReportRequest{Outcome: "forbidden"}, http.StatusOK)

	// Denied requests carrying secrets where they do not belong.
	wrong := canary("wrong-acl-secret")
	do(aa.tcp.as(wrong), http.MethodGet, "/v1/pools", nil, http.StatusUnauthorized)
	do(aa.tcp.as(aa.mgmt[:len(aa.mgmt)-3]+"xyz"), http.MethodGet, "/v1/pools", nil, http.StatusUnauthorized)
	do(reader, http.MethodPost, "/v1/pools/acl-static/tokens", api.TokenRequest{Value: canary("denied-value")}, http.StatusForbidden)
	do(reader, http.MethodPut, "/v1/pools/acl-static", api.PoolRequest{Provider: &api.Provider{Type: "oauth2", TokenURL: echo.URL, ClientID: "x", ClientSecret: canary("denied-secret")}}, http.StatusForbidden)
	do(mgmt, http.MethodPost, "/v1/pools/acl-static/tokens", api.TokenRequest{Value: values[1]}, http.StatusConflict)
	do(mgmt, http.MethodPost, "/v1/pools/acl-static/tokens", `{"value":"`+canary("bad-json")+`","bogus":1}`, http.StatusBadRequest)
	do(mgmt, http.MethodPost, "/v1/operator/keyring", api.KeyringInstallRequest{Key: canary("not-a-key")}, http.StatusBadRequest)

	// Let every issuer refuse, and the refusals be recorded.
	testutil.WaitFor(t, 10*time.Second, func() error {
		r := mgmt.do(t, http.MethodGet, "/v1/events", nil)
		if r.Status != http.StatusOK {
			return errors.New(r.String())
		}
		ev := decode[api.Events](t, r)
		failed := map[string]bool{}
		for _, e := range ev.Events {
			if e.Type == tokens.EventRotationFailed {
				failed[e.Pool] = true
			}
		}
		if !failed["acl-oauth"] || !failed["acl-multi"] || !failed["acl-http"] {
			return fmt.Errorf("rotation failures recorded for %v; want all three provider pools", failed)
		}
		return nil
	})
	// Sanity: the issuer does see the secret, so the searches below could
	// find it.
	probe, err := http.Post(echo.URL, "text/plain", strings.NewReader(clientSecret))
	if err != nil {
		t.Fatal(err)
	}
	echoed, _ := io.ReadAll(probe.Body)
	probe.Body.Close()
	if !strings.Contains(string(echoed), clientSecret) {
		t.Fatalf("the echo issuer does not echo: %s", echoed)
	}

	for _, c := range []*conn{mgmt, aa.unix} {
		for _, path := range []string{
			"/v1/pools", "/v1/pools/acl-static", "/v1/pools/acl-oauth", "/v1/pools/acl-multi", "/v1/pools/acl-http",
			"/v1/pools/acl-static/tokens", "/v1/pools/acl-static/tokens/" + ids[0], "/v1/pools/acl-oauth/tokens",
			"/v1/events", "/v1/alerts", "/v1/metrics", "/v1/health", "/v1/members", "/v1/status/peers",
			"/v1/operator/keyring", "/v1/acl/policies", "/v1/acl/tokens", "/v1/audit", "/v1/snapshot",
		} {
			do(c, http.MethodGet, path, nil, http.StatusOK)
		}
	}
	do(reader, http.MethodGet, "/v1/acl/token/self", nil, http.StatusOK)

	all := aa.secretList()
	for _, r := range seen {
		assertNoSecrets(t, "response", r.String(), all)
		for name, vs := range r.Header {
			assertNoSecrets(t, "header "+name, strings.Join(vs, " "), all)
		}
	}
	logs := aa.logs.String()
	if !strings.Contains(logs, "audit") || !strings.Contains(logs, "acl-oauth") {
		t.Fatalf("the agent log does not record the requests; is it captured?")
	}
	assertNoSecrets(t, "agent log", logs, all)
}
