// Package agent is tokend's composition root: it builds the state machine,
// the cluster and the API from a Config and runs them together.
package agent

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/cluster"
	"github.com/tokend/tokend/fsm"
)

// Agent is one running tokend agent.
type Agent struct {
	cfg      Config
	logger   hclog.Logger
	nodeID   string
	fsm      *fsm.FSM
	cluster  *cluster.Cluster
	keys     *keyring
	reads    *reader
	forward  *forwarder
	monitor  *monitor
	rotator  *rotator
	prober   *prober
	alerter  *alerter
	resealer *resealer
	metrics  *metrics
	// audit keeps this agent's audit events; auditLogger writes them.
	audit       auditLog
	auditLogger hclog.Logger
	// ready is closed once New has built everything; leader tasks, which
	// may start while the cluster is still being built, wait for it.
	ready chan struct{}

	httpAddr   string
	handler    http.Handler
	servers    []*http.Server
	errCh      chan error
	stop       context.CancelFunc
	wg         sync.WaitGroup
	shutdownMu sync.Mutex
	shutdown   bool

	// snapshotChecks counts checkSnapshot calls, for tests.
	snapshotChecks atomic.Int64
}

// New starts an agent: its listeners are bound and serving when it returns.
func New(cfg Config) (*Agent, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, logger: cfg.Logger, errCh: make(chan error, 4), ready: make(chan struct{})}
	keys, err := loadKeyring(&cfg)
	if err != nil {
		return nil, err
	}
	a.keys = keys
	tlsc, err := loadTLS(&cfg)
	if err != nil {
		return nil, err
	}
	var gossipKey []byte
	if cfg.GossipKey != "" {
		gossipKey, _ = cluster.ParseGossipKey(cfg.GossipKey) // checked by normalize
	}
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("create data dir: %w", err)
		}
		if err := os.Chmod(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("restrict data dir: %w", err)
		}
	}
	id, err := loadNodeID(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	a.nodeID = id

	httpLn, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on http address: %w", err)
	}
	a.httpAddr = httpLn.Addr().String()

	a.fsm = fsm.New(a.logger.Named("fsm"))
	a.monitor = newMonitor(a.fsm, a.logger.Named("monitor"))
	a.rotator = newRotator(a, cfg.RotationInterval)
	a.prober = newProber(a)
	a.alerter = newAlerter(a)
	a.resealer = newResealer(a)
	var clusterTLS *cluster.TLS
	if tlsc != nil {
		clusterTLS = tlsc.cluster
	}
	a.cluster, err = cluster.New(cluster.Config{
		NodeID:            id,
		NodeName:          cfg.NodeName,
		DataDir:           cfg.DataDir,
		RaftAddr:          cfg.RaftAddr,
		GossipAddr:        cfg.GossipAddr,
		APIAddr:           a.httpAddr,
		Region:            cfg.Region,
		Zone:              cfg.Zone,
		NonVoter:          cfg.NonVoter,
		BootstrapExpect:   cfg.BootstrapExpect,
		Join:              cfg.Join,
		MaxVoters:         cfg.MaxVoters,
		DeadServerTimeout: cfg.DeadServerTimeout,
		Timing:            cfg.Timing,
		Logger:            a.logger.Named("cluster"),
		TLS:               clusterTLS,
		GossipKey:         gossipKey,
		LeaderTasks:       []func(context.Context){a.whenReady(a.monitor.run), a.whenReady(a.rotator.run), a.whenReady(a.prober.run), a.whenReady(a.alerter.run), a.whenReady(a.resealer.run)},
	}, a.fsm)
	if err != nil {
		httpLn.Close()
		return nil, err
	}
	a.cluster.HandleLeader(leaderReports, a.monitor.handle)
	a.cluster.HandleLeader(leaderRotate, a.rotator.handleRotate)
	a.cluster.HandleLeader(leaderAlerts, a.alerter.handle)
	a.registerKeyringHandlers()
	a.registerGossipKeyringHandlers()
	a.registerSnapshotHandlers()
	a.monitor.cluster = a.cluster
	// The state restored from the data dir tells whether this agent was
	// given the cluster's keys; find out now, not at the first fetch.
	if missing := a.keys.missing(a.fsm.State()); len(missing) > 0 {
		httpLn.Close()
		a.cluster.Shutdown()
		return nil, errMissingKeys(missing, a.keys.load().IDs())
	}

	ctx, stop := context.WithCancel(context.Background())
	a.stop = stop
	a.reads = newReader(a.fsm, a.keys)
	a.metrics = newMetrics(a)
	a.forward = newForwarder(a.cluster, a.logger.Named("reports"))
	a.goFunc(func() { a.forward.run(ctx) })
	a.goFunc(func() { a.reads.pruneLoop(ctx) })
	a.goFunc(func() { a.watchKeys(ctx) })

	sockLn, err := listenUnix(cfg.SocketPath)
	if err != nil {
		httpLn.Close()
		a.Shutdown(context.Background())
		return nil, err
	}
	a.auditLogger = a.logger.Named("audit")
	a.handler = api.NewHandler(&backend{a: a}, a.logger.Named("api"), api.Options{ACL: cfg.ACL, ReportRate: cfg.ReportRate, ReportBurst: cfg.ReportBurst})
	for _, ln := range []net.Listener{httpLn, sockLn} {
		srv := &http.Server{
			Handler:           a.handler,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			// Long enough for the longest ?wait= (events: 5m) to answer.
			WriteTimeout:   api.MaxEventsWait + 30*time.Second,
			IdleTimeout:    2 * time.Minute,
			MaxHeaderBytes: 64 << 10,
			ErrorLog:       a.logger.Named("http").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
		}
		serve := srv.Serve
		switch {
		case ln == sockLn:
			srv.ConnContext = peerCredContext
		case tlsc != nil:
			srv.TLSConfig = tlsc.api
			// HTTP/1.1 only, as on the socket: over HTTP/2 a client whose
			// certificate is refused hears only that the connection failed.
			srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
			serve = func(ln net.Listener) error { return srv.ServeTLS(ln, "", "") }
		}
		a.servers = append(a.servers, srv)
		a.goFunc(func() {
			if err := serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.errCh <- fmt.Errorf("serve %s: %w", ln.Addr(), err)
			}
		})
	}
	close(a.ready)
	a.logger.Info("agent started", "node", cfg.NodeName, "id", id, "http", a.httpAddr, "socket", cfg.SocketPath,
		"raft", a.cluster.RaftAddr(), "gossip", a.cluster.GossipAddr(), "region", cfg.Region, "zone", cfg.Zone,
		"tls", tlsc != nil, "gossip_encryption", a.cluster.GossipEncrypted(),
		"raft_multiplier", cfg.RaftMultiplier, "raft_heartbeat", cfg.Timing.RaftHeartbeat, "raft_commit", cfg.Timing.RaftCommit)
	return a, nil
}

// whenReady delays a leader task until the agent is fully built.
func (a *Agent) whenReady(task func(context.Context)) func(context.Context) {
	return func(ctx context.Context) {
		select {
		case <-a.ready:
			task(ctx)
		case <-ctx.Done():
		}
	}
}

func (a *Agent) goFunc(f func()) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		f()
	}()
}

// Shutdown stops serving, waiting up to ctx for requests in flight, then
// stops Raft and gossip. The agent keeps its place in the cluster.
func (a *Agent) Shutdown(ctx context.Context) error {
	a.shutdownMu.Lock()
	defer a.shutdownMu.Unlock()
	if a.shutdown {
		return nil
	}
	a.shutdown = true
	var errs []error
	for _, srv := range a.servers {
		if err := srv.Shutdown(ctx); err != nil {
			errs = append(errs, err)
			srv.Close()
		}
	}
	if a.stop != nil {
		a.stop()
	}
	a.cluster.Shutdown()
	a.wg.Wait()
	a.logger.Info("agent stopped")
	return errors.Join(errs...)
}

// Err delivers a fatal error from a listener.
func (a *Agent) Err() <-chan error { return a.errCh }

// Handler is the HTTP API the agent serves on its listeners.
func (a *Agent) Handler() http.Handler { return a.handler }

// TLS reports whether the agent runs with TLS: mutual TLS between agents,
// HTTPS on the TCP API.
func (a *Agent) TLS() bool { return a.cfg.tlsOn() }

// HTTPAddr is the bound TCP address of the API.
func (a *Agent) HTTPAddr() string { return a.httpAddr }

// SocketPath is the unix socket the API listens on.
func (a *Agent) SocketPath() string { return a.cfg.SocketPath }

// NodeName is this agent's gossip name.
func (a *Agent) NodeName() string { return a.cfg.NodeName }

// NodeID is this agent's Raft server id.
func (a *Agent) NodeID() string { return a.nodeID }

// RaftAddr is the bound Raft and RPC address.
func (a *Agent) RaftAddr() string { return a.cluster.RaftAddr() }

// GossipAddr is the bound gossip address.
func (a *Agent) GossipAddr() string { return a.cluster.GossipAddr() }

// Snapshot has this agent's Raft snapshot the state now and compact its
// log.
func (a *Agent) Snapshot() error { return a.cluster.Snapshot() }

// IsLeader reports whether this agent leads the cluster.
func (a *Agent) IsLeader() bool { return a.cluster.IsLeader() }

// TransferLeadership makes this agent, if it leads, hand leadership to
// another voter.
func (a *Agent) TransferLeadership() error { return a.cluster.TransferLeadership() }

// LeaderID returns the Raft server id and address of the leader this agent
// knows, empty if none.
func (a *Agent) LeaderID() (id, raftAddr string) { return a.cluster.Leader() }

// WaitForLeader blocks until the cluster has a leader this agent knows.
func (a *Agent) WaitForLeader(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if id, _ := a.cluster.Leader(); id != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no leader: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// loadNodeID returns this agent's Raft server id, creating and storing one
// the first time. In-memory agents get a new id each start.
func loadNodeID(dataDir string) (string, error) {
	path := filepath.Join(dataDir, "node-id")
	if dataDir != "" {
		b, err := os.ReadFile(path)
		switch {
		case err == nil:
			id := strings.TrimSpace(string(b))
			if id == "" {
				return "", fmt.Errorf("%s is empty: remove it to give this agent a new identity", path)
			}
			return id, nil
		case !errors.Is(err, os.ErrNotExist):
			return "", fmt.Errorf("read node id: %w", err)
		}
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	id := hex.EncodeToString(b[:])
	if dataDir != "" {
		if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("write node id: %w", err)
		}
	}
	return id, nil
}

// listenUnix listens on a unix socket with mode 0660, replacing a stale
// socket file but never a live socket or a file that is not a socket.
func listenUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket; refusing to replace it", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("another process is serving on %s", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket dir: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on unix socket: %w", err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("set socket mode: %w", err)
	}
	return ln, nil
}
