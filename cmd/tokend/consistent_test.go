package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/testutil"
)

// --consistent on pool list and show, token list and get makes consistent
// reads: the agent counts them as such, and without a quorum they fail with
// no_leader, while the same commands without the flag answer from the
// agent's own state.
func TestConsistentFlag(t *testing.T) {
	c := testutil.NewCluster(t, 3)
	leader := c.Leader()
	mustRun(t, `{"name":"p"}`, "pool", "apply", "-", "--addr", leader.HTTPAddr())
	id := strings.TrimSpace(mustRun(t, "v1\n", "token", "add", "p", "--value-stdin", "--addr", leader.HTTPAddr()))
	f := c.Followers()[0]
	addr := "http://" + f.HTTPAddr()
	commands := []struct {
		args []string
		want string
	}{
		{[]string{"pool", "list"}, "p"},
		{[]string{"pool", "show", "p"}, "Name:"},
		{[]string{"token", "list", "p"}, id},
		{[]string{"token", "get", "p", "--raw"}, "v1"},
	}
	for _, cmd := range commands {
		// Right after the write through the leader, with no waiting: a
		// consistent read on a follower shows it.
		if out := mustRun(t, "", append(cmd.args, "--addr", addr, "--consistent")...); !strings.Contains(out, cmd.want) {
			t.Fatalf("tokend %s --consistent printed %q, want %q", strings.Join(cmd.args, " "), out, cmd.want)
		}
	}
	metrics, err := testutil.TCP(f.HTTPAddr()).Do("GET", "/v1/metrics", nil)
	if err != nil || metrics.Status != http.StatusOK {
		t.Fatal(metrics.Status, err)
	}
	if want := fmt.Sprintf(`tokend_consistent_reads_total{result="ok"} %d`, len(commands)); !strings.Contains(string(metrics.Body), want) {
		t.Fatalf("the follower's metrics do not say %s", want)
	}

	for _, n := range c.Running() {
		if n != f {
			c.Stop(n)
		}
	}
	for _, cmd := range commands {
		start := time.Now()
		mustFail(t, "", append(cmd.args, "--addr", addr, "--consistent"), "no_leader", "no leader could confirm")
		if d := time.Since(start); d > f.Config.Timing.LeaderWait+2*time.Second {
			t.Errorf("tokend %s --consistent took %s without a quorum", strings.Join(cmd.args, " "), d)
		}
		if out := mustRun(t, "", append(cmd.args, "--addr", addr)...); !strings.Contains(out, cmd.want) {
			t.Fatalf("tokend %s without a quorum printed %q, want %q", strings.Join(cmd.args, " "), out, cmd.want)
		}
	}
}
