package agent_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/testutil"
)

func tcpClient(n *testutil.Node) *testutil.HTTP  { return testutil.TCP(n.HTTPAddr()) }
func unixClient(n *testutil.Node) *testutil.HTTP { return testutil.Unix(n.SocketPath()) }

// waitServes polls until every node serves want for pool.
func waitServes(t *testing.T, nodes []*testutil.Node, pool, want string) {
	t.Helper()
	testutil.WaitFor(t, 5*time.Second, func() error {
		for _, n := range nodes {
			id, code, err := tcpClient(n).Fetch(pool)
			if err != nil {
				return err
			}
			if id != want {
				return fmt.Errorf("%s serves %q (code %q), want %q", n.Name, id, code, want)
			}
		}
		return nil
	})
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
