package tokens

import (
	"context"
	"maps"
	"slices"
	"time"
)

// Provider issues credentials for a pool. Only the leader calls it, outside
// Raft's goroutines, with a deadline; the result is recorded through Raft.
type Provider interface {
	Issue(ctx context.Context, req IssueRequest) (Issued, error)
}

// Revoker is a Provider that can revoke what it issued.
type Revoker interface {
	Revoke(ctx context.Context, req RevokeRequest) error
}

// IssueRequest is one call to issue a credential.
type IssueRequest struct {
	// Key is the rotation's id: the same for every attempt of one rotation,
	// so an issuer that honours idempotency keys issues once.
	Key string
	// Replacing is the metadata of the token being replaced, nil when the
	// pool is only topped up; Active holds the metadata of the pool's
	// active tokens. A provider with several credentials uses them to keep
	// its tokens spread (oauth2 reuses the replaced token's client, or the
	// least used one).
	Replacing map[string]string
	Active    []map[string]string
}

// Issued is a credential a provider issued.
type Issued struct {
	Value Secret
	// ExpiresAt is zero when the credential does not expire.
	ExpiresAt time.Time
	// Metadata is recorded with the token; it must not be secret.
	Metadata map[string]string
}

// RevokeRequest is one call to revoke a credential.
type RevokeRequest struct {
	Value    Secret
	Metadata map[string]string
}

// ProviderSpec configures how a pool's tokens are issued. Each field says
// which provider types use it. Secret fields are write-only: the API never
// returns them.
type ProviderSpec struct {
	Type ProviderType `json:"type"`
	// Timeout bounds one call to the provider (default 30s).
	Timeout Duration `json:"timeout,omitzero"`

	// exec: the command that prints {"token", "expires_at" or "expires_in",
	// "metadata"} (argv, no shell).
	Command []string `json:"command,omitempty"`
	// exec: the command that revokes the token it reads on stdin.
	RevokeCommand []string `json:"revoke_command,omitempty"`
	// exec: names of the agent's environment variables the commands see;
	// no other variable reaches them.
	Env []string `json:"env,omitempty"`

	// oauth2: the client-credentials grant.
	TokenURL     string `json:"token_url,omitempty"`
	ClientID     string `json:"client_id,omitempty"`
	ClientSecret Secret `json:"client_secret,omitempty"`
	// oauth2: more client credentials; each issues independent tokens.
	Clients []OAuth2Client `json:"clients,omitempty"`
	Scopes  []string       `json:"scopes,omitempty"`
	// oauth2: extra parameters of the token request.
	Params map[string]string `json:"params,omitempty"`

	// http: the issuing endpoint, called with Method (default POST),
	// Headers (write-only: they usually carry a credential) and Body.
	URL     string            `json:"url,omitempty"`
	Method  string            `json:"method,omitempty"`
	Headers map[string]Secret `json:"headers,omitempty"`
	Body    string            `json:"body,omitempty"`
	// http: where the answer's JSON holds the token (dotted path, default
	// "token") and its expiry, as RFC 3339 (ExpiresAtField) or seconds
	// from now (ExpiresInField, default "expires_in").
	TokenField     string `json:"token_field,omitempty"`
	ExpiresAtField string `json:"expires_at_field,omitempty"`
	ExpiresInField string `json:"expires_in_field,omitempty"`
	// http: revocation endpoint, POSTed {"token": "..."} with Headers.
	RevokeURL string `json:"revoke_url,omitempty"`
}

// OAuth2Client is one client credential of an oauth2 provider.
type OAuth2Client struct {
	ClientID     string `json:"client_id"`
	ClientSecret Secret `json:"client_secret"`
}

// DefaultProviderTimeout bounds a provider call when the spec does not.
const DefaultProviderTimeout = 30 * time.Second

// Issues reports whether the provider issues tokens (every type but
// static).
func (s ProviderSpec) Issues() bool { return s.Type != ProviderStatic }

// CallTimeout is the deadline of one provider call.
func (s ProviderSpec) CallTimeout() time.Duration {
	if s.Timeout > 0 {
		return time.Duration(s.Timeout)
	}
	return DefaultProviderTimeout
}

// Redacted returns the spec without its secrets, for showing it.
func (s ProviderSpec) Redacted() ProviderSpec {
	s.ClientSecret = nil
	if s.Clients != nil {
		clients := make([]OAuth2Client, len(s.Clients))
		for i, c := range s.Clients {
			clients[i] = OAuth2Client{ClientID: c.ClientID}
		}
		s.Clients = clients
	}
	if s.Headers != nil {
		headers := make(map[string]Secret, len(s.Headers))
		for k := range s.Headers {
			headers[k] = nil
		}
		s.Headers = headers
	}
	return s
}

// MapSecrets returns the spec with every credential replaced by f's result:
// the agent seals a spec's credentials before they are replicated, and the
// leader opens them before it builds the provider. The replicated state
// thus holds sealed bytes in these Secret fields; CheckSealed enforces it.
func (s ProviderSpec) MapSecrets(f func(Secret) (Secret, error)) (ProviderSpec, error) {
	var err error
	if len(s.ClientSecret) > 0 {
		if s.ClientSecret, err = f(s.ClientSecret); err != nil {
			return ProviderSpec{}, err
		}
	}
	if s.Clients != nil {
		clients := make([]OAuth2Client, len(s.Clients))
		for i, c := range s.Clients {
			clients[i] = c
			if len(c.ClientSecret) > 0 {
				if clients[i].ClientSecret, err = f(c.ClientSecret); err != nil {
					return ProviderSpec{}, err
				}
			}
		}
		s.Clients = clients
	}
	if s.Headers != nil {
		headers := make(map[string]Secret, len(s.Headers))
		// In key order, so an error names the same header every time.
		for _, k := range slices.Sorted(maps.Keys(s.Headers)) {
			if headers[k], err = f(s.Headers[k]); err != nil {
				return ProviderSpec{}, err
			}
		}
		s.Headers = headers
	}
	return s, nil
}

// SecretKeyIDs calls f with the key id of every credential of the spec; ""
// for one that is not sealed (written before tokend sealed secrets).
func (s ProviderSpec) SecretKeyIDs(f func(id string)) {
	_, _ = s.MapSecrets(func(v Secret) (Secret, error) {
		if Sealed(v).Legacy() {
			f("")
		} else if id, err := Sealed(v).KeyID(); err == nil {
			f(id)
		}
		return v, nil
	})
}
