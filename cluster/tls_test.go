package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/tokend/tokend/internal/certgen"
)

// testCA signs agent and client certificates for cluster tests.
type testCA struct {
	t  *testing.T
	ca *certgen.CA
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	ca, _, err := certgen.NewCA("test CA", 1)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{t: t, ca: ca}
}

func (c *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.ca.Cert)
	return p
}

func (c *testCA) cert(o certgen.Options) tls.Certificate {
	c.t.Helper()
	o.Days = 1
	certPEM, keyPEM, err := c.ca.Sign(o)
	if err != nil {
		c.t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		c.t.Fatal(err)
	}
	return cert
}

// agent is TLS for an agent, as `tokend tls cert create` makes it.
func (c *testCA) agent() *TLS {
	return &TLS{CAs: c.pool(), Certificate: c.cert(certgen.Options{
		CommonName: TLSServerName, DNSNames: []string{TLSServerName, "localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)},
	})}
}

// client is TLS with a client-only certificate of this CA, as `tokend tls
// cert create --client` makes for people using the CLI.
func (c *testCA) client() *TLS {
	return &TLS{CAs: c.pool(), Certificate: c.cert(certgen.Options{CommonName: "client.tokend", DNSNames: []string{"client.tokend"}, Client: true})}
}

func TestTLSValidateRefusesCertificatesPeersWouldRefuse(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	if err := ca.agent().Validate(); err != nil {
		t.Fatalf("agent certificate: %v", err)
	}
	for name, bad := range map[string]*TLS{
		"client-only certificate": ca.client(),
		"another CA's":            {CAs: ca.pool(), Certificate: other.agent().Certificate},
		"without the agent name":  {CAs: ca.pool(), Certificate: ca.cert(certgen.Options{CommonName: "x", DNSNames: []string{"node1.example"}})},
	} {
		err := bad.Validate()
		if err == nil || !strings.Contains(err.Error(), "not an agent certificate") {
			t.Errorf("%s: Validate = %v", name, err)
		}
		cfg := Config{NodeID: "x", NodeName: "x", RaftAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", TLS: bad}
		if c, err := New(cfg, &counterSM{}); err == nil {
			c.Shutdown()
			t.Errorf("%s: New accepted it", name)
		}
	}
}

// probeHandlers registers a node handler named "probe" on each node, and
// counts its calls.
func probeHandlers(nodes ...*testNode) *atomic.Int64 {
	var calls atomic.Int64
	for _, n := range nodes {
		n.HandleNode("probe", func(context.Context, []byte) ([]byte, error) {
			calls.Add(1)
			return []byte(`"ok"`), nil
		})
	}
	return &calls
}

// countingListen counts the connections a node accepts.
func countingListen(accepted *atomic.Int64) func(string, string) (net.Listener, error) {
	return func(network, addr string) (net.Listener, error) {
		ln, err := net.Listen(network, addr)
		if err != nil {
			return nil, err
		}
		return &hookListener{Listener: ln, onAccept: func(c net.Conn) net.Conn { accepted.Add(1); return c }}, nil
	}
}

type hookListener struct {
	net.Listener
	onAccept func(net.Conn) net.Conn
}

func (l *hookListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.onAccept(c), nil
}

// A TLS cluster forms, elects and replicates, forwarded writes and node
// RPCs included. Servers whose certificate comes from another CA, or that
// have none, join gossip but never Raft: the leader never adds them to the
// configuration nor sends them entries, and they cannot forward writes,
// call node RPCs, or send Raft RPCs.
func TestTLSClusterRefusesPeersWithoutAValidCertificate(t *testing.T) {
	ca := newTestCA(t)
	tc := newTestCluster(t)
	for range 3 {
		tc.add(3, func(c *Config) { c.TLS = ca.agent() })
	}
	l := tc.leader()
	var followers []*testNode
	for _, n := range tc.nodes {
		if n != l {
			followers = append(followers, n)
		}
	}
	good := tc.nodes[:3]
	calls := probeHandlers(good...)
	ctx := context.Background()
	// Writes that lose their leader to an election on a busy machine are
	// retried, so values are at least the sum of the writes.
	for i, f := range followers {
		waitFor(t, 10*time.Second, func() error {
			_, err := f.Apply(ctx, entry(uint64(i+1)))
			return err
		})
		if _, err := f.CallNode(ctx, l.RaftAddr(), "probe", nil); err != nil {
			t.Fatalf("node RPC over TLS: %v", err)
		}
	}
	applyRetry(t, tc, entry(10))
	waitFor(t, 5*time.Second, func() error {
		for _, n := range good {
			if v := n.sm.value(); v < 13 || v != good[0].sm.value() {
				return fmt.Errorf("%s has %d, %s %d; want equal and at least 13", n.cfg.NodeName, v, good[0].cfg.NodeName, good[0].sm.value())
			}
		}
		return nil
	})
	if calls.Load() != 2 {
		t.Fatalf("probe calls = %d, want 2", calls.Load())
	}
	before := good[0].sm.value()

	other := newTestCA(t)
	var otherAccepted, plainAccepted atomic.Int64
	rogues := map[string]*testNode{
		"another CA's certificate": tc.add(0, func(c *Config) { c.TLS = other.agent(); c.listen = countingListen(&otherAccepted) }),
		"no TLS":                   tc.add(0, func(c *Config) { c.listen = countingListen(&plainAccepted) }),
	}
	rogueCalls := probeHandlers(rogues["another CA's certificate"], rogues["no TLS"])

	// Gossip lets them in (gossip has its own key), so the leader tries to
	// reach each one over the agent RPC before it would add it to Raft:
	// wait until it has dialed each one more than once.
	waitFor(t, 20*time.Second, func() error {
		if otherAccepted.Load() < 2 || plainAccepted.Load() < 2 {
			return fmt.Errorf("the leader dialed the rogues %d and %d times", otherAccepted.Load(), plainAccepted.Load())
		}
		return nil
	})
	// Elections may happen meanwhile on a busy machine (50 ms Raft): a
	// write that loses its leader is retried, so values are at least the
	// sum of the writes.
	applyRetry(t, tc, entry(100))
	var want uint64
	waitFor(t, 5*time.Second, func() error {
		want = good[0].sm.value()
		for _, n := range good {
			if v := n.sm.value(); v < before+100 || v != want {
				return fmt.Errorf("%s has %d, %s %d; want equal and at least %d", n.cfg.NodeName, v, good[0].cfg.NodeName, want, before+100)
			}
		}
		return nil
	})
	l = tc.leader()
	leaderID := raft.ServerID(l.cfg.NodeID)
	term := l.raft.CurrentTerm()
	for name, r := range rogues {
		if idx := r.raft.LastIndex(); idx != 0 || r.sm.value() != 0 {
			t.Errorf("%s: received Raft entries (last index %d, value %d)", name, idx, r.sm.value())
		}
		if id, _ := r.Leader(); id != "" {
			t.Errorf("%s: learned the leader %s", name, id)
		}
		if _, err := r.forwardApply(ctx, l.RaftAddr(), entry(1000)); err == nil {
			t.Errorf("%s: forwarded a write to the leader", name)
		}
		if _, err := r.CallNode(ctx, l.RaftAddr(), "probe", nil); err == nil {
			t.Errorf("%s: called a node RPC on the leader", name)
		}
		if _, err := r.fetchStatus(ctx, raft.ServerAddress(l.RaftAddr())); err == nil {
			t.Errorf("%s: read the leader's status", name)
		}
		var vote raft.RequestVoteResponse
		err := r.transport.RequestVote(leaderID, raft.ServerAddress(l.RaftAddr()), &raft.RequestVoteRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(r.cfg.NodeID), Addr: []byte(r.RaftAddr())},
			Term:      term + 100, LastLogIndex: 1 << 40, LastLogTerm: 1 << 40,
		}, &vote)
		if err == nil {
			t.Errorf("%s: sent the leader a vote request (granted %v)", name, vote.Granted)
		}
		var ae raft.AppendEntriesResponse
		if err := r.transport.AppendEntries(leaderID, raft.ServerAddress(l.RaftAddr()), &raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(r.cfg.NodeID), Addr: []byte(r.RaftAddr())},
			Term:      term + 100,
		}, &ae); err == nil {
			t.Errorf("%s: sent the leader entries", name)
		}
	}
	if got := l.raft.CurrentTerm(); got >= term+100 {
		t.Fatalf("the leader's term went from %d to %d: a rogue's request reached it", term, got)
	}
	for _, n := range good {
		if v := n.sm.value(); v != want {
			t.Fatalf("%s has %d after the rogues' attempts, want %d", n.cfg.NodeName, v, want)
		}
	}
	if calls.Load() != 2 || rogueCalls.Load() != 0 {
		t.Fatalf("probe calls = %d on the cluster, %d on the rogues; want 2 and 0", calls.Load(), rogueCalls.Load())
	}
	if s := tc.suffrage(); len(s) != 3 || countVoters(s) != 3 {
		t.Fatalf("the Raft configuration is %v: a rogue got in", s)
	}
}

// applyRetry applies e through any node until it succeeds, riding out
// elections.
func applyRetry(t *testing.T, tc *testCluster, e []byte) {
	t.Helper()
	waitFor(t, 10*time.Second, func() error {
		_, err := tc.leader().Apply(context.Background(), e)
		return err
	})
}

// Each way of dialing an agent without a valid agent certificate is
// refused, for each protocol: with another CA's agent certificate, with a
// client-only certificate of the cluster's own CA (the CLI's kind), with
// no certificate, and in plaintext.
func TestTLSMuxRefusesDialersWithoutAnAgentCertificate(t *testing.T) {
	ca := newTestCA(t)
	tc := newTestCluster(t)
	n := tc.add(1, func(c *Config) { c.TLS = ca.agent() })
	tc.leader()
	calls := probeHandlers(n)

	noCert := &tls.Config{RootCAs: ca.pool(), ServerName: TLSServerName, MinVersion: tls.VersionTLS13}
	dialers := map[string]*tls.Config{
		"another CA's agent certificate": newTestCA(t).agent().clientConfig(),
		"a client-only certificate":      ca.client().clientConfig(),
		"no certificate":                 noCert,
		"plaintext":                      nil,
	}
	// The dialer's own mux trusts the cluster's CA where it has TLS, so
	// every refusal below is the accepting agent's.
	dialers["another CA's agent certificate"].RootCAs = ca.pool()
	for name, cfg := range dialers {
		t.Run(name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			m := newMux(ln, nil, hclog.NewNullLogger())
			m.clientTLS = cfg
			defer m.Close()
			hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				return m.dial(addr, protoRPC, 2*time.Second)
			}}}
			defer hc.CloseIdleConnections()
			for _, path := range []string{"/rpc/node/probe", "/rpc/apply", "/rpc/leader/probe", "/rpc/leader/" + leaderReadIndex} {
				resp, err := hc.Post("http://"+n.RaftAddr()+path, "application/octet-stream", bytes.NewReader(entry(5)))
				if err == nil {
					resp.Body.Close()
					t.Errorf("POST %s answered %d", path, resp.StatusCode)
				}
			}
			trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: raftLayer{m.raft}, MaxPool: 1, Timeout: 2 * time.Second, Logger: hclog.NewNullLogger()})
			defer trans.Close()
			var vote raft.RequestVoteResponse
			if err := trans.RequestVote("x", raft.ServerAddress(n.RaftAddr()), &raft.RequestVoteRequest{
				RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("rogue"), Addr: []byte("127.0.0.1:1")}, Term: 1 << 30, LastLogIndex: 1 << 40, LastLogTerm: 1 << 40,
			}, &vote); err == nil {
				t.Errorf("vote request answered (granted %v)", vote.Granted)
			}
		})
	}
	if calls.Load() != 0 || n.sm.value() != 0 || !n.IsLeader() {
		t.Fatalf("after the refused dialers: %d probe calls, value %d, leader %v", calls.Load(), n.sm.value(), n.IsLeader())
	}
	// The same harness with a real agent certificate gets through, so the
	// refusals above are the certificates' doing.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := newMux(ln, ca.agent(), hclog.NewNullLogger())
	defer m.Close()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
		return m.dial(addr, protoRPC, 2*time.Second)
	}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Post("http://"+n.RaftAddr()+"/rpc/node/probe", "application/octet-stream", nil)
	if err != nil {
		t.Fatalf("with an agent certificate: %v", err)
	}
	resp.Body.Close()
	if calls.Load() != 1 {
		t.Fatalf("probe calls = %d with an agent certificate, want 1", calls.Load())
	}
}

// An accepted connection that never completes its TLS handshake is closed
// after the handshake timeout, so it cannot hold a goroutine.
func TestTLSMuxDropsSilentConnections(t *testing.T) {
	ca := newTestCA(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := newMuxTimeout(ln, ca.agent(), hclog.NewNullLogger(), 100*time.Millisecond)
	defer m.Close()
	for _, hello := range [][]byte{nil, {0x16, 0x03, 0x01}} { // nothing; a TLS record header and no more
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(hello); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.ReadAll(c)
		c.Close()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("sending %x: the connection was still open after 5s", hello)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("sending %x: closed after %s", hello, d)
		}
	}
}

// captureListen records every byte a node's accepted connections carry,
// both ways. Every connection between agents is accepted by one of them, so
// wrapping every node's listener records all of their traffic.
type capture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

func (c *capture) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.buf.Bytes())
}

func (c *capture) listen(network, addr string) (net.Listener, error) {
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	return &hookListener{Listener: ln, onAccept: func(conn net.Conn) net.Conn { return &capturedConn{Conn: conn, c: c} }}, nil
}

type capturedConn struct {
	net.Conn
	c *capture
}

func (cc *capturedConn) Read(p []byte) (int, error) {
	n, err := cc.Conn.Read(p)
	_, _ = cc.c.Write(p[:n])
	return n, err
}

func (cc *capturedConn) Write(p []byte) (int, error) {
	n, err := cc.Conn.Write(p)
	_, _ = cc.c.Write(p[:n])
	return n, err
}

// With TLS, nothing agents send each other is readable on the wire: not an
// entry's bytes, not Raft's field names, not the RPC's HTTP. The same
// capture without TLS sees all three, which shows that it works.
func TestTLSCaptureSeesNoPlaintext(t *testing.T) {
	canary := make([]byte, 12)
	_, _ = rand.Read(canary)
	marker := "canary-" + hex.EncodeToString(canary)
	run := func(t *testing.T, withTLS bool) []byte {
		ca := newTestCA(t)
		rec := &capture{}
		tc := newTestCluster(t)
		for range 3 {
			tc.add(3, func(c *Config) {
				c.listen = rec.listen
				if withTLS {
					c.TLS = ca.agent()
				}
			})
		}
		l := tc.leader()
		var follower *testNode
		for _, n := range tc.nodes {
			if n != l {
				follower = n
			}
		}
		// Forwarded by a follower, and written on the leader (retried if
		// an election gets in the way).
		for _, n := range []*testNode{follower, l} {
			waitFor(t, 10*time.Second, func() error {
				_, err := n.Apply(context.Background(), append(entry(1), marker...))
				return err
			})
		}
		waitFor(t, 5*time.Second, func() error {
			for _, n := range tc.nodes {
				if v := n.sm.value(); v < 2 || v != tc.nodes[0].sm.value() {
					return fmt.Errorf("%s has %d", n.cfg.NodeName, v)
				}
			}
			return nil
		})
		for _, n := range tc.nodes {
			n.Shutdown()
		}
		return rec.bytes()
	}
	plainWords := []string{marker, "Entries", "POST /rpc/apply"}

	plain := run(t, false)
	for _, w := range plainWords {
		if !bytes.Contains(plain, []byte(w)) {
			t.Fatalf("without TLS the capture (%d bytes) lacks %q: the capture does not work", len(plain), w)
		}
	}
	secure := run(t, true)
	if len(secure) < 4096 {
		t.Fatalf("with TLS the capture holds only %d bytes", len(secure))
	}
	for _, w := range append(plainWords, "RPCHeader", "HTTP/1.1") {
		if i := bytes.Index(secure, []byte(w)); i >= 0 {
			t.Errorf("with TLS the capture holds %q at byte %d", w, i)
		}
	}
	// Every accepted connection opens with a TLS handshake record.
	if n := bytes.Count(secure, []byte{0x16, 0x03, 0x01}); n < 3 {
		t.Errorf("with TLS the capture holds %d TLS ClientHello records", n)
	}
}
