// Package testutil holds what tokend's tests share: polling waits and an
// in-process cluster builder. Tests wait by polling a condition, never by
// sleeping a fixed time.
package testutil

import (
	"fmt"
	"time"
)

// TB is the part of testing.TB the helpers use.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
	TempDir() string
	Logf(format string, args ...any)
	Name() string
	Failed() bool
}

// WaitFor polls cond every 10 ms until it returns nil or timeout passes,
// then fails the test with cond's last error.
func WaitFor(t TB, timeout time.Duration, cond func() error) {
	t.Helper()
	if err := Poll(timeout, cond); err != nil {
		t.Fatalf("%v", err)
	}
}

// Poll is WaitFor that returns the error instead of failing a test.
func Poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("condition not met after %s: %w", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
