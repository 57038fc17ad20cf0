// Package oauth2 is the tokens provider of type "oauth2": every Issue runs
// an OAuth 2.0 client-credentials grant (RFC 6749 §4.4) against the pool's
// token endpoint and returns the access token it gets.
//
// Behaviour, in short:
//
//   - Each Issue performs one fresh grant: nothing is cached, so two Issues
//     make two requests and yield two tokens. The grant has no idempotency
//     key, so IssueRequest.Key is not sent and an Issue that is retried
//     after a lost answer issues another token; the unused one simply
//     expires at the authorization server.
//   - The client authenticates with HTTP Basic authentication
//     (client_secret_basic, the method RFC 6749 §2.3.1 says every server
//     MUST support), always: there is no probing, so exactly one request
//     is made per Issue and the secret travels only in the Authorization
//     header. Servers that accept only client_secret_post are not
//     supported.
//   - With several client credentials (ProviderSpec.Clients) Issue picks one
//     client per token; see Provider.Issue.
//   - ExpiresAt is the time the request was sent plus expires_in, so it
//     errs early, never late. A server that sends no expires_in (or 0)
//     issues a token that, as far as tokend knows, never expires by
//     itself: ExpiresAt is zero and only rotation.max_age or a failed
//     health check rotates it. A negative expires_in is an error.
//   - There is no revocation: client-credentials tokens usually cannot be
//     revoked, so Provider does not implement tokens.Revoker.
//   - Errors never carry the client secret or an issued token: an error
//     answer is reported by its status and its RFC 6749 §5.2 fields (and at
//     most 512 bytes of a body that has none), every configured secret is
//     scrubbed from the message, and the library's *oauth2.RetrieveError,
//     whose Response still holds the request and its Authorization header,
//     is not kept in the error chain.
package oauth2

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	xoauth2 "golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/tokend/tokend/tokens"
)

// Metadata keys of an issued token.
const (
	MetaClientID  = "client_id"
	MetaTokenType = "token_type"
	MetaScope     = "scope"
)

// maxDetail caps each piece of the server's answer quoted in an error.
const maxDetail = 512

// reservedParams are the request parameters ProviderSpec.Params may not
// set: the grant decides them, or they would put a credential in a field
// that is not secret.
var reservedParams = map[string]string{
	"grant_type":    "the grant is always client_credentials",
	"scope":         "use provider.scopes",
	"client_id":     "use provider.client_id or provider.clients",
	"client_secret": "use provider.client_secret or provider.clients",
}

// Provider issues tokens with the client-credentials grant. It is safe for
// concurrent use.
type Provider struct {
	endpoint string // the token URL without query or user info, for messages
	timeout  time.Duration
	client   *http.Client
	clients  []client
	secrets  []string // every form of every secret, scrubbed from errors
	now      func() time.Time

	mu       sync.Mutex
	inFlight []int // Issues running, per client
}

type client struct {
	id   string
	conf *clientcredentials.Config
}

var _ tokens.Provider = (*Provider)(nil)

// New returns the provider of an oauth2 spec. The spec must validate and be
// of type oauth2; its params may not set grant_type, scope, client_id or
// client_secret. Requests go through httpClient; when it is nil, through a
// client of its own whose transport is a clone of http.DefaultTransport
// (so it honours the proxy environment variables as that does, but shares
// no connections or later changes with it).
func New(spec tokens.ProviderSpec, httpClient *http.Client) (*Provider, error) {
	if spec.Type != tokens.ProviderOAuth2 {
		return nil, tokens.Errorf(tokens.CodeInvalid, "provider type %q is not oauth2", spec.Type)
	}
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	for k := range spec.Params {
		if why, ok := reservedParams[k]; ok {
			return nil, tokens.Errorf(tokens.CodeInvalid, "provider.params may not set %s: %s", k, why)
		}
	}
	if httpClient == nil {
		httpClient = defaultHTTPClient()
	}
	var params url.Values
	if len(spec.Params) > 0 {
		params = make(url.Values, len(spec.Params))
		for k, v := range spec.Params {
			params.Set(k, v)
		}
	}
	creds := spec.Clients
	if len(creds) == 0 {
		creds = []tokens.OAuth2Client{{ClientID: spec.ClientID, ClientSecret: spec.ClientSecret}}
	}
	p := &Provider{
		endpoint: displayURL(spec.TokenURL),
		timeout:  spec.CallTimeout(),
		client:   httpClient,
		now:      time.Now,
		inFlight: make([]int, len(creds)),
	}
	for _, c := range creds {
		secret := c.ClientSecret.Reveal()
		p.clients = append(p.clients, client{
			id: c.ClientID,
			conf: &clientcredentials.Config{
				ClientID:       c.ClientID,
				ClientSecret:   secret,
				TokenURL:       spec.TokenURL,
				Scopes:         append([]string(nil), spec.Scopes...),
				EndpointParams: params,
				AuthStyle:      xoauth2.AuthStyleInHeader,
			},
		})
		// The secret as configured, as form-encoded into the Basic
		// credentials, and those credentials as they go on the wire.
		basic := base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(c.ClientID) + ":" + url.QueryEscape(secret)))
		p.secrets = append(p.secrets, secret, url.QueryEscape(secret), basic)
	}
	return p, nil
}

func defaultHTTPClient() *http.Client {
	var t *http.Transport
	if dt, ok := http.DefaultTransport.(*http.Transport); ok {
		t = dt.Clone()
	} else {
		t = &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          100,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
		}
	}
	return &http.Client{Transport: t}
}

// Issue runs one client-credentials grant and returns its access token.
//
// The client is chosen so that several clients' tokens stay spread:
//
//  1. If req.Replacing names a configured client in "client_id", that
//     client issues the replacement.
//  2. Otherwise the least loaded client does, ties going to the one
//     configured first. A client's load is the number of req.Active
//     entries whose "client_id" names it, plus the Issues this Provider
//     is running for it right now.
//
// So the choice is a function of the request alone whenever Issues do not
// overlap: two successive Issues with an empty Active both use the first
// client, as the caller says no token is active (the pool's record, not
// this Provider's memory, decides the spread, so a new leader chooses the
// same way). Issues that overlap, such as a pool being topped up by
// several rotations at once from the same Active, go to different clients.
//
// The call is bounded by the spec's timeout as well as ctx; when the
// timeout fires, the error wraps context.DeadlineExceeded.
func (p *Provider) Issue(ctx context.Context, req tokens.IssueRequest) (tokens.Issued, error) {
	i := p.acquire(req)
	defer p.release(i)
	c := p.clients[i]

	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	ctx = context.WithValue(ctx, xoauth2.HTTPClient, p.client)

	start := p.now()
	tok, err := c.conf.Token(ctx)
	if err != nil {
		return tokens.Issued{}, p.fail(parent, ctx, c.id, err)
	}
	if tok.AccessToken == "" { // the library checks this; be sure
		return tokens.Issued{}, p.errorf(c.id, nil, "the answer has no access_token")
	}
	in, ok, err := expiresIn(tok)
	if err != nil {
		return tokens.Issued{}, p.errorf(c.id, nil, "%s", err)
	}
	out := tokens.Issued{
		Value: tokens.Secret(tok.AccessToken),
		Metadata: map[string]string{
			MetaClientID:  c.id,
			MetaTokenType: tok.Type(),
		},
	}
	if ok {
		out.ExpiresAt = start.Add(in)
	}
	if scope := grantedScope(tok.Extra("scope")); scope != "" {
		out.Metadata[MetaScope] = scope
	}
	return out, nil
}

// acquire picks the client for req and counts the Issue as running on it.
func (p *Provider) acquire(req tokens.IssueRequest) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := p.pick(req)
	p.inFlight[i]++
	return i
}

func (p *Provider) release(i int) {
	p.mu.Lock()
	p.inFlight[i]--
	p.mu.Unlock()
}

// pick implements the choice documented on Issue; p.mu is held.
func (p *Provider) pick(req tokens.IssueRequest) int {
	if id, ok := req.Replacing[MetaClientID]; ok {
		for i, c := range p.clients {
			if c.id == id {
				return i
			}
		}
	}
	load := append([]int(nil), p.inFlight...)
	for _, m := range req.Active {
		id, ok := m[MetaClientID]
		if !ok {
			continue
		}
		for i, c := range p.clients {
			if c.id == id {
				load[i]++
				break
			}
		}
	}
	best := 0
	for i := range load {
		if load[i] < load[best] {
			best = i
		}
	}
	return best
}

// expiresIn reads the answer's expires_in: ok is false when the server sent
// none or 0.
func expiresIn(tok *xoauth2.Token) (d time.Duration, ok bool, err error) {
	// clientcredentials leaves Token.ExpiresIn unset: read the answer. A
	// JSON number comes as float64, a form value as int64, a JSON string
	// (some servers quote it) as string.
	var n int64
	switch v := tok.Extra("expires_in").(type) {
	case float64:
		n = int64(max(min(v, math.MaxInt32), math.MinInt32))
	case int64:
		n = v
	case string:
		if strings.TrimSpace(v) == "" {
			break
		}
		n, err = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, false, fmt.Errorf("expires_in %q is not a number of seconds", clip(v))
		}
	case nil:
	default:
		return 0, false, fmt.Errorf("expires_in is not a number of seconds")
	}
	switch {
	case n == 0:
		return 0, false, nil
	case n < 0:
		return 0, false, fmt.Errorf("expires_in is %d: the token has already expired", n)
	}
	return time.Duration(min(n, math.MaxInt32)) * time.Second, true, nil
}

// grantedScope renders the answer's scope: a space-separated string as
// RFC 6749 §5.1 has it, or a list as some servers send.
func grantedScope(v any) string {
	switch v := v.(type) {
	case string:
		return clip(v)
	case int64: // a form-encoded answer's scope that looks like a number
		return strconv.FormatInt(v, 10)
	case []any:
		var parts []string
		for _, e := range v {
			if s, ok := e.(string); ok && s != "" {
				parts = append(parts, s)
			}
		}
		return clip(strings.Join(parts, " "))
	}
	return ""
}

// Error is a failed grant. Its message names the client and the endpoint
// and never holds a secret.
type Error struct {
	ClientID string
	// StatusCode is the HTTP status of the answer, 0 when there was none.
	StatusCode int
	// Code, Description and URI are the answer's RFC 6749 §5.2 error,
	// error_description and error_uri (each cut to 512 bytes).
	Code, Description, URI string

	msg string
	err error
}

func (e *Error) Error() string { return e.msg }

// Unwrap returns the cause: context.DeadlineExceeded or context.Canceled
// when the call ran out of time or was cancelled, the transport's error
// when the endpoint could not be reached, nil for an error answer.
func (e *Error) Unwrap() error { return e.err }

// fail turns the grant's error into an *Error.
func (p *Provider) fail(parent, ctx context.Context, clientID string, err error) error {
	var re *xoauth2.RetrieveError
	if errors.As(err, &re) {
		e := &Error{
			ClientID:    clientID,
			Code:        clip(p.scrub(re.ErrorCode)),
			Description: clip(p.scrub(re.ErrorDescription)),
			URI:         clip(p.scrub(re.ErrorURI)),
		}
		status := "no status"
		if re.Response != nil {
			e.StatusCode = re.Response.StatusCode
			status = "HTTP " + strconv.Itoa(re.Response.StatusCode)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "token endpoint answered %s", status)
		if e.Code != "" {
			fmt.Fprintf(&b, ", error %q", e.Code)
			if e.Description != "" {
				fmt.Fprintf(&b, ": %q", e.Description)
			}
			if e.URI != "" {
				fmt.Fprintf(&b, " (see %q)", e.URI)
			}
		} else if len(re.Body) > 0 {
			// Scrubbed before it is cut, so no secret is left half.
			fmt.Fprintf(&b, ": %q", clip(p.scrub(string(re.Body))))
		}
		e.msg = p.message(clientID, b.String())
		return e
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		what := fmt.Sprintf("had no answer within %s", p.timeout)
		if parent.Err() != nil {
			// The caller's context ended first.
			what = "was ended by the caller"
			ctxErr = parent.Err()
		} else if !errors.Is(ctxErr, context.DeadlineExceeded) {
			what = "was cancelled"
		}
		return p.errorf(clientID, ctxErr, "token request %s: %v", what, ctxErr)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		// The transport failed: keep its cause, not the URL it quotes.
		return p.errorf(clientID, ue.Err, "token request failed: %v", ue.Err)
	}
	// The library's own errors: an unparsable or incomplete answer.
	return p.errorf(clientID, nil, "%s", strings.TrimPrefix(err.Error(), "oauth2: "))
}

func (p *Provider) errorf(clientID string, cause error, format string, args ...any) *Error {
	return &Error{ClientID: clientID, err: cause, msg: p.message(clientID, fmt.Sprintf(format, args...))}
}

// message prefixes detail with the client and the endpoint, and scrubs.
func (p *Provider) message(clientID, detail string) string {
	return p.scrub(fmt.Sprintf("oauth2: client %q at %s: %s", clip(clientID), p.endpoint, detail))
}

// scrub replaces every form of every configured secret in s.
func (p *Provider) scrub(s string) string {
	for _, secret := range p.secrets {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "[redacted]")
		}
	}
	return s
}

// clip cuts s to maxDetail bytes on a rune boundary.
func clip(s string) string {
	if len(s) <= maxDetail {
		return s
	}
	cut := maxDetail
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// displayURL is raw without user info, query or fragment.
func displayURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "the token endpoint"
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}
