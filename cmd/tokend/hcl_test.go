package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/tokend/tokend/api"
)

// The examples are the JSON forms below, written in HCL.
func TestHCLExamples(t *testing.T) {
	for _, tc := range []struct{ file, json string }{
		{"github.hcl", `{
  "name": "github",
  "size": 2,
  "provider": {"type": "oauth2", "token_url": "http://127.0.0.1:9000/token", "client_id": "app", "client_secret": "s3cret", "scopes": ["read"]},
  "rotation": {"max_age": "1h", "renew_before": "2s", "grace": "1s"},
  "health_check": {"url": "http://127.0.0.1:9000/check", "interval": "1s", "timeout": "500ms", "expect_status": [200], "header": "Authorization", "format": "Bearer {{token}}"}
}`},
		{"exec.hcl", `{
  "name": "deploy",
  "selection": "round_robin",
  "min_healthy": 1,
  "size": 3,
  "labels": {"team": "platform", "env": "prod"},
  "provider": {
    "type": "exec",
    "command": ["/usr/local/bin/mint-token", "--audience", "deploy"],
    "revoke_command": ["/usr/local/bin/mint-token", "--revoke"],
    "env": ["VAULT_ADDR", "VAULT_TOKEN"],
    "timeout": "20s"
  },
  "rotation": {"max_age": "12h", "renew_before": "30m", "grace": "2m", "min_active": 2, "retry_min": "5s", "retry_max": "10m", "alert_before": "15m"},
  "health": {"window": 20, "degraded_failures": 5, "degraded_ratio": 0.5, "outcome_ttl": "5m", "default_cooldown": "1m", "report_quorum": 2, "report_window": "5m"}
}`},
	} {
		t.Run(tc.file, func(t *testing.T) {
			name, req, err := readPoolFile(filepath.Join("..", "..", "examples", tc.file), "", nil)
			if err != nil {
				t.Fatal(err)
			}
			wantName, wantReq, err := readPoolFile("-", "", strings.NewReader(tc.json))
			if err != nil {
				t.Fatal(err)
			}
			if name != wantName || !reflect.DeepEqual(req, wantReq) {
				t.Fatalf("%s = %s %s\nwant %s %s", tc.file, name, jsonText(t, req), wantName, jsonText(t, wantReq))
			}
			if err := checkPool(name, req); err != nil {
				t.Fatalf("%s does not validate: %v", tc.file, err)
			}
		})
	}
}

func jsonText(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Every field of the JSON form can be written in HCL under its JSON name,
// and decodes to the same request: a field the API gains is covered
// without changing this test.
func TestHCLEveryField(t *testing.T) {
	var hclText strings.Builder
	obj := sampleFields(reflect.TypeFor[poolFile](), "", &hclText)
	jsonData, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	pf, _, err := parseHCLPool([]byte(hclText.String()), "every.hcl")
	if err != nil {
		t.Fatalf("%v\n%s", err, hclText.String())
	}
	var want poolFile
	if err := decodeStrict(jsonData, &want); err != nil {
		t.Fatalf("%v\n%s", err, jsonData)
	}
	if !reflect.DeepEqual(pf, want) {
		t.Fatalf("HCL decodes to %s\nJSON to %s\nHCL:\n%s", jsonText(t, pf), jsonText(t, want), hclText.String())
	}
	// The sample sets every field: nothing is left at its zero value.
	assertAllSet(t, reflect.ValueOf(pf), "")
}

// sampleFields writes a value for every field of struct type t as HCL, and
// returns the same as a JSON object.
func sampleFields(t reflect.Type, indent string, out *strings.Builder) map[string]any {
	obj := map[string]any{}
	names, fields := hclFields(t)
	for _, name := range names {
		ft := fields[name].Type
		switch {
		case isBlock(ft) && ft.Kind() == reflect.Slice:
			var list []any
			for range 2 {
				fmt.Fprintf(out, "%s%s {\n", indent, name)
				list = append(list, sampleFields(ft.Elem(), indent+"  ", out))
				fmt.Fprintf(out, "%s}\n", indent)
			}
			obj[name] = list
		case isBlock(ft):
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			fmt.Fprintf(out, "%s%s {\n", indent, name)
			obj[name] = sampleFields(ft, indent+"  ", out)
			fmt.Fprintf(out, "%s}\n", indent)
		case ft.Kind() == reflect.Slice:
			a, b := sampleScalar(ft.Elem(), name+"-a"), sampleScalar(ft.Elem(), name+"-b")
			fmt.Fprintf(out, "%s%s = [%s, %s]\n", indent, name, hclLiteral(a), hclLiteral(b))
			obj[name] = []any{a, b}
		case ft.Kind() == reflect.Map:
			v := sampleScalar(ft.Elem(), name+"-v")
			fmt.Fprintf(out, "%s%s = {\n%s  key-1 = %s\n%s  \"Key 2\" = %s\n%s}\n", indent, name, indent, hclLiteral(v), indent, hclLiteral(v), indent)
			obj[name] = map[string]any{"key-1": v, "Key 2": v}
		default:
			v := sampleScalar(ft, name)
			fmt.Fprintf(out, "%s%s = %s\n", indent, name, hclLiteral(v))
			obj[name] = v
		}
	}
	return obj
}

func sampleScalar(t reflect.Type, name string) any {
	switch {
	case t == durationType:
		return "1m30s"
	case t.Kind() == reflect.String:
		return "v-" + name
	case t.Kind() == reflect.Bool:
		return true
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return 0.25
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return 7
	}
	panic(fmt.Sprintf("no sample for %s (%s): teach sampleScalar and the HCL decoder", name, t))
}

func hclLiteral(v any) string {
	if s, ok := v.(string); ok {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprint(v)
}

func assertAllSet(t *testing.T, v reflect.Value, path string) {
	t.Helper()
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	names, fields := hclFields(v.Type())
	for _, name := range names {
		fv := v.FieldByIndex(fields[name].Index)
		p := join(path, name)
		if fv.IsZero() {
			t.Errorf("%s was not set", p)
			continue
		}
		ft := fields[name].Type
		if isBlock(ft) && ft.Kind() != reflect.Slice {
			assertAllSet(t, fv, p)
		}
	}
}

// noAgent is an address whose requests fail the test: a file with an
// error is never sent.
func noAgent(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("a request reached the agent: %s %s", r.Method, r.URL)
		http.Error(w, "no", http.StatusTeapot)
	}))
	t.Cleanup(srv.Close)
	return "--addr=" + srv.URL
}

// Every error says file:line,column and the field, and stops the file from
// being sent.
func TestHCLErrors(t *testing.T) {
	addr := noAgent(t)
	for _, tc := range []struct {
		name, content, want string
	}{
		// Syntax, from HCL's parser.
		{"unclosed", "name = \"x\"\nprovider {\n  type = \"oauth2\"\n",
			"2,10: Unclosed configuration block; There is no closing brace for this block before the end of the file. This may be caused by incorrect brace nesting elsewhere in this file."},
		{"one line", "name = \"x\" size = 2\n", "1,12: Missing newline after argument; An argument definition must end with a newline."},
		{"no value", "name = \"x\"\nsize = \n", "2,8: Invalid expression; Expected the start of an expression, but found an invalid expression token."},
		{"redefined", "name = \"x\"\nname = \"y\"\n", "2,1: Attribute redefined; The argument \"name\" was already set at %s:1,1-5. Each argument may be set only once."},
		{"json", `{"name": "x"}`, "1,1: Argument or block definition required; An argument or block definition is required here."},

		// Unknown attributes and blocks, and attributes and blocks mixed up.
		{"unknown attribute", "name = \"x\"\nselektion = \"priority\"\n", `2,1: Unsupported argument; An argument named "selektion" is not expected here. Did you mean "selection"?`},
		{"unknown nested attribute", "name = \"x\"\nprovider {\n  type = \"oauth2\"\n  tokn_url = \"http://a\"\n}\n", `4,3: Unsupported argument; An argument named "tokn_url" is not expected here. Did you mean "token_url"?`},
		{"unknown block", "name = \"x\"\nrotations {\n}\n", `2,1: Unsupported block type; Blocks of type "rotations" are not expected here. Did you mean "rotation"?`},
		{"unknown nested block", "name = \"x\"\nprovider {\n  client {\n  }\n}\n", `3,3: Unsupported block type; Blocks of type "client" are not expected here. Did you mean "clients"?`},
		{"block as attribute", "name = \"x\"\nprovider = { type = \"static\" }\n", `2,1: Unsupported argument; An argument named "provider" is not expected here. Did you mean to define a block of type "provider"?`},
		{"attribute as block", "name = \"x\"\nlabels {\n  team = \"x\"\n}\n", `2,1: Unsupported block type; Blocks of type "labels" are not expected here. Did you mean to define argument "labels"? If so, use the equals sign to assign it a value.`},
		{"clients as attribute", "name = \"x\"\nprovider {\n  clients = [{ client_id = \"a\" }]\n}\n", `3,3: Unsupported argument; An argument named "clients" is not expected here. Did you mean to define a block of type "clients"?`},
		{"two providers", "name = \"x\"\nprovider {\n}\nprovider {\n}\n", "4,1: duplicate provider block: the first is at line 2, and only one is allowed"},
		{"block label", "name = \"x\"\nprovider \"oauth2\" {\n}\n", "2,10: Extraneous label for provider; No labels are expected for provider blocks."},
		{"variable", "name = var.pool\n", "1,8: Variables not allowed; Variables may not be used here."},
		{"function", "name = lower(\"X\")\n", "1,8: Function calls not allowed; Functions may not be called here."},
		{"no name", "size = 2\n", `1,1: name is required: add name = "pool-name"`},

		// Types.
		{"number as string", "name = \"x\"\nsize = \"two\"\n", "2,8: size must be a whole number, not a string"},
		{"fraction", "name = \"x\"\nmin_healthy = 1.5\n", "2,15: min_healthy must be a whole number, not 1.5"},
		{"huge", "name = \"x\"\nsize = 1e30\n", "2,8: size: 1000000000000000000000000000000 is out of range"},
		{"duration as number", "name = \"x\"\nrotation {\n  grace = 5\n}\n", `3,11: rotation.grace must be a duration string such as "90s" or "5m", not a number`},
		{"bad duration", "name = \"x\"\nrotation {\n  grace = \"soon\"\n}\n", `3,11: rotation.grace: "soon" is not a duration such as "90s" or "5m"`},
		{"list as string", "name = \"x\"\nprovider {\n  scopes = \"read\"\n}\n", `3,12: provider.scopes must be a list of strings, such as ["a", "b"], not a string`},
		{"list element", "name = \"x\"\nprovider {\n  scopes = [\"read\", 2]\n}\n", "3,21: provider.scopes[1] must be a string, not a number"},
		{"status list", "name = \"x\"\nhealth_check {\n  expect_status = [200, \"204\"]\n}\n", "3,25: health_check.expect_status[1] must be a whole number, not a string"},
		{"map as list", "name = \"x\"\nlabels = [\"a\"]\n", `2,10: labels must be a map of strings, such as { key = "value" }, not a list`},
		{"map value", "name = \"x\"\nlabels = { team = 1 }\n", `2,19: labels["team"] must be a string, not a number`},
		{"map key twice", "name = \"x\"\nlabels = {\n  a = \"1\"\n  a = \"2\"\n}\n", `4,3: labels: key "a" appears twice`},
		{"block attribute type", "name = \"x\"\nprovider {\n  type = [\"exec\"]\n}\n", "3,10: provider.type must be a string, not a list"},

		// Semantic errors, found by the agent's own validation, at the
		// field they name.
		{"pool name", "size = 2\nname = \"Bad Name\"\n", `2,1: pool name "Bad Name" is invalid: it must match [a-z0-9][a-z0-9._-]{0,63}`},
		{"selection", "name = \"x\"\nselection = \"sideways\"\n", `2,1: selection "sideways" is not supported: use one of priority, round_robin, least_used, random`},
		{"size of a static pool", "name = \"x\"\nsize = 2\n", "2,1: size applies only to a provider that issues tokens, not to static"},
		{"nested field", "name = \"x\"\nprovider {\n  type = \"oauth2\"\n  client_id = \"a\"\n  client_secret = \"b\"\n  token_url = \"ftp://x\"\n}\n",
			`6,3: provider.token_url "ftp://x" must be an http or https URL`},
		{"provider type", "name = \"x\"\nprovider {\n  type = \"magic\"\n}\n", `3,3: provider type "magic" is not supported: use one of static, exec, oauth2, http`},
		{"field of another type", "name = \"x\"\nprovider {\n  type = \"exec\"\n  command = [\"/bin/true\"]\n  url = \"http://x\"\n}\n", "5,3: provider.url does not apply to provider type exec"},
		{"missing field", "name = \"x\"\nprovider {\n  type = \"oauth2\"\n  client_id = \"a\"\n  client_secret = \"b\"\n}\n", "2,1: provider.token_url is required"},
		{"missing field in a missing block", "name = \"x\"\nsize = 2\nprovider {\n  type = \"exec\"\n}\n", "3,1: provider.command is required: the program and its arguments, as a list (no shell)"},
		{"second client block", "name = \"x\"\nprovider {\n  type = \"oauth2\"\n  token_url = \"http://x\"\n  clients {\n    client_id = \"a\"\n    client_secret = \"s\"\n  }\n  clients {\n    client_id = \"b\"\n  }\n}\n",
			"9,3: provider.clients[1] needs client_id and client_secret"},
		{"client twice", "name = \"x\"\nprovider {\n  type = \"oauth2\"\n  token_url = \"http://x\"\n  clients {\n    client_id = \"a\"\n    client_secret = \"s\"\n  }\n  clients {\n    client_id = \"a\"\n    client_secret = \"t\"\n  }\n}\n",
			`9,3: provider.clients[1]: client_id "a" appears twice`},
		{"list element value", "name = \"x\"\nprovider {\n  type = \"exec\"\n  command = [\"/bin/true\"]\n}\nhealth_check {\n  url = \"http://x\"\n  expect_status = [200, 99, 204]\n}\n",
			"8,25: health_check.expect_status: 99 is not an HTTP status"},
		{"scope", "name = \"x\"\nprovider {\n  type = \"oauth2\"\n  token_url = \"http://x\"\n  client_id = \"a\"\n  client_secret = \"b\"\n  scopes = [\"read\", \"a b\"]\n}\n",
			`7,21: provider.scopes: "a b" is not a scope`},
		{"env", "name = \"x\"\nprovider {\n  type = \"exec\"\n  command = [\"/bin/true\"]\n  env = [\"OK\", \"1BAD\"]\n}\n", `5,16: provider.env: "1BAD" is not an environment variable name`},
		{"header name", "name = \"x\"\nprovider {\n  type = \"http\"\n  url = \"http://x\"\n  headers = {\n    Authorization = \"Bearer x\"\n    \"bad name\" = \"y\"\n  }\n}\n",
			`7,5: provider.headers: "bad name" is not a header name`},
		{"label key", "name = \"x\"\nlabels = {\n  team = \"a\"\n  Team = \"b\"\n}\n", `4,3: label key "Team" is invalid: it must match [a-z0-9][a-z0-9._-]{0,63}`},
		{"rotation", "name = \"x\"\nprovider {\n  type = \"exec\"\n  command = [\"/bin/true\"]\n}\nrotation {\n  grace = \"-1s\"\n}\n", "7,3: rotation.grace must be between 0s and 168h0m0s, got -1s"},
		{"the other field named", "name = \"x\"\nprovider {\n  type = \"exec\"\n  command = [\"/bin/true\"]\n}\nrotation {\n  retry_max = \"500ms\"\n}\n",
			"7,3: rotation.retry_min (1s) must not exceed rotation.retry_max (500ms)"},
		{"health", "name = \"x\"\nhealth {\n  window = 100\n}\n", "3,3: health.window must be between 1 and 64, got 100"},
		{"health check", "name = \"x\"\nhealth_check {\n  url = \"http://x\"\n  format = \"Bearer\"\n}\n", "4,3: health_check.format must contain {{token}} where the token goes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, "github.hcl", tc.content)
			want := path + ":" + strings.ReplaceAll(tc.want, "%s", path)
			r := tokend(t, "", "pool", "apply", path, addr)
			if r.err == nil || r.err.Error() != want {
				t.Fatalf("pool apply of\n%s\nerror = %v\nwant    %s", tc.content, r.err, want)
			}
		})
	}
}

// Errors in several places are all reported, in the order of the file.
func TestHCLSeveralErrors(t *testing.T) {
	path := writeFile(t, "pool.hcl", "name = \"x\"\nsize = \"2\"\nprovider {\n  tipe = \"exec\"\n}\nlabels = { a = true }\n")
	r := tokend(t, "", "pool", "apply", path, noAgent(t))
	if r.err == nil {
		t.Fatal("pool apply succeeded")
	}
	lines := strings.Split(r.err.Error(), "\n")
	want := []string{path + ":2,8: size", path + ":4,3: Unsupported argument", path + ":6,16: labels"}
	if len(lines) != len(want) {
		t.Fatalf("error = %q, want %d lines", r.err, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Fatalf("line %d of the error = %q, want it to start %q", i+1, lines[i], w)
		}
	}
}

func TestPoolFileFormat(t *testing.T) {
	hclText := "name = \"x\"\nselection = \"round_robin\"\n"
	jsonText := `{"name": "x", "selection": "round_robin"}`
	want := api.PoolRequest{Selection: "round_robin"}
	for _, tc := range []struct {
		path, format, stdin string
	}{
		{writeFile(t, "pool.hcl", hclText), "", ""},
		{writeFile(t, "POOL.HCL", hclText), "", ""},
		{writeFile(t, "pool.json", jsonText), "", ""},
		{writeFile(t, "pool.conf", hclText), "hcl", ""},
		{writeFile(t, "pool.hcl", jsonText), "json", ""},
		{writeFile(t, "pool.json", hclText), "hcl", ""},
		{"-", "", jsonText},
		{"-", "json", jsonText},
		{"-", "hcl", hclText},
	} {
		name, req, err := readPoolFile(tc.path, tc.format, strings.NewReader(tc.stdin))
		if err != nil || name != "x" || !reflect.DeepEqual(req, want) {
			t.Errorf("readPoolFile(%s, %q) = %q %+v, %v", tc.path, tc.format, name, req, err)
		}
	}
	if _, _, err := readPoolFile("-", "hcl", strings.NewReader("name = \n")); err == nil || !strings.HasPrefix(err.Error(), "<stdin>:1,8: ") {
		t.Errorf("HCL from stdin with an error = %v, want it to say <stdin>:1,8", err)
	}
	if _, _, err := readPoolFile("-", "yaml", strings.NewReader("")); err == nil || !strings.Contains(err.Error(), `--format "yaml" is not supported: use hcl or json`) {
		t.Errorf("--format yaml = %v", err)
	}
	mustFail(t, "", []string{"pool", "apply", writeFile(t, "pool.conf", hclText), noAgent(t)}, "unknown format", ".hcl", "--format")
	mustFail(t, jsonText, []string{"pool", "apply", "-", "--format", "toml", noAgent(t)}, "--format", "toml")
	big := writeFile(t, "big.hcl", "name = \"x\"\n"+strings.Repeat("# padding\n", maxPoolFileBytes/10+1))
	mustFail(t, "", []string{"pool", "apply", big, noAgent(t)}, "larger than")
}

func TestErrorPath(t *testing.T) {
	for _, tc := range []struct{ msg, path, quoted string }{
		{`provider.token_url "ftp://x" must be an http or https URL`, "provider.token_url", "ftp://x"},
		{`provider.clients[1]: client_id "a" appears twice`, "provider.clients[1]", ""},
		{`provider.scopes: "a b" is not a scope`, "provider.scopes", "a b"},
		{`health_check.expect_status: 99 is not an HTTP status`, "health_check.expect_status", "99"},
		{`provider: give expires_at_field or expires_in_field, not both`, "provider", ""},
		{`size must be between 1 and 100, got 101`, "size", ""},
		{`pool name "X" is invalid`, "name", "X"},
		{`label "team": value must be printable UTF-8`, "labels", "team"},
		{`too many labels: 33 (at most 32)`, "labels", ""},
	} {
		path, rest := errorPath(tc.msg)
		q, _ := quotedAfter(rest)
		if path != tc.path || q != tc.quoted {
			t.Errorf("errorPath(%q) = %q, quoting %q; want %q, %q", tc.msg, path, q, tc.path, tc.quoted)
		}
	}
	// A value cut short in the message still finds its element.
	long := strings.Repeat("x", 100)
	if !elemMatches(hclElem{match: long}, long[:60]+"...") || elemMatches(hclElem{match: "y" + long}, long[:60]+"...") {
		t.Error("elemMatches does not handle truncated values")
	}
}
