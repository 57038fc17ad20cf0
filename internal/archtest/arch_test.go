// Package archtest enforces the import graph of DESIGN.md §2: imports point
// one way, cmd → agent → {api, cluster, fsm, tokens}, api → tokens,
// fsm → tokens, cluster → tokens (error sentinels), tokens → standard
// library only. The CLI also uses tokens' validation rules directly, so that
// it rejects bad input before it reaches an agent, and reads HCL pool files
// with hashicorp/hcl (and its value library, go-cty). internal/certgen,
// standard library only, makes certificates for `tokend tls` and the tests.
// e2e/chaos, the fault-injection harness shared by the process and
// container suites, talks to agents over the API only, and checks histories
// with porcupine.
//
// The load driver under bench/ is a module of its own (so that etcd's client
// stays out of tokend's go.mod); of tokend it uses only api's request types,
// and etcd's client only where it starts and drives etcd.
//
// third_party/ holds upstream code tokend carries a change to (hashicorp/raft)
// and is not walked: it is its own module, imported as the upstream one.
package archtest

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/tokend/tokend"

// allowed lists, for each package, the packages of this module and the
// third-party modules its non-test files may import. The standard library is
// always allowed.
var allowed = map[string][]string{
	"tokens":                 {},
	"fsm":                    {"tokens", "github.com/hashicorp/go-hclog"},
	"cluster":                {"tokens", "internal/atomicfile", "github.com/hashicorp/go-hclog", "github.com/hashicorp/raft", "github.com/hashicorp/raft-boltdb/v2", "github.com/hashicorp/raft-wal", "github.com/hashicorp/memberlist", "golang.org/x/sys/unix"},
	"api":                    {"tokens", "github.com/hashicorp/go-hclog", "golang.org/x/time/rate"},
	"api/client":             {"api"},
	"agent":                  {"api", "cluster", "internal/atomicfile", "fsm", "tokens", "tokens/provider/exec", "tokens/provider/http", "tokens/provider/oauth2", "github.com/hashicorp/go-hclog", "github.com/prometheus/client_golang", "golang.org/x/sys/unix"},
	"tokens/provider/exec":   {"tokens"},
	"tokens/provider/http":   {"tokens"},
	"tokens/provider/oauth2": {"tokens", "golang.org/x/oauth2"},
	"cmd/tokend":             {"agent", "api", "api/client", "tokens", "internal/certgen", "internal/atomicfile", "github.com/hashicorp/go-hclog", "github.com/hashicorp/hcl/v2", "github.com/spf13/cobra", "github.com/spf13/pflag", "github.com/zclconf/go-cty", "golang.org/x/sys/unix"},
	"internal/testutil":      {"agent", "api", "cluster", "tokens", "internal/certgen", "github.com/hashicorp/go-hclog"},
	"internal/certgen":       {},
	"internal/atomicfile":    {},
	"internal/archtest":      {},
	"e2e":                    {"api", "api/client", "internal/testutil"},
	"e2e/chaos":              {"api", "api/client", "internal/testutil", "github.com/anishathalye/porcupine"},

	"bench/cmd/tokend-bench": {"api", "bench/internal/floor", "bench/internal/load", "bench/internal/procfs", "bench/internal/procs", "bench/internal/stats", "bench/internal/suite", "bench/internal/targets"},
	"bench/internal/stats":   {},
	"bench/internal/load":    {"bench/internal/stats"},
	"bench/internal/suite":   {"bench/internal/load", "bench/internal/stats"},
	"bench/internal/floor":   {},
	"bench/internal/procfs":  {},
	"bench/internal/procs":   {"api", "go.etcd.io/etcd/client/v3", "go.uber.org/zap"},
	"bench/internal/targets": {"api", "api/client", "bench/internal/load", "bench/internal/procs", "go.etcd.io/etcd/client/v3"},
}

func TestImportGraph(t *testing.T) {
	root := filepath.Join("..", "..")
	seen := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "bin" || name == "third_party") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		pkg := filepath.ToSlash(rel)
		rules, ok := allowed[pkg]
		if !ok {
			t.Errorf("package %s is not in the import graph: add it to archtest with the imports DESIGN.md allows", pkg)
			return nil
		}
		seen[pkg] = true
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			ipath, _ := strconv.Unquote(imp.Path.Value)
			if !permitted(ipath, rules) {
				t.Errorf("%s imports %s, which DESIGN.md's import graph does not allow for %s", path, ipath, pkg)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, pkg := range []string{"tokens", "fsm", "cluster", "api", "agent", "cmd/tokend"} {
		if !seen[pkg] {
			t.Errorf("package %s has no source files: did the walk start at the module root?", pkg)
		}
	}
}

func permitted(ipath string, rules []string) bool {
	first, _, _ := strings.Cut(ipath, "/")
	if !strings.Contains(first, ".") {
		return true // standard library
	}
	for _, r := range rules {
		full := r
		if !strings.Contains(strings.SplitN(r, "/", 2)[0], ".") {
			full = module + "/" + r
		}
		if ipath == full || strings.HasPrefix(ipath, full+"/") && !strings.HasPrefix(full, module) {
			return true
		}
	}
	return false
}

// TestPermitted checks the checker, so that TestImportGraph can fail.
func TestPermitted(t *testing.T) {
	cases := []struct {
		ipath string
		rules []string
		want  bool
	}{
		{"fmt", nil, true},
		{module + "/tokens", []string{"tokens"}, true},
		{module + "/fsm", []string{"tokens"}, false},
		{module + "/api/client", []string{"api"}, false},
		{"github.com/hashicorp/raft", []string{"tokens"}, false},
		{"github.com/hashicorp/raft", []string{"github.com/hashicorp/raft"}, true},
		{"github.com/hashicorp/raft-boltdb/v2", []string{"github.com/hashicorp/raft"}, false},
	}
	for _, c := range cases {
		if got := permitted(c.ipath, c.rules); got != c.want {
			t.Errorf("permitted(%q, %v) = %v, want %v", c.ipath, c.rules, got, c.want)
		}
	}
}
