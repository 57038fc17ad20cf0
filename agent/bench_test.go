package agent_test

import (
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
)

// BenchmarkFetch measures one token fetch, end to end, from a client on the
// same host: HTTP over loopback TCP and over the unix socket, keep-alive, a
// pool of 10 tokens under the priority policy. One fetch at a time, so ns/op
// is the latency a client sees.
func BenchmarkFetch(b *testing.B) {
	a := testutil.StartAgent(b, nil)
	n := &testutil.Node{Name: "bench", Agent: a}
	setup := tcpClient(n)
	if r, err := setup.Do("PUT", "/v1/pools/bench", api.PoolRequest{}); err != nil || r.Status != http.StatusOK {
		b.Fatal(r.Status, err)
	}
	for i := range 10 {
		if r, err := setup.Do("POST", "/v1/pools/bench/tokens", api.TokenRequest{Value: fmt.Sprintf("value-%d", i), Priority: i}); err != nil || r.Status != http.StatusCreated {
			b.Fatal(r.Status, err)
		}
	}
	for _, tc := range []struct {
		name string
		c    *testutil.HTTP
	}{{"tcp", tcpClient(n)}, {"unix", unixClient(n)}} {
		for _, format := range []string{"json", "raw"} {
			b.Run(tc.name+"/"+format, func(b *testing.B) {
				path := "/v1/pools/bench/token?format=" + format
				b.ReportAllocs()
				for b.Loop() {
					resp, err := tc.c.Get(path)
					if err != nil {
						b.Fatal(err)
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Fatal(resp.Status)
					}
				}
			})
		}
	}
}
