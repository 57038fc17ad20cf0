package fsm

import (
	"testing"
	"time"

	"github.com/tokend/tokend/tokens"
)

// aclHarness has a management token, and token "app" with policy "apps":
// read and report on app-*, write on app-?.
func aclHarness(t *testing.T) *harness {
	h := newHarness(t)
	h.mustApply(ACLBootstrapType, ACLTokenRequest{Token: aclToken("acc_00000000000000aa", mgmtSecret), At: t0})
	h.mustApply(ACLPolicyUpsertType, ACLPolicyUpsertRequest{At: t0, Policy: tokens.ACLPolicy{Name: "apps", Pools: []tokens.PoolRule{
		{Pattern: "app-*", Capabilities: []tokens.Capability{tokens.CapRead, tokens.CapReport}},
		{Pattern: "app-?", Capabilities: []tokens.Capability{tokens.CapWrite}},
	}}})
	h.mustApply(ACLTokenCreateType, ACLTokenRequest{Token: aclToken("acc_00000000000000bb", readerSecret, "apps"), At: t0})
	return h
}

func TestAuthorizedCommands(t *testing.T) {
	h := aclHarness(t)
	apply := func(secret string, typ MessageType, req any) error {
		return h.applyRaw(authorized(t, secret, typ, req))
	}
	code := func(err error) string {
		if err == nil {
			return ""
		}
		return tokens.AsError(err).Code
	}
	for _, tt := range []struct {
		name   string
		secret string
		typ    MessageType
		req    any
		want   string
	}{
		{"management writes anything", mgmtSecret, PoolUpsertType, poolReq("other", t0), ""},
		{"write on a matching pool", readerSecret, PoolUpsertType, poolReq("app-1", t0), ""},
		{"token add on it", readerSecret, TokenAddType, tokenReq("app-1", "tok_a", "v", 0, t0), ""},
		{"token reset on it", readerSecret, TokenResetType, TokenResetRequest{Pool: "app-1", ID: "tok_a", By: "x", At: t0}, ""},
		{"token remove on it", readerSecret, TokenRemoveType, TokenRemoveRequest{Pool: "app-1", ID: "tok_a", At: t0}, ""},
		{"pool delete on it", readerSecret, PoolDeleteType, PoolDeleteRequest{Name: "app-1", At: t0}, ""},
		{"read is not write", readerSecret, PoolUpsertType, poolReq("app-12", t0), tokens.CodePermissionDenied},
		{"no rule", readerSecret, PoolUpsertType, poolReq("other", t0), tokens.CodePermissionDenied},
		{"operator needed for the keyring", readerSecret, KeyringUseType, KeyringUseRequest{KeyID: testKeyA, At: t0}, tokens.CodePermissionDenied},
		{"operator needed for ACLs", readerSecret, ACLPolicyDeleteType, ACLNameRequest{Name: "apps", At: t0}, tokens.CodePermissionDenied},
		{"operator needed for tokens", readerSecret, ACLTokenDeleteType, ACLNameRequest{Name: "acc_00000000000000aa", At: t0}, tokens.CodePermissionDenied},
		{"unknown secret", "tkd_nope", PoolUpsertType, poolReq("app-2", t0), tokens.CodeUnauthenticated},
		{"not a client command", mgmtSecret, TokenHealthType, changes(), tokens.CodePermissionDenied},
		{"nor a rotation", mgmtSecret, RotationAbandonType, RotationAbandonRequest{Pool: "app-1", ID: "rot_1", At: t0}, tokens.CodePermissionDenied},
	} {
		t.Run(tt.name, func(t *testing.T) {
			defer h.use(t)()
			if got := code(apply(tt.secret, tt.typ, tt.req)); got != tt.want {
				t.Fatalf("code %q, want %q", got, tt.want)
			}
		})
	}
	// An authorized entry inside another is refused.
	inner := authorized(t, mgmtSecret, PoolUpsertType, poolReq("x", t0))
	nested, err := Authorize(tokens.HashACLSecret(mgmtSecret), inner)
	if err != nil {
		t.Fatal(err)
	}
	h.rejectRaw(nested, tokens.CodePermissionDenied)
	// A deleted token's next write is refused, by every agent the same way.
	h.mustApply(ACLTokenDeleteType, ACLNameRequest{Name: "acc_00000000000000bb", At: t0.Add(time.Second)})
	if c := code(apply(readerSecret, PoolUpsertType, poolReq("app-3", t0))); c != tokens.CodeUnauthenticated {
		t.Fatalf("write with a deleted token: %q", c)
	}
}

func TestACLState(t *testing.T) {
	h := aclHarness(t)
	authz, tok, ok := h.f.State().Authorizer(tokens.HashACLSecret(readerSecret))
	if !ok || tok.AccessorID != "acc_00000000000000bb" {
		t.Fatalf("Authorizer = %v %v", tok, ok)
	}
	for _, c := range []struct {
		pool string
		cap  tokens.Capability
		want bool
	}{
		{"app-1", tokens.CapRead, true}, {"app-1", tokens.CapWrite, true}, {"app-12", tokens.CapReport, true},
		{"app-12", tokens.CapWrite, false}, {"app", tokens.CapRead, false}, {"xapp-1", tokens.CapRead, false},
	} {
		if got := authz.Pool(c.pool, c.cap); got != c.want {
			t.Errorf("Pool(%s, %s) = %v, want %v", c.pool, c.cap, got, c.want)
		}
	}
	if authz.Operator() {
		t.Error("apps grants operator")
	}
	if _, _, ok := h.f.State().Authorizer(tokens.HashACLSecret("tkd_nope")); ok {
		t.Error("an unknown secret resolved")
	}
	h.rejectHas(ACLBootstrapType, ACLTokenRequest{Token: aclToken("acc_00000000000000dd", "tkd_again"), At: t0}, tokens.CodeConflict, "bootstrapped already")
	h.rejectHas(ACLTokenCreateType, ACLTokenRequest{Token: aclToken("acc_00000000000000bb", "tkd_other", "apps"), At: t0}, tokens.CodeConflict, "already exists")
	h.rejectHas(ACLTokenCreateType, ACLTokenRequest{Token: aclToken("acc_00000000000000ee", readerSecret, "apps"), At: t0}, tokens.CodeConflict, "this secret")
	h.rejectHas(ACLTokenCreateType, ACLTokenRequest{Token: aclToken("bad", "tkd_z", "apps"), At: t0}, tokens.CodeInvalid, "accessor id")
	h.rejectHas(ACLTokenCreateType, ACLTokenRequest{Token: aclToken("acc_00000000000000ee", "tkd_z"), At: t0}, tokens.CodeInvalid, "at least one policy")
	h.rejectHas(ACLPolicyDeleteType, ACLNameRequest{Name: "apps", At: t0}, tokens.CodeConflict, "acc_00000000000000bb")
	h.rejectHas(ACLPolicyDeleteType, ACLNameRequest{Name: "nope", At: t0}, tokens.CodeNotFound, "does not exist")
	h.rejectHas(ACLPolicyUpsertType, ACLPolicyUpsertRequest{Policy: tokens.ACLPolicy{Name: "empty"}, At: t0}, tokens.CodeInvalid, "grants nothing")
	h.rejectHas(ACLPolicyUpsertType, ACLPolicyUpsertRequest{Policy: tokens.ACLPolicy{Name: "bad", Pools: []tokens.PoolRule{{Pattern: "a/b", Capabilities: []tokens.Capability{tokens.CapRead}}}}, At: t0}, tokens.CodeInvalid, "wildcards")
}

// A token's Authorizer is cached per ACL state: a changed policy or a
// deleted token takes effect in the very next state, and states that differ
// only in pools keep the cache.
func TestAuthorizerFollowsACLChanges(t *testing.T) {
	h := aclHarness(t)
	hash := tokens.HashACLSecret(readerSecret)
	before := h.f.State()
	authz, _, _ := before.Authorizer(hash)
	if !authz.Pool("app-x", tokens.CapRead) {
		t.Fatal("reader cannot read apps-x to begin with")
	}
	if again, _, _ := before.Authorizer(hash); again != authz {
		t.Fatal("the same state built the Authorizer twice")
	}
	h.mustApply(PoolUpsertType, poolReq("unrelated", t0))
	if same, _, _ := h.f.State().Authorizer(hash); same != authz {
		t.Fatal("a pool write dropped the ACL cache")
	}
	h.mustApply(ACLPolicyUpsertType, ACLPolicyUpsertRequest{At: t0, Policy: tokens.ACLPolicy{Name: "apps", Pools: []tokens.PoolRule{
		{Pattern: "other-*", Capabilities: []tokens.Capability{tokens.CapRead}},
	}}})
	narrowed, _, ok := h.f.State().Authorizer(hash)
	if !ok || narrowed.Pool("app-x", tokens.CapRead) || !narrowed.Pool("other-x", tokens.CapRead) {
		t.Fatal("a narrowed policy still grants what it no longer names")
	}
	if old, _, _ := before.Authorizer(hash); !old.Pool("app-x", tokens.CapRead) {
		t.Fatal("the older state changed under its readers")
	}
	h.mustApply(ACLTokenDeleteType, ACLNameRequest{Name: "acc_00000000000000bb", At: t0})
	if _, _, ok := h.f.State().Authorizer(hash); ok {
		t.Fatal("a deleted token still authorizes")
	}
}
