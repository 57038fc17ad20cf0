package agent_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
	"github.com/tokend/tokend/tokens"
)

// An idle resealer does not walk every secret again: once a walk found
// them all sealed with the cluster's key, it walks again only when the
// state or the agent's keyring has changed (at 10,000 tokens the walk,
// every second, was about a fifth of an idle leader's CPU).
func TestResealerIdleDoesNotWalk(t *testing.T) {
	c := testutil.NewCluster(t, 3)
	leader, f := c.Leader(), c.Followers()[0]
	h := tcpClient(leader)
	h.Must(t, "PUT", "/v1/pools/static", api.PoolRequest{}, http.StatusOK, nil)
	first := h.AddToken(t, "static", "reseal-idle-value-0", 0)
	waitServes(t, []*testutil.Node{f}, "static", first)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if keyringOf(t, tcpClient(f)).Primary == "" {
			return errors.New("the cluster has no sealing key yet")
		}
		return nil
	})
	ctx := context.Background()
	step := func(what string, want int64) {
		t.Helper()
		n, err := f.ResealStep(ctx)
		if err != nil || n != want {
			t.Fatalf("%s: the resealer walked the secrets %d times (%v), want %d", what, n, err, want)
		}
	}
	step("first step", 1)
	step("nothing changed", 0)
	step("still nothing changed", 0)

	second := h.AddToken(t, "static", "reseal-idle-value-1", -1)
	waitServes(t, []*testutil.Node{f}, "static", second)
	step("after a write", 1)
	step("idle again", 0)

	if err := f.InstallKeyLocally(tokens.GenerateKey()); err != nil {
		t.Fatal(err)
	}
	step("after a key was installed", 1)
	step("idle again", 0)
}
