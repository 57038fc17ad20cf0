package tokens

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func testKey(t *testing.T) []byte {
	t.Helper()
	raw, err := ParseKey(GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func testKeyring(t *testing.T, raw ...[]byte) *Keyring {
	t.Helper()
	kr, err := NewKeyring(raw...)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func TestSealRoundTrip(t *testing.T) {
	kr := testKeyring(t, testKey(t))
	for _, v := range []string{"x", secretValue, strings.Repeat("é", 2000)} {
		s, err := kr.Seal(kr.Default(), Secret(v), TokenAAD("p", "tok_1"))
		if err != nil {
			t.Fatal(err)
		}
		// (A one-byte value turns up in random bytes by chance.)
		if len(v) >= 8 && bytes.Contains(s, []byte(v)) {
			t.Fatalf("sealed value holds the plaintext")
		}
		if len(s) != len(v)+SealOverhead {
			t.Fatalf("sealed %d bytes into %d, want overhead %d", len(v), len(s), SealOverhead)
		}
		if id, err := s.KeyID(); err != nil || id != kr.Default() {
			t.Fatalf("KeyID = %q, %v; want %q", id, err, kr.Default())
		}
		got, err := kr.Open(s, TokenAAD("p", "tok_1"))
		if err != nil || string(got) != v {
			t.Fatalf("Open = %q, %v; want the value back", got, err)
		}
	}
}

func TestSealUsesFreshNonces(t *testing.T) {
	kr := testKeyring(t, testKey(t))
	a, _ := kr.Seal(kr.Default(), Secret("same"), "x")
	b, _ := kr.Seal(kr.Default(), Secret("same"), "x")
	if bytes.Equal(a, b) {
		t.Fatal("sealing the same value twice gave the same bytes: nonces are reused")
	}
}

// Every single-bit change anywhere in a sealed value must make it fail to
// open: header, key id, nonce, ciphertext and tag are all authenticated.
func TestSealDetectsTampering(t *testing.T) {
	kr := testKeyring(t, testKey(t))
	aad := TokenAAD("p", "tok_1")
	s, err := kr.Seal(kr.Default(), Secret(secretValue), aad)
	if err != nil {
		t.Fatal(err)
	}
	for i := range s {
		for bit := range 8 {
			bad := bytes.Clone(s)
			bad[i] ^= 1 << bit
			if got, err := kr.Open(bad, aad); err == nil {
				t.Fatalf("byte %d bit %d flipped: opened to %d bytes, want an error", i, bit, len(got))
			}
		}
	}
	for n := range len(s) {
		if _, err := kr.Open(s[:n], aad); err == nil {
			t.Fatalf("truncated to %d bytes: opened, want an error", n)
		}
	}
	if _, err := kr.Open(append(bytes.Clone(s), 0), aad); err == nil {
		t.Fatal("a byte appended: opened, want an error")
	}
}

func TestSealBindsPlace(t *testing.T) {
	kr := testKeyring(t, testKey(t))
	s, _ := kr.Seal(kr.Default(), Secret(secretValue), TokenAAD("p", "tok_1"))
	for _, other := range []string{TokenAAD("p", "tok_2"), TokenAAD("q", "tok_1"), ProviderAAD("p"), ""} {
		_, err := kr.Open(s, other)
		if !errors.Is(err, ErrInternal) || AsError(err).Code != CodeSealBroken {
			t.Fatalf("opened for %q: err %v, want %s", other, err, CodeSealBroken)
		}
	}
}

func TestOpenWithWrongOrMissingKey(t *testing.T) {
	a := testKeyring(t, testKey(t))
	b := testKeyring(t, testKey(t))
	s, _ := a.Seal(a.Default(), Secret(secretValue), "x")
	_, err := b.Open(s, "x")
	if AsError(err).Code != CodeKeyMissing || !strings.Contains(err.Error(), a.Default()) {
		t.Fatalf("open with another keyring: %v; want %s naming key %s", err, CodeKeyMissing, a.Default())
	}
	// A different key under the same id (a forged header) fails the tag.
	forged := bytes.Clone(s)
	id, _ := b.Seal(b.Default(), Secret("y"), "x")
	copy(forged[2:sealHeader], id[2:sealHeader])
	if _, err := b.Open(forged, "x"); AsError(err).Code != CodeSealBroken {
		t.Fatalf("open under a forged key id: %v; want %s", err, CodeSealBroken)
	}
}

func TestSealedCheckRejectsPlaintext(t *testing.T) {
	for _, v := range []Sealed{nil, Sealed("ghp_plain"), Sealed{sealMagic, sealVersion, 1, 2}, append(Sealed{sealMagic, 9}, make([]byte, SealOverhead)...)} {
		if err := v.Check(); !errors.Is(err, ErrInvalid) {
			t.Errorf("Check(%x) = %v, want invalid", []byte(v), err)
		}
	}
}

func TestSealedWith(t *testing.T) {
	a, b := testKey(t), testKey(t)
	kr := testKeyring(t, a, b)
	ids := kr.IDs()
	s, err := kr.Seal(ids[0], Secret(secretValue), TokenAAD("p", "tok_1"))
	if err != nil {
		t.Fatal(err)
	}
	if !s.SealedWith(ids[0]) || s.SealedWith(ids[1]) || s.SealedWith("") || s.SealedWith(ids[0]+"0") {
		t.Fatalf("SealedWith disagrees with KeyID %s (other key %s)", ids[0], ids[1])
	}
	for _, v := range []Sealed{nil, Sealed("ghp_plain"), Sealed{sealMagic, sealVersion, 1, 2}} {
		if v.SealedWith(ids[0]) {
			t.Errorf("SealedWith(%x) = true for a value that is not sealed", []byte(v))
		}
	}
	if n := testing.AllocsPerRun(100, func() { s.SealedWith(ids[0]) }); n != 0 {
		t.Errorf("SealedWith allocates %v times", n)
	}
}

func TestKeyringChanges(t *testing.T) {
	k1, k2 := testKey(t), testKey(t)
	kr := testKeyring(t, k1)
	id1 := kr.Default()
	kr2, id2, err := kr.With(k2)
	if err != nil {
		t.Fatal(err)
	}
	if kr.Has(id2) || !kr2.Has(id1) || !kr2.Has(id2) || kr2.Default() != id1 {
		t.Fatalf("With changed the original or lost a key: %v %v", kr.IDs(), kr2.IDs())
	}
	if again, _, err := kr2.With(k2); err != nil || len(again.IDs()) != 2 {
		t.Fatalf("installing a key twice: %v, %v", again.IDs(), err)
	}
	pref, err := kr2.Preferring(id2)
	if err != nil || pref.Default() != id2 || len(pref.IDs()) != 2 {
		t.Fatalf("Preferring: %v, %v", pref, err)
	}
	// A value sealed under key 1 opens after the switch, until key 1 goes.
	s, _ := kr.Seal(id1, Secret("v"), "x")
	if _, err := pref.Open(s, "x"); err != nil {
		t.Fatal(err)
	}
	only2, err := pref.Without(id1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := only2.Open(s, "x"); AsError(err).Code != CodeKeyMissing {
		t.Fatalf("open after removing its key: %v", err)
	}
	if _, err := only2.Without(id2); !errors.Is(err, ErrConflict) {
		t.Fatalf("removing the last key: %v, want conflict", err)
	}
	if _, err := only2.Without("deadbeef"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removing an unknown key: %v, want not found", err)
	}
	// Encode round-trips, default first.
	var raws [][]byte
	for _, e := range pref.Encode() {
		raw, err := ParseKey(e)
		if err != nil {
			t.Fatal(err)
		}
		raws = append(raws, raw)
	}
	if back := testKeyring(t, raws...); fmt.Sprint(back.IDs()) != fmt.Sprint(pref.IDs()) {
		t.Fatalf("Encode round trip: %v, want %v", back.IDs(), pref.IDs())
	}
}

func TestKeyIDIsStableAndDistinct(t *testing.T) {
	k := testKey(t)
	a, _ := KeyID(k)
	b, _ := KeyID(bytes.Clone(k))
	c, _ := KeyID(testKey(t))
	if a != b || a == c || len(a) != 2*keyIDLen {
		t.Fatalf("key ids %q %q %q", a, b, c)
	}
}

func TestParseKeyErrorsNeverQuoteInput(t *testing.T) {
	short := base64.StdEncoding.EncodeToString([]byte("SUPERSECRET-too-short"))
	for _, in := range []string{"SUPERSECRET not base64!", short, ""} {
		_, err := ParseKey(in)
		if err == nil {
			t.Fatalf("ParseKey(%q) accepted", in)
		}
		if strings.Contains(err.Error(), "SUPERSECRET") || (in != "" && strings.Contains(err.Error(), in)) {
			t.Fatalf("error quotes the input: %v", err)
		}
	}
	if _, err := NewKeyring(); err == nil {
		t.Fatal("an empty keyring was accepted")
	}
}

func TestFingerprintIsKeyed(t *testing.T) {
	a := testKeyring(t, testKey(t))
	b := testKeyring(t, testKey(t))
	fa1, _ := a.Fingerprint(a.Default(), Secret(secretValue))
	fa2, _ := a.Fingerprint(a.Default(), Secret(secretValue))
	fb, _ := b.Fingerprint(b.Default(), Secret(secretValue))
	other, _ := a.Fingerprint(a.Default(), Secret(secretValue+"x"))
	if fa1 != fa2 || fa1 == fb || fa1 == other || !strings.HasPrefix(fa1, a.Default()+":") {
		t.Fatalf("fingerprints: same key %q %q, other key %q, other value %q", fa1, fa2, fb, other)
	}
}

func TestSealedNeverPrintsBytes(t *testing.T) {
	kr := testKeyring(t, testKey(t))
	s, _ := kr.Seal(kr.Default(), Secret(secretValue), "x")
	for _, verb := range []string{"%v", "%s", "%x", "%#v", "%d", "%q"} {
		out := fmt.Sprintf(verb, s)
		if out != "[sealed:"+kr.Default()+"]" {
			t.Fatalf("%s printed %q", verb, out)
		}
	}
}
