package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/agent"
	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
	"github.com/tokend/tokend/tokens"
)

// issuingAgent starts an agent whose providers, whatever their spec, are a
// fake that issues tokens living an hour.
func issuingAgent(t *testing.T) *agent.Agent {
	t.Helper()
	fp := testutil.NewFakeProvider(time.Hour)
	return testutil.StartAgent(t, func(cfg *agent.Config) { cfg.ProviderFactory = fp.Factory("n1") })
}

// An HCL pool file applies to what it says: pool show --json gives back
// every field, and no secret.
func TestHCLApplyRoundTrip(t *testing.T) {
	a := issuingAgent(t)
	addr := "--addr=unix://" + a.SocketPath()
	check := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(check.Close)

	for _, tc := range []struct {
		name, text string
		secrets    []string
	}{
		{"oauth", `
name        = "oauth"
selection   = "round_robin"
min_healthy = 1
size        = 2
labels      = { team = "infra", tier = "gold" }

provider {
  type      = "oauth2"
  timeout   = "5s"
  token_url = "http://127.0.0.1:9/token"
  clients {
    client_id     = "app-1"
    client_secret = "s3cret-one"
  }
  clients {
    client_id     = "app-2"
    client_secret = "s3cret-two"
  }
  scopes = ["read", "write"]
  params = { audience = "api" }
}

rotation {
  max_age      = "1h"
  renew_before = "10m"
  grace        = "30s"
  min_active   = 1
  retry_min    = "2s"
  retry_max    = "1m"
  alert_before = "5m"
}

health_check {
  url                         = "` + check.URL + `/check"
  method                      = "HEAD"
  header                      = "X-Token"
  format                      = "token {{token}}"
  expect_status               = [200, 204]
  interval                    = "1m"
  timeout                     = "2s"
  rate_limit_remaining_header = "X-RateLimit-Remaining"
  rate_limit_reset_header     = "X-RateLimit-Reset"
}

health {
  window            = 10
  degraded_failures = 3
  degraded_ratio    = 0.25
  outcome_ttl       = "2m"
  default_cooldown  = "30s"
  report_quorum     = 1
  report_window     = "3m"
}
`, []string{"s3cret-one", "s3cret-two"}},
		{"webhook", `
name = "webhook"
provider {
  type             = "http"
  url              = "http://127.0.0.1:9/issue"
  method           = "PUT"
  headers          = { Authorization = "Bearer hdr-s3cret", X-Api-Key = "key-s3cret" }
  body             = <<-EOT
    {"scope": "all"}
  EOT
  token_field      = "data.token"
  expires_in_field = "data.ttl"
  revoke_url       = "http://127.0.0.1:9/revoke"
}
`, []string{"hdr-s3cret", "key-s3cret"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, tc.name+".hcl", tc.text)
			name, req, err := readPoolFile(path, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			if out := mustRun(t, "", "pool", "apply", path, addr); !strings.Contains(out, `Pool "`+tc.name+`" applied`) {
				t.Fatalf("pool apply printed %q", out)
			}
			out := mustRun(t, "", "pool", "show", name, "--json", addr)
			for _, s := range tc.secrets {
				if strings.Contains(out, s) {
					t.Fatalf("pool show --json shows the secret %q:\n%s", s, out)
				}
			}
			var p api.Pool
			if err := json.Unmarshal([]byte(out), &p); err != nil {
				t.Fatal(err)
			}

			// What the file said, with the secrets write-only and the
			// defaults filled in.
			wantProv := *req.Provider
			wantProv.ClientSecret = ""
			wantProv.Clients = nil
			for _, c := range req.Provider.Clients {
				wantProv.Clients = append(wantProv.Clients, api.OAuth2Client{ClientID: c.ClientID})
			}
			if req.Provider.Headers != nil {
				wantProv.Headers = map[string]string{}
				for k := range req.Provider.Headers {
					wantProv.Headers[k] = ""
				}
			}
			wantRot := req.Rotation
			if wantRot == nil {
				wantRot = &tokens.RotationPolicy{}
			}
			for _, c := range []struct {
				field     string
				got, want any
			}{
				{"name", p.Name, name},
				{"selection", p.Selection, defaultString(req.Selection, "priority")},
				{"min_healthy", p.MinHealthy, req.MinHealthy},
				{"size", p.Size, req.Size},
				{"labels", p.Labels, req.Labels},
				{"provider", p.Provider, wantProv},
				{"rotation", p.Rotation, wantRot.WithDefaults()},
				{"health_check", p.HealthCheck, req.HealthCheck},
			} {
				if !reflect.DeepEqual(c.got, c.want) {
					t.Errorf("%s = %s, want %s", c.field, jsonText(t, c.got), jsonText(t, c.want))
				}
			}
			if req.Health != nil && !reflect.DeepEqual(p.Health, req.Health.WithDefaults()) {
				t.Errorf("health = %s, want %s", jsonText(t, p.Health), jsonText(t, req.Health.WithDefaults()))
			}
		})
	}
}

func defaultString(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

var rotationLine = regexp.MustCompile(`^Rotation rot_[0-9a-f]{16} begun for (.*)\.$`)

func TestPoolRotate(t *testing.T) {
	a := issuingAgent(t)
	addr := "--addr=http://" + a.HTTPAddr()
	path := writeFile(t, "exec.hcl", `
name = "minted"
size = 2
provider {
  type    = "exec"
  command = ["/bin/false"] # never run: the agent's providers are a fake
}
`)
	mustRun(t, "", "pool", "apply", path, addr)
	var toks []api.TokenInfo
	testutil.WaitFor(t, 10*time.Second, func() error {
		toks = nil
		if err := json.Unmarshal([]byte(mustRun(t, "", "token", "list", "minted", "--json", addr)), &toks); err != nil {
			return err
		}
		if len(toks) != 2 {
			return fmt.Errorf("%d tokens, want the pool's size, 2", len(toks))
		}
		return nil
	})

	// One token.
	out := mustRun(t, "", "pool", "rotate", "minted", "--token", toks[0].ID, addr)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if m := rotationLine.FindStringSubmatch(lines[0]); len(lines) != 1 || m == nil || m[1] != fmt.Sprintf(`token %s of pool "minted"`, toks[0].ID) {
		t.Fatalf("pool rotate --token printed %q", out)
	}
	mustFail(t, "", []string{"pool", "rotate", "minted", "--token", "tok_0000000000000000", addr}, "token_not_found")
	testutil.WaitFor(t, 10*time.Second, func() error {
		var now []api.TokenInfo
		if err := json.Unmarshal([]byte(mustRun(t, "", "token", "list", "minted", "--json", addr)), &now); err != nil {
			return err
		}
		for _, tk := range now {
			if tk.ID == toks[0].ID && tk.Lifecycle == "active" {
				return fmt.Errorf("%s is still active", tk.ID)
			}
		}
		return nil
	})

	// Every active token, as JSON.
	var res api.RotateResponse
	if err := json.Unmarshal([]byte(mustRun(t, "", "pool", "rotate", "minted", "--json", addr)), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Rotations) == 0 {
		t.Fatalf("pool rotate --json = %+v, want the rotations begun", res)
	}
	for _, id := range res.Rotations {
		if !strings.HasPrefix(id, "rot_") {
			t.Fatalf("pool rotate --json = %+v, want rotation ids", res)
		}
	}

	// A static pool cannot issue, so it cannot rotate.
	mustRun(t, `{"name": "fixed"}`, "pool", "apply", "-", addr)
	mustFail(t, "", []string{"pool", "rotate", "fixed", addr}, "conflict", `pool "fixed" has a static provider`)
	mustFail(t, "", []string{"pool", "rotate", "nosuch", addr}, "pool_not_found")
	mustFail(t, "", []string{"pool", "rotate", addr}, "POOL")
}

func TestPoolRotateText(t *testing.T) {
	answer := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		w.Write([]byte(<-answer))
	}))
	t.Cleanup(srv.Close)
	addr := "--addr=" + srv.URL
	answer <- `{"rotations": ["rot_0123456789abcdef", "rot_fedcba9876543210"]}`
	out := mustRun(t, "", "pool", "rotate", "gh", addr)
	if want := "Rotation rot_0123456789abcdef begun for pool \"gh\".\nRotation rot_fedcba9876543210 begun for pool \"gh\".\n"; out != want {
		t.Fatalf("pool rotate printed %q, want %q", out, want)
	}
	answer <- `{"rotations": []}`
	if out := mustRun(t, "", "pool", "rotate", "gh", addr); !strings.Contains(out, `No rotation begun for pool "gh"`) {
		t.Fatalf("pool rotate with nothing to rotate printed %q", out)
	}
}

func TestAlertsCmd(t *testing.T) {
	type answer struct {
		status int
		body   string
	}
	answers := make(chan answer, 1)
	paths := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths <- r.Method + " " + r.URL.Path
		a := <-answers
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(a.status)
		w.Write([]byte(a.body))
	}))
	t.Cleanup(srv.Close)
	addr := "--addr=" + srv.URL
	run := func(a answer, args ...string) result {
		t.Helper()
		answers <- a
		r := tokend(t, "", append(args, addr)...)
		if p := <-paths; p != "GET /v1/alerts" {
			t.Fatalf("tokend %v asked for %s", args, p)
		}
		return r
	}

	firing := `{"leader": "n1", "alerts": [
  {"name": "token_expiring", "pool": "github", "token": "tok_b", "severity": "warning",
   "summary": "token tok_b expires in 4m and has no replacement", "since": "2030-01-02T03:04:05Z", "last_sent": "2030-01-02T03:05:00Z"},
  {"name": "pool_below_min_healthy", "pool": "github", "severity": "critical",
   "summary": "1 healthy token, min_healthy 2\u001b[31m", "since": "2030-01-02T03:00:00Z"},
  {"name": "rotation_failing", "pool": "aws", "severity": "critical",
   "summary": "3 rotations failed: token endpoint answered 500", "since": "2030-01-02T02:00:00+02:00"}
]}`
	r := run(answer{200, firing}, "alerts")
	if r.err != nil {
		t.Fatal(r.err)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	want := [][]string{
		{"NAME", "POOL", "TOKEN", "SEVERITY", "SINCE", "SUMMARY"},
		{"rotation_failing", "aws", "-", "critical", "2030-01-02T00:00:00Z", "3 rotations failed"},
		{"pool_below_min_healthy", "github", "-", "critical", "2030-01-02T03:00:00Z", "min_healthy 2?[31m"},
		{"token_expiring", "github", "tok_b", "warning", "2030-01-02T03:04:05Z", "expires in 4m"},
	}
	if len(lines) != len(want) {
		t.Fatalf("alerts printed %d lines, want %d:\n%s", len(lines), len(want), r.stdout)
	}
	for i, cells := range want {
		fields := strings.Fields(lines[i])
		for j, c := range cells[:5] {
			if fields[j] != c {
				t.Fatalf("alerts line %d = %q, want column %d to be %q:\n%s", i+1, lines[i], j+1, c, r.stdout)
			}
		}
		if !strings.Contains(lines[i], cells[5]) {
			t.Fatalf("alerts line %d = %q, want it to hold %q", i+1, lines[i], cells[5])
		}
	}

	r = run(answer{200, firing}, "alerts", "--json")
	var got, wantJSON api.Alerts
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.err != nil {
		t.Fatalf("alerts --json = %q, %v, %v", r.stdout, r.err, err)
	}
	if err := json.Unmarshal([]byte(firing), &wantJSON); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, wantJSON) {
		t.Fatalf("alerts --json = %+v, want the agent's answer %+v", got, wantJSON)
	}

	if r := run(answer{200, `{"leader": "n1", "alerts": []}`}, "alerts"); r.err != nil || r.stdout != "No alerts.\n" {
		t.Fatalf("alerts with none firing printed %q, %v", r.stdout, r.err)
	}
	r = run(answer{503, `{"error": {"code": "no_leader", "message": "no cluster leader is known"}}`}, "alerts")
	if r.err == nil || !strings.Contains(r.err.Error(), "no_leader") {
		t.Fatalf("alerts without a leader = %v, want no_leader", r.err)
	}
	mustFail(t, "", []string{"alerts", "extra", addr}, "no arguments")
}
