package fsm

import (
	"testing"
	"time"

	"github.com/tokend/tokend/tokens"
)

// The fixtures the histories use are real sealed values: each opens with
// its key for its place, to its plaintext, under its fingerprint.
func TestSealedFixturesOpen(t *testing.T) {
	kr := testKeyring(t)
	if got := kr.IDs(); got[0] != testKeyA || got[1] != testKeyB {
		t.Fatalf("test key ids %v, want %s and %s", got, testKeyA, testKeyB)
	}
	for _, f := range sealedFixtures {
		aad := tokens.TokenAAD(f.pool, f.id)
		if f.id == "" {
			aad = tokens.ProviderAAD(f.pool)
		}
		plain, err := kr.Open(f.value, aad)
		if err != nil || string(plain) != f.plain {
			t.Fatalf("fixture %s/%s/%s opens to %q, %v; want %q", f.key, f.pool, f.id, plain, err, f.plain)
		}
		if id, _ := f.value.KeyID(); id != f.key {
			t.Fatalf("fixture %s/%s/%s is sealed with %s", f.key, f.pool, f.id, id)
		}
		if f.fingerprint != "" {
			if fp, _ := kr.Fingerprint(f.key, plain); fp != f.fingerprint {
				t.Fatalf("fixture %s/%s/%s fingerprint %s, want %s", f.key, f.pool, f.id, f.fingerprint, fp)
			}
		}
	}
}

func TestKeyringUse(t *testing.T) {
	h := newHarness(t)
	for _, bad := range []string{"", "096C36B3", "096c36b", "096c36b3a", "zzzzzzzz"} {
		h.rejectHas(KeyringUseType, KeyringUseRequest{KeyID: bad, By: "alice", At: t0}, tokens.CodeInvalid, "8 hex digits")
	}
	if kr := h.f.State().Keyring(); kr != (KeyringState{}) {
		t.Fatalf("rejected commands set the keyring to %+v", kr)
	}
	h.mustApply(KeyringUseType, KeyringUseRequest{KeyID: testKeyA, By: "alice", At: t0})
	h.expectEvents("use", tokens.Event{Index: h.index, At: t0, Type: tokens.EventKeyringUse, Reason: "new secrets are sealed with key " + testKeyA, Reporter: "alice"})
	h.mustApply(KeyringUseType, KeyringUseRequest{KeyID: testKeyB, By: "bob", At: t0.Add(time.Hour)})
	if kr := h.f.State().Keyring(); kr.Primary != testKeyB || kr.By != "bob" || !kr.UpdatedAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("keyring %+v, want key %s chosen by bob", kr, testKeyB)
	}
}

// resealHarness holds pool p with plaintext token tok_a (a legacy value),
// token tok_v7 sealed with key A, and oauth pool "oauth" whose client
// secret is in plaintext.
func resealHarness(t *testing.T) (h *harness, legacyIndex, v7Index, oauthIndex uint64) {
	h = newHarness(t)
	h.mustApply(PoolUpsertType, poolReq("vault", t0))
	h.mustApply(TokenAddType, tokenReq("vault", "tok_a", "value-a", 0, t0))
	legacyIndex = h.index
	h.mustApply(TokenAddType, sealedReq("vault", "tok_v7", testKeyA, t0))
	v7Index = h.index
	h.mustApply(PoolUpsertType, oauthPool(tokens.Secret("client-secret-1")))
	oauthIndex = h.index
	return h, legacyIndex, v7Index, oauthIndex
}

func oauthPool(secret tokens.Secret) PoolUpsertRequest {
	return poolReq("oauth", t0, func(p *tokens.Pool) {
		p.Provider = tokens.ProviderSpec{Type: tokens.ProviderOAuth2, TokenURL: "https://auth.example.com/token", ClientID: "client-1", ClientSecret: secret}
	})
}

func TestKeyUsage(t *testing.T) {
	h, _, _, _ := resealHarness(t)
	got := h.f.State().KeyUsage()
	if len(got) != 2 || got[""] != 2 || got[testKeyA] != 1 {
		t.Fatalf("KeyUsage = %v, want 2 unsealed (tok_a, oauth's secret) and 1 under %s", got, testKeyA)
	}
}

func TestSecretsReseal(t *testing.T) {
	h, legacy, v7, oauthIndex := resealHarness(t)
	b7 := sealedFixture(testKeyB, "vault", "tok_v7")
	bOauth := sealedFixture(testKeyB, "oauth", "")
	spec := h.pool("oauth").Pool.Provider
	spec.ClientSecret = tokens.Secret(bOauth.value)

	t.Run("rejected", func(t *testing.T) {
		defer h.use(t)()
		moved := spec
		moved.TokenURL = "https://elsewhere.example.com/token"
		h.rejectHas(SecretsResealType, SecretsResealRequest{At: t0, Pools: []ResealedPool{{Name: "oauth", ModifyIndex: oauthIndex, Provider: moved}}},
			tokens.CodeInvalid, "only the provider's credentials")
		plain := spec
		plain.ClientSecret = tokens.Secret("client-secret-2")
		h.rejectHas(SecretsResealType, SecretsResealRequest{At: t0, Pools: []ResealedPool{{Name: "oauth", ModifyIndex: oauthIndex, Provider: plain}}},
			tokens.CodeInvalid, "must seal every credential")
		h.rejectHas(SecretsResealType, SecretsResealRequest{At: t0, Tokens: []ResealedToken{{Pool: "vault", ID: "tok_v7", ModifyIndex: v7, Value: tokens.Sealed("value-v7"), Fingerprint: "x"}}},
			tokens.CodeInvalid, "not sealed")
		h.rejectHas(SecretsResealType, SecretsResealRequest{At: t0, Tokens: []ResealedToken{{Pool: "vault", ID: "tok_v7", ModifyIndex: v7, Value: b7.value}}},
			tokens.CodeInvalid, "fingerprint")
	})

	t.Run("stale items are skipped", func(t *testing.T) {
		defer h.use(t)()
		before := h.f.State()
		h.mustApply(SecretsResealType, SecretsResealRequest{At: t0,
			Tokens: []ResealedToken{
				{Pool: "vault", ID: "tok_v7", ModifyIndex: v7 - 1, Value: b7.value, Fingerprint: b7.fingerprint},
				{Pool: "vault", ID: "tok_gone", ModifyIndex: v7, Value: b7.value, Fingerprint: b7.fingerprint},
				{Pool: "gone", ID: "tok_v7", ModifyIndex: v7, Value: b7.value, Fingerprint: b7.fingerprint},
			},
			Pools: []ResealedPool{{Name: "oauth", ModifyIndex: oauthIndex + 1, Provider: spec}, {Name: "gone", ModifyIndex: 1, Provider: spec}},
		})
		if h.f.State() != before || len(h.last) != 0 {
			t.Fatalf("a reseal of stale items changed the state or recorded %v", h.last)
		}
	})

	t.Run("applied", func(t *testing.T) {
		defer h.use(t)()
		old := h.token("vault", "tok_v7")
		h.mustApply(SecretsResealType, SecretsResealRequest{At: t0.Add(time.Minute),
			Tokens: []ResealedToken{{Pool: "vault", ID: "tok_v7", ModifyIndex: v7, Value: b7.value, Fingerprint: b7.fingerprint}},
			Pools:  []ResealedPool{{Name: "oauth", ModifyIndex: oauthIndex, Provider: spec}},
		})
		h.expectEvents("reseal", tokens.Event{Index: h.index, At: t0.Add(time.Minute), Type: tokens.EventSecretsResealed, Reason: "2 secrets sealed again"})
		tk := h.token("vault", "tok_v7")
		if string(tk.Value) != string(b7.value) || tk.Fingerprint != b7.fingerprint || tk.ModifyIndex != h.index {
			t.Fatalf("tok_v7 after reseal: value %v, fingerprint %s, modify %d", tk.Value, tk.Fingerprint, tk.ModifyIndex)
		}
		// Only the value changed: health, lifecycle, times and order stay.
		want := *old
		want.Value, want.Fingerprint, want.ModifyIndex = tk.Value, tk.Fingerprint, tk.ModifyIndex
		if !sameJSON(*tk, want) {
			t.Fatalf("reseal changed more than the value:\n%+v\nwas\n%+v", *tk, *old)
		}
		p := h.pool("oauth").Pool
		if string(p.Provider.ClientSecret) != string(bOauth.value) || p.ModifyIndex != h.index {
			t.Fatalf("oauth after reseal: %v at %d", p.Provider.ClientSecret, p.ModifyIndex)
		}
		if got := h.f.State().KeyUsage(); got[""] != 1 || got[testKeyB] != 2 || got[testKeyA] != 0 {
			t.Fatalf("KeyUsage after reseal = %v, want tok_a unsealed and 2 under %s", got, testKeyB)
		}
		if h.token("vault", "tok_a").ModifyIndex != legacy {
			t.Fatal("a token the reseal did not name changed")
		}
	})
}
