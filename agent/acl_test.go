package agent_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/agent"
	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
	"github.com/tokend/tokend/tokens"
)

// Reports and manual rotations reach the leader over RPC, not as Raft
// entries, so the leader checks the caller's ACL token again against its
// own state: a token deleted or narrowed after the receiving agent let the
// request through gets nothing done.
func TestLeaderRechecksForwardedRequests(t *testing.T) {
	fp := testutil.NewFakeProvider(time.Hour)
	c := testutil.NewClusterWith(t, 3, func(cfg *agent.Config) {
		cfg.ACL = true
		cfg.ProviderFactory = fp.Factory(cfg.NodeName)
	})
	leader := c.Leader()
	var boot api.ACLTokenSecret
	tcpClient(leader).Must(t, "POST", "/v1/acl/bootstrap", nil, http.StatusOK, &boot)
	mgmt := tcpClient(leader).WithToken(boot.SecretID)
	issuingPool(t, mgmt, "p", api.PoolRequest{Size: 1})
	grant := func(caps ...tokens.Capability) {
		mgmt.Must(t, "PUT", "/v1/acl/policies/app", api.ACLPolicyRequest{Pools: []tokens.PoolRule{{Pattern: "p*", Capabilities: caps}}}, http.StatusOK, nil)
	}
	grant(tokens.CapRead, tokens.CapReport, tokens.CapWrite)
	var app api.ACLTokenSecret
	mgmt.Must(t, "POST", "/v1/acl/tokens", api.ACLTokenRequest{Policies: []string{"app"}}, http.StatusCreated, &app)
	var id string
	testutil.WaitFor(t, 5*time.Second, func() error {
		var err error
		id, _, err = tcpClient(leader).WithToken(app.SecretID).Fetch("p")
		return err
	})

	follower := c.Followers()[0]
	ctx := context.Background()
	report := func(secret string) string {
		t.Helper()
		body, _ := json.Marshal([]tokens.Report{{Pool: "p", TokenID: id, Outcome: tokens.OutcomeOK, Reporter: follower.Name, At: time.Now(), AuthHash: tokens.HashACLSecret(secret)}})
		out, err := follower.Agent.CallLeader(ctx, agent.LeaderReports, body)
		if err != nil {
			t.Fatalf("reports RPC: %v", err)
		}
		var verdicts []struct {
			Detail string `json:"detail"`
		}
		if err := json.Unmarshal(out, &verdicts); err != nil || len(verdicts) != 1 {
			t.Fatalf("reports RPC answered %s, %v", out, err)
		}
		return verdicts[0].Detail
	}
	rotate := func(secret string) error {
		body, _ := json.Marshal(map[string]string{"pool": "p", "auth_hash": tokens.HashACLSecret(secret)})
		_, err := follower.Agent.CallLeader(ctx, agent.LeaderRotate, body)
		return err
	}

	if d := report(app.SecretID); strings.HasPrefix(d, "refused") {
		t.Fatalf("a report with a token that grants report was refused: %s", d)
	}
	if err := rotate(app.SecretID); err != nil {
		t.Fatalf("a rotation with a token that grants write failed: %v", err)
	}

	grant(tokens.CapRead) // committed on the leader before the PUT returns
	if d := report(app.SecretID); !strings.Contains(d, "refused") || !strings.Contains(d, "no longer grants report") {
		t.Fatalf("report after the policy lost report: verdict %q, want refused", d)
	}
	if err := rotate(app.SecretID); err == nil || !strings.Contains(err.Error(), "no longer grants write") {
		t.Fatalf("rotation after the policy lost write: %v, want refused", err)
	}
	if d := report("tkd_never-issued"); !strings.Contains(d, "no longer exists") {
		t.Fatalf("report with an unknown token: verdict %q, want refused", d)
	}
	if err := rotate(boot.SecretID); err != nil {
		t.Fatalf("the management token may still rotate: %v", err)
	}
}
