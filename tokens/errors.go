package tokens

import (
	"errors"
	"fmt"
	"time"
)

// Error kinds. Callers compare with errors.Is; the API maps each kind to an
// HTTP status.
var (
	ErrInvalid     = errors.New("invalid request")
	ErrNotFound    = errors.New("not found")
	ErrConflict    = errors.New("conflict")
	ErrNoLeader    = errors.New("no cluster leader")
	ErrNoEligible  = errors.New("no eligible token")
	ErrUnavailable = errors.New("unavailable")
	// ErrInternal is a fault in tokend or its data, not in the request.
	ErrInternal = errors.New("internal error")
	// ErrUnauthenticated is a request without a valid ACL token;
	// ErrPermissionDenied one whose token does not grant what it asks.
	ErrUnauthenticated  = errors.New("unauthenticated")
	ErrPermissionDenied = errors.New("permission denied")
	ErrRateLimited      = errors.New("rate limited")
)

// Machine-readable error codes, stable across releases and carried over the
// wire between agents.
const (
	CodeInvalid        = "invalid_request"
	CodePoolNotFound   = "pool_not_found"
	CodeTokenNotFound  = "token_not_found"
	CodeNotFound       = "not_found"
	CodeConflict       = "conflict"
	CodeNoLeader       = "no_leader"
	CodeUnavailable    = "unavailable"
	CodePoolEmpty      = "pool_empty"
	CodeNoHealthy      = "no_healthy_token"
	CodeAllCoolingDown = "all_cooling_down"
	// CodeKeyMissing: a sealed value needs a key this agent lacks.
	CodeKeyMissing = "key_missing"
	// CodeSealBroken: a sealed value does not open with its key.
	CodeSealBroken       = "seal_broken"
	CodeUnauthenticated  = "unauthenticated"
	CodePermissionDenied = "permission_denied"
	CodeRateLimited      = "rate_limited"
)

var kindOfCode = map[string]error{
	CodeInvalid:          ErrInvalid,
	CodePoolNotFound:     ErrNotFound,
	CodeTokenNotFound:    ErrNotFound,
	CodeNotFound:         ErrNotFound,
	CodeConflict:         ErrConflict,
	CodeNoLeader:         ErrNoLeader,
	CodeUnavailable:      ErrUnavailable,
	CodePoolEmpty:        ErrNoEligible,
	CodeNoHealthy:        ErrNoEligible,
	CodeAllCoolingDown:   ErrNoEligible,
	CodeKeyMissing:       ErrUnavailable,
	CodeSealBroken:       ErrInternal,
	CodeUnauthenticated:  ErrUnauthenticated,
	CodePermissionDenied: ErrPermissionDenied,
	CodeRateLimited:      ErrRateLimited,
}

// Error is an error with a stable code and a message meant for the user. It
// never carries a secret.
type Error struct {
	Code    string
	Message string
	// RetryAt is set for all_cooling_down: the earliest time a token leaves
	// cooldown.
	RetryAt time.Time
}

func (e *Error) Error() string { return e.Message }

// Unwrap makes errors.Is(err, ErrNotFound) and friends work.
func (e *Error) Unwrap() error {
	if k, ok := kindOfCode[e.Code]; ok {
		return k
	}
	return ErrUnavailable
}

// Errorf returns an *Error with the given code.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// AsError returns err as an *Error, wrapping unknown errors as unavailable.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: CodeUnavailable, Message: err.Error()}
}

func invalidf(format string, args ...any) *Error { return Errorf(CodeInvalid, format, args...) }
