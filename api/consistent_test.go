package api_test

import (
	"bytes"
	"net/http"
	"strconv"
	"testing"

	"github.com/tokend/tokend/api"
)

// Every state read takes ?consistent (or ?consistent=true): it answers
// what the plain read answers, marked consistent, with a known leader and
// the index it read at least as high as every write acknowledged before it.
func TestConsistentReadRoutes(t *testing.T) {
	t.Parallel()
	ta := startAgent(t)
	c := ta.tcp
	c.putPool(t, "p", api.PoolRequest{})
	id := c.addToken(t, "p", api.TokenRequest{Value: ta.secret("consistent-value"), Priority: 1}).ID
	c.addToken(t, "p", api.TokenRequest{Value: ta.secret("backup-value"), Priority: 2})
	r := expect(t, c.do(t, http.MethodDelete, "/v1/pools/p/tokens/"+c.addToken(t, "p", api.TokenRequest{Value: ta.secret("gone")}).ID, nil), http.StatusOK)
	last := writeIndex(t, r)

	paths := []string{
		"/v1/pools", "/v1/pools/p", "/v1/pools/p/tokens", "/v1/pools/p/tokens/" + id,
		"/v1/pools/p/token", "/v1/pools/p/token?format=raw", "/v1/events",
		"/v1/acl/policies", "/v1/acl/tokens",
	}
	for _, conn := range ta.conns() {
		for _, path := range paths {
			for _, param := range []string{"consistent", "consistent=true"} {
				sep := "?"
				if bytes.ContainsRune([]byte(path), '?') {
					sep = "&"
				}
				plain := expect(t, conn.do(t, http.MethodGet, path, nil), http.StatusOK)
				if h := plain.Header.Get(api.HeaderConsistent); h != "" {
					t.Errorf("%s %s: a plain read says %s: %q", conn.name, path, api.HeaderConsistent, h)
				}
				got := expect(t, conn.do(t, http.MethodGet, path+sep+param, nil), http.StatusOK)
				h := got.Header
				if h.Get(api.HeaderConsistent) != "true" || h.Get(api.HeaderKnownLeader) != "true" || h.Get(api.HeaderLastContact) == "" {
					t.Errorf("%s %s%s%s: headers %v", conn.name, path, sep, param, h)
				}
				if idx, err := strconv.ParseUint(h.Get(api.HeaderIndex), 10, 64); err != nil || idx < last {
					t.Errorf("%s %s%s%s: %s %q, want at least %d", conn.name, path, sep, param, api.HeaderIndex, h.Get(api.HeaderIndex), last)
				}
				// The body is the plain read's (events and ACL listings
				// included: nothing was written in between).
				if !bytes.Equal(got.Body, plain.Body) {
					t.Errorf("%s %s%s%s: body\n%s\nwant the plain read's\n%s", conn.name, path, sep, param, got.Body, plain.Body)
				}
			}
		}
	}
	// A consistent fetch applies the selection rules: exclude skips the
	// primary.
	r = expect(t, c.do(t, http.MethodGet, "/v1/pools/p/token?consistent&exclude="+id, nil), http.StatusOK)
	if tok := decode[api.Token](t, r); tok.ID == id || tok.Value != "backup-value" {
		t.Errorf("consistent fetch excluding %s served %s", id, tok.ID)
	}
	// A consistent read of what does not exist is the plain read's 404.
	expectError(t, c.do(t, http.MethodGet, "/v1/pools/missing/tokens?consistent", nil), http.StatusNotFound, "pool_not_found")
}
