package api_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/tokens"
)

type badRequest struct {
	name   string
	method string
	// path may hold $POOL (a pool with two tokens), $EMPTY (a pool with
	// none) and $ID (a token in $POOL).
	path string
	// body is nil (none) or a string sent as is; it may hold $SECRET, a
	// value that is in no pool, and $TAKEN, the value of $ID.
	body     any
	status   int
	code     string
	mentions []string
	// allow is the Allow header a 405 must carry, as a set.
	allow []string
}

func badRequests() []badRequest {
	const (
		inv  = tokens.CodeInvalid
		post = http.MethodPost
		put  = http.MethodPut
		get  = http.MethodGet
		del  = http.MethodDelete
	)
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	later := time.Now().Add(2 * time.Hour).UTC().Format(time.RFC3339)
	long := strings.Repeat("a", 65)
	tooLarge := `{"labels":{"k":"` + strings.Repeat("x", api.MaxBodyBytes+1) + `"}}`
	manyLabels := make([]string, tokens.MaxLabels+1)
	for i := range manyLabels {
		manyLabels[i] = fmt.Sprintf(`"k%d":"v"`, i)
	}
	return []badRequest{
		// Names.
		{"uppercase pool name", put, "/v1/pools/Payments", `{}`, 400, inv, []string{`pool name "Payments"`, tokens.NamePatternString}, nil},
		{"too long pool name", put, "/v1/pools/" + long, `{}`, 400, inv, []string{long}, nil},
		{"leading dot pool name", put, "/v1/pools/.hidden", `{}`, 400, inv, []string{`".hidden"`}, nil},
		{"leading hyphen pool name", put, "/v1/pools/-x", `{}`, 400, inv, []string{`"-x"`}, nil},
		{"space in pool name", put, "/v1/pools/a%20b", `{}`, 400, inv, []string{`"a b"`}, nil},
		{"uppercase pool name on read", get, "/v1/pools/Payments", nil, 400, inv, []string{`"Payments"`}, nil},
		{"uppercase pool name on token add", post, "/v1/pools/Payments/tokens", `{"value":"$SECRET"}`, 400, inv, []string{`"Payments"`}, nil},
		{"invalid token id", get, "/v1/pools/$POOL/tokens/TOK_1", nil, 400, inv, []string{`token id "TOK_1"`}, nil},
		{"invalid token id on delete", del, "/v1/pools/$POOL/tokens/TOK_1", nil, 400, inv, []string{`token id "TOK_1"`}, nil},
		{"token id with a dot first", get, "/v1/pools/$POOL/tokens/.tok", nil, 400, inv, []string{`token id ".tok"`}, nil},

		// Pool bodies.
		{"unknown field", put, "/v1/pools/newpool", `{"selection":"priority","colour":"red"}`, 400, inv, []string{`"colour"`}, nil},
		{"misspelt field", put, "/v1/pools/newpool", `{"min_heathy":1}`, 400, inv, []string{`"min_heathy"`}, nil},
		{"trailing garbage", put, "/v1/pools/newpool", `{"selection":"priority"} garbage`, 400, inv, []string{"one JSON object"}, nil},
		{"two objects", put, "/v1/pools/newpool", `{} {}`, 400, inv, []string{"one JSON object"}, nil},
		{"empty body", put, "/v1/pools/newpool", "", 400, inv, []string{"empty"}, nil},
		{"no body", put, "/v1/pools/newpool", nil, 400, inv, []string{"empty"}, nil},
		{"blank body", put, "/v1/pools/newpool", " \n\t", 400, inv, []string{"empty"}, nil},
		{"null body", put, "/v1/pools/newpool", `null`, 400, inv, []string{"JSON object"}, nil},
		{"array body", put, "/v1/pools/newpool", `[]`, 400, inv, []string{"JSON object"}, nil},
		{"string body", put, "/v1/pools/newpool", `"priority"`, 400, inv, []string{"JSON object"}, nil},
		{"truncated JSON", put, "/v1/pools/newpool", `{"selection":`, 400, inv, []string{"JSON"}, nil},
		{"invalid JSON", put, "/v1/pools/newpool", `{selection: "priority"}`, 400, inv, []string{"not valid JSON"}, nil},
		{"min_healthy as string", put, "/v1/pools/newpool", `{"min_healthy":"3"}`, 400, inv, []string{`"min_healthy"`, "integer"}, nil},
		{"min_healthy fractional", put, "/v1/pools/newpool", `{"min_healthy":1.5}`, 400, inv, []string{`"min_healthy"`, "integer"}, nil},
		{"selection as number", put, "/v1/pools/newpool", `{"selection":1}`, 400, inv, []string{`"selection"`, "string"}, nil},
		{"provider as string", put, "/v1/pools/newpool", `{"provider":"static"}`, 400, inv, []string{`"provider"`, "object"}, nil},
		{"provider type as number", put, "/v1/pools/newpool", `{"provider":{"type":1}}`, 400, inv, []string{`"provider.type"`, "string"}, nil},
		{"unknown provider field", put, "/v1/pools/newpool", `{"provider":{"type":"static","nope":"x"}}`, 400, inv, []string{`"nope"`}, nil},
		{"provider field of another type", put, "/v1/pools/newpool", `{"provider":{"type":"static","url":"http://x"}}`, 400, inv, []string{"provider.url", "static"}, nil},
		{"exec without command", put, "/v1/pools/newpool", `{"provider":{"type":"exec"}}`, 400, inv, []string{"provider.command"}, nil},
		{"oauth2 without secret", put, "/v1/pools/newpool", `{"provider":{"type":"oauth2","token_url":"http://127.0.0.1:1/t","client_id":"a"}}`, 400, inv, []string{"client_secret"}, nil},
		{"size on a static pool", put, "/v1/pools/newpool", `{"size":3}`, 400, inv, []string{"size", "static"}, nil},
		{"negative grace", put, "/v1/pools/newpool", `{"rotation":{"grace":"-1s"}}`, 400, inv, []string{"rotation.grace"}, nil},
		{"health check without token placeholder", put, "/v1/pools/newpool", `{"health_check":{"url":"http://127.0.0.1:1/c","format":"Bearer"}}`, 400, inv, []string{"health_check.format", "{{token}}"}, nil},
		{"labels as array", put, "/v1/pools/newpool", `{"labels":["a"]}`, 400, inv, []string{`"labels"`, "object"}, nil},
		{"label value as number", put, "/v1/pools/newpool", `{"labels":{"team":1}}`, 400, inv, []string{`"labels"`, "string"}, nil},
		{"body too large", put, "/v1/pools/newpool", tooLarge, 413, api.CodeBodyTooLarge, []string{"65536"}, nil},
		{"invalid selection", put, "/v1/pools/newpool", `{"selection":"fastest"}`, 400, inv, []string{"selection", `"fastest"`}, nil},
		{"invalid selection on update", put, "/v1/pools/$POOL", `{"selection":"fastest"}`, 400, inv, []string{"selection", `"fastest"`}, nil},
		{"negative min_healthy", put, "/v1/pools/newpool", `{"min_healthy":-1}`, 400, inv, []string{"min_healthy", "-1"}, nil},
		{"negative min_healthy on update", put, "/v1/pools/$POOL", `{"min_healthy":-1}`, 400, inv, []string{"min_healthy", "-1"}, nil},
		{"huge min_healthy", put, "/v1/pools/newpool", `{"min_healthy":10001}`, 400, inv, []string{"min_healthy", "10001"}, nil},
		{"unsupported provider", put, "/v1/pools/newpool", `{"provider":{"type":"vault"}}`, 400, inv, []string{"provider", `"vault"`}, nil},
		{"bad label key", put, "/v1/pools/newpool", `{"labels":{"Bad Key":"x"}}`, 400, inv, []string{`label key "Bad Key"`}, nil},
		{"control character in label value", put, "/v1/pools/newpool", `{"labels":{"k":"a\nb"}}`, 400, inv, []string{`label "k"`, "printable"}, nil},
		{"label value too long", put, "/v1/pools/newpool", `{"labels":{"k":"` + strings.Repeat("v", tokens.MaxLabelValueLen+1) + `"}}`, 400, inv, []string{`label "k"`, "256"}, nil},
		{"too many labels", put, "/v1/pools/newpool", `{"labels":{` + strings.Join(manyLabels, ",") + `}}`, 400, inv, []string{"labels", "33"}, nil},
		{"unknown query parameter on put", put, "/v1/pools/newpool?dry_run=1", `{}`, 400, inv, []string{`"dry_run"`}, nil},

		// Pool reads and deletes.
		{"unknown query parameter on list", get, "/v1/pools?limit=1", nil, 400, inv, []string{`"limit"`}, nil},
		{"unknown query parameter on get", get, "/v1/pools/$POOL?verbose=1", nil, 400, inv, []string{`"verbose"`}, nil},
		{"unknown pool", get, "/v1/pools/nope", nil, 404, tokens.CodePoolNotFound, []string{`"nope"`}, nil},
		{"delete non-empty pool", del, "/v1/pools/$POOL", nil, 409, tokens.CodeConflict, []string{`"$POOL"`, "force"}, nil},
		{"delete non-empty pool, force=false", del, "/v1/pools/$POOL?force=false", nil, 409, tokens.CodeConflict, []string{`"$POOL"`, "force"}, nil},
		{"bad force value", del, "/v1/pools/$POOL?force=maybe", nil, 400, inv, []string{"force", `"maybe"`}, nil},
		{"unknown query parameter on delete", del, "/v1/pools/$POOL?recursive=true", nil, 400, inv, []string{`"recursive"`}, nil},
		{"delete unknown pool", del, "/v1/pools/nope", nil, 404, tokens.CodePoolNotFound, []string{`"nope"`}, nil},

		// Token bodies.
		{"empty value", post, "/v1/pools/$POOL/tokens", `{"value":""}`, 400, inv, []string{"value"}, nil},
		{"blank value", post, "/v1/pools/$POOL/tokens", `{"value":"  "}`, 400, inv, []string{"value"}, nil},
		{"no value", post, "/v1/pools/$POOL/tokens", `{"priority":1}`, 400, inv, []string{"value"}, nil},
		{"value as number", post, "/v1/pools/$POOL/tokens", `{"value":12345}`, 400, inv, []string{`"value"`, "string"}, nil},
		{"value too long", post, "/v1/pools/$POOL/tokens", `{"value":"` + strings.Repeat("v", tokens.MaxTokenValueLen+1) + `"}`, 400, inv, []string{"value", "16384"}, nil},
		{"expires_at in the past", post, "/v1/pools/$POOL/tokens", `{"value":"$SECRET","expires_at":"` + past + `"}`, 400, inv, []string{"expires_at", past}, nil},
		{"expires_at not a time", post, "/v1/pools/$POOL/tokens", `{"value":"$SECRET","expires_at":"tomorrow"}`, 400, inv, []string{"expires_at", "RFC 3339"}, nil},
		{"expires_at as number", post, "/v1/pools/$POOL/tokens", `{"value":"$SECRET","expires_at":1700000000}`, 400, inv, []string{"expires_at", "RFC 3339"}, nil},
		{"not_before not a time", post, "/v1/pools/$POOL/tokens", `{"value":"$SECRET","not_before":"2024-13-01T00:00:00Z"}`, 400, inv, []string{"not_before", "RFC 3339"}, nil},
		{"not_before after expires_at", post, "/v1/pools/$POOL/tokens", `{"value":"$SECRET","expires_at":"` + future + `","not_before":"` + later + `"}`, 400, inv, []string{"not_before", "expires_at"}, nil},
		{"priority as string", post, "/v1/pools/$POOL/tokens", `{"value":"$SECRET","priority":"high"}`, 400, inv, []string{`"priority"`, "integer"}, nil},
		{"priority fractional", post, "/v1/pools/$POOL/tokens", `{"value":"$SECRET","priority":1.5}`, 400, inv, []string{`"priority"`, "integer"}, nil},
		{"priority out of range", post, "/v1/pools/$POOL/tokens", `{"value":"$SECRET","priority":2000000}`, 400, inv, []string{"priority", "2000000"}, nil},
		{"unknown token field", post, "/v1/pools/$POOL/tokens", `{"value":"$SECRET","token":"x"}`, 400, inv, []string{`"token"`}, nil},
		{"bad token label", post, "/v1/pools/$POOL/tokens", `{"value":"$SECRET","labels":{"BAD":"x"}}`, 400, inv, []string{`"BAD"`}, nil},
		{"token trailing garbage", post, "/v1/pools/$POOL/tokens", `{"value":"$SECRET"}]`, 400, inv, []string{"one JSON object"}, nil},
		{"token body too large", post, "/v1/pools/$POOL/tokens", `{"value":"$SECRET","labels":{"k":"` + strings.Repeat("x", api.MaxBodyBytes) + `"}}`, 413, api.CodeBodyTooLarge, []string{"65536"}, nil},
		{"duplicate value", post, "/v1/pools/$POOL/tokens", `{"value":"$TAKEN"}`, 409, tokens.CodeConflict, []string{`"$POOL"`, `"$ID"`}, nil},
		{"token in unknown pool", post, "/v1/pools/nope/tokens", `{"value":"$SECRET"}`, 404, tokens.CodePoolNotFound, []string{`"nope"`}, nil},
		{"unknown query parameter on add", post, "/v1/pools/$POOL/tokens?x=1", `{"value":"$SECRET"}`, 400, inv, []string{`"x"`}, nil},

		// Token reads and deletes.
		{"tokens of unknown pool", get, "/v1/pools/nope/tokens", nil, 404, tokens.CodePoolNotFound, []string{`"nope"`}, nil},
		{"unknown query parameter on token list", get, "/v1/pools/$POOL/tokens?all=1", nil, 400, inv, []string{`"all"`}, nil},
		{"unknown token", get, "/v1/pools/$POOL/tokens/tok_0000000000000000", nil, 404, tokens.CodeTokenNotFound, []string{`"tok_0000000000000000"`}, nil},
		{"token info in unknown pool", get, "/v1/pools/nope/tokens/$ID", nil, 404, tokens.CodePoolNotFound, []string{`"nope"`}, nil},
		{"delete unknown token", del, "/v1/pools/$POOL/tokens/tok_0000000000000000", nil, 404, tokens.CodeTokenNotFound, []string{`"tok_0000000000000000"`}, nil},
		{"unknown query parameter on token delete", del, "/v1/pools/$POOL/tokens/$ID?force=true", nil, 400, inv, []string{`"force"`}, nil},

		// Fetch.
		{"bad format", get, "/v1/pools/$POOL/token?format=xml", nil, 400, inv, []string{"format", `"xml"`}, nil},
		{"invalid exclude", get, "/v1/pools/$POOL/token?exclude=Not_An_Id", nil, 400, inv, []string{"exclude", `"Not_An_Id"`}, nil},
		{"one invalid exclude among valid ones", get, "/v1/pools/$POOL/token?exclude=$ID&exclude=bad%20id", nil, 400, inv, []string{"exclude", `"bad id"`}, nil},
		{"long unknown query parameter", get, "/v1/pools/$POOL/token?" + strings.Repeat("q", 500) + "=1", nil, 400, inv, []string{strings.Repeat("q", 80) + "..."}, nil},
		{"empty exclude", get, "/v1/pools/$POOL/token?exclude=", nil, 400, inv, []string{"exclude"}, nil},
		{"unknown query parameter on fetch", get, "/v1/pools/$POOL/token?foo=bar", nil, 400, inv, []string{`"foo"`}, nil},
		{"fetch from unknown pool", get, "/v1/pools/nope/token", nil, 404, tokens.CodePoolNotFound, []string{`"nope"`}, nil},
		{"fetch from empty pool", get, "/v1/pools/$EMPTY/token", nil, 503, tokens.CodePoolEmpty, []string{`"$EMPTY"`}, nil},

		// ?consistent takes no value or "true"; routes that are not state
		// reads do not take it.
		{"consistent=false on pool list", get, "/v1/pools?consistent=false", nil, 400, inv, []string{"consistent", `"false"`}, nil},
		{"consistent=yes on pool show", get, "/v1/pools/$POOL?consistent=yes", nil, 400, inv, []string{"consistent", `"yes"`}, nil},
		{"consistent=1 on token list", get, "/v1/pools/$POOL/tokens?consistent=1", nil, 400, inv, []string{"consistent", `"1"`}, nil},
		{"consistent=TRUE on token show", get, "/v1/pools/$POOL/tokens/$ID?consistent=TRUE", nil, 400, inv, []string{"consistent", `"TRUE"`}, nil},
		{"consistent=0 on fetch", get, "/v1/pools/$POOL/token?consistent=0", nil, 400, inv, []string{"consistent", `"0"`}, nil},
		{"second consistent value on fetch", get, "/v1/pools/$POOL/token?consistent&consistent=no", nil, 400, inv, []string{"consistent", `"no"`}, nil},
		{"consistent=now on events", get, "/v1/events?consistent=now", nil, 400, inv, []string{"consistent", `"now"`}, nil},
		{"consistent=x on ACL policies", get, "/v1/acl/policies?consistent=x", nil, 400, inv, []string{"consistent", `"x"`}, nil},
		{"consistent on members", get, "/v1/members?consistent", nil, 400, inv, []string{`"consistent"`}, nil},
		{"consistent on health", get, "/v1/health?consistent", nil, 400, inv, []string{`"consistent"`}, nil},
		{"consistent on a write", put, "/v1/pools/$POOL?consistent", `{}`, 400, inv, []string{`"consistent"`}, nil},
		{"consistent on report", post, "/v1/pools/$POOL/tokens/$ID/report?consistent", `{"outcome":"ok"}`, 400, inv, []string{`"consistent"`}, nil},

		// Reports.
		{"unknown outcome", post, "/v1/pools/$POOL/tokens/$ID/report", `{"outcome":"great"}`, 400, inv, []string{"outcome", `"great"`}, nil},
		{"outcome as number", post, "/v1/pools/$POOL/tokens/$ID/report", `{"outcome":401}`, 400, inv, []string{`"outcome"`, "string"}, nil},
		{"no outcome", post, "/v1/pools/$POOL/tokens/$ID/report", `{}`, 400, inv, []string{"outcome"}, nil},
		{"retry_after_seconds with ok", post, "/v1/pools/$POOL/tokens/$ID/report", `{"outcome":"ok","retry_after_seconds":5}`, 400, inv, []string{"retry_after_seconds", "rate_limited"}, nil},
		{"retry_after_seconds with unauthorized", post, "/v1/pools/$POOL/tokens/$ID/report", `{"outcome":"unauthorized","retry_after_seconds":5}`, 400, inv, []string{"retry_after_seconds", "rate_limited"}, nil},
		{"retry_after_seconds zero", post, "/v1/pools/$POOL/tokens/$ID/report", `{"outcome":"rate_limited","retry_after_seconds":0}`, 400, inv, []string{"retry_after_seconds", "got 0"}, nil},
		{"retry_after_seconds negative", post, "/v1/pools/$POOL/tokens/$ID/report", `{"outcome":"rate_limited","retry_after_seconds":-5}`, 400, inv, []string{"retry_after_seconds", "-5"}, nil},
		{"retry_after_seconds over a day", post, "/v1/pools/$POOL/tokens/$ID/report", `{"outcome":"rate_limited","retry_after_seconds":86401}`, 400, inv, []string{"retry_after_seconds", "86401"}, nil},
		{"retry_after_seconds as string", post, "/v1/pools/$POOL/tokens/$ID/report", `{"outcome":"rate_limited","retry_after_seconds":"5"}`, 400, inv, []string{`"retry_after_seconds"`, "integer"}, nil},
		{"unknown report field", post, "/v1/pools/$POOL/tokens/$ID/report", `{"outcome":"ok","extra":1}`, 400, inv, []string{`"extra"`}, nil},
		{"empty report", post, "/v1/pools/$POOL/tokens/$ID/report", "", 400, inv, []string{"empty"}, nil},
		{"report too large", post, "/v1/pools/$POOL/tokens/$ID/report", tooLarge, 413, api.CodeBodyTooLarge, []string{"65536"}, nil},
		{"unknown query parameter on report", post, "/v1/pools/$POOL/tokens/$ID/report?x=1", `{"outcome":"ok"}`, 400, inv, []string{`"x"`}, nil},
		{"report on unknown token", post, "/v1/pools/$POOL/tokens/tok_0000000000000000/report", `{"outcome":"unauthorized"}`, 404, tokens.CodeTokenNotFound, []string{`"tok_0000000000000000"`}, nil},
		{"report in unknown pool", post, "/v1/pools/nope/tokens/$ID/report", `{"outcome":"unauthorized"}`, 404, tokens.CodePoolNotFound, []string{`"nope"`}, nil},
		{"report on invalid id", post, "/v1/pools/$POOL/tokens/TOK/report", `{"outcome":"unauthorized"}`, 400, inv, []string{`token id "TOK"`}, nil},

		// Status endpoints take no parameters.
		{"unknown query parameter on health", get, "/v1/health?x=1", nil, 400, inv, []string{`"x"`}, nil},
		{"unknown query parameter on leader", get, "/v1/status/leader?stale=1", nil, 400, inv, []string{`"stale"`}, nil},
		{"unknown query parameter on peers", get, "/v1/status/peers?x=1", nil, 400, inv, []string{`"x"`}, nil},
		{"unknown query parameter on members", get, "/v1/members?x=1", nil, 400, inv, []string{`"x"`}, nil},

		// Wrong methods.
		{"POST pools", post, "/v1/pools", `{}`, 405, api.CodeMethodNotAllowed, []string{"POST", "GET"}, []string{"GET", "HEAD"}},
		{"PATCH pool", http.MethodPatch, "/v1/pools/$POOL", `{}`, 405, api.CodeMethodNotAllowed, []string{"PATCH"}, []string{"GET", "HEAD", "PUT", "DELETE"}},
		{"POST pool", post, "/v1/pools/newpool", `{}`, 405, api.CodeMethodNotAllowed, []string{"POST"}, []string{"GET", "HEAD", "PUT", "DELETE"}},
		{"PUT tokens", put, "/v1/pools/$POOL/tokens", `{"value":"$SECRET"}`, 405, api.CodeMethodNotAllowed, []string{"PUT"}, []string{"GET", "HEAD", "POST"}},
		{"PUT token", put, "/v1/pools/$POOL/tokens/$ID", `{"value":"$SECRET"}`, 405, api.CodeMethodNotAllowed, []string{"PUT"}, []string{"GET", "HEAD", "DELETE"}},
		{"GET report", get, "/v1/pools/$POOL/tokens/$ID/report", nil, 405, api.CodeMethodNotAllowed, []string{"GET", "POST"}, []string{"POST"}},
		{"POST fetch", post, "/v1/pools/$POOL/token", `{}`, 405, api.CodeMethodNotAllowed, []string{"POST"}, []string{"GET", "HEAD"}},
		{"DELETE fetch", del, "/v1/pools/$POOL/token", nil, 405, api.CodeMethodNotAllowed, []string{"DELETE"}, []string{"GET", "HEAD"}},
		{"DELETE health", del, "/v1/health", nil, 405, api.CodeMethodNotAllowed, []string{"DELETE"}, []string{"GET", "HEAD"}},
		{"POST leader", post, "/v1/status/leader", `{}`, 405, api.CodeMethodNotAllowed, []string{"POST"}, []string{"GET", "HEAD"}},
		{"PUT peers", put, "/v1/status/peers", `{}`, 405, api.CodeMethodNotAllowed, []string{"PUT"}, []string{"GET", "HEAD"}},
		{"DELETE members", del, "/v1/members", nil, 405, api.CodeMethodNotAllowed, []string{"DELETE"}, []string{"GET", "HEAD"}},

		// Unknown paths.
		{"unknown path", get, "/v1/nope", nil, 404, tokens.CodeNotFound, []string{"/v1/nope"}, nil},
		{"root", get, "/", nil, 404, tokens.CodeNotFound, []string{"/"}, nil},
		{"other version", get, "/v2/pools", nil, 404, tokens.CodeNotFound, []string{"/v2/pools"}, nil},
		{"too deep", get, "/v1/pools/$POOL/tokens/$ID/report/extra", nil, 404, tokens.CodeNotFound, []string{"/report/extra"}, nil},
		{"misspelt report", post, "/v1/pools/$POOL/tokens/$ID/reports", `{"outcome":"unauthorized"}`, 404, tokens.CodeNotFound, []string{"/reports"}, nil},
		{"empty pool segment", get, "/v1/pools//tokens", nil, 404, tokens.CodeNotFound, []string{"/v1/pools//tokens"}, nil},
		{"dot segment", get, "/v1/pools/$POOL/./tokens", nil, 404, tokens.CodeNotFound, []string{"/./tokens"}, nil},
		{"dot-dot segment on delete", del, "/v1/pools/$POOL/tokens/..", nil, 404, tokens.CodeNotFound, []string{"/tokens/.."}, nil},
		{"double slash on delete", del, "/v1/pools/$POOL//", nil, 404, tokens.CodeNotFound, []string{"$POOL//"}, nil},
	}
}

// TestBadRequests sends each bad request over TCP and the unix socket and
// checks its status, code and message, that it leaks no secret, and that
// it changed nothing a client can see, not even the index.
func TestBadRequests(t *testing.T) {
	t.Parallel()
	ta := startAgent(t)
	c := ta.tcp
	pool, empty := "base", "empty"
	c.putPool(t, pool, api.PoolRequest{Labels: map[string]string{"team": "core"}})
	c.putPool(t, empty, api.PoolRequest{})
	taken := ta.secret("Taken-Value-ghp_8f3kQ2")
	id := c.addToken(t, pool, api.TokenRequest{Value: taken, Priority: 1}).ID
	other := ta.secret("Other-Value-ghp_Zx91mM")
	c.addToken(t, pool, api.TokenRequest{Value: other, Priority: 2})
	fresh := ta.secret("Fresh-Value-ghp_Lp77aB")
	secrets := []string{taken, other, fresh}
	expand := strings.NewReplacer("$POOL", pool, "$EMPTY", empty, "$ID", id, "$SECRET", fresh, "$TAKEN", taken).Replace

	names := map[string]bool{}
	for _, tc := range badRequests() {
		if names[tc.name] {
			t.Fatalf("two cases are named %q", tc.name)
		}
		names[tc.name] = true
	}
	for _, c := range ta.conns() {
		t.Run(c.name, func(t *testing.T) {
			for _, tc := range badRequests() {
				t.Run(tc.name, func(t *testing.T) {
					body := tc.body
					if s, ok := body.(string); ok {
						body = expand(s)
					}
					before := c.snapshot(t)
					r := c.do(t, tc.method, expand(tc.path), body)
					var mentions []string
					for _, m := range tc.mentions {
						mentions = append(mentions, expand(m))
					}
					e := expectError(t, r, tc.status, tc.code, mentions...)
					if testing.Verbose() {
						t.Logf("%d %s: %s", r.Status, e.Code, e.Message)
					}
					assertNoSecrets(t, "error response", r.String(), secrets)
					for name, vs := range r.Header {
						assertNoSecrets(t, "header "+name, strings.Join(vs, " "), secrets)
					}
					if tc.allow != nil {
						allow := strings.Split(r.Header.Get("Allow"), ", ")
						if !sameSet(allow, tc.allow) {
							t.Errorf("Allow %q, want %v", r.Header.Get("Allow"), tc.allow)
						}
					} else if a := r.Header.Get("Allow"); a != "" {
						t.Errorf("Allow %q on a %d", a, r.Status)
					}
					after := c.snapshot(t)
					if d := before.diff(after); d != "" {
						t.Errorf("the request changed the state: %s", d)
					}
				})
			}
		})
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b))
	return slices.Equal(a, b)
}

// TestSecretsNeverLeak adds tokens with distinctive values and checks that
// only a fetch ever shows them: not listings, token info, write or report
// answers, error bodies, headers or the agent's log.
func TestSecretsNeverLeak(t *testing.T) {
	t.Parallel()
	ta := startAgent(t)
	for _, c := range ta.conns() {
		t.Run(c.name, func(t *testing.T) {
			pool := c.name + "-leak"
			values := []string{
				ta.secret("LeakCanary-" + c.name + "-A-9fJ2kq"),
				ta.secret("LeakCanary-" + c.name + "-B-Xm4pRt"),
				ta.secret("LeakCanary-" + c.name + "-C-w7Vn0z"),
			}
			var seen []*response
			do := func(method, path string, body any) *response {
				t.Helper()
				r := c.do(t, method, path, body)
				seen = append(seen, r)
				return r
			}
			expect(t, do(http.MethodPut, "/v1/pools/"+pool, api.PoolRequest{Selection: "round_robin"}), http.StatusOK)
			var ids []string
			for i, v := range values {
				r := expect(t, do(http.MethodPost, "/v1/pools/"+pool+"/tokens", api.TokenRequest{Value: v, Priority: i}), http.StatusCreated)
				ids = append(ids, decode[api.TokenInfo](t, r).ID)
			}
			// Fetches do show values: the check below can see one.
			r := expect(t, c.fetch(t, pool, "?format=raw"), http.StatusOK)
			if !slices.Contains(values, string(r.Body)) {
				t.Fatalf("fetch served %q, none of the values added", r.Body)
			}

			expect(t, do(http.MethodGet, "/v1/pools", nil), http.StatusOK)
			expect(t, do(http.MethodGet, "/v1/pools/"+pool, nil), http.StatusOK)
			expect(t, do(http.MethodGet, "/v1/pools/"+pool+"/tokens", nil), http.StatusOK)
			for _, id := range ids {
				expect(t, do(http.MethodGet, "/v1/pools/"+pool+"/tokens/"+id, nil), http.StatusOK)
			}
			secs := 60
			expect(t, do(http.MethodPost, "/v1/pools/"+pool+"/tokens/"+ids[0]+"/report", api.ReportRequest{Outcome: "ok"}), http.StatusOK)
			expect(t, do(http.MethodPost, "/v1/pools/"+pool+"/tokens/"+ids[0]+"/report", api.ReportRequest{Outcome: "rate_limited", RetryAfterSeconds: &secs}), http.StatusOK)
			expect(t, do(http.MethodPost, "/v1/pools/"+pool+"/tokens/"+ids[1]+"/report", api.ReportRequest{Outcome: "unauthorized"}), http.StatusOK)
			expect(t, do(http.MethodPost, "/v1/pools/"+pool+"/tokens/"+ids[2]+"/report", api.ReportRequest{Outcome: "error"}), http.StatusOK)
			expect(t, do(http.MethodPost, "/v1/pools/"+pool+"/tokens/"+ids[2]+"/report", api.ReportRequest{Outcome: "timeout"}), http.StatusOK)
			// Errors that involve a value.
			expect(t, do(http.MethodPost, "/v1/pools/"+pool+"/tokens", api.TokenRequest{Value: values[0]}), http.StatusConflict)
			past := time.Now().Add(-time.Minute)
			expect(t, do(http.MethodPost, "/v1/pools/"+pool+"/tokens", api.TokenRequest{Value: values[1] + "-new", ExpiresAt: &past}), http.StatusBadRequest)
			expect(t, do(http.MethodPost, "/v1/pools/"+pool+"/tokens", `{"value":"`+values[2]+`-new","expires_at":"`+values[2]+`"}`), http.StatusBadRequest)
			expect(t, do(http.MethodPost, "/v1/pools/"+pool+"/tokens", `{"value":"`+values[2]+`-new","prio":1}`), http.StatusBadRequest)
			expect(t, do(http.MethodPost, "/v1/pools/"+pool+"/tokens", `{"value":"`+values[2]+`-new"`), http.StatusBadRequest)
			expect(t, do(http.MethodPost, "/v1/pools/nope/tokens", api.TokenRequest{Value: values[2]}), http.StatusNotFound)
			expect(t, do(http.MethodGet, "/v1/pools/"+pool+"/token?exclude="+ids[0]+"&exclude="+ids[1]+"&exclude="+ids[2], nil), http.StatusServiceUnavailable)
			expect(t, do(http.MethodDelete, "/v1/pools/"+pool, nil), http.StatusConflict)
			expect(t, do(http.MethodDelete, "/v1/pools/"+pool+"/tokens/"+ids[2], nil), http.StatusOK)
			expect(t, do(http.MethodDelete, "/v1/pools/"+pool+"?force=true", nil), http.StatusOK)

			for _, r := range seen {
				assertNoSecrets(t, "response", r.String(), values)
				for name, vs := range r.Header {
					assertNoSecrets(t, "header "+name, strings.Join(vs, " "), values)
				}
			}
			logs := ta.logs.String()
			if !strings.Contains(logs, "token added") || !strings.Contains(logs, ids[1]) {
				t.Fatalf("the agent log does not record the writes; is it captured? %s", logs)
			}
			assertNoSecrets(t, "agent log", logs, values)
		})
	}
}
