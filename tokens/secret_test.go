package tokens

import (
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
)

const secretValue = "ghp_SUPERSECRETvalue123"

// leaks reports whether s shows the secret in any of the ways fmt could
// print bytes: as text, hex or decimal.
func leaks(s string) bool {
	v := secretValue
	return strings.Contains(s, v) ||
		strings.Contains(strings.ToLower(s), hex.EncodeToString([]byte(v))) ||
		strings.Contains(s, fmt.Sprint([]byte(v))[1:10]) ||
		strings.Contains(s, "SUPERSECRET") ||
		strings.Contains(s, "S U P E R")
}

func TestSecretRedactedEverywhere(t *testing.T) {
	s := Secret(secretValue)
	tk := Token{ID: "tok_1", Pool: "github", Value: s, Lifecycle: LifecycleActive}
	verbs := []string{"%v", "%s", "%+v", "%#v", "%q", "%x", "%X", "%d", "%c", "%U", "%o", "%b", "%10v", "%-20s"}
	values := map[string]any{
		"Secret":      s,
		"*Secret":     &s,
		"Token":       tk,
		"*Token":      &tk,
		"[]Secret":    []Secret{s},
		"map":         map[string]Secret{"k": s},
		"struct":      struct{ T Token }{tk},
		"error":       Errorf(CodeInvalid, "bad token %v", tk),
		"wrapped err": fmt.Errorf("x: %w", Errorf(CodeInvalid, "bad %+v", &tk)),
	}
	for name, v := range values {
		for _, verb := range verbs {
			if out := fmt.Sprintf(verb, v); leaks(out) {
				t.Errorf("Sprintf(%q, %s) = %q: the secret leaks", verb, name, out)
			}
		}
	}
	// A pointer below the top level prints as an address with %v; with a
	// verb that does not suit a pointer, fmt prints the pointee without
	// calling any method, which no method on Secret can prevent.
	for _, verb := range []string{"%v", "%+v", "%#v"} {
		if out := fmt.Sprintf(verb, []*Token{&tk}); leaks(out) {
			t.Errorf("Sprintf(%q, []*Token) = %q: the secret leaks", verb, out)
		}
	}
	for _, verb := range []string{"%v", "%s", "%+v", "%#v"} {
		if got := fmt.Sprintf(verb, s); got != "[redacted]" {
			t.Errorf("Sprintf(%q, secret) = %q, want [redacted]", verb, got)
		}
	}
	if got := fmt.Sprintf("%+v", tk); !strings.Contains(got, "Value:[redacted]") {
		t.Errorf("Sprintf(%%+v, token) = %q, want it to show Value:[redacted]", got)
	}
	if got := fmt.Sprintf("%#v", tk); !strings.Contains(got, "Value:[redacted]") {
		t.Errorf("Sprintf(%%#v, token) = %q, want it to show Value:[redacted]", got)
	}
	if got := fmt.Sprint(s); got != "[redacted]" {
		t.Errorf("Sprint(secret) = %q", got)
	}
	if got := s.Reveal(); got != secretValue {
		t.Errorf("Reveal() = %q, want the value", got)
	}
}

func TestFingerprint(t *testing.T) {
	a, b := Fingerprint([]byte("value-a")), Fingerprint([]byte("value-b"))
	if a != Fingerprint([]byte("value-a")) {
		t.Error("Fingerprint is not deterministic")
	}
	if a == b {
		t.Error("different values share a fingerprint")
	}
	if len(a) != 32 || strings.Trim(a, "0123456789abcdef") != "" {
		t.Errorf("Fingerprint = %q, want 32 lowercase hex digits", a)
	}
	if strings.Contains(a, hex.EncodeToString([]byte("value"))) {
		t.Errorf("Fingerprint %q contains the value", a)
	}
}
