package fsm

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// Apply runs on every agent and again on every replay, so the code that
// runs it may not read a clock, draw randomness, or touch the network, the
// disk or the environment (DESIGN.md §3). These tests enforce that.

var forbiddenImports = map[string]bool{
	"os": true, "net": true, "net/http": true, "math/rand": true, "math/rand/v2": true,
	"crypto/rand": true, "io/ioutil": true, "syscall": true, "os/exec": true,
}

var forbiddenTimeFuncs = map[string]bool{
	"Now": true, "Since": true, "Until": true, "Sleep": true, "After": true, "Tick": true,
	"NewTimer": true, "NewTicker": true, "AfterFunc": true,
}

// nondeterminism returns one "file:line: problem" for every forbidden import
// and every use of a forbidden function of package time in src.
func nondeterminism(fset *token.FileSet, filename string, src any) ([]string, error) {
	f, err := parser.ParseFile(fset, filename, src, parser.SkipObjectResolution)
	if err != nil {
		return nil, err
	}
	var problems []string
	report := func(pos token.Pos, format string, args ...any) {
		p := fset.Position(pos)
		problems = append(problems, fmt.Sprintf("%s:%d: %s", p.Filename, p.Line, fmt.Sprintf(format, args...)))
	}
	timeNames := map[string]bool{}
	for _, imp := range f.Imports {
		path, err := strconv.Unquote(imp.Path.Value)
		if err != nil {
			return nil, err
		}
		if forbiddenImports[path] {
			report(imp.Pos(), "imports %q", path)
		}
		if path != "time" {
			continue
		}
		switch {
		case imp.Name == nil:
			timeNames["time"] = true
		case imp.Name.Name == ".":
			report(imp.Pos(), `dot-imports "time", which hides calls to its clock`)
		case imp.Name.Name != "_":
			timeNames[imp.Name.Name] = true
		}
	}
	// A variable, parameter or function named like the import hides the
	// package where it is in scope, and calls on it would go unnoticed:
	// forbid the name rather than resolve scopes.
	declared := declaredIdents(f)
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.Ident:
			if timeNames[n.Name] && declared[n] {
				report(n.Pos(), "declares %q, shadowing the time package", n.Name)
			}
		case *ast.SelectorExpr:
			if id, ok := n.X.(*ast.Ident); ok && timeNames[id.Name] && forbiddenTimeFuncs[n.Sel.Name] {
				report(n.Pos(), "uses %s.%s", id.Name, n.Sel.Name)
			}
		}
		return true
	})
	return problems, nil
}

// declaredIdents returns the identifiers f declares in a scope where they
// could shadow an import: variables, constants, parameters, results,
// receivers, types and functions.
func declaredIdents(f *ast.File) map[*ast.Ident]bool {
	out := map[*ast.Ident]bool{}
	fields := func(fl *ast.FieldList) {
		if fl == nil {
			return
		}
		for _, field := range fl.List {
			for _, name := range field.Names {
				out[name] = true
			}
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.FuncType:
			fields(n.TypeParams)
			fields(n.Params)
			fields(n.Results)
		case *ast.FuncDecl:
			fields(n.Recv)
			if n.Recv == nil {
				out[n.Name] = true
			}
		case *ast.ValueSpec:
			for _, name := range n.Names {
				out[name] = true
			}
		case *ast.TypeSpec:
			out[n.Name] = true
		case *ast.AssignStmt:
			if n.Tok == token.DEFINE {
				for _, lhs := range n.Lhs {
					if id, ok := lhs.(*ast.Ident); ok {
						out[id] = true
					}
				}
			}
		case *ast.RangeStmt:
			if n.Tok == token.DEFINE {
				for _, e := range []ast.Expr{n.Key, n.Value} {
					if id, ok := e.(*ast.Ident); ok {
						out[id] = true
					}
				}
			}
		}
		return true
	})
	return out
}

func TestApplyIsDeterministic(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		problems, err := nondeterminism(fset, name, src)
		if err != nil {
			t.Fatalf("parse %s: %v", name, err)
		}
		for _, p := range problems {
			t.Errorf("%s: the FSM must be deterministic", p)
		}
		checked++
	}
	if checked < 4 {
		t.Fatalf("checked %d files; expected fsm.go, commands.go, snapshot.go, state.go at least", checked)
	}
}

// The checker itself must catch what it is for, and only that.
func TestNondeterminismChecker(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string // substrings, one per expected problem, in order
	}{
		{
			name: "time.Now",
			src:  "package fsm\n\nimport \"time\"\n\nfunc f() time.Time {\n\treturn time.Now()\n}\n",
			want: []string{"x.go:6: uses time.Now"},
		},
		{
			name: "renamed time import",
			src:  "package fsm\n\nimport clock \"time\"\n\nfunc f(t clock.Time) clock.Duration {\n\treturn clock.Since(t)\n}\n",
			want: []string{"x.go:6: uses clock.Since"},
		},
		{
			name: "referenced, not called",
			src:  "package fsm\n\nimport \"time\"\n\nvar now = time.Now\n",
			want: []string{"x.go:5: uses time.Now"},
		},
		{
			name: "every clock function",
			src: "package fsm\n\nimport \"time\"\n\nfunc f() {\n" +
				"\t_ = time.Until(time.Time{})\n\ttime.Sleep(1)\n\t<-time.After(1)\n\t_ = time.Tick(1)\n" +
				"\t_ = time.NewTimer(1)\n\t_ = time.NewTicker(1)\n\t_ = time.AfterFunc(1, nil)\n}\n",
			want: []string{":6: uses time.Until", ":7: uses time.Sleep", ":8: uses time.After", ":9: uses time.Tick", ":10: uses time.NewTimer", ":11: uses time.NewTicker", ":12: uses time.AfterFunc"},
		},
		{
			name: "forbidden imports",
			src:  "package fsm\n\nimport (\n\t\"os\"\n\tr \"math/rand/v2\"\n\t_ \"crypto/rand\"\n\t\"net/http\"\n)\n\nvar _ = os.Getenv\nvar _ = r.Int\nvar _ = http.Get\n",
			want: []string{`x.go:4: imports "os"`, `x.go:5: imports "math/rand/v2"`, `x.go:6: imports "crypto/rand"`, `x.go:7: imports "net/http"`},
		},
		{
			name: "dot import of time",
			src:  "package fsm\n\nimport . \"time\"\n\nvar _ = Now()\n",
			want: []string{`x.go:3: dot-imports "time"`},
		},
		{
			name: "shadowing the time package",
			src:  "package fsm\n\nimport \"time\"\n\nvar _ time.Duration\n\nfunc f() {\n\ttime := 3\n\t_ = time\n}\n",
			want: []string{`x.go:8: declares "time"`},
		},
		{
			name: "parameter named like the package",
			src:  "package fsm\n\nimport \"time\"\n\ntype clock interface{ Now() time.Time }\n\nfunc f(time clock) {\n\t_ = time.Now()\n}\n",
			want: []string{`x.go:7: declares "time"`, "x.go:8: uses time.Now"},
		},
		{
			name: "struct field named time",
			src:  "package fsm\n\nimport \"time\"\n\ntype event struct{ time time.Time }\n\nfunc (e event) at() time.Time { return e.time }\n",
		},
		{
			name: "allowed uses of time",
			src:  "package fsm\n\nimport \"time\"\n\nfunc f(a, b time.Time, d time.Duration) bool {\n\treturn a.Add(d).Before(b) && time.Unix(0, 0).IsZero() && b.Sub(a) > time.Second\n}\n",
		},
		{
			name: "a Now that is not the time package's",
			src:  "package fsm\n\ntype clock struct{}\n\nfunc (clock) Now() int { return 0 }\n\nvar c clock\nvar _ = c.Now()\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			problems, err := nondeterminism(token.NewFileSet(), "x.go", tt.src)
			if err != nil {
				t.Fatal(err)
			}
			if len(problems) != len(tt.want) {
				t.Fatalf("problems %q, want %d matching %q", problems, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(problems[i], w) {
					t.Errorf("problem %d = %q, want it to contain %q", i, problems[i], w)
				}
			}
		})
	}
}
