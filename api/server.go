package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tokend/tokend/tokens"
)

// MaxBodyBytes bounds every request body.
const MaxBodyBytes = 64 << 10

type server struct {
	b      Backend
	logger hclog.Logger
}

// NewHandler returns the HTTP API.
func NewHandler(b Backend, logger hclog.Logger) http.Handler {
	s := &server{b: b, logger: logger}
	mux := http.NewServeMux()
	route := func(path string, methods map[string]handlerFunc) {
		allow := make([]string, 0, len(methods))
		for m, h := range methods {
			mux.Handle(m+" "+path, s.wrap(h))
			allow = append(allow, m)
		}
		// The method-less pattern is less specific, so it only catches
		// methods the path does not serve.
		allowed := strings.Join(allow, ", ")
		mux.Handle(path, s.wrap(func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Allow", allowed)
			return &statusError{http.StatusMethodNotAllowed, CodeMethodNotAllowed, fmt.Sprintf("%s is not allowed on %s; use %s", r.Method, r.URL.Path, allowed)}
		}))
	}
	route("/v1/pools", map[string]handlerFunc{"GET": s.listPools})
	route("/v1/pools/{pool}", map[string]handlerFunc{"GET": s.getPool, "PUT": s.putPool, "DELETE": s.deletePool})
	route("/v1/pools/{pool}/tokens", map[string]handlerFunc{"GET": s.listTokens, "POST": s.addToken})
	route("/v1/pools/{pool}/tokens/{id}", map[string]handlerFunc{"GET": s.getTokenInfo, "DELETE": s.removeToken})
	route("/v1/pools/{pool}/tokens/{id}/report", map[string]handlerFunc{"POST": s.report})
	route("/v1/pools/{pool}/token", map[string]handlerFunc{"GET": s.fetchToken})
	route("/v1/health", map[string]handlerFunc{"GET": s.health})
	route("/v1/status/leader", map[string]handlerFunc{"GET": s.leader})
	route("/v1/status/peers", map[string]handlerFunc{"GET": s.peers})
	route("/v1/members", map[string]handlerFunc{"GET": s.members})
	mux.Handle("/", s.wrap(func(w http.ResponseWriter, r *http.Request) error {
		return &statusError{http.StatusNotFound, tokens.CodeNotFound, fmt.Sprintf("no such endpoint: %s", r.URL.Path)}
	}))
	return mux
}

type handlerFunc func(w http.ResponseWriter, r *http.Request) error

func (s *server) wrap(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
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
	}
	return http.StatusServiceUnavailable, body
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// decodeBody reads a JSON object into v, rejecting unknown fields, trailing
// data and bodies over MaxBodyBytes.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if dec.Decode(&struct{}{}) != io.EOF {
			return badRequest("request body must hold exactly one JSON object")
		}
		return nil
	}
	var (
		tooLarge *http.MaxBytesError
		syntax   *json.SyntaxError
		typeErr  *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &tooLarge):
		return &statusError{http.StatusRequestEntityTooLarge, CodeBodyTooLarge, fmt.Sprintf("request body is larger than %d bytes", MaxBodyBytes)}
	case errors.Is(err, io.EOF):
		return badRequest("request body is empty: send a JSON object")
	case errors.As(err, &syntax):
		return badRequest(fmt.Sprintf("request body is not valid JSON: %v (at byte %d)", syntax, syntax.Offset))
	case errors.As(err, &typeErr):
		return badRequest(fmt.Sprintf("field %q must be a %s, not a JSON %s", typeErr.Field, jsonType(typeErr.Type.String()), typeErr.Value))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return badRequest(fmt.Sprintf("unknown field %s in request body", strings.TrimPrefix(err.Error(), "json: unknown field ")))
	}
	return badRequest("request body: " + err.Error())
}

func jsonType(goType string) string {
	switch {
	case strings.Contains(goType, "int"), strings.Contains(goType, "float"):
		return "number"
	case strings.Contains(goType, "string"), strings.Contains(goType, "Time"):
		return "string"
	case strings.HasPrefix(goType, "map"), strings.Contains(goType, "api."):
		return "object"
	case strings.HasPrefix(goType, "bool"):
		return "boolean"
	}
	return goType
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
				return badRequest(fmt.Sprintf("unknown query parameter %q: this endpoint takes none", k))
			}
			return badRequest(fmt.Sprintf("unknown query parameter %q: use %s", k, strings.Join(known, ", ")))
		}
	}
	return nil
}

func (s *server) setFreshness(w http.ResponseWriter) {
	f := s.b.Freshness()
	h := w.Header()
	h.Set(HeaderIndex, strconv.FormatUint(f.AppliedIndex, 10))
	h.Set(HeaderKnownLeader, strconv.FormatBool(f.KnownLeader))
	h.Set(HeaderLastContact, strconv.FormatInt(lastContactMS(f.LastContact), 10))
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
