package tokens

import (
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// wantInvalidError fails unless err is an invalid_request error whose
// message holds every one of has.
func wantInvalidError(t *testing.T, err error, has ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", has)
	}
	if !errors.Is(err, ErrInvalid) || AsError(err).Code != CodeInvalid {
		t.Fatalf("error %v is not invalid_request", err)
	}
	for _, h := range has {
		if !strings.Contains(err.Error(), h) {
			t.Errorf("error %q does not contain %q", err, h)
		}
	}
}

func execSpec(mods ...func(*ProviderSpec)) ProviderSpec {
	s := ProviderSpec{Type: ProviderExec, Command: []string{"/usr/local/bin/issue-token"}}
	for _, m := range mods {
		m(&s)
	}
	return s
}

func oauth2Spec(mods ...func(*ProviderSpec)) ProviderSpec {
	s := ProviderSpec{Type: ProviderOAuth2, TokenURL: "https://auth.example.com/oauth/token", ClientID: "svc", ClientSecret: Secret("s3cret")}
	for _, m := range mods {
		m(&s)
	}
	return s
}

func oauth2ClientsSpec(mods ...func(*ProviderSpec)) ProviderSpec {
	s := ProviderSpec{Type: ProviderOAuth2, TokenURL: "https://auth.example.com/oauth/token", Clients: []OAuth2Client{
		{ClientID: "one", ClientSecret: Secret("secret-one")},
		{ClientID: "two", ClientSecret: Secret("secret-two")},
	}}
	for _, m := range mods {
		m(&s)
	}
	return s
}

func httpSpec(mods ...func(*ProviderSpec)) ProviderSpec {
	s := ProviderSpec{Type: ProviderHTTP, URL: "http://issuer.internal:8080/issue"}
	for _, m := range mods {
		m(&s)
	}
	return s
}

// specSetters sets each type-specific field of ProviderSpec, by JSON name,
// to a value its own type accepts.
var specSetters = map[string]func(*ProviderSpec){
	"command":          func(s *ProviderSpec) { s.Command = []string{"/bin/issue"} },
	"revoke_command":   func(s *ProviderSpec) { s.RevokeCommand = []string{"/bin/revoke"} },
	"env":              func(s *ProviderSpec) { s.Env = []string{"HOME"} },
	"token_url":        func(s *ProviderSpec) { s.TokenURL = "https://auth.example.com/token" },
	"client_id":        func(s *ProviderSpec) { s.ClientID = "svc" },
	"client_secret":    func(s *ProviderSpec) { s.ClientSecret = Secret("s") },
	"clients":          func(s *ProviderSpec) { s.Clients = []OAuth2Client{{ClientID: "c", ClientSecret: Secret("s")}} },
	"scopes":           func(s *ProviderSpec) { s.Scopes = []string{"read"} },
	"params":           func(s *ProviderSpec) { s.Params = map[string]string{"audience": "api"} },
	"url":              func(s *ProviderSpec) { s.URL = "https://issuer.example.com/issue" },
	"method":           func(s *ProviderSpec) { s.Method = "GET" },
	"headers":          func(s *ProviderSpec) { s.Headers = map[string]Secret{"Authorization": Secret("Bearer x")} },
	"body":             func(s *ProviderSpec) { s.Body = "{}" },
	"token_field":      func(s *ProviderSpec) { s.TokenField = "data.token" },
	"expires_at_field": func(s *ProviderSpec) { s.ExpiresAtField = "data.expires_at" },
	"expires_in_field": func(s *ProviderSpec) { s.ExpiresInField = "data.expires_in" },
	"revoke_url":       func(s *ProviderSpec) { s.RevokeURL = "https://issuer.example.com/revoke" },
}

// specFieldsOf lists the fields each provider type uses.
var specFieldsOf = map[ProviderType][]string{
	ProviderStatic: {},
	ProviderExec:   {"command", "revoke_command", "env"},
	ProviderOAuth2: {"token_url", "client_id", "client_secret", "clients", "scopes", "params"},
	ProviderHTTP:   {"url", "method", "headers", "body", "token_field", "expires_at_field", "expires_in_field", "revoke_url"},
}

func minimalSpec(typ ProviderType) ProviderSpec {
	switch typ {
	case ProviderExec:
		return execSpec()
	case ProviderOAuth2:
		return oauth2Spec()
	case ProviderHTTP:
		return httpSpec()
	}
	return ProviderSpec{Type: typ}
}

// TestSpecSettersCoverEveryField keeps the tables above in step with
// ProviderSpec: every field but type and timeout belongs to exactly one
// provider type.
func TestSpecSettersCoverEveryField(t *testing.T) {
	owners := map[string]int{}
	for _, fields := range specFieldsOf {
		for _, f := range fields {
			owners[f]++
		}
	}
	rt := reflect.TypeFor[ProviderSpec]()
	for i := range rt.NumField() {
		name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
		if name == "type" || name == "timeout" {
			continue
		}
		if specSetters[name] == nil {
			t.Errorf("field %s has no setter in specSetters", name)
		}
		if owners[name] != 1 {
			t.Errorf("field %s belongs to %d provider types in specFieldsOf, want 1", name, owners[name])
		}
	}
	if len(specSetters) != rt.NumField()-2 {
		t.Errorf("specSetters has %d entries for %d fields", len(specSetters), rt.NumField()-2)
	}
	if len(specFieldsOf) != len(ProviderTypes) {
		t.Errorf("specFieldsOf covers %d provider types, want %d", len(specFieldsOf), len(ProviderTypes))
	}
}

func TestProviderSpecValidateAccepts(t *testing.T) {
	tests := []struct {
		name string
		spec ProviderSpec
	}{
		{"static", ProviderSpec{Type: ProviderStatic}},
		{"static with timeout", ProviderSpec{Type: ProviderStatic, Timeout: Duration(time.Second)}},
		{"exec minimal", execSpec()},
		{"exec full", execSpec(func(s *ProviderSpec) {
			s.Command = []string{"/usr/bin/vault", "read", "-field=token", "secret/x", ""}
			s.RevokeCommand = []string{"revoke"}
			s.Env = []string{"HOME", "_X1", "a", "VAULT_ADDR"}
			s.Timeout = Duration(100 * time.Millisecond)
		})},
		{"exec with 64 arguments", execSpec(func(s *ProviderSpec) { s.Command = slices.Repeat([]string{"x"}, 64) })},
		{"exec with a 4096-byte argument", execSpec(func(s *ProviderSpec) { s.Command = []string{"x", strings.Repeat("a", 4096)} })},
		{"oauth2 single client", oauth2Spec()},
		{"oauth2 clients", oauth2ClientsSpec()},
		{"oauth2 100 clients", oauth2ClientsSpec(func(s *ProviderSpec) { s.Clients = clientsN(MaxPoolSize) })},
		{"oauth2 full", oauth2Spec(func(s *ProviderSpec) {
			s.TokenURL = "http://localhost:9000/token"
			s.Scopes = []string{"read", "write:all", "https://api.example.com/.default"}
			s.Params = map[string]string{"audience": "https://api.example.com"}
			s.Timeout = Duration(10 * time.Minute)
		})},
		{"http minimal", httpSpec()},
		{"http full", httpSpec(func(s *ProviderSpec) {
			s.URL = "https://issuer.example.com/v1/tokens?kind=ci"
			s.Method = "PUT"
			s.Headers = map[string]Secret{"Authorization": Secret("Bearer x"), "X-Api-Key": Secret("k"), "x!#$%&'*+-.^_`|~1": Secret("v")}
			s.Body = `{"ttl": "1h"}`
			s.TokenField = "data.token"
			s.ExpiresAtField = "data.expires_at"
			s.RevokeURL = "https://issuer.example.com/v1/revoke"
		})},
		{"http expires_in_field", httpSpec(func(s *ProviderSpec) { s.TokenField = "token"; s.ExpiresInField = "ttl" })},
	}
	for _, m := range []string{"GET", "POST", "PUT", "PATCH"} {
		tests = append(tests, struct {
			name string
			spec ProviderSpec
		}{"http method " + m, httpSpec(func(s *ProviderSpec) { s.Method = m })})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.spec.Validate(); err != nil {
				t.Errorf("Validate = %v, want nil", err)
			}
		})
	}
}

func clientsN(n int) []OAuth2Client {
	out := make([]OAuth2Client, n)
	for i := range out {
		out[i] = OAuth2Client{ClientID: "client-" + string(rune('a'+i/26%26)) + string(rune('a'+i%26)), ClientSecret: Secret("s")}
	}
	return out
}

func TestProviderSpecValidateRejects(t *testing.T) {
	tests := []struct {
		name string
		spec ProviderSpec
		has  []string
	}{
		{"empty type", ProviderSpec{}, []string{`provider type ""`, "static, exec, oauth2, http"}},
		{"unknown type", ProviderSpec{Type: "vault"}, []string{`provider type "vault" is not supported`, "static, exec, oauth2, http"}},
		{"type is case sensitive", ProviderSpec{Type: "Exec", Command: []string{"x"}}, []string{`"Exec"`}},
		{"long type truncated", ProviderSpec{Type: ProviderType(strings.Repeat("x", 100))}, []string{strings.Repeat("x", 40) + "..."}},

		{"negative timeout", execSpec(func(s *ProviderSpec) { s.Timeout = Duration(-time.Second) }), []string{"provider.timeout", "100ms and 10m", "-1s"}},
		{"1ns timeout", execSpec(func(s *ProviderSpec) { s.Timeout = 1 }), []string{"provider.timeout"}},
		{"timeout just under 100ms", execSpec(func(s *ProviderSpec) { s.Timeout = Duration(100*time.Millisecond - 1) }), []string{"provider.timeout"}},
		{"timeout just over 10m", execSpec(func(s *ProviderSpec) { s.Timeout = Duration(10*time.Minute + 1) }), []string{"provider.timeout"}},
		{"static timeout out of range", ProviderSpec{Type: ProviderStatic, Timeout: Duration(time.Hour)}, []string{"provider.timeout"}},

		{"exec without command", ProviderSpec{Type: ProviderExec}, []string{"provider.command is required"}},
		{"exec empty command list", execSpec(func(s *ProviderSpec) { s.Command = []string{} }), []string{"provider.command is required"}},
		{"exec 65 arguments", execSpec(func(s *ProviderSpec) { s.Command = slices.Repeat([]string{"x"}, 65) }), []string{"provider.command", "65 arguments", "at most 64"}},
		{"exec empty program", execSpec(func(s *ProviderSpec) { s.Command = []string{"", "arg"} }), []string{"provider.command", "program name is empty"}},
		{"exec blank program", execSpec(func(s *ProviderSpec) { s.Command = []string{" \t"} }), []string{"provider.command", "program name is empty"}},
		{"exec argument too long", execSpec(func(s *ProviderSpec) { s.Command = []string{"x", strings.Repeat("a", 4097)} }), []string{"provider.command", "too long"}},
		{"exec NUL in program", execSpec(func(s *ProviderSpec) { s.Command = []string{"x\x00y"} }), []string{"provider.command", "NUL"}},
		{"exec NUL in argument", execSpec(func(s *ProviderSpec) { s.Command = []string{"x", "a\x00"} }), []string{"provider.command", "NUL"}},
		{"exec revoke_command 65 arguments", execSpec(func(s *ProviderSpec) { s.RevokeCommand = slices.Repeat([]string{"x"}, 65) }), []string{"provider.revoke_command", "65 arguments"}},
		{"exec revoke_command empty program", execSpec(func(s *ProviderSpec) { s.RevokeCommand = []string{" "} }), []string{"provider.revoke_command", "program name is empty"}},
		{"exec revoke_command NUL", execSpec(func(s *ProviderSpec) { s.RevokeCommand = []string{"r", "\x00"} }), []string{"provider.revoke_command", "NUL"}},
		{"exec env with a dash", execSpec(func(s *ProviderSpec) { s.Env = []string{"HOME", "MY-VAR"} }), []string{"provider.env", `"MY-VAR"`}},
		{"exec env starting with a digit", execSpec(func(s *ProviderSpec) { s.Env = []string{"1X"} }), []string{"provider.env", `"1X"`}},
		{"exec env empty", execSpec(func(s *ProviderSpec) { s.Env = []string{""} }), []string{"provider.env", `""`}},
		{"exec env assignment", execSpec(func(s *ProviderSpec) { s.Env = []string{"A=b"} }), []string{"provider.env", `"A=b"`}},

		{"oauth2 without token_url", oauth2Spec(func(s *ProviderSpec) { s.TokenURL = "" }), []string{"provider.token_url is required"}},
		{"oauth2 token_url not http", oauth2Spec(func(s *ProviderSpec) { s.TokenURL = "ftp://auth.example.com/token" }), []string{"provider.token_url", "http or https"}},
		{"oauth2 token_url without host", oauth2Spec(func(s *ProviderSpec) { s.TokenURL = "https:///token" }), []string{"provider.token_url", "http or https"}},
		{"oauth2 token_url relative", oauth2Spec(func(s *ProviderSpec) { s.TokenURL = "/token" }), []string{"provider.token_url"}},
		{"oauth2 token_url unparsable", oauth2Spec(func(s *ProviderSpec) { s.TokenURL = "http://[::1" }), []string{"provider.token_url"}},
		{"oauth2 no credentials", oauth2Spec(func(s *ProviderSpec) { s.ClientID, s.ClientSecret = "", nil }), []string{"provider.client_id and provider.client_secret are required", "provider.clients"}},
		{"oauth2 client_id without secret", oauth2Spec(func(s *ProviderSpec) { s.ClientSecret = nil }), []string{"client_id and client_secret go together"}},
		{"oauth2 secret without client_id", oauth2Spec(func(s *ProviderSpec) { s.ClientID = "" }), []string{"client_id and client_secret go together"}},
		{"oauth2 single and clients", oauth2ClientsSpec(func(s *ProviderSpec) { s.ClientID = "x" }), []string{"either client_id and client_secret, or clients"}},
		{"oauth2 secret and clients", oauth2ClientsSpec(func(s *ProviderSpec) { s.ClientSecret = Secret("x") }), []string{"either client_id and client_secret, or clients"}},
		{"oauth2 101 clients", oauth2ClientsSpec(func(s *ProviderSpec) { s.Clients = clientsN(MaxPoolSize + 1) }), []string{"provider.clients", "101 entries", "at most 100"}},
		{"oauth2 client without secret", oauth2ClientsSpec(func(s *ProviderSpec) { s.Clients[1].ClientSecret = nil }), []string{"provider.clients[1]", "needs client_id and client_secret"}},
		{"oauth2 client without id", oauth2ClientsSpec(func(s *ProviderSpec) { s.Clients[0].ClientID = "" }), []string{"provider.clients[0]", "needs client_id and client_secret"}},
		{"oauth2 duplicate client", oauth2ClientsSpec(func(s *ProviderSpec) { s.Clients[1].ClientID = "one" }), []string{"provider.clients[1]", `client_id "one" appears twice`}},
		{"oauth2 empty scope", oauth2Spec(func(s *ProviderSpec) { s.Scopes = []string{"read", ""} }), []string{"provider.scopes", `""`}},
		{"oauth2 scope with a space", oauth2Spec(func(s *ProviderSpec) { s.Scopes = []string{"read write"} }), []string{"provider.scopes", `"read write"`}},
		{"oauth2 scope with a tab", oauth2Spec(func(s *ProviderSpec) { s.Scopes = []string{"read\twrite"} }), []string{"provider.scopes"}},
		{"oauth2 scope with a newline", oauth2Spec(func(s *ProviderSpec) { s.Scopes = []string{"read\n"} }), []string{"provider.scopes"}},

		{"http without url", ProviderSpec{Type: ProviderHTTP}, []string{"provider.url is required"}},
		{"http url not http", httpSpec(func(s *ProviderSpec) { s.URL = "file:///etc/passwd" }), []string{"provider.url", "http or https"}},
		{"http url without scheme", httpSpec(func(s *ProviderSpec) { s.URL = "issuer.example.com/issue" }), []string{"provider.url", "http or https"}},
		{"http revoke_url bad", httpSpec(func(s *ProviderSpec) { s.RevokeURL = "mailto:x@example.com" }), []string{"provider.revoke_url", "http or https"}},
		{"http method DELETE", httpSpec(func(s *ProviderSpec) { s.Method = "DELETE" }), []string{"provider.method", `"DELETE"`, "GET, POST, PUT or PATCH"}},
		{"http method lower case", httpSpec(func(s *ProviderSpec) { s.Method = "post" }), []string{"provider.method", `"post"`}},
		{"http header with a space", httpSpec(func(s *ProviderSpec) { s.Headers = map[string]Secret{"X Key": Secret("v")} }), []string{"provider.headers", `"X Key"`, "not a header name"}},
		{"http header with a colon", httpSpec(func(s *ProviderSpec) { s.Headers = map[string]Secret{"X-Key:": Secret("v")} }), []string{"provider.headers"}},
		{"http header empty", httpSpec(func(s *ProviderSpec) { s.Headers = map[string]Secret{"": Secret("v")} }), []string{"provider.headers", `""`}},
		{"http header non-ASCII", httpSpec(func(s *ProviderSpec) { s.Headers = map[string]Secret{"X-Clé": Secret("v")} }), []string{"provider.headers"}},
		{"http header DEL", httpSpec(func(s *ProviderSpec) { s.Headers = map[string]Secret{"X\x7f": Secret("v")} }), []string{"provider.headers"}},
		{"http token_field empty segment", httpSpec(func(s *ProviderSpec) { s.TokenField = "data..token" }), []string{"provider.token_field", `"data..token"`, "dotted field path"}},
		{"http token_field leading dot", httpSpec(func(s *ProviderSpec) { s.TokenField = ".token" }), []string{"provider.token_field"}},
		{"http token_field trailing dot", httpSpec(func(s *ProviderSpec) { s.TokenField = "token." }), []string{"provider.token_field"}},
		{"http expires_at_field bad", httpSpec(func(s *ProviderSpec) { s.ExpiresAtField = "." }), []string{"provider.expires_at_field"}},
		{"http expires_in_field bad", httpSpec(func(s *ProviderSpec) { s.ExpiresInField = "a..b" }), []string{"provider.expires_in_field"}},
		{"http both expiry fields", httpSpec(func(s *ProviderSpec) { s.ExpiresAtField = "exp"; s.ExpiresInField = "ttl" }), []string{"expires_at_field or expires_in_field, not both"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantInvalidError(t, tt.spec.Validate(), tt.has...)
		})
	}
}

// TestProviderSpecValidateRejectsForeignFields sets, on a valid spec of each
// type, every field that belongs to another type.
func TestProviderSpecValidateRejectsForeignFields(t *testing.T) {
	for _, typ := range ProviderTypes {
		for field, set := range specSetters {
			if slices.Contains(specFieldsOf[typ], field) {
				continue
			}
			t.Run(string(typ)+"/"+field, func(t *testing.T) {
				s := minimalSpec(typ)
				set(&s)
				wantInvalidError(t, s.Validate(), "provider."+field+" does not apply to provider type "+string(typ))
			})
		}
	}
	// The message the documentation quotes.
	s := execSpec(specSetters["url"])
	if err := s.Validate(); err == nil || err.Error() != "provider.url does not apply to provider type exec" {
		t.Errorf("Validate = %v, want %q", err, "provider.url does not apply to provider type exec")
	}
}

// TestProviderSpecValidateOwnFields sets each field a type uses on its
// minimal spec: none is refused as foreign.
func TestProviderSpecValidateOwnFields(t *testing.T) {
	for _, typ := range ProviderTypes {
		for _, field := range specFieldsOf[typ] {
			t.Run(string(typ)+"/"+field, func(t *testing.T) {
				s := minimalSpec(typ)
				specSetters[field](&s)
				if field == "clients" {
					s.ClientID, s.ClientSecret = "", nil
				}
				if err := s.Validate(); err != nil {
					t.Errorf("Validate = %v, want nil", err)
				}
			})
		}
	}
}

// TestProviderSpecValidateEmptyForeignFieldsAllowed checks that empty but
// non-nil values of another type's fields do not count as set.
func TestProviderSpecValidateEmptyForeignFieldsAllowed(t *testing.T) {
	s := ProviderSpec{
		Type:          ProviderStatic,
		Command:       []string{},
		Env:           []string{},
		ClientSecret:  Secret{},
		Clients:       []OAuth2Client{},
		Scopes:        []string{},
		Params:        map[string]string{},
		Headers:       map[string]Secret{},
		RevokeCommand: []string{},
	}
	if err := s.Validate(); err != nil {
		t.Errorf("Validate = %v, want nil", err)
	}
}

func TestProviderSpecValidateTimeoutBounds(t *testing.T) {
	for _, typ := range ProviderTypes {
		for _, tt := range []struct {
			d  time.Duration
			ok bool
		}{
			{0, true},
			{100 * time.Millisecond, true},
			{30 * time.Second, true},
			{10 * time.Minute, true},
			{-1, false},
			{1, false},
			{100*time.Millisecond - 1, false},
			{10*time.Minute + 1, false},
		} {
			s := minimalSpec(typ)
			s.Timeout = Duration(tt.d)
			err := s.Validate()
			if tt.ok && err != nil {
				t.Errorf("%s timeout %s: Validate = %v, want nil", typ, tt.d, err)
			}
			if !tt.ok {
				wantInvalidError(t, err, "provider.timeout must be between 100ms and 10m")
			}
		}
	}
}

// TestProviderSpecValidateHeadersDeterministic checks that a spec with
// several bad headers is rejected with the same message every time: the
// FSM validates on every agent.
func TestProviderSpecValidateHeadersDeterministic(t *testing.T) {
	s := httpSpec(func(s *ProviderSpec) {
		s.Headers = map[string]Secret{}
		for _, k := range []string{"Good", "z bad", "y bad", "b bad", "c bad", "a bad", "x bad", "d bad"} {
			s.Headers[k] = Secret("v")
		}
	})
	for range 100 {
		err := s.Validate()
		wantInvalidError(t, err)
		if want := `provider.headers: "a bad" is not a header name`; err.Error() != want {
			t.Fatalf("Validate = %q, want %q", err, want)
		}
	}
}

func TestProviderSpecIssuesAndCallTimeout(t *testing.T) {
	for _, typ := range ProviderTypes {
		if got, want := (ProviderSpec{Type: typ}).Issues(), typ != ProviderStatic; got != want {
			t.Errorf("%s: Issues = %v, want %v", typ, got, want)
		}
	}
	for _, tt := range []struct {
		timeout Duration
		want    time.Duration
	}{
		{0, DefaultProviderTimeout},
		{Duration(-time.Second), DefaultProviderTimeout},
		{Duration(time.Second), time.Second},
		{Duration(10 * time.Minute), 10 * time.Minute},
	} {
		if got := (ProviderSpec{Type: ProviderExec, Timeout: tt.timeout}).CallTimeout(); got != tt.want {
			t.Errorf("CallTimeout with timeout %s = %s, want %s", tt.timeout, got, tt.want)
		}
	}
	if DefaultProviderTimeout != 30*time.Second {
		t.Errorf("DefaultProviderTimeout = %s, want 30s", DefaultProviderTimeout)
	}
}

// cloneSpec deep-copies the parts of s that Redacted touches.
func cloneSpec(s ProviderSpec) ProviderSpec {
	c := s
	c.ClientSecret = slices.Clone(s.ClientSecret)
	if s.Clients != nil {
		c.Clients = make([]OAuth2Client, len(s.Clients))
		for i, cl := range s.Clients {
			c.Clients[i] = OAuth2Client{ClientID: cl.ClientID, ClientSecret: slices.Clone(cl.ClientSecret)}
		}
	}
	if s.Headers != nil {
		c.Headers = make(map[string]Secret, len(s.Headers))
		for k, v := range s.Headers {
			c.Headers[k] = slices.Clone(v)
		}
	}
	c.Command = slices.Clone(s.Command)
	c.Scopes = slices.Clone(s.Scopes)
	c.Params = maps.Clone(s.Params)
	return c
}

func TestProviderSpecRedacted(t *testing.T) {
	orig := ProviderSpec{
		Type:         ProviderOAuth2,
		Timeout:      Duration(time.Second),
		TokenURL:     "https://auth.example.com/token",
		ClientID:     "svc",
		ClientSecret: Secret("top-level-secret"),
		Clients: []OAuth2Client{
			{ClientID: "one", ClientSecret: Secret("client-secret-one")},
			{ClientID: "two", ClientSecret: Secret("client-secret-two")},
		},
		Scopes:  []string{"read"},
		Params:  map[string]string{"audience": "api"},
		Headers: map[string]Secret{"Authorization": Secret("Bearer header-secret"), "X-Api-Key": Secret("key-secret")},
		URL:     "https://issuer.example.com/issue",
	}
	before := cloneSpec(orig)
	clientsArray := &orig.Clients[0]

	red := orig.Redacted()

	if red.ClientSecret != nil {
		t.Errorf("Redacted ClientSecret = %q, want nil", red.ClientSecret.Reveal())
	}
	if len(red.Clients) != 2 {
		t.Fatalf("Redacted has %d clients, want 2", len(red.Clients))
	}
	for i, c := range red.Clients {
		if c.ClientID != before.Clients[i].ClientID {
			t.Errorf("Redacted client %d id = %q, want %q", i, c.ClientID, before.Clients[i].ClientID)
		}
		if c.ClientSecret != nil {
			t.Errorf("Redacted client %d secret = %q, want nil", i, c.ClientSecret.Reveal())
		}
	}
	if got := slices.Sorted(maps.Keys(red.Headers)); !slices.Equal(got, []string{"Authorization", "X-Api-Key"}) {
		t.Errorf("Redacted header names = %q, want Authorization and X-Api-Key", got)
	}
	for k, v := range red.Headers {
		if v != nil {
			t.Errorf("Redacted header %s = %q, want nil", k, v.Reveal())
		}
	}
	// What is not secret stays.
	if red.Type != orig.Type || red.Timeout != orig.Timeout || red.TokenURL != orig.TokenURL || red.ClientID != orig.ClientID ||
		red.URL != orig.URL || !slices.Equal(red.Scopes, orig.Scopes) || !maps.Equal(red.Params, orig.Params) {
		t.Errorf("Redacted changed non-secret fields: %+v", red)
	}
	b, err := json.Marshal(red)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"top-level-secret", "client-secret-one", "client-secret-two", "header-secret", "key-secret"} {
		if strings.Contains(string(b), secret) || strings.Contains(string(b), b64(secret)) {
			t.Errorf("Redacted JSON holds %q: %s", secret, b)
		}
	}

	// The original is untouched, down to its slices and maps.
	if !reflect.DeepEqual(orig, before) {
		t.Errorf("Redacted modified the original:\n got %#v\nwant %#v", orig, before)
	}
	if &orig.Clients[0] != clientsArray {
		t.Errorf("Redacted replaced the original's Clients slice")
	}
	// And the copy shares nothing with it that could be written through.
	red.Clients[0].ClientID = "changed"
	red.Headers["Authorization"] = Secret("changed")
	red.Headers["New"] = nil
	if !reflect.DeepEqual(orig, before) {
		t.Errorf("writing to the redacted copy changed the original: %#v", orig)
	}
}

func b64(s string) string {
	b, _ := json.Marshal([]byte(s))
	return strings.Trim(string(b), `"`)
}

func TestProviderSpecRedactedNil(t *testing.T) {
	s := execSpec()
	red := s.Redacted()
	if red.Clients != nil || red.Headers != nil || red.ClientSecret != nil {
		t.Errorf("Redacted of a spec without secrets = %+v, want nil Clients, Headers and ClientSecret", red)
	}
	if !reflect.DeepEqual(red, s) {
		t.Errorf("Redacted = %+v, want %+v", red, s)
	}
	empty := httpSpec(func(s *ProviderSpec) { s.Headers = map[string]Secret{} })
	if red := empty.Redacted(); red.Headers == nil || len(red.Headers) != 0 {
		t.Errorf("Redacted of empty headers = %#v, want an empty map", red.Headers)
	}
}

func TestPoolNormalizeRotation(t *testing.T) {
	base := func(mods ...func(*Pool)) Pool {
		p := Pool{Name: "p", Provider: execSpec()}
		for _, m := range mods {
			m(&p)
		}
		return p
	}
	rot := func(f func(*RotationPolicy)) func(*Pool) { return func(p *Pool) { f(&p.Rotation) } }
	d := func(v time.Duration) Duration { return Duration(v) }

	accepts := []struct {
		name string
		pool Pool
	}{
		{"defaults", base()},
		{"size 1", base(poolSize(1))},
		{"size 100", base(poolSize(MaxPoolSize))},
		{"static without size", Pool{Name: "p"}},
		{"every duration at its maximum", base(rot(func(r *RotationPolicy) {
			*r = RotationPolicy{MaxAge: d(365 * 24 * time.Hour), RenewBefore: d(365 * 24 * time.Hour), Grace: d(7 * 24 * time.Hour),
				RetryMin: d(time.Hour), RetryMax: d(24 * time.Hour), AlertBefore: d(365 * 24 * time.Hour)}
		}))},
		{"retry_min equals retry_max", base(rot(func(r *RotationPolicy) { r.RetryMin, r.RetryMax = d(time.Minute), d(time.Minute) }))},
		{"retry_min under the default max", base(rot(func(r *RotationPolicy) { r.RetryMin = d(5 * time.Minute) }))},
		{"retry_max over the default min", base(rot(func(r *RotationPolicy) { r.RetryMax = d(time.Second) }))},
		{"min_active 100", base(rot(func(r *RotationPolicy) { r.MinActive = MaxPoolSize }))},
		{"static with rotation policy", Pool{Name: "p", Rotation: RotationPolicy{MaxAge: d(24 * time.Hour)}}},
	}
	for _, tt := range accepts {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.pool
			if err := p.Normalize(); err != nil {
				t.Errorf("Normalize = %v, want nil", err)
			}
		})
	}

	rejects := []struct {
		name string
		pool Pool
		has  []string
	}{
		{"negative size", base(poolSize(-1)), []string{"size must be between 1 and 100, got -1"}},
		{"size 101", base(poolSize(MaxPoolSize + 1)), []string{"size must be between 1 and 100, got 101"}},
		{"size on static", Pool{Name: "p", Size: 2}, []string{"size applies only to a provider that issues tokens, not to static"}},
		{"size on explicit static", Pool{Name: "p", Provider: ProviderSpec{Type: ProviderStatic}, Size: 1}, []string{"size applies only", "static"}},
		{"negative max_age", base(rot(func(r *RotationPolicy) { r.MaxAge = -1 })), []string{"rotation.max_age must be between 0s and"}},
		{"negative renew_before", base(rot(func(r *RotationPolicy) { r.RenewBefore = d(-time.Second) })), []string{"rotation.renew_before", "-1s"}},
		{"negative grace", base(rot(func(r *RotationPolicy) { r.Grace = d(-time.Second) })), []string{"rotation.grace"}},
		{"negative retry_min", base(rot(func(r *RotationPolicy) { r.RetryMin = d(-time.Second) })), []string{"rotation.retry_min must be between"}},
		{"negative retry_max", base(rot(func(r *RotationPolicy) { r.RetryMax = d(-time.Second) })), []string{"rotation.retry_max must be between"}},
		{"negative alert_before", base(rot(func(r *RotationPolicy) { r.AlertBefore = d(-time.Second) })), []string{"rotation.alert_before"}},
		{"max_age over a year", base(rot(func(r *RotationPolicy) { r.MaxAge = d(365*24*time.Hour + 1) })), []string{"rotation.max_age", "8760h0m0s"}},
		{"renew_before over a year", base(rot(func(r *RotationPolicy) { r.RenewBefore = d(365*24*time.Hour + 1) })), []string{"rotation.renew_before"}},
		{"grace over a week", base(rot(func(r *RotationPolicy) { r.Grace = d(7*24*time.Hour + 1) })), []string{"rotation.grace", "168h0m0s"}},
		{"retry_min over an hour", base(rot(func(r *RotationPolicy) { r.RetryMin, r.RetryMax = d(time.Hour+1), d(2*time.Hour) })), []string{"rotation.retry_min must be between 0s and 1h0m0s"}},
		{"retry_max over a day", base(rot(func(r *RotationPolicy) { r.RetryMax = d(24*time.Hour + 1) })), []string{"rotation.retry_max must be between 0s and 24h0m0s"}},
		{"alert_before over a year", base(rot(func(r *RotationPolicy) { r.AlertBefore = d(365*24*time.Hour + 1) })), []string{"rotation.alert_before"}},
		{"retry_min over retry_max", base(rot(func(r *RotationPolicy) { r.RetryMin, r.RetryMax = d(time.Minute), d(30*time.Second) })), []string{"rotation.retry_min (1m0s) must not exceed rotation.retry_max (30s)"}},
		{"retry_min over the default retry_max", base(rot(func(r *RotationPolicy) { r.RetryMin = d(10 * time.Minute) })), []string{"rotation.retry_min (10m0s) must not exceed rotation.retry_max (5m0s)"}},
		{"retry_max under the default retry_min", base(rot(func(r *RotationPolicy) { r.RetryMax = d(500 * time.Millisecond) })), []string{"rotation.retry_min (1s) must not exceed rotation.retry_max (500ms)"}},
		{"negative min_active", base(rot(func(r *RotationPolicy) { r.MinActive = -1 })), []string{"rotation.min_active must be between 0 and 100, got -1"}},
		{"min_active 101", base(rot(func(r *RotationPolicy) { r.MinActive = MaxPoolSize + 1 })), []string{"rotation.min_active", "got 101"}},
		{"provider checked through the pool", Pool{Name: "p", Provider: ProviderSpec{Type: ProviderExec}}, []string{"provider.command is required"}},
	}
	for _, tt := range rejects {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.pool
			wantInvalidError(t, p.Normalize(), tt.has...)
		})
	}
}

func TestHealthCheckValidate(t *testing.T) {
	hc := func(mods ...func(*HealthCheck)) HealthCheck {
		c := HealthCheck{URL: "https://api.example.com/user"}
		for _, m := range mods {
			m(&c)
		}
		return c
	}
	d := func(v time.Duration) Duration { return Duration(v) }

	accepts := []struct {
		name  string
		check HealthCheck
	}{
		{"minimal", hc()},
		{"http", hc(func(c *HealthCheck) { c.URL = "http://localhost:8080/health" })},
		{"full", hc(func(c *HealthCheck) {
			c.Method, c.Header, c.Format = "POST", "X-Api-Key", TokenPlaceholder
			c.ExpectStatus = []int{200, 204}
			c.Interval, c.Timeout = d(30*time.Second), d(2*time.Second)
			c.RateLimitRemainingHeader, c.RateLimitResetHeader = "X-RateLimit-Remaining", "X-RateLimit-Reset"
		})},
		{"GET", hc(func(c *HealthCheck) { c.Method = "GET" })},
		{"HEAD", hc(func(c *HealthCheck) { c.Method = "HEAD" })},
		{"format with text around the token", hc(func(c *HealthCheck) { c.Format = "token {{token}}; v=2" })},
		{"status bounds", hc(func(c *HealthCheck) { c.ExpectStatus = []int{100, 599} })},
		{"interval bounds low", hc(func(c *HealthCheck) { c.Interval = d(100 * time.Millisecond) })},
		{"interval bounds high", hc(func(c *HealthCheck) { c.Interval = d(24 * time.Hour) })},
		{"timeout bounds low", hc(func(c *HealthCheck) { c.Timeout = d(10 * time.Millisecond) })},
		{"timeout bounds high", hc(func(c *HealthCheck) { c.Timeout = d(time.Minute) })},
	}
	for _, tt := range accepts {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.check.Validate(); err != nil {
				t.Errorf("Validate = %v, want nil", err)
			}
		})
	}

	rejects := []struct {
		name  string
		check HealthCheck
		has   []string
	}{
		{"no URL", HealthCheck{}, []string{"health_check.url is required"}},
		{"ftp URL", hc(func(c *HealthCheck) { c.URL = "ftp://example.com/x" }), []string{"health_check.url", "http or https"}},
		{"URL without host", hc(func(c *HealthCheck) { c.URL = "https://" }), []string{"health_check.url"}},
		{"URL without scheme", hc(func(c *HealthCheck) { c.URL = "api.example.com/user" }), []string{"health_check.url"}},
		{"method PUT", hc(func(c *HealthCheck) { c.Method = "PUT" }), []string{"health_check.method", `"PUT"`, "GET, HEAD or POST"}},
		{"method lower case", hc(func(c *HealthCheck) { c.Method = "get" }), []string{"health_check.method"}},
		{"header with a space", hc(func(c *HealthCheck) { c.Header = "X Key" }), []string{"health_check.header", `"X Key"`, "not a header name"}},
		{"header with a colon", hc(func(c *HealthCheck) { c.Header = "Authorization:" }), []string{"health_check.header"}},
		{"format without the token", hc(func(c *HealthCheck) { c.Format = "Bearer token" }), []string{"health_check.format must contain {{token}}"}},
		{"format with a malformed placeholder", hc(func(c *HealthCheck) { c.Format = "Bearer {{ token }}" }), []string{"health_check.format"}},
		{"status 99", hc(func(c *HealthCheck) { c.ExpectStatus = []int{200, 99} }), []string{"health_check.expect_status", "99"}},
		{"status 600", hc(func(c *HealthCheck) { c.ExpectStatus = []int{600} }), []string{"health_check.expect_status", "600"}},
		{"status 0", hc(func(c *HealthCheck) { c.ExpectStatus = []int{0} }), []string{"health_check.expect_status"}},
		{"interval too short", hc(func(c *HealthCheck) { c.Interval = d(100*time.Millisecond - 1) }), []string{"health_check.interval must be between 100ms and 24h"}},
		{"interval too long", hc(func(c *HealthCheck) { c.Interval = d(24*time.Hour + 1) }), []string{"health_check.interval"}},
		{"interval negative", hc(func(c *HealthCheck) { c.Interval = d(-time.Minute) }), []string{"health_check.interval", "-1m0s"}},
		{"timeout too short", hc(func(c *HealthCheck) { c.Timeout = d(10*time.Millisecond - 1) }), []string{"health_check.timeout must be between 10ms and 1m"}},
		{"timeout too long", hc(func(c *HealthCheck) { c.Timeout = d(time.Minute + 1) }), []string{"health_check.timeout"}},
		{"timeout negative", hc(func(c *HealthCheck) { c.Timeout = d(-time.Second) }), []string{"health_check.timeout"}},
		{"remaining header", hc(func(c *HealthCheck) { c.RateLimitRemainingHeader = "X Remaining" }), []string{"health_check.rate_limit_remaining_header", `"X Remaining"`}},
		{"reset header", hc(func(c *HealthCheck) { c.RateLimitResetHeader = "X-Reset@" }), []string{"health_check.rate_limit_reset_header", `"X-Reset@"`}},
	}
	for _, tt := range rejects {
		t.Run(tt.name, func(t *testing.T) {
			wantInvalidError(t, tt.check.Validate(), tt.has...)
		})
	}

	t.Run("through Pool.Normalize", func(t *testing.T) {
		p := Pool{Name: "p", HealthCheck: &HealthCheck{URL: "https://api.example.com", Method: "DELETE"}}
		wantInvalidError(t, p.Normalize(), "health_check.method")
		p = Pool{Name: "p", HealthCheck: &HealthCheck{URL: "https://api.example.com"}}
		if err := p.Normalize(); err != nil {
			t.Errorf("Normalize = %v, want nil", err)
		}
	})
}

func TestHealthCheckWithDefaults(t *testing.T) {
	got := HealthCheck{URL: "https://api.example.com"}.WithDefaults()
	want := HealthCheck{
		URL:          "https://api.example.com",
		Method:       "GET",
		Header:       "Authorization",
		Format:       "Bearer {{token}}",
		ExpectStatus: []int{200},
		Interval:     Duration(time.Minute),
		Timeout:      Duration(5 * time.Second),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("WithDefaults = %+v, want %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("the defaults do not validate: %v", err)
	}

	set := HealthCheck{
		URL:                      "http://x.example.com",
		Method:                   "HEAD",
		Header:                   "X-Key",
		Format:                   "{{token}}",
		ExpectStatus:             []int{204, 200},
		Interval:                 Duration(time.Second),
		Timeout:                  Duration(time.Second),
		RateLimitRemainingHeader: "X-Remaining",
		RateLimitResetHeader:     "X-Reset",
	}
	before := set
	before.ExpectStatus = slices.Clone(set.ExpectStatus)
	if got := set.WithDefaults(); !reflect.DeepEqual(got, before) {
		t.Errorf("WithDefaults changed set fields: %+v, want %+v", got, before)
	}
	if !reflect.DeepEqual(set, before) {
		t.Errorf("WithDefaults modified its receiver: %+v", set)
	}
	// An empty, non-nil list of statuses takes the default too.
	if got := (HealthCheck{ExpectStatus: []int{}}).WithDefaults().ExpectStatus; !slices.Equal(got, []int{200}) {
		t.Errorf("WithDefaults of empty ExpectStatus = %v, want [200]", got)
	}
}
