package tokens

import (
	"errors"
	"fmt"
	"io"
	"testing"
)

func TestErrorKinds(t *testing.T) {
	kinds := []error{ErrInvalid, ErrNotFound, ErrConflict, ErrNoLeader, ErrNoEligible, ErrUnavailable}
	tests := []struct {
		code string
		kind error
	}{
		{CodeInvalid, ErrInvalid},
		{CodePoolNotFound, ErrNotFound},
		{CodeTokenNotFound, ErrNotFound},
		{CodeNotFound, ErrNotFound},
		{CodeConflict, ErrConflict},
		{CodeNoLeader, ErrNoLeader},
		{CodeUnavailable, ErrUnavailable},
		{CodePoolEmpty, ErrNoEligible},
		{CodeNoHealthy, ErrNoEligible},
		{CodeAllCoolingDown, ErrNoEligible},
		{"some_future_code", ErrUnavailable},
		{"", ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			e := Errorf(tt.code, "thing %d went wrong", 7)
			if e.Code != tt.code || e.Error() != "thing 7 went wrong" {
				t.Fatalf("Errorf = %+v", e)
			}
			for _, err := range []error{e, fmt.Errorf("context: %w", e)} {
				for _, k := range kinds {
					if got, want := errors.Is(err, k), k == tt.kind; got != want {
						t.Errorf("errors.Is(%v, %v) = %v, want %v", err, k, got, want)
					}
				}
				var as *Error
				if !errors.As(err, &as) || as != e {
					t.Errorf("errors.As(%v) did not find the *Error", err)
				}
				if AsError(err) != e {
					t.Errorf("AsError(%v) did not return the *Error", err)
				}
			}
		})
	}
}

func TestAsErrorWrapsForeignErrors(t *testing.T) {
	e := AsError(io.ErrUnexpectedEOF)
	if e.Code != CodeUnavailable || e.Message != io.ErrUnexpectedEOF.Error() {
		t.Fatalf("AsError(io.ErrUnexpectedEOF) = %+v", e)
	}
	if !errors.Is(e, ErrUnavailable) {
		t.Errorf("errors.Is(AsError(foreign), ErrUnavailable) = false")
	}
}
