package agent_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
)

// Every selection policy through a real agent: round_robin and least_used
// spread fetches evenly, random reaches every token, and a token added to a
// least_used pool starts level with the others instead of drawing every
// fetch.
func TestSelectionPolicies(t *testing.T) {
	a := testutil.StartAgent(t, nil)
	h := testutil.TCP(a.HTTPAddr())
	count := func(pool string, n int) map[string]int {
		got := map[string]int{}
		for range n {
			id, code, err := h.Fetch(pool)
			if err != nil || code != "" {
				t.Fatalf("fetch %s: %q %v", pool, code, err)
			}
			got[id]++
		}
		return got
	}
	for _, policy := range []string{"round_robin", "least_used", "random"} {
		h.Must(t, "PUT", "/v1/pools/"+policy, api.PoolRequest{Selection: policy}, http.StatusOK, nil)
		var ids []string
		for i := range 3 {
			ids = append(ids, h.AddToken(t, policy, fmt.Sprintf("%s-%d", policy, i), i))
		}
		got := count(policy, 300)
		for _, id := range ids {
			switch policy {
			case "random":
				if got[id] < 50 {
					t.Errorf("%s: %s served %d of 300 times", policy, id, got[id])
				}
			default:
				if got[id] != 100 {
					t.Errorf("%s: %s served %d of 300 times, want 100", policy, id, got[id])
				}
			}
		}
	}
	newID := h.AddToken(t, "least_used", "least_used-new", 0)
	got := count("least_used", 40)
	if got[newID] != 10 {
		t.Fatalf("a new least_used token was served %d of 40 fetches, want 10 (it starts level): %v", got[newID], got)
	}
}
