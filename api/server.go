package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tokend/tokend/tokens"
)

// MaxBodyBytes bounds every request body.
const MaxBodyBytes = 64 << 10

type server struct {
	b       Backend
	logger  hclog.Logger
	opts    Options
	reports *reportLimiter
}

// endpoint is one method of one route: its handler, who may call it, and
// whether calls are admin actions, which the audit log records.
type endpoint struct {
	h      handlerFunc
	access access
	admin  bool
}

func read(h handlerFunc, a access) endpoint  { return endpoint{h: h, access: a} }
func write(h handlerFunc, a access) endpoint { return endpoint{h: h, access: a, admin: true} }

// NewHandler returns the HTTP API.
func NewHandler(b Backend, logger hclog.Logger, opts Options) http.Handler {
	s := &server{b: b, logger: logger, opts: opts, reports: newReportLimiter(opts.ReportRate, opts.ReportBurst)}
	mux := http.NewServeMux()
	route := func(path string, methods map[string]endpoint) {
		allow := make([]string, 0, len(methods)+1)
		for m, e := range methods {
			mux.Handle(m+" "+path, s.wrap(e))
			allow = append(allow, m)
			if m == http.MethodGet {
				allow = append(allow, http.MethodHead) // GET patterns serve HEAD too
			}
		}
		slices.Sort(allow)
		// The method-less pattern is less specific, so it only catches
		// methods the path does not serve.
		allowed := strings.Join(allow, ", ")
		mux.Handle(path, s.wrap(read(func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Allow", allowed)
			return &statusError{http.StatusMethodNotAllowed, CodeMethodNotAllowed, fmt.Sprintf("%s is not allowed on %s; use %s", r.Method, r.URL.Path, allowed)}
		}, accessOpen)))
	}
	route("/v1/pools", map[string]endpoint{"GET": read(s.listPools, accessAny)})
	route("/v1/pools/{pool}", map[string]endpoint{"GET": read(s.getPool, accessPoolView), "PUT": write(s.putPool, accessPoolWrite), "DELETE": write(s.deletePool, accessPoolWrite)})
	route("/v1/pools/{pool}/tokens", map[string]endpoint{"GET": read(s.listTokens, accessPoolView), "POST": write(s.addToken, accessPoolWrite)})
	route("/v1/pools/{pool}/tokens/{id}", map[string]endpoint{"GET": read(s.getTokenInfo, accessPoolView), "DELETE": write(s.removeToken, accessPoolWrite)})
	route("/v1/pools/{pool}/tokens/{id}/report", map[string]endpoint{"POST": read(s.report, accessPoolReport)})
	route("/v1/pools/{pool}/tokens/{id}/reset", map[string]endpoint{"POST": write(s.resetToken, accessPoolWrite)})
	route("/v1/pools/{pool}/rotate", map[string]endpoint{"POST": write(s.rotate, accessPoolWrite)})
	route("/v1/pools/{pool}/token", map[string]endpoint{"GET": read(s.fetchToken, accessPoolRead)})
	route("/v1/events", map[string]endpoint{"GET": read(s.events, accessClusterRead)})
	route("/v1/metrics", map[string]endpoint{"GET": read(s.metrics, accessClusterRead)})
	route("/v1/alerts", map[string]endpoint{"GET": read(s.alerts, accessClusterRead)})
	route("/v1/health", map[string]endpoint{"GET": read(s.health, accessOpen)})
	route("/v1/status/leader", map[string]endpoint{"GET": read(s.leader, accessClusterRead)})
	route("/v1/status/peers", map[string]endpoint{"GET": read(s.peers, accessClusterRead)})
	route("/v1/members", map[string]endpoint{"GET": read(s.members, accessClusterRead)})
	for path, k := range map[string]keyringRoutes{"/v1/operator/keyring": s.sealingKeyring().routes(), "/v1/operator/gossip-keyring": s.gossipKeyring().routes()} {
		route(path, map[string]endpoint{"GET": read(k.list, accessOperator), "POST": write(k.install, accessOperator)})
		route(path+"/{key}", map[string]endpoint{"DELETE": write(k.remove, accessOperator)})
		route(path+"/{key}/use", map[string]endpoint{"POST": write(k.use, accessOperator)})
	}
	route("/v1/acl/bootstrap", map[string]endpoint{"POST": write(s.aclBootstrap, accessOpen)})
	route("/v1/acl/policies", map[string]endpoint{"GET": read(s.aclPolicies, accessOperator)})
	route("/v1/acl/policies/{name}", map[string]endpoint{"GET": read(s.aclPolicy, accessOperator), "PUT": write(s.aclPolicyApply, accessOperator), "DELETE": write(s.aclPolicyDelete, accessOperator)})
	route("/v1/acl/tokens", map[string]endpoint{"GET": read(s.aclTokens, accessOperator), "POST": write(s.aclTokenCreate, accessOperator)})
	route("/v1/acl/tokens/{accessor}", map[string]endpoint{"GET": read(s.aclToken, accessOperator), "DELETE": write(s.aclTokenDelete, accessOperator)})
	route("/v1/acl/token/self", map[string]endpoint{"GET": read(s.aclTokenSelf, accessAny)})
	route("/v1/audit", map[string]endpoint{"GET": read(s.auditLog, accessOperator)})
	// Saving a backup is audited like a write: it copies the whole state.
	route("/v1/snapshot", map[string]endpoint{"GET": write(s.snapshotSave, accessOperator), "PUT": write(s.snapshotRestore, accessOperator)})
	notFound := s.wrap(read(func(w http.ResponseWriter, r *http.Request) error {
		return &statusError{http.StatusNotFound, tokens.CodeNotFound, fmt.Sprintf("no such endpoint: %s", r.URL.Path)}
	}, accessOpen))
	mux.Handle("/", notFound)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// ServeMux would answer a path such as /v1/pools//x with an HTML
		// redirect, which clients follow as a GET; no endpoint has one.
		if r.URL.Path != cleanPath(r.URL.Path) {
			notFound.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// cleanPath is path.Clean keeping a trailing slash, as ServeMux does.
func cleanPath(p string) string {
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if strings.HasSuffix(p, "/") && np != "/" {
		np += "/"
	}
	return np
}

type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// wrap authenticates and authorizes a request before its handler runs, and
// audits denials and admin actions.
func (s *server) wrap(e endpoint) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.authenticate(r)
		if err == nil {
			err = s.authorize(p, e.access, r)
		}
		if err != nil {
			status, body := errorResponse(err)
			s.audit(r, p, status, body.Code)
			s.writeError(w, r, err)
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), principalKey{}, p))
		if !e.admin {
			if err := e.h(w, r); err != nil {
				s.writeError(w, r, err)
			}
			return
		}
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		err = e.h(rec, r)
		code := ""
		if err != nil {
			var body ErrorBody
			rec.status, body = errorResponse(err)
			code = body.Code
			s.writeError(w, r, err)
		}
		s.audit(r, p, rec.status, code)
	})
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

// statusError is an error the API itself raises, with its status.
type statusError struct {
	status  int
	code    string
	message string
}

func (e *statusError) Error() string { return e.message }

func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, body := errorResponse(err)
	if body.RetryAt != nil {
		secs := int(time.Until(*body.RetryAt).Seconds() + 1)
		w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
	}
	if status >= 500 && body.Code != tokens.CodeNoHealthy && body.Code != tokens.CodeAllCoolingDown && body.Code != tokens.CodePoolEmpty {
		s.logger.Warn("request failed", "method", r.Method, "path", r.URL.Path, "status", status, "code", body.Code, "error", body.Message)
	}
	writeJSON(w, status, ErrorResponse{Error: body})
}

func errorResponse(err error) (int, ErrorBody) {
	var se *statusError
	if errors.As(err, &se) {
		return se.status, ErrorBody{Code: se.code, Message: se.message}
	}
	var te *tokens.Error
	if !errors.As(err, &te) {
		return http.StatusInternalServerError, ErrorBody{Code: CodeInternal, Message: err.Error()}
	}
	body := ErrorBody{Code: te.Code, Message: te.Message}
	if !te.RetryAt.IsZero() {
		t := te.RetryAt.UTC()
		body.RetryAt = &t
	}
	switch {
	case errors.Is(err, tokens.ErrInvalid):
		return http.StatusBadRequest, body
	case errors.Is(err, tokens.ErrNotFound):
		return http.StatusNotFound, body
	case errors.Is(err, tokens.ErrConflict):
		return http.StatusConflict, body
	case errors.Is(err, tokens.ErrUnauthenticated):
		return http.StatusUnauthorized, body
	case errors.Is(err, tokens.ErrPermissionDenied):
		return http.StatusForbidden, body
	case errors.Is(err, tokens.ErrRateLimited):
		return http.StatusTooManyRequests, body
	case errors.Is(err, tokens.ErrInternal):
		return http.StatusInternalServerError, body
	}
	return http.StatusServiceUnavailable, body
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header()["Content-Type"] = headerJSON
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// writeCompactJSON is writeJSON without the indentation.
func writeCompactJSON(w http.ResponseWriter, status int, v any) {
	w.Header()["Content-Type"] = headerJSON
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// decodeBody reads a JSON object into v, rejecting anything but exactly one
// object, unknown fields, and bodies over MaxBodyBytes. Its messages name
// the field at fault and never quote a string value from the body, which
// could be a token value.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return &statusError{http.StatusRequestEntityTooLarge, CodeBodyTooLarge, fmt.Sprintf("request body is larger than %d bytes", MaxBodyBytes)}
	case err != nil:
		return badRequest(fmt.Sprintf("could not read the request body: %v", err))
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	switch {
	case len(trimmed) == 0:
		return badRequest("request body is empty: send a JSON object")
	case trimmed[0] != '{':
		// null would otherwise decode as an empty object.
		return badRequest("request body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err = dec.Decode(v)
	if err == nil {
		if len(bytes.TrimSpace(body[dec.InputOffset():])) != 0 {
			return badRequest("request body must hold exactly one JSON object, with nothing after it")
		}
		return nil
	}
	var (
		syntax  *json.SyntaxError
		typeErr *json.UnmarshalTypeError
	)
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("request body is not valid JSON: it ends before the object is complete")
	case errors.As(err, &syntax):
		return badRequest(fmt.Sprintf("request body is not valid JSON: %v (at byte %d)", syntax, syntax.Offset))
	case errors.As(err, &typeErr) && typeErr.Field == "":
		return badRequest("request body must be a JSON object")
	case errors.As(err, &typeErr):
		if ft := fieldType(v, typeErr.Field); ft != nil && ft.Kind() == reflect.Map && ft.Elem() == typeErr.Type {
			return badRequest(fmt.Sprintf("field %q must be an object whose values are %ss, not one with a JSON %s", typeErr.Field, jsonType(typeErr.Type), typeErr.Value))
		}
		return badRequest(fmt.Sprintf("field %q must be %s, not a JSON %s", typeErr.Field, withArticle(jsonType(typeErr.Type)), typeErr.Value))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return badRequest(fmt.Sprintf("unknown field %s in request body", strings.TrimPrefix(err.Error(), "json: unknown field ")))
	}
	// An UnmarshalJSON method failed, and its error may quote the body.
	// The only such fields are times: find the one at fault.
	if field := badTimeField(body, v); field != "" {
		return badRequest(fmt.Sprintf("%s must be an RFC 3339 time string, such as \"2030-01-02T15:04:05Z\"", field))
	}
	return badRequest("request body does not fit the request: check the type of each field")
}

// badTimeField returns the JSON name of a time field of v whose value in
// body does not decode, or "".
func badTimeField(body []byte, v any) string {
	var fields map[string]json.RawMessage
	if json.Unmarshal(body, &fields) != nil {
		return ""
	}
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return ""
	}
	for _, f := range reflect.VisibleFields(t) {
		if f.Type != reflect.TypeFor[time.Time]() && f.Type != reflect.TypeFor[*time.Time]() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		var tm time.Time
		if raw, ok := fields[name]; ok && tm.UnmarshalJSON(raw) != nil {
			return name
		}
	}
	return ""
}

// jsonType names the JSON type that decodes into t.
func jsonType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Map, reflect.Struct:
		if t == reflect.TypeFor[time.Time]() {
			return "string"
		}
		return "object"
	case reflect.Slice, reflect.Array:
		return "array"
	}
	return t.String()
}

func withArticle(noun string) string {
	if strings.ContainsRune("aeiou", rune(noun[0])) {
		return "an " + noun
	}
	return "a " + noun
}

// fieldType returns the type of the field at a dotted JSON path in v's
// type, or nil.
func fieldType(v any, path string) reflect.Type {
	t := reflect.TypeOf(v)
	for name := range strings.SplitSeq(path, ".") {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return nil
		}
		var found reflect.Type
		for _, f := range reflect.VisibleFields(t) {
			if tag, _, _ := strings.Cut(f.Tag.Get("json"), ","); f.IsExported() && !f.Anonymous && tag == name {
				found = f.Type
				break
			}
		}
		if found == nil {
			return nil
		}
		t = found
	}
	return t
}

func badRequest(msg string) error {
	return &statusError{http.StatusBadRequest, tokens.CodeInvalid, msg}
}

// pathName returns a validated name from the URL path.
func pathName(r *http.Request, key, kind string) (string, error) {
	name := r.PathValue(key)
	if err := tokens.ValidateName(kind, name); err != nil {
		return "", err
	}
	return name, nil
}

// pathTokenID returns a validated token id from the URL path.
func pathTokenID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if !tokens.ValidTokenID(id) {
		return "", badRequest(fmt.Sprintf("token id %q is invalid: it must match %s", truncate(id), tokens.NamePatternString))
	}
	return id, nil
}

// truncate shortens what a client sent before an error message quotes it.
func truncate(s string) string {
	const n = 80
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// onlyParams rejects query parameters a handler does not know, so a typo
// is not silently ignored.
func onlyParams(r *http.Request, known ...string) error {
	for k := range r.URL.Query() {
		found := false
		for _, kn := range known {
			if k == kn {
				found = true
				break
			}
		}
		if !found {
			if len(known) == 0 {
				return badRequest(fmt.Sprintf("unknown query parameter %q: this endpoint takes none", truncate(k)))
			}
			return badRequest(fmt.Sprintf("unknown query parameter %q: use %s", truncate(k), strings.Join(known, ", ")))
		}
	}
	return nil
}

// Header values that never change, shared by every response: the token
// fetch runs on every request, and http.Header.Set allocates a slice per
// value. net/http never modifies a header's value slice.
var (
	headerTrue        = []string{"true"}
	headerFalse       = []string{"false"}
	headerNoStore     = []string{"no-store"}
	headerJSON        = []string{"application/json"}
	headerTextPlain   = []string{"text/plain; charset=utf-8"}
	headerLastContact = http.CanonicalHeaderKey(HeaderLastContact)
	headerIndex       = http.CanonicalHeaderKey(HeaderIndex)
	headerKnownLeader = http.CanonicalHeaderKey(HeaderKnownLeader)
	headerTokenID     = http.CanonicalHeaderKey(HeaderTokenID)
	headerConsistent  = http.CanonicalHeaderKey(HeaderConsistent)
)

// setFreshness sets the freshness headers. Call it before taking the View
// the answer is built from: the state machine publishes a state before its
// index, so the index read first is never newer than the state served, and
// a client may rely on "index >= N" meaning "includes entry N".
func (s *server) setFreshness(w http.ResponseWriter) { s.setFreshnessFrom(w, s.b.Freshness()) }

func (s *server) setFreshnessFrom(w http.ResponseWriter, f Freshness) {
	h := w.Header()
	h[headerIndex] = []string{strconv.FormatUint(f.AppliedIndex, 10)}
	h[headerKnownLeader] = headerFalse
	if f.KnownLeader {
		h[headerKnownLeader] = headerTrue
	}
	h[headerLastContact] = []string{strconv.FormatInt(lastContactMS(f.LastContact), 10)}
}

// consistentParam reports whether the query asks for a consistent read:
// ?consistent or ?consistent=true. Any other value is refused rather than
// read as a local read the client did not ask for.
func consistentParam(q url.Values) (bool, error) {
	vs, ok := q["consistent"]
	if !ok {
		return false, nil
	}
	for _, v := range vs {
		if v != "" && v != "true" {
			return false, badRequest(fmt.Sprintf("consistent %q is not supported: use ?consistent (or ?consistent=true) for a consistent read, or leave it out for a local one", truncate(v)))
		}
	}
	return true, nil
}

// beginRead readies a handler's read of the state. With ?consistent it
// first waits until this agent holds everything the cluster had committed
// when the request arrived, as the leader confirms; either way it sets the
// freshness headers. The handler reads the state after it returns, and
// consistent says whether it asked for a consistent read.
func (s *server) beginRead(w http.ResponseWriter, r *http.Request) (consistent bool, err error) {
	if consistent, err = consistentParam(r.URL.Query()); err != nil {
		return false, err
	}
	if !consistent {
		s.setFreshness(w)
		return false, nil
	}
	confirmed, err := s.b.ConsistentRead(r.Context())
	if err != nil {
		return true, err
	}
	s.setConsistentFreshness(w, s.b.Freshness(), confirmed)
	return true, nil
}

// readView is beginRead and then the View to read: with ?consistent the
// replicated state alone, since this agent's overlay of reports not yet
// committed is no part of what the cluster agreed on.
func (s *server) readView(w http.ResponseWriter, r *http.Request) (View, error) {
	consistent, err := s.beginRead(w, r)
	if err != nil {
		return nil, err
	}
	if consistent {
		return s.b.CommittedView(), nil
	}
	return s.b.View(), nil
}

// setConsistentFreshness sets the freshness headers of a consistent read
// from f, read, as for setFreshness, before the View: the index this agent
// has applied (at least the read index), a known leader, and the time since
// the leader confirmed the read.
func (s *server) setConsistentFreshness(w http.ResponseWriter, f Freshness, confirmed time.Time) {
	h := w.Header()
	h[headerIndex] = []string{strconv.FormatUint(f.AppliedIndex, 10)}
	h[headerKnownLeader] = headerTrue
	h[headerLastContact] = []string{strconv.FormatInt(time.Since(confirmed).Milliseconds(), 10)}
	h[headerConsistent] = headerTrue
}

func lastContactMS(d time.Duration) int64 {
	if d < 0 {
		return -1
	}
	return d.Milliseconds()
}

func setIndex(w http.ResponseWriter, index uint64) {
	w.Header().Set(HeaderIndex, strconv.FormatUint(index, 10))
}
