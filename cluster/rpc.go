package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tokend/tokend/tokens"
)

// The agent-to-agent RPC is HTTP/1.1 over the mux's RPC protocol byte, so it
// shares the Raft port (and its mutual TLS, tls.go) and gets keep-alive and
// deadlines from net/http.

const maxRPCEntry = 4 << 20

type applyResponse struct {
	Index uint64    `json:"index"`
	Error *rpcError `json:"error,omitempty"`
}

type rpcError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// statusResponse is what one server tells another about itself.
type statusResponse struct {
	ID           string `json:"id"`
	HasState     bool   `json:"has_state"`
	Term         uint64 `json:"term"`
	LastIndex    uint64 `json:"last_index"`
	AppliedIndex uint64 `json:"applied_index"`
	LeaderID     string `json:"leader_id"`
	// BootstrapCandidates are the servers this one would bootstrap with.
	BootstrapCandidates []string `json:"bootstrap_candidates,omitempty"`
}

func (c *Cluster) setupRPC() {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /rpc/apply", c.handleApply)
	mux.HandleFunc("GET /rpc/status", c.handleStatus)
	mux.HandleFunc("POST /rpc/leader/{name}", c.handleLeaderCall)
	mux.HandleFunc("POST /rpc/node/{name}", c.handleNodeCall)
	mux.HandleFunc("GET /rpc/snapshot", c.handleSnapshot)
	c.rpcServer = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          c.logger.Named("rpc").StandardLogger(nil),
	}
	go func() { _ = c.rpcServer.Serve(c.mux.rpc) }()
	c.rpcClient = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			timeout := 5 * time.Second
			if d, ok := ctx.Deadline(); ok {
				timeout = time.Until(d)
			}
			return c.mux.dial(addr, protoRPC, timeout)
		},
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     time.Minute,
	}}
}

// handleApply commits a write forwarded by a follower. It never forwards
// again: a write that reaches a non-leader fails, and the follower reports it.
func (c *Cluster) handleApply(w http.ResponseWriter, r *http.Request) {
	entry, err := io.ReadAll(io.LimitReader(r.Body, maxRPCEntry+1))
	var resp applyResponse
	switch {
	case err != nil:
		resp.Error = &rpcError{Code: tokens.CodeUnavailable, Message: "read forwarded entry: " + err.Error()}
	case len(entry) > maxRPCEntry:
		resp.Error = &rpcError{Code: tokens.CodeInvalid, Message: "forwarded entry is too large"}
	case !c.IsLeader():
		resp.Error = &rpcError{Code: tokens.CodeNoLeader, Message: "the forwarded write reached a server that is no longer the leader"}
	default:
		ctx, cancel := context.WithTimeout(r.Context(), c.cfg.Timing.ApplyTimeout)
		defer cancel()
		resp.Index, err = c.applyLocal(ctx, entry)
		if err != nil {
			e := tokens.AsError(err)
			resp.Error = &rpcError{Code: e.Code, Message: e.Message}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

func (c *Cluster) handleStatus(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(c.status())
}

func (c *Cluster) status() statusResponse {
	_, leader := c.raft.LeaderWithID()
	var candidates []string
	if c.cfg.BootstrapExpect > 0 {
		_, candidates, _ = c.bootstrapCandidates()
	}
	return statusResponse{
		BootstrapCandidates: candidates,
		ID:                  c.cfg.NodeID,
		HasState:            c.hasState(),
		Term:                c.raft.CurrentTerm(),
		LastIndex:           c.raft.LastIndex(),
		AppliedIndex:        c.sm.AppliedIndex(),
		LeaderID:            string(leader),
	}
}

// hasState reports whether this server belongs to a cluster already: it has
// a Raft configuration or log entries.
func (c *Cluster) hasState() bool {
	if c.raft.LastIndex() > 0 {
		return true
	}
	f := c.raft.GetConfiguration()
	return f.Error() == nil && len(f.Configuration().Servers) > 0
}

func (c *Cluster) forwardApply(ctx context.Context, leaderAddr string, entry []byte) (uint64, error) {
	var resp applyResponse
	if err := c.rpc(ctx, http.MethodPost, leaderAddr, "/rpc/apply", entry, &resp); err != nil {
		return 0, tokens.Errorf(tokens.CodeNoLeader, "forward the write to the leader at %s: %v; it may or may not have been applied", leaderAddr, err)
	}
	if resp.Error != nil {
		e := tokens.Errorf(resp.Error.Code, "%s", resp.Error.Message)
		return resp.Index, e
	}
	return resp.Index, nil
}

func (c *Cluster) fetchStatus(ctx context.Context, addr raft.ServerAddress) (statusResponse, error) {
	var s statusResponse
	err := c.rpc(ctx, http.MethodGet, string(addr), "/rpc/status", nil, &s)
	return s, err
}

func (c *Cluster) rpc(ctx context.Context, method, addr, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := c.rpcClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: status %d", method, path, resp.StatusCode)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out)
}

// LeaderHandler serves a request that agents send to the leader. Its error,
// like a state machine rejection, travels back with its code.
type LeaderHandler func(ctx context.Context, body []byte) ([]byte, error)

// HandleLeader registers h as the leader's handler for name. Register every
// handler before the agent starts serving.
func (c *Cluster) HandleLeader(name string, h LeaderHandler) {
	c.HandleLeaderWith(name, CallOptions{}, h)
}

// CallOptions adjust one named call, for the few that carry more than an
// entry or run longer than a write (an operator's restore).
type CallOptions struct {
	// MaxBody bounds the request body; at least 4 MiB.
	MaxBody int64
	// Timeout bounds the call, on both ends; at least ApplyTimeout.
	Timeout time.Duration
}

// HandleLeaderWith is HandleLeader with options, which every agent must
// register alike: the caller's side reads them too.
func (c *Cluster) HandleLeaderWith(name string, opts CallOptions, h LeaderHandler) {
	c.handlersMu.Lock()
	defer c.handlersMu.Unlock()
	if c.handlers == nil {
		c.handlers = map[string]LeaderHandler{}
	}
	if c.callOpts == nil {
		c.callOpts = map[string]CallOptions{}
	}
	c.handlers[name] = h
	c.callOpts[name] = opts
}

// callOptions returns name's options with the defaults filled in.
func (c *Cluster) callOptions(name string) CallOptions {
	c.handlersMu.RLock()
	o := c.callOpts[name]
	c.handlersMu.RUnlock()
	o.MaxBody = max(o.MaxBody, maxRPCEntry)
	o.Timeout = max(o.Timeout, c.cfg.Timing.ApplyTimeout)
	return o
}

func (c *Cluster) leaderHandler(name string) (LeaderHandler, error) {
	c.handlersMu.RLock()
	defer c.handlersMu.RUnlock()
	h, ok := c.handlers[name]
	if !ok {
		return nil, tokens.Errorf(tokens.CodeUnavailable, "the leader has no handler %q: agents of different versions?", name)
	}
	return h, nil
}

// CallLeader runs the leader's handler name on body: here when this agent
// leads, otherwise over RPC, once. It waits up to LeaderWait for an
// election.
func (c *Cluster) CallLeader(ctx context.Context, name string, body []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.callOptions(name).Timeout)
	defer cancel()
	addr, err := c.waitForLeader(ctx)
	if err != nil {
		return nil, err
	}
	return c.callLeaderAt(ctx, addr, name, body)
}

// callLeaderAt is CallLeader once the leader's address, addr, is known.
func (c *Cluster) callLeaderAt(ctx context.Context, addr, name string, body []byte) ([]byte, error) {
	if c.IsLeader() {
		h, err := c.leaderHandler(name)
		if err != nil {
			return nil, err
		}
		return h(ctx, body)
	}
	var resp leaderCallResponse
	if err := c.rpc(ctx, http.MethodPost, addr, "/rpc/leader/"+name, body, &resp); err != nil {
		return nil, tokens.Errorf(tokens.CodeNoLeader, "call the leader at %s: %v", addr, err)
	}
	if resp.Error != nil {
		return nil, tokens.Errorf(resp.Error.Code, "%s", resp.Error.Message)
	}
	return resp.Result, nil
}

type leaderCallResponse struct {
	Result []byte    `json:"result,omitempty"`
	Error  *rpcError `json:"error,omitempty"`
}

func (c *Cluster) handleLeaderCall(w http.ResponseWriter, r *http.Request) {
	c.serveCall(w, r, c.leaderHandler, true)
}

func (c *Cluster) handleNodeCall(w http.ResponseWriter, r *http.Request) {
	c.serveCall(w, r, c.nodeHandler, false)
}

// serveCall runs the named handler that lookup finds, on the leader only if
// leaderOnly.
func (c *Cluster) serveCall(w http.ResponseWriter, r *http.Request, lookup func(string) (LeaderHandler, error), leaderOnly bool) {
	var resp leaderCallResponse
	opts := CallOptions{MaxBody: maxRPCEntry, Timeout: c.cfg.Timing.ApplyTimeout}
	if leaderOnly {
		opts = c.callOptions(r.PathValue("name"))
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, opts.MaxBody+1))
	switch {
	case err != nil:
		resp.Error = &rpcError{Code: tokens.CodeUnavailable, Message: "read request: " + err.Error()}
	case int64(len(body)) > opts.MaxBody:
		resp.Error = &rpcError{Code: tokens.CodeInvalid, Message: "request is too large"}
	case leaderOnly && !c.IsLeader():
		resp.Error = &rpcError{Code: tokens.CodeNoLeader, Message: "the request reached a server that is no longer the leader"}
	default:
		var h LeaderHandler
		if h, err = lookup(r.PathValue("name")); err == nil {
			ctx, cancel := context.WithTimeout(r.Context(), opts.Timeout)
			resp.Result, err = h(ctx, body)
			cancel()
		}
		if err != nil {
			e := tokens.AsError(err)
			resp.Error = &rpcError{Code: e.Code, Message: e.Message}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

// HandleNode registers h as this agent's handler for name, which any agent
// may call on any other with CallNode: for work every agent must do itself,
// such as installing a key. Register every handler before the agent starts
// serving.
func (c *Cluster) HandleNode(name string, h LeaderHandler) {
	c.handlersMu.Lock()
	defer c.handlersMu.Unlock()
	if c.nodeHandlers == nil {
		c.nodeHandlers = map[string]LeaderHandler{}
	}
	c.nodeHandlers[name] = h
}

func (c *Cluster) nodeHandler(name string) (LeaderHandler, error) {
	c.handlersMu.RLock()
	defer c.handlersMu.RUnlock()
	h, ok := c.nodeHandlers[name]
	if !ok {
		return nil, tokens.Errorf(tokens.CodeUnavailable, "the agent has no handler %q: agents of different versions?", name)
	}
	return h, nil
}

// CallNode runs the handler name of the agent whose Raft address is addr:
// here when addr is this agent's, otherwise over RPC, once.
func (c *Cluster) CallNode(ctx context.Context, addr, name string, body []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timing.ApplyTimeout)
	defer cancel()
	if addr == c.raftAddr {
		h, err := c.nodeHandler(name)
		if err != nil {
			return nil, err
		}
		return h(ctx, body)
	}
	var resp leaderCallResponse
	if err := c.rpc(ctx, http.MethodPost, addr, "/rpc/node/"+name, body, &resp); err != nil {
		return nil, tokens.Errorf(tokens.CodeUnavailable, "call the agent at %s: %v", addr, err)
	}
	if resp.Error != nil {
		return nil, tokens.Errorf(resp.Error.Code, "%s", resp.Error.Message)
	}
	return resp.Result, nil
}
