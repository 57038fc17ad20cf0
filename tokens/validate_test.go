package tokens

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

var nameRE = regexp.MustCompile("^" + NamePatternString + "$")

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"a", true},
		{"0", true},
		{"github", true},
		{"openai-prod", true},
		{"a.b_c-d", true},
		{"tok_0123456789abcdef", true},
		{"9lives", true},
		{"a-", true},
		{strings.Repeat("a", 64), true},
		{strings.Repeat("a", 65), false},
		{"", false},
		{"-a", false},
		{".a", false},
		{"_a", false},
		{"A", false},
		{"aB", false},
		{"a b", false},
		{"a/b", false},
		{"a:b", false},
		{"a\x00", false},
		{"a\n", false},
		{"é", false},
		{"aé", false},
		{"..", false},
	}
	for _, tt := range tests {
		if got := ValidName(tt.name); got != tt.want {
			t.Errorf("ValidName(%q) = %v, want %v", tt.name, got, tt.want)
		}
		if got := nameRE.MatchString(tt.name); got != tt.want {
			t.Errorf("table disagrees with NamePatternString for %q", tt.name)
		}
		if got := ValidTokenID(tt.name); got != tt.want {
			t.Errorf("ValidTokenID(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// FuzzValidName checks ValidName against the pattern it documents.
func FuzzValidName(f *testing.F) {
	for _, s := range []string{"a", "a-b", "-a", strings.Repeat("z", 64), strings.Repeat("z", 65), "A", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := ValidName(s), nameRE.MatchString(s); got != want {
			t.Fatalf("ValidName(%q) = %v, pattern says %v", s, got, want)
		}
	})
}

func TestValidateName(t *testing.T) {
	if err := ValidateName("pool", "github"); err != nil {
		t.Fatalf("ValidateName(github) = %v", err)
	}
	err := ValidateName("pool", "Bad Name")
	if !errors.Is(err, ErrInvalid) || AsError(err).Code != CodeInvalid {
		t.Fatalf("ValidateName(Bad Name) = %v, want invalid_request", err)
	}
	for _, want := range []string{"pool", `"Bad Name"`, NamePatternString} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	long := strings.Repeat("X", 10000)
	if err := ValidateName("pool", long); err == nil || len(err.Error()) > 300 {
		t.Errorf("ValidateName(10000 bytes) = %d-byte error, want a short one", len(err.Error()))
	}
}

func labelsN(n int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m[fmt.Sprintf("k%d", i)] = "v"
	}
	return m
}

func TestValidateLabels(t *testing.T) {
	tests := []struct {
		name   string
		labels map[string]string
		errHas string // empty: valid
	}{
		{"nil", nil, ""},
		{"empty", map[string]string{}, ""},
		{"ordinary", map[string]string{"team": "payments", "env": "prod", "region.eu": "Frankfurt am Main"}, ""},
		{"unicode value", map[string]string{"owner": "José Ñúñez 日本"}, ""},
		{"empty value", map[string]string{"k": ""}, ""},
		{"at the count limit", labelsN(MaxLabels), ""},
		{"over the count limit", labelsN(MaxLabels + 1), "too many labels"},
		{"value at the size limit", map[string]string{"k": strings.Repeat("v", MaxLabelValueLen)}, ""},
		{"value over the size limit", map[string]string{"k": strings.Repeat("v", MaxLabelValueLen+1)}, "at most"},
		{"empty key", map[string]string{"": "v"}, "label key"},
		{"uppercase key", map[string]string{"Team": "v"}, "label key"},
		{"key with space", map[string]string{"a b": "v"}, "label key"},
		{"key too long", map[string]string{strings.Repeat("k", 65): "v"}, "label key"},
		{"invalid UTF-8 value", map[string]string{"k": "\xff\xfe"}, "printable UTF-8"},
		{"newline in value", map[string]string{"k": "a\nb"}, "printable UTF-8"},
		{"tab in value", map[string]string{"k": "a\tb"}, "printable UTF-8"},
		{"NUL in value", map[string]string{"k": "a\x00"}, "printable UTF-8"},
		{"DEL in value", map[string]string{"k": "a\x7f"}, "printable UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateLabels(tt.labels)
			if tt.errHas == "" {
				if err != nil {
					t.Fatalf("ValidateLabels = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ValidateLabels = nil, want an error containing %q", tt.errHas)
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("ValidateLabels = %v, want invalid_request containing %q", err, tt.errHas)
			}
		})
	}
}

// Apply returns validation errors to the proposer, and every agent must give
// the same answer: the error may not depend on map iteration order.
func TestValidateLabelsDeterministic(t *testing.T) {
	labels := map[string]string{}
	for i := range MaxLabels / 2 {
		labels[fmt.Sprintf("bad%02d", i)] = "a\nb"
		labels[fmt.Sprintf("BAD%02d", i)] = "v"
	}
	first := ValidateLabels(labels).Error()
	for range 50 {
		if got := ValidateLabels(labels).Error(); got != first {
			t.Fatalf("ValidateLabels gave %q, then %q, for the same labels", first, got)
		}
	}
}

func TestPoolNormalize(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		p := Pool{Name: "github"}
		if err := p.Normalize(); err != nil {
			t.Fatal(err)
		}
		if p.Selection != SelectPriority {
			t.Errorf("Selection = %q, want %q", p.Selection, SelectPriority)
		}
		if p.Provider.Type != ProviderStatic {
			t.Errorf("Provider.Type = %q, want %q", p.Provider.Type, ProviderStatic)
		}
	})
	t.Run("keeps explicit values", func(t *testing.T) {
		p := Pool{Name: "github", Selection: SelectRoundRobin, MinHealthy: 3, Provider: ProviderSpec{Type: ProviderStatic}, Labels: map[string]string{"team": "x"}}
		want := p
		if err := p.Normalize(); err != nil {
			t.Fatal(err)
		}
		if p.Selection != want.Selection || p.MinHealthy != want.MinHealthy || p.Provider.Type != want.Provider.Type || p.Labels["team"] != "x" {
			t.Errorf("Normalize changed %+v into %+v", want, p)
		}
	})
	t.Run("limits", func(t *testing.T) {
		for _, n := range []int{0, MaxTokensPerPool} {
			p := Pool{Name: "p", MinHealthy: n}
			if err := p.Normalize(); err != nil {
				t.Errorf("MinHealthy %d: %v", n, err)
			}
		}
	})
	tests := []struct {
		name   string
		pool   Pool
		errHas string
	}{
		{"no name", Pool{}, "pool name"},
		{"bad name", Pool{Name: "GitHub"}, "pool name"},
		{"unknown selection", Pool{Name: "p", Selection: "fastest"}, "selection"},
		{"selection in wrong case", Pool{Name: "p", Selection: "Priority"}, "selection"},
		{"negative min_healthy", Pool{Name: "p", MinHealthy: -1}, "min_healthy"},
		{"huge min_healthy", Pool{Name: "p", MinHealthy: MaxTokensPerPool + 1}, "min_healthy"},
		{"unsupported provider", Pool{Name: "p", Provider: ProviderSpec{Type: "nope"}}, "provider"},
		{"bad label", Pool{Name: "p", Labels: map[string]string{"Bad": "v"}}, "label key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.pool
			err := p.Normalize()
			if err == nil {
				t.Fatalf("Normalize(%+v) = nil, want an error containing %q", tt.pool, tt.errHas)
			}
			if !errors.Is(err, ErrInvalid) || AsError(err).Code != CodeInvalid || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("Normalize = %v, want invalid_request containing %q", err, tt.errHas)
			}
		})
	}
}

func TestValidateValue(t *testing.T) {
	for _, ok := range []string{"x", "ünïcödé", strings.Repeat("x", MaxTokenValueLen)} {
		if err := ValidateValue(Secret(ok)); err != nil {
			t.Errorf("ValidateValue(%d bytes) = %v", len(ok), err)
		}
	}
	for _, tt := range []struct{ value, errHas string }{
		{"", "value is required"},
		{" \t\n ", "value is required"},
		{strings.Repeat("x", MaxTokenValueLen+1), "at most"},
		{"ab\xffcd", "UTF-8"},
	} {
		err := ValidateValue(Secret(tt.value))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.errHas) {
			t.Errorf("ValidateValue(%q) = %v, want invalid containing %q", tt.value, err, tt.errHas)
		}
	}
}

func TestTokenValidate(t *testing.T) {
	now := t0
	const value = "s3cr3t-value-0123456789"
	valid := func() Token {
		return Token{ID: "tok_0123456789abcdef", Pool: "github", Value: sealed(value, "github", "tok_0123456789abcdef"), Fingerprint: fingerprint(value), Priority: 10, Labels: map[string]string{"scope": "repo"}}
	}
	t.Run("valid", func(t *testing.T) {
		for _, mod := range []func(*Token){
			func(*Token) {},
			func(t *Token) { t.ExpiresAt = now.Add(ExpiryMargin + time.Nanosecond) },
			func(t *Token) { t.NotBefore = now.Add(time.Hour) },
			func(t *Token) { t.NotBefore = now.Add(-time.Hour); t.ExpiresAt = now.Add(time.Hour) },
			func(t *Token) { t.Priority = MaxPriority },
			func(t *Token) { t.Priority = -MaxPriority },
			func(t *Token) { t.Value = sealed(strings.Repeat("x", MaxTokenValueLen), t.Pool, t.ID) },
			// A plaintext value written before tokend sealed values.
			func(t *Token) { t.Value = Sealed("ünïcödé") },
		} {
			tk := valid()
			mod(&tk)
			if err := tk.Validate(now); err != nil {
				t.Errorf("Validate(%+v) = %v", tk, err)
			}
		}
	})
	tests := []struct {
		name   string
		mod    func(*Token)
		errHas string
	}{
		{"bad pool", func(t *Token) { t.Pool = "Bad" }, "pool name"},
		{"no pool", func(t *Token) { t.Pool = "" }, "pool name"},
		{"bad id", func(t *Token) { t.ID = "tok/1" }, "token id"},
		{"no id", func(t *Token) { t.ID = "" }, "token id"},
		{"no value", func(t *Token) { t.Value = nil }, "value is required"},
		{"sealed value cut short", func(t *Token) { t.Value = t.Value[:SealOverhead-1] }, "truncated"},
		{"blank plaintext value", func(t *Token) { t.Value = Sealed(" \t\n ") }, "value is required"},
		{"plaintext value not UTF-8", func(t *Token) { t.Value = Sealed("ab\xffcd") }, "UTF-8"},
		{"sealed value too large", func(t *Token) { t.Value = sealed(strings.Repeat("x", MaxTokenValueLen+1), t.Pool, t.ID) }, "at most"},
		{"no fingerprint", func(t *Token) { t.Fingerprint = "" }, "fingerprint"},
		{"priority too high", func(t *Token) { t.Priority = MaxPriority + 1 }, "priority"},
		{"priority too low", func(t *Token) { t.Priority = -MaxPriority - 1 }, "priority"},
		{"expires in the past", func(t *Token) { t.ExpiresAt = now.Add(-time.Hour) }, "expires_at"},
		{"expires now", func(t *Token) { t.ExpiresAt = now }, "expires_at"},
		{"expires within the margin, so never servable", func(t *Token) { t.ExpiresAt = now.Add(ExpiryMargin) }, "could never be served"},
		{"not_before equal to expires_at", func(t *Token) { t.ExpiresAt = now.Add(time.Hour); t.NotBefore = t.ExpiresAt }, "not_before"},
		{"not_before after expires_at", func(t *Token) { t.ExpiresAt = now.Add(time.Hour); t.NotBefore = now.Add(2 * time.Hour) }, "not_before"},
		{"bad label", func(t *Token) { t.Labels = map[string]string{"k": "a\x00"} }, "label"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tk := valid()
			tt.mod(&tk)
			err := tk.Validate(now)
			if err == nil {
				t.Fatalf("Validate = nil, want an error containing %q", tt.errHas)
			}
			if !errors.Is(err, ErrInvalid) || AsError(err).Code != CodeInvalid || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("Validate = %v, want invalid_request containing %q", err, tt.errHas)
			}
			if strings.Contains(err.Error(), value) {
				t.Fatalf("error %q contains the token value", err)
			}
		})
	}
}
