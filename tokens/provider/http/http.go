// Package httpprovider issues tokens by calling an HTTP endpoint: the http
// provider type of a pool.
//
// Issue sends the spec's method (default POST) to its URL with its headers
// and body, and reads the token and its expiry from the JSON answer. Revoke
// POSTs {"token": "..."} to the revoke URL.
//
// Every issue call carries an Idempotency-Key header holding the rotation's key
// (tokens.IssueRequest.Key), which is the same for every attempt of one
// rotation. An issuer that honours the header issues once per rotation,
// even when a new leader retries a rotation its predecessor started; with
// an issuer that ignores it, a retried rotation may issue twice and the
// extra token is left to expire.
//
// Errors start with "http provider: ". They never hold the token or the
// value of a configured header: any occurrence in an echoed answer is
// replaced by "[redacted]", and the URL's path and query are left out (only
// its host is named). Redirects are never followed, so the headers reach
// only the configured URL.
package httpprovider

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tokend/tokend/tokens"
)

const (
	// DefaultTokenField is where the answer holds the token when the spec
	// does not say.
	DefaultTokenField = "token"
	// DefaultExpiresInField is where the answer may hold the token's
	// lifetime in seconds when the spec names no expiry field. Unlike a
	// field the spec names, it may be missing: the token then does not
	// expire.
	DefaultExpiresInField = "expires_in"

	// MaxResponseBytes bounds the JSON answer of a successful issue.
	MaxResponseBytes = 1 << 20
	// MaxErrorBodyBytes bounds how much of an unsuccessful answer an error
	// quotes.
	MaxErrorBodyBytes = 512

	// errorReadBytes is how much of an unsuccessful answer is read (and
	// redacted) before it is cut to MaxErrorBodyBytes, so that a secret
	// straddling the cut is redacted whole rather than half-quoted.
	errorReadBytes = 64 << 10
	// maxExpiresIn bounds expires_in, well inside time.Duration's range.
	maxExpiresIn = 100 * 365 * 24 * time.Hour
	// maxTokenTypeLen bounds the token_type recorded in the metadata.
	maxTokenTypeLen = 256
	redacted        = "[redacted]"
)

// Provider issues (and, with a revoke URL, revokes) tokens over HTTP. It is
// safe for concurrent use; New fixes everything it needs.
type Provider struct {
	client    *http.Client
	method    string
	url       string
	host      string // the URL's host, named in errors and metadata
	revokeURL string
	header    http.Header
	hostField string // a configured Host header, which Go sends as Request.Host
	body      []byte // nil when the spec has no body
	timeout   time.Duration

	tokenField     string
	tokenPath      []string
	expiresAtField string
	expiresAtPath  []string
	expiresInField string
	expiresInPath  []string
	// expiresInRequired is set when the spec names ExpiresInField: only the
	// default field may be missing.
	expiresInRequired bool

	// secrets are the header values (and their long words, such as the
	// credential after "Bearer "), longest first, redacted from every
	// error.
	secrets []string

	// now is the clock expires_in counts from; tests replace it.
	now func() time.Time
}

var (
	_ tokens.Provider = (*Provider)(nil)
	_ tokens.Revoker  = (*Provider)(nil)
)

// New returns a provider for spec, which must be a valid http provider spec
// (spec.Type may be left empty). client carries the calls; nil means a
// client of its own on a transport cloned from http.DefaultTransport. Either
// way, redirects are not followed: a given client is copied and its
// CheckRedirect replaced, so that the headers, which usually carry a
// credential, never reach another URL.
func New(spec tokens.ProviderSpec, client *http.Client) (*Provider, error) {
	if spec.Type != "" && spec.Type != tokens.ProviderHTTP {
		return nil, fmt.Errorf("http provider: the spec is of type %q, not %q", spec.Type, tokens.ProviderHTTP)
	}
	check := spec
	check.Type = tokens.ProviderHTTP
	if err := check.Validate(); err != nil {
		return nil, fmt.Errorf("http provider: %w", err)
	}
	u, err := url.Parse(spec.URL)
	if err != nil { // Validate parsed it already
		return nil, errors.New("http provider: provider.url is not a URL")
	}

	p := &Provider{
		method:    cmp.Or(spec.Method, http.MethodPost),
		url:       spec.URL,
		host:      u.Host,
		revokeURL: spec.RevokeURL,
		header:    make(http.Header, len(spec.Headers)+2),
		timeout:   spec.CallTimeout(),
		now:       time.Now,
	}
	p.header.Set("Accept", "application/json")
	p.header.Set("User-Agent", "tokend")
	for name, value := range spec.Headers {
		v := value.Reveal()
		if !validHeaderValue(v) {
			// The value is a secret: name the header only.
			return nil, fmt.Errorf("http provider: provider.headers: the value of %q holds a control character", name)
		}
		if http.CanonicalHeaderKey(name) == "Host" {
			p.hostField = v
		} else {
			p.header.Set(name, v)
		}
		p.secrets = append(p.secrets, secretParts(v)...)
	}
	slices.SortFunc(p.secrets, func(a, b string) int { return cmp.Or(cmp.Compare(len(b), len(a)), strings.Compare(a, b)) })
	p.secrets = slices.Compact(p.secrets)
	if spec.Body != "" {
		p.body = []byte(spec.Body)
	}

	p.tokenField = cmp.Or(spec.TokenField, DefaultTokenField)
	p.tokenPath = strings.Split(p.tokenField, ".")
	switch {
	case spec.ExpiresAtField != "":
		p.expiresAtField = spec.ExpiresAtField
		p.expiresAtPath = strings.Split(spec.ExpiresAtField, ".")
	case spec.ExpiresInField != "":
		p.expiresInField = spec.ExpiresInField
		p.expiresInRequired = true
	default:
		p.expiresInField = DefaultExpiresInField
	}
	if p.expiresInField != "" {
		p.expiresInPath = strings.Split(p.expiresInField, ".")
	}

	if client == nil {
		client = &http.Client{Transport: newTransport()}
	} else {
		c := *client
		client = &c
	}
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	p.client = client
	return p, nil
}

func newTransport() http.RoundTripper {
	if t, ok := http.DefaultTransport.(*http.Transport); ok {
		return t.Clone()
	}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// CanRevoke reports whether the spec has a revoke URL.
func (p *Provider) CanRevoke() bool { return p.revokeURL != "" }

// Issue calls the issuing endpoint and reads the token from its answer.
func (p *Provider) Issue(ctx context.Context, req tokens.IssueRequest) (tokens.Issued, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()

	var body io.Reader
	if p.body != nil {
		body = bytes.NewReader(p.body)
	}
	r, err := http.NewRequestWithContext(ctx, p.method, p.url, body)
	if err != nil { // the spec was validated; only a bad method could do this
		return tokens.Issued{}, fmt.Errorf("http provider: issue: cannot build a %s request", p.method)
	}
	p.prepare(r)
	if p.body != nil && r.Header.Get("Content-Type") == "" {
		r.Header.Set("Content-Type", "application/json")
	}
	if req.Key != "" {
		r.Header.Set("Idempotency-Key", req.Key)
	}

	status, data, err := p.roundTrip(ctx, "issue", r, MaxResponseBytes, nil)
	if err != nil {
		return tokens.Issued{}, err
	}
	if status < 200 || status > 299 {
		return tokens.Issued{}, newStatusError("issue", status, data, p.secrets)
	}
	return p.parse(data)
}

// Revoke POSTs {"token": "..."} to the revoke URL with the configured
// headers. A 2xx answer or a 404 (the token is gone already) is success. It
// fails, wrapping errors.ErrUnsupported, when the spec has no revoke URL.
func (p *Provider) Revoke(ctx context.Context, req tokens.RevokeRequest) error {
	if p.revokeURL == "" {
		return fmt.Errorf("http provider: revoke: provider.revoke_url is not set, so tokens of this provider cannot be revoked: %w", errors.ErrUnsupported)
	}
	if len(req.Value) == 0 {
		return errors.New("http provider: revoke: no token value to revoke")
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()

	payload, err := json.Marshal(map[string]string{"token": req.Value.Reveal()})
	if err != nil { // a string always marshals
		return errors.New("http provider: revoke: cannot encode the request")
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, p.revokeURL, bytes.NewReader(payload))
	if err != nil {
		return errors.New("http provider: revoke: cannot build the request")
	}
	p.prepare(r)
	r.Header.Set("Content-Type", "application/json")

	extra := secretParts(req.Value.Reveal())
	status, data, err := p.roundTrip(ctx, "revoke", r, errorReadBytes, extra)
	if err != nil {
		return err
	}
	if (status >= 200 && status <= 299) || status == http.StatusNotFound {
		return nil
	}
	return newStatusError("revoke", status, data, append(extra, p.secrets...))
}

// prepare sets the configured headers on r.
func (p *Provider) prepare(r *http.Request) {
	r.Header = p.header.Clone()
	if p.hostField != "" {
		r.Host = p.hostField
	}
}

// roundTrip sends r and reads the answer: up to limit bytes of a 2xx answer
// (more is an error), the first errorReadBytes of any other. extra are
// secrets to redact besides the header values.
func (p *Provider) roundTrip(ctx context.Context, op string, r *http.Request, limit int64, extra []string) (int, []byte, error) {
	resp, err := p.client.Do(r)
	if err != nil {
		return 0, nil, p.callError(ctx, op, "calling", err, extra)
	}
	defer resp.Body.Close()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// The status is the news; a body cut short only shortens the quote.
		data, _ := io.ReadAll(io.LimitReader(resp.Body, errorReadBytes))
		return resp.StatusCode, data, nil
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return 0, nil, p.callError(ctx, op, "reading the answer from", err, extra)
	}
	if int64(len(data)) > limit {
		return 0, nil, fmt.Errorf("http provider: %s: the answer from %s is larger than %d bytes", op, p.host, limit)
	}
	return resp.StatusCode, data, nil
}

// callError describes a failed call without the URL's path and query (which
// may hold a credential) and with any secret redacted. A call cut short by
// the deadline wraps context.DeadlineExceeded.
func (p *Provider) callError(ctx context.Context, op, doing string, err error, extra []string) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		if errors.Is(ctxErr, context.DeadlineExceeded) {
			return &callErr{
				msg: fmt.Sprintf("http provider: %s: %s %s: no answer before the deadline (call timeout %s): %v", op, doing, p.host, p.timeout, ctxErr),
				err: ctxErr,
			}
		}
		return &callErr{msg: fmt.Sprintf("http provider: %s: %s %s: %v", op, doing, p.host, ctxErr), err: ctxErr}
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	msg := redact(err.Error(), append(extra, p.secrets...))
	return &callErr{msg: fmt.Sprintf("http provider: %s: %s %s: %s", op, doing, p.host, msg), err: err}
}

// callErr is an error whose message was redacted; Unwrap still gives the
// cause, for errors.Is.
type callErr struct {
	msg string
	err error
}

func (e *callErr) Error() string { return e.msg }
func (e *callErr) Unwrap() error { return e.err }

// StatusError is an answer with an unexpected HTTP status.
type StatusError struct {
	// Op is "issue" or "revoke".
	Op         string
	StatusCode int
	// Body is the start of the answer, at most MaxErrorBodyBytes, with every
	// header value and token replaced by "[redacted]".
	Body string
}

func (e *StatusError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "http provider: %s: unexpected status %d", e.Op, e.StatusCode)
	if text := http.StatusText(e.StatusCode); text != "" {
		b.WriteString(" " + text)
	}
	if e.StatusCode >= 300 && e.StatusCode <= 399 {
		b.WriteString(" (redirects are not followed)")
	}
	if e.Body != "" {
		fmt.Fprintf(&b, ": %q", e.Body)
	}
	return b.String()
}

func newStatusError(op string, status int, body []byte, secrets []string) *StatusError {
	text := redact(strings.ToValidUTF8(string(body), "\uFFFD"), secrets)
	if len(text) > MaxErrorBodyBytes {
		cut := MaxErrorBodyBytes
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		text = text[:cut]
	}
	return &StatusError{Op: op, StatusCode: status, Body: strings.TrimSpace(text)}
}

// parse reads the token, its expiry and its metadata from a 2xx answer.
func (p *Provider) parse(data []byte) (tokens.Issued, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		// encoding/json quotes at most one character of the input.
		return tokens.Issued{}, fmt.Errorf("http provider: issue: the answer from %s is not JSON: %v", p.host, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return tokens.Issued{}, fmt.Errorf("http provider: issue: the answer from %s holds more than one JSON value", p.host)
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return tokens.Issued{}, fmt.Errorf("http provider: issue: the answer from %s is a JSON %s, not an object", p.host, kind(doc))
	}

	value, err := p.token(obj)
	if err != nil {
		return tokens.Issued{}, err
	}
	secrets := append(secretParts(value), p.secrets...)
	expiresAt, err := p.expiry(obj, secrets)
	if err != nil {
		return tokens.Issued{}, err
	}
	meta := map[string]string{"issuer": p.host}
	if tt, ok := obj["token_type"].(string); ok && tt != "" && len(tt) <= maxTokenTypeLen && !hasControl(tt) {
		meta["token_type"] = tt
	}
	return tokens.Issued{Value: tokens.Secret(value), ExpiresAt: expiresAt, Metadata: meta}, nil
}

func (p *Provider) token(obj map[string]any) (string, error) {
	fail := func(format string, args ...any) (string, error) {
		return "", fmt.Errorf("http provider: issue: the answer's token field %q "+format, append([]any{p.tokenField}, args...)...)
	}
	v, found, err := lookup(obj, p.tokenPath)
	switch {
	case err != nil:
		return "", fmt.Errorf("http provider: issue: the answer's token field %q: %v", p.tokenField, err)
	case !found:
		return fail("is missing (set provider.token_field to where the token is)")
	}
	s, ok := v.(string)
	switch {
	case !ok:
		return fail("is a %s, not a string", kind(v))
	case strings.TrimSpace(s) == "":
		return fail("is empty")
	case len(s) > tokens.MaxTokenValueLen:
		return fail("is %d bytes (at most %d)", len(s), tokens.MaxTokenValueLen)
	case hasControl(s):
		return fail("holds a control character")
	}
	return s, nil
}

// expiry reads the token's expiry; zero means it does not expire. secrets
// are redacted from the quoted value of an unreadable expires_at.
func (p *Provider) expiry(obj map[string]any, secrets []string) (time.Time, error) {
	now := p.now()
	var at time.Time
	switch {
	case p.expiresAtPath != nil:
		field := p.expiresAtField
		v, found, err := lookup(obj, p.expiresAtPath)
		switch {
		case err != nil:
			return time.Time{}, fmt.Errorf("http provider: issue: the answer's expires_at field %q: %v", field, err)
		case !found || v == nil:
			return time.Time{}, fmt.Errorf("http provider: issue: the answer's expires_at field %q is missing", field)
		}
		s, ok := v.(string)
		if !ok {
			return time.Time{}, fmt.Errorf("http provider: issue: the answer's expires_at field %q is a %s, not an RFC 3339 time string", field, kind(v))
		}
		at, err = time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return time.Time{}, fmt.Errorf("http provider: issue: the answer's expires_at field %q: %q is not an RFC 3339 time", field, quote(s, secrets))
		}
	default:
		field := p.expiresInField
		v, found, err := lookup(obj, p.expiresInPath)
		switch {
		case err != nil:
			return time.Time{}, fmt.Errorf("http provider: issue: the answer's expires_in field %q: %v", field, err)
		case (!found || v == nil) && p.expiresInRequired:
			return time.Time{}, fmt.Errorf("http provider: issue: the answer's expires_in field %q is missing", field)
		case !found || v == nil:
			return time.Time{}, nil // the default field is optional
		}
		var secs float64
		switch n := v.(type) {
		case json.Number:
			secs, err = n.Float64()
		case string: // some issuers send "3600"
			secs, err = strconv.ParseFloat(strings.TrimSpace(n), 64)
		default:
			return time.Time{}, fmt.Errorf("http provider: issue: the answer's expires_in field %q is a %s, not a number of seconds", field, kind(v))
		}
		if err != nil || math.IsNaN(secs) {
			return time.Time{}, fmt.Errorf("http provider: issue: the answer's expires_in field %q is not a number of seconds", field)
		}
		if secs <= 0 || secs > maxExpiresIn.Seconds() {
			return time.Time{}, fmt.Errorf("http provider: issue: the answer's expires_in field %q is %s seconds: it must be above 0 and at most %.0f", field, strconv.FormatFloat(secs, 'g', -1, 64), maxExpiresIn.Seconds())
		}
		at = now.Add(time.Duration(secs * float64(time.Second)))
	}
	if !at.After(now.Add(tokens.ExpiryMargin)) {
		return time.Time{}, fmt.Errorf("http provider: issue: the issued token expires at %s, which is in the past or less than %s away", at.UTC().Format(time.RFC3339Nano), tokens.ExpiryMargin)
	}
	return at, nil
}

// lookup follows a dotted path through nested objects. A path through a
// value that is not an object is an error; a missing field is not found.
func lookup(obj map[string]any, path []string) (v any, found bool, err error) {
	v = obj
	for i, name := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false, fmt.Errorf("%q is a %s, not an object", strings.Join(path[:i], "."), kind(v))
		}
		if v, ok = m[name]; !ok {
			return nil, false, nil
		}
	}
	return v, true, nil
}

// kind names a decoded JSON value's type.
func kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case json.Number, float64:
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// secretParts returns what to redact for a secret value: the value and its
// words of 8 bytes or more, such as the credential after "Bearer ", which
// an answer may echo alone.
func secretParts(v string) []string {
	if v == "" {
		return nil
	}
	out := []string{v}
	for _, w := range strings.Fields(v) {
		if len(w) >= 8 && w != v {
			out = append(out, w)
		}
	}
	return out
}

// redact replaces every occurrence of a secret in s, longest secret first.
func redact(s string, secrets []string) string {
	secrets = slices.Clone(secrets)
	slices.SortStableFunc(secrets, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, redacted)
		}
	}
	return s
}

// quote redacts s and cuts it short, for quoting an answer's value.
func quote(s string, secrets []string) string {
	s = redact(s, secrets)
	if len(s) > 64 {
		cut := 64
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return true
		}
	}
	return false
}

// validHeaderValue rejects what net/http would refuse to send (or could be
// used to split a header): control characters other than tab.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
