package cluster

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// Raft and the agent-to-agent RPC (forwarded writes, status) share one TCP
// port. The first byte of every connection says which protocol follows, as in
// Consul's RPC port.
const (
	protoRaft byte = 1
	protoRPC  byte = 2
)

// muxHandshakeTimeout bounds how long an accepted connection may take to
// complete its TLS handshake and send its protocol byte, so a silent client
// cannot hold a goroutine forever.
const muxHandshakeTimeout = 5 * time.Second

var errMuxClosed = errors.New("listener closed")

// mux accepts connections on one listener and routes them by protocol byte.
// It also owns every connection made through it, accepted or dialed, and
// closes them all on Close: raft's NetworkTransport closes neither, and its
// per-connection goroutines would otherwise block in Read forever.
type mux struct {
	ln     net.Listener
	logger hclog.Logger
	// serverTLS and clientTLS are nil without TLS; with it, every
	// connection is TLS from its first byte (tls.go).
	serverTLS *tls.Config
	clientTLS *tls.Config
	// handshakeTimeout is muxHandshakeTimeout, shorter in tests.
	handshakeTimeout time.Duration
	raft             *subListener
	rpc              *subListener
	done             chan struct{}
	once             sync.Once
	// isolated cuts the server off for a test (faults.go).
	isolated atomic.Bool

	mu    sync.Mutex
	conns map[*trackedConn]struct{}
}

func newMux(ln net.Listener, t *TLS, logger hclog.Logger) *mux {
	return newMuxTimeout(ln, t, logger, muxHandshakeTimeout)
}

func newMuxTimeout(ln net.Listener, t *TLS, logger hclog.Logger, handshakeTimeout time.Duration) *mux {
	m := &mux{ln: ln, logger: logger, handshakeTimeout: handshakeTimeout, done: make(chan struct{}), conns: map[*trackedConn]struct{}{}}
	if t != nil {
		m.serverTLS, m.clientTLS = t.serverConfig(), t.clientConfig()
	}
	m.raft = newSubListener(m)
	m.rpc = newSubListener(m)
	go m.serve()
	return m
}

func (m *mux) serve() {
	for {
		conn, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			m.logger.Error("accept failed; no more raft or rpc connections will be accepted", "error", err)
			return
		}
		go m.route(m.track(conn))
	}
}

// track registers conn so Close closes it; a conn that arrives after Close
// is closed at once. The mux tracks the TCP connection, under any TLS, so
// that Close never waits on a TLS close_notify.
func (m *mux) track(conn net.Conn) net.Conn {
	tc := &trackedConn{Conn: conn, m: m}
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-m.done:
		conn.Close()
	default:
		m.conns[tc] = struct{}{}
	}
	return tc
}

type trackedConn struct {
	net.Conn
	m *mux
}

func (c *trackedConn) Close() error {
	c.m.mu.Lock()
	delete(c.m.conns, c)
	c.m.mu.Unlock()
	return c.Conn.Close()
}

func (m *mux) route(conn net.Conn) {
	if m.isolated.Load() {
		conn.Close()
		return
	}
	_ = conn.SetDeadline(time.Now().Add(m.handshakeTimeout))
	if m.serverTLS != nil {
		tc := tls.Server(conn, m.serverTLS)
		if err := tc.Handshake(); err != nil {
			level := hclog.Warn
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				level = hclog.Debug
			}
			m.logger.Log(level, "dropping connection that failed the TLS handshake", "remote", conn.RemoteAddr(), "error", err)
			conn.Close()
			return
		}
		conn = tc
	}
	var b [1]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		conn.Close()
		return
	}
	_ = conn.SetDeadline(time.Time{})
	var dst *subListener
	switch b[0] {
	case protoRaft:
		dst = m.raft
	case protoRPC:
		dst = m.rpc
	default:
		m.logger.Warn("dropping connection with unknown protocol byte", "remote", conn.RemoteAddr(), "byte", b[0])
		conn.Close()
		return
	}
	select {
	case dst.conns <- conn:
	case <-dst.done:
		conn.Close()
	case <-m.done:
		conn.Close()
	}
}

func (m *mux) Close() error {
	var err error
	m.once.Do(func() {
		m.mu.Lock()
		close(m.done)
		conns := m.conns
		m.conns = nil
		m.mu.Unlock()
		err = m.ln.Close()
		for c := range conns {
			c.Conn.Close()
		}
	})
	return err
}

// subListener is the net.Listener for one protocol. Closing it stops its
// Accept; the mux owns the real listener.
type subListener struct {
	m     *mux
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newSubListener(m *mux) *subListener {
	return &subListener{m: m, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *subListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, errMuxClosed
	case <-l.m.done:
		return nil, errMuxClosed
	}
}

func (l *subListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *subListener) Addr() net.Addr { return l.m.ln.Addr() }

// dial connects to a peer's mux, with TLS when configured, and announces
// proto. timeout bounds the TCP connect and the TLS handshake.
func (m *mux) dial(address string, proto byte, timeout time.Duration) (net.Conn, error) {
	if m.isolated.Load() {
		return nil, errIsolated
	}
	raw, err := net.DialTimeout("tcp", address, timeout)
	if err != nil {
		return nil, err
	}
	conn := m.track(raw)
	if m.isolated.Load() { // isolated while dialing
		conn.Close()
		return nil, errIsolated
	}
	if m.clientTLS != nil {
		_ = raw.SetDeadline(time.Now().Add(timeout))
		tc := tls.Client(conn, m.clientTLS)
		if err := tc.Handshake(); err != nil {
			conn.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", address, err)
		}
		_ = raw.SetDeadline(time.Time{})
		conn = tc
	}
	if _, err := conn.Write([]byte{proto}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("write protocol byte to %s: %w", address, err)
	}
	return conn, nil
}

// raftLayer is the raft.StreamLayer over the mux.
type raftLayer struct{ *subListener }

func (l raftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return l.m.dial(string(address), protoRaft, timeout)
}
