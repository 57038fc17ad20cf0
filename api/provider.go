package api

import "github.com/tokend/tokend/tokens"

// ToSpec converts the wire form to the domain's, secrets included.
func (p Provider) ToSpec() tokens.ProviderSpec {
	s := tokens.ProviderSpec{
		Type:           tokens.ProviderType(p.Type),
		Timeout:        p.Timeout,
		Command:        p.Command,
		RevokeCommand:  p.RevokeCommand,
		Env:            p.Env,
		TokenURL:       p.TokenURL,
		ClientID:       p.ClientID,
		Scopes:         p.Scopes,
		Params:         p.Params,
		URL:            p.URL,
		Method:         p.Method,
		Body:           p.Body,
		TokenField:     p.TokenField,
		ExpiresAtField: p.ExpiresAtField,
		ExpiresInField: p.ExpiresInField,
		RevokeURL:      p.RevokeURL,
	}
	if p.ClientSecret != "" {
		s.ClientSecret = tokens.Secret(p.ClientSecret)
	}
	for _, c := range p.Clients {
		s.Clients = append(s.Clients, tokens.OAuth2Client{ClientID: c.ClientID, ClientSecret: tokens.Secret(c.ClientSecret)})
	}
	if p.Headers != nil {
		s.Headers = make(map[string]tokens.Secret, len(p.Headers))
		for k, v := range p.Headers {
			s.Headers[k] = tokens.Secret(v)
		}
	}
	return s
}

// ProviderFromSpec converts the domain form to the wire form without its
// secrets.
func ProviderFromSpec(s tokens.ProviderSpec) Provider {
	p := Provider{
		Type:           string(s.Type),
		Timeout:        s.Timeout,
		Command:        s.Command,
		RevokeCommand:  s.RevokeCommand,
		Env:            s.Env,
		TokenURL:       s.TokenURL,
		ClientID:       s.ClientID,
		Scopes:         s.Scopes,
		Params:         s.Params,
		URL:            s.URL,
		Method:         s.Method,
		Body:           s.Body,
		TokenField:     s.TokenField,
		ExpiresAtField: s.ExpiresAtField,
		ExpiresInField: s.ExpiresInField,
		RevokeURL:      s.RevokeURL,
	}
	for _, c := range s.Clients {
		p.Clients = append(p.Clients, OAuth2Client{ClientID: c.ClientID})
	}
	if s.Headers != nil {
		p.Headers = make(map[string]string, len(s.Headers))
		for k := range s.Headers {
			p.Headers[k] = ""
		}
	}
	return p
}

// ToPool is the pool named name that the request defines, as the agent
// applies it (before Normalize fills in defaults). The CLI builds the same
// pool to check a file before it sends it.
func (r PoolRequest) ToPool(name string) tokens.Pool {
	p := tokens.Pool{Name: name, Selection: tokens.SelectionPolicy(r.Selection), MinHealthy: r.MinHealthy, Labels: r.Labels, Size: r.Size,
		AllowUIDs: r.AllowUIDs, AllowGIDs: r.AllowGIDs}
	if r.Health != nil {
		p.Health = *r.Health
	}
	if r.Provider != nil {
		p.Provider = r.Provider.ToSpec()
	}
	if r.Rotation != nil {
		p.Rotation = *r.Rotation
	}
	if r.HealthCheck != nil {
		hc := *r.HealthCheck
		p.HealthCheck = &hc
	}
	return p
}
