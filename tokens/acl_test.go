package tokens

import (
	"errors"
	"strings"
	"testing"
)

func TestACLSecrets(t *testing.T) {
	s1, a1 := NewACLSecret()
	s2, a2 := NewACLSecret()
	if s1 == s2 || a1 == a2 || !strings.HasPrefix(s1, "tkd_") || len(s1) != 4+43 {
		t.Fatalf("secrets %q %q", s1, s2)
	}
	if !ValidAccessorID(a1) || ValidAccessorID("acc_xyz") || ValidAccessorID(s1) {
		t.Fatalf("accessor ids: %q valid=%v", a1, ValidAccessorID(a1))
	}
	if h := HashACLSecret(s1); len(h) != 64 || h == HashACLSecret(s2) || strings.Contains(h, s1[4:]) {
		t.Fatalf("hash %q", h)
	}
}

func TestACLPolicyValidate(t *testing.T) {
	ok := []ACLPolicy{
		{Name: "ops", Operator: true},
		{Name: "apps", Pools: []PoolRule{{Pattern: "*", Capabilities: []Capability{CapRead}}, {Pattern: "app-?.x_y", Capabilities: []Capability{CapRead, CapReport, CapWrite}}}},
	}
	for _, p := range ok {
		if err := p.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", p, err)
		}
	}
	for _, tt := range []struct {
		p    ACLPolicy
		want string
	}{
		{ACLPolicy{Name: "Bad", Operator: true}, "policy name"},
		{ACLPolicy{Name: "none"}, "grants nothing"},
		{ACLPolicy{Name: "p", Pools: []PoolRule{{Pattern: "", Capabilities: []Capability{CapRead}}}}, "1 to 64"},
		{ACLPolicy{Name: "p", Pools: []PoolRule{{Pattern: "A*", Capabilities: []Capability{CapRead}}}}, "wildcards"},
		{ACLPolicy{Name: "p", Pools: []PoolRule{{Pattern: "[a]", Capabilities: []Capability{CapRead}}}}, "wildcards"},
		{ACLPolicy{Name: "p", Pools: []PoolRule{{Pattern: "a"}}}, "capabilities is empty"},
		{ACLPolicy{Name: "p", Pools: []PoolRule{{Pattern: "a", Capabilities: []Capability{"delete"}}}}, "not one of"},
		{ACLPolicy{Name: "p", Operator: true, Description: "a\x00b"}, "control"},
	} {
		if err := tt.p.Validate(); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Validate(%+v) = %v, want %q", tt.p, err, tt.want)
		}
	}
}

func TestAuthorizer(t *testing.T) {
	policies := map[string]*ACLPolicy{
		"read-all": {Name: "read-all", Pools: []PoolRule{{Pattern: "*", Capabilities: []Capability{CapRead}}}},
		"gh-write": {Name: "gh-write", Pools: []PoolRule{{Pattern: "github-*", Capabilities: []Capability{CapWrite, CapReport}}}},
		"ops":      {Name: "ops", Operator: true},
	}
	lookup := func(n string) (*ACLPolicy, bool) { p, ok := policies[n]; return p, ok }
	a := NewAuthorizer(&ACLToken{Policies: []string{"read-all", "gh-write", "missing"}}, lookup)
	for _, c := range []struct {
		pool string
		cap  Capability
		want bool
	}{
		{"anything", CapRead, true}, {"anything", CapWrite, false}, {"github-ci", CapWrite, true},
		{"github-ci", CapReport, true}, {"github", CapWrite, false}, {"github", CapReport, false},
	} {
		if got := a.Pool(c.pool, c.cap); got != c.want {
			t.Errorf("Pool(%s, %s) = %v, want %v", c.pool, c.cap, got, c.want)
		}
	}
	if a.Operator() {
		t.Error("operator granted without the ops policy")
	}
	if !NewAuthorizer(&ACLToken{Policies: []string{"ops"}}, lookup).Operator() {
		t.Error("ops does not grant operator")
	}
	m := NewAuthorizer(&ACLToken{Management: true}, lookup)
	if !m.Operator() || !m.Pool("x", CapWrite) {
		t.Error("management does not grant everything")
	}
	if none := NewAuthorizer(&ACLToken{Policies: []string{"missing"}}, lookup); none.Pool("x", CapRead) || none.Operator() {
		t.Error("a missing policy granted something")
	}
}
