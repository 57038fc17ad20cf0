package agent_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every agent a test starts is shut down by its cleanup; afterwards no
// goroutine may be left running.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// A Raft future that Raft never answers at shutdown (cluster/readindex.go).
		goleak.IgnoreAnyFunction("github.com/tokend/tokend/cluster.awaitFuture.func1"))
}
