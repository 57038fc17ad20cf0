package api_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// Every test shuts its agent down; afterwards no goroutine may be left.
// Run with TOKEND_SOCKET_CLIENT set, the test binary is instead a client
// that one request over a unix socket, for tests that need a process with
// another uid (see peercred_test.go).
func TestMain(m *testing.M) {
	if path := os.Getenv(envSocketClient); path != "" {
		os.Exit(socketClient(path, os.Getenv(envSocketRequest)))
	}
	goleak.VerifyTestMain(m,
		// A Raft future that Raft never answers at shutdown (cluster/readindex.go).
		goleak.IgnoreAnyFunction("github.com/tokend/tokend/cluster.awaitFuture.func1"))
}
