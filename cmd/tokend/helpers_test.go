package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/tokend/tokend/agent"
	"github.com/tokend/tokend/internal/testutil"
)

// envRunMain makes the test binary run main() instead of the tests, so a
// test can check what the real command does on exit.
const envRunMain = "TOKEND_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envRunMain) == "1" {
		main()
		os.Exit(0)
	}
	// Every test shuts its agent down; afterwards no goroutine may be left.
	goleak.VerifyTestMain(m,
		// A Raft future that Raft never answers at shutdown (cluster/readindex.go).
		goleak.IgnoreAnyFunction("github.com/tokend/tokend/cluster.awaitFuture.func1"))
}

// startAgent starts a single-node agent that leads its own cluster.
func startAgent(t *testing.T) *agent.Agent {
	t.Helper()
	return testutil.StartAgent(t, nil)
}

// result is what one command run printed and returned.
type result struct {
	stdout, stderr string
	err            error
}

// tokend runs the CLI in-process with args and stdin, the way main does.
func tokend(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := newRootCmd()
	cmd.SetArgs(args)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	err := cmd.Execute()
	return result{out.String(), errOut.String(), err}
}

// mustRun runs the CLI and fails the test if the command fails.
func mustRun(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	r := tokend(t, stdin, args...)
	if r.err != nil {
		t.Fatalf("tokend %s: %v (stderr %q)", strings.Join(args, " "), r.err, r.stderr)
	}
	return r.stdout
}

// mustFail runs the CLI and returns its error, failing the test if the
// command succeeds or the error lacks any of want.
func mustFail(t *testing.T, stdin string, args []string, want ...string) error {
	t.Helper()
	r := tokend(t, stdin, args...)
	if r.err == nil {
		t.Fatalf("tokend %s succeeded, printing %q; want an error", strings.Join(args, " "), r.stdout)
	}
	for _, w := range want {
		if !strings.Contains(r.err.Error(), w) {
			t.Fatalf("tokend %s: error %q does not mention %q", strings.Join(args, " "), r.err, w)
		}
	}
	return r.err
}

// writeFile writes content to name in a new temp dir and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
