package client

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test shuts its agent and servers down; afterwards no goroutine may
// be left.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// A Raft future that Raft never answers at shutdown (cluster/readindex.go).
		goleak.IgnoreAnyFunction("github.com/tokend/tokend/cluster.awaitFuture.func1"))
}
