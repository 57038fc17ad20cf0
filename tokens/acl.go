package tokens

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Capability is what an ACL policy grants on the pools it names.
type Capability string

const (
	// CapRead fetches tokens and shows a pool's and its tokens' metadata.
	CapRead Capability = "read"
	// CapReport reports outcomes of tokens.
	CapReport Capability = "report"
	// CapWrite manages the pool and its tokens (never reads values).
	CapWrite Capability = "write"
)

// PoolRule grants capabilities on the pools whose names match Pattern, a
// glob: * matches any run of characters, ? one character.
type PoolRule struct {
	Pattern      string       `json:"pattern"`
	Capabilities []Capability `json:"capabilities"`
}

// ACLPolicy is a named set of grants. Grants only add: a token holds the
// union of its policies.
type ACLPolicy struct {
	Name        string     `json:"name"`
	Description string     `json:"description,omitempty"`
	Pools       []PoolRule `json:"pools,omitempty"`
	// Operator grants the cluster's operations: members, status, events,
	// alerts, metrics, the keyring, the audit log and ACL management.
	Operator bool `json:"operator,omitempty"`

	CreateIndex uint64 `json:"create_index"`
	ModifyIndex uint64 `json:"modify_index"`
}

// ACLToken is a bearer credential. Only the SHA-256 of its secret is
// stored; the AccessorID names it in listings, logs and audit events.
type ACLToken struct {
	AccessorID  string   `json:"accessor_id"`
	SecretHash  string   `json:"secret_hash"`
	Description string   `json:"description,omitempty"`
	Policies    []string `json:"policies,omitempty"`
	// Management grants everything; the bootstrap token has it.
	Management bool `json:"management,omitempty"`

	CreatedAt   time.Time `json:"created_at"`
	CreateIndex uint64    `json:"create_index"`
}

// Limits on ACL objects.
const (
	MaxPolicyRules    = 64
	MaxTokenPolicies  = 16
	MaxACLDescription = 256
)

// NewACLSecret returns a new random token secret and its accessor id.
func NewACLSecret() (secret, accessor string) {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	var a [8]byte
	_, _ = rand.Read(a[:])
	return "tkd_" + base64.RawURLEncoding.EncodeToString(b[:]), "acc_" + hex.EncodeToString(a[:])
}

// HashACLSecret is what state stores and looks tokens up by. The secret is
// 256 random bits, so a plain hash cannot be reversed.
func HashACLSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// ValidAccessorID reports whether id has the form NewACLSecret gives.
func ValidAccessorID(id string) bool {
	return len(id) == 20 && strings.HasPrefix(id, "acc_") && ValidKeyID(id[4:12]) && ValidKeyID(id[12:])
}

// Validate checks a policy as an operator submits it.
func (p *ACLPolicy) Validate() error {
	if err := ValidateName("policy", p.Name); err != nil {
		return err
	}
	if len(p.Description) > MaxACLDescription || strings.ContainsFunc(p.Description, isControl) {
		return invalidf("description must be at most %d characters, without control characters", MaxACLDescription)
	}
	if len(p.Pools) > MaxPolicyRules {
		return invalidf("a policy has at most %d pool rules, got %d", MaxPolicyRules, len(p.Pools))
	}
	if len(p.Pools) == 0 && !p.Operator {
		return invalidf("policy %q grants nothing: give pool rules, operator, or both", p.Name)
	}
	for i, r := range p.Pools {
		if err := validPattern(r.Pattern); err != nil {
			return invalidf("pools[%d]: %v", i, err)
		}
		if len(r.Capabilities) == 0 {
			return invalidf("pools[%d]: capabilities is empty: give read, report or write", i)
		}
		for _, c := range r.Capabilities {
			switch c {
			case CapRead, CapReport, CapWrite:
			default:
				return invalidf("pools[%d]: capability %q is not one of read, report, write", i, truncate(string(c), 40))
			}
		}
	}
	return nil
}

// validPattern accepts a pool name in which * and ? may stand for
// characters.
func validPattern(p string) error {
	if p == "" || len(p) > MaxNameLen {
		return invalidf("pattern %q must be 1 to %d characters", truncate(p, 80), MaxNameLen)
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '_', c == '-', c == '*', c == '?':
		default:
			return invalidf("pattern %q may hold only pool name characters (a-z 0-9 . _ -) and the wildcards * and ?", truncate(p, 80))
		}
	}
	return nil
}

// Validate checks a token's fields other than its secret.
func (t *ACLToken) Validate() error {
	if !ValidAccessorID(t.AccessorID) {
		return invalidf("accessor id %q is invalid", truncate(t.AccessorID, 40))
	}
	if len(t.SecretHash) != 64 {
		return invalidf("token secret hash is malformed")
	}
	if len(t.Description) > MaxACLDescription || strings.ContainsFunc(t.Description, isControl) {
		return invalidf("description must be at most %d characters, without control characters", MaxACLDescription)
	}
	if len(t.Policies) > MaxTokenPolicies {
		return invalidf("a token has at most %d policies, got %d", MaxTokenPolicies, len(t.Policies))
	}
	if len(t.Policies) == 0 && !t.Management {
		return invalidf("a token needs at least one policy")
	}
	for _, p := range t.Policies {
		if err := ValidateName("policy", p); err != nil {
			return err
		}
	}
	return nil
}

// Authorizer answers what one principal may do.
type Authorizer struct {
	all      bool
	operator bool
	rules    []PoolRule
	// grants remembers, per pool, the capabilities the rules give on it, so
	// a request matches the globs once per pool rather than every time.
	grants     sync.Map // pool name -> capSet
	grantsSize atomic.Int32
}

// capSet is a set of capabilities as bits.
type capSet uint8

func capBit(c Capability) capSet {
	switch c {
	case CapRead:
		return 1
	case CapReport:
		return 2
	case CapWrite:
		return 4
	}
	return 0
}

// maxRememberedPools bounds the grants an Authorizer remembers: names in
// requests are the caller's to choose, existing pools or not.
const maxRememberedPools = 4096

// AllowAll is the authorizer of a management token, and of callers that no
// ACL applies to.
func AllowAll() *Authorizer { return allowAll }

// allowAll is shared: an Authorizer that allows all never changes.
var allowAll = &Authorizer{all: true}

// NewAuthorizer combines a token's policies; names of policies that do not
// exist grant nothing.
func NewAuthorizer(t *ACLToken, policy func(name string) (*ACLPolicy, bool)) *Authorizer {
	if t.Management {
		return AllowAll()
	}
	a := &Authorizer{}
	for _, name := range t.Policies {
		if p, ok := policy(name); ok {
			a.operator = a.operator || p.Operator
			a.rules = append(a.rules, p.Pools...)
		}
	}
	return a
}

// Pool reports whether the principal holds c on pool.
func (a *Authorizer) Pool(pool string, c Capability) bool {
	if a.all {
		return true
	}
	if v, ok := a.grants.Load(pool); ok {
		return v.(capSet)&capBit(c) != 0
	}
	var set capSet
	for _, r := range a.rules {
		if ok, _ := path.Match(r.Pattern, pool); ok {
			for _, rc := range r.Capabilities {
				set |= capBit(rc)
			}
		}
	}
	if a.grantsSize.Load() < maxRememberedPools {
		if _, loaded := a.grants.LoadOrStore(pool, set); !loaded {
			a.grantsSize.Add(1)
		}
	}
	return set&capBit(c) != 0
}

// Operator reports whether the principal may run cluster operations.
func (a *Authorizer) Operator() bool { return a.all || a.operator }
