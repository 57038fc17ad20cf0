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
	tk := ProviderSpec{Type: ProviderOAuth2, ClientID: "id", ClientSecret: s}
	verbs := []string{"%v", "%s", "%+v", "%#v", "%q", "%x", "%X", "%d", "%c", "%U", "%o", "%b", "%10v", "%-20s"}
	values := map[string]any{
		"Secret":      s,
		"*Secret":     &s,
		"Spec":        tk,
		"*Spec":       &tk,
		"[]Secret":    []Secret{s},
		"map":         map[string]Secret{"k": s},
		"struct":      struct{ T ProviderSpec }{tk},
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
		if out := fmt.Sprintf(verb, []*ProviderSpec{&tk}); leaks(out) {
			t.Errorf("Sprintf(%q, []*ProviderSpec) = %q: the secret leaks", verb, out)
		}
	}
	for _, verb := range []string{"%v", "%s", "%+v", "%#v"} {
		if got := fmt.Sprintf(verb, s); got != "[redacted]" {
			t.Errorf("Sprintf(%q, secret) = %q, want [redacted]", verb, got)
		}
	}
	if got := fmt.Sprintf("%+v", tk); !strings.Contains(got, "ClientSecret:[redacted]") {
		t.Errorf("Sprintf(%%+v, token) = %q, want it to show ClientSecret:[redacted]", got)
	}
	if got := fmt.Sprintf("%#v", tk); !strings.Contains(got, "ClientSecret:[redacted]") {
		t.Errorf("Sprintf(%%#v, token) = %q, want it to show ClientSecret:[redacted]", got)
	}
	if got := fmt.Sprint(s); got != "[redacted]" {
		t.Errorf("Sprint(secret) = %q", got)
	}
	if got := s.Reveal(); got != secretValue {
		t.Errorf("Reveal() = %q, want the value", got)
	}
}
