package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/tokend/tokend/api"
)

// ListPools returns every pool.
func (c *Client) ListPools(ctx context.Context) ([]api.Pool, error) {
	var out []api.Pool
	_, err := c.do(ctx, http.MethodGet, "/v1/pools", c.readQuery(nil), nil, &out)
	return out, err
}

// GetPool returns one pool.
func (c *Client) GetPool(ctx context.Context, name string) (api.Pool, error) {
	var out api.Pool
	path, err := poolPath(name)
	if err != nil {
		return out, err
	}
	_, err = c.do(ctx, http.MethodGet, path, c.readQuery(nil), nil, &out)
	return out, err
}

// ApplyPool creates pool name or replaces its definition, and returns the
// pool as committed.
func (c *Client) ApplyPool(ctx context.Context, name string, req api.PoolRequest) (api.Pool, error) {
	var out api.Pool
	path, err := poolPath(name)
	if err != nil {
		return out, err
	}
	_, err = c.do(ctx, http.MethodPut, path, nil, req, &out)
	return out, err
}

// DeletePool deletes a pool. Without force the agent refuses to delete a
// pool that still holds tokens.
func (c *Client) DeletePool(ctx context.Context, name string, force bool) (api.WriteResponse, error) {
	var out api.WriteResponse
	path, err := poolPath(name)
	if err != nil {
		return out, err
	}
	var q url.Values
	if force {
		q = url.Values{"force": {"true"}}
	}
	_, err = c.do(ctx, http.MethodDelete, path, q, nil, &out)
	return out, err
}

// ListTokens returns the metadata of a pool's tokens; never their values.
func (c *Client) ListTokens(ctx context.Context, pool string) ([]api.TokenInfo, error) {
	var out []api.TokenInfo
	path, err := poolPath(pool)
	if err != nil {
		return nil, err
	}
	_, err = c.do(ctx, http.MethodGet, path+"/tokens", c.readQuery(nil), nil, &out)
	return out, err
}

// GetTokenInfo returns one token's metadata.
func (c *Client) GetTokenInfo(ctx context.Context, pool, id string) (api.TokenInfo, error) {
	var out api.TokenInfo
	path, err := tokenPath(pool, id)
	if err != nil {
		return out, err
	}
	_, err = c.do(ctx, http.MethodGet, path, c.readQuery(nil), nil, &out)
	return out, err
}

// AddToken adds a token to a pool and returns its metadata, with the id the
// agent gave it.
func (c *Client) AddToken(ctx context.Context, pool string, req api.TokenRequest) (api.TokenInfo, error) {
	var out api.TokenInfo
	path, err := poolPath(pool)
	if err != nil {
		return out, err
	}
	_, err = c.do(ctx, http.MethodPost, path+"/tokens", nil, req, &out)
	return out, err
}

// RemoveToken removes a token from a pool.
func (c *Client) RemoveToken(ctx context.Context, pool, id string) (api.WriteResponse, error) {
	var out api.WriteResponse
	path, err := tokenPath(pool, id)
	if err != nil {
		return out, err
	}
	_, err = c.do(ctx, http.MethodDelete, path, nil, nil, &out)
	return out, err
}

// FetchOptions tune a token fetch.
type FetchOptions struct {
	// Exclude lists token ids not to serve, such as one that just failed.
	Exclude []string
	// Wait, when every usable token is cooling down, lets the agent hold
	// the fetch until the first comes back, if that is within Wait (at most
	// api.MaxFetchWait). Zero answers all_cooling_down at once.
	Wait time.Duration
	// Consistent makes this fetch a consistent read (WithConsistentReads):
	// it selects from a state that holds every write committed before it.
	Consistent bool
}

func (o FetchOptions) query(format string) url.Values {
	q := url.Values{}
	if format != "" {
		q.Set("format", format)
	}
	for _, id := range o.Exclude {
		q.Add("exclude", id)
	}
	if o.Wait != 0 {
		q.Set("wait", o.Wait.String())
	}
	return withConsistent(q, o.Consistent)
}

// FetchToken returns the token the agent serves from pool now, and how
// fresh the agent's state was.
func (c *Client) FetchToken(ctx context.Context, pool string, opts FetchOptions) (api.Token, Meta, error) {
	var out api.Token
	path, err := poolPath(pool)
	if err != nil {
		return out, Meta{}, err
	}
	resp, err := c.send(ctx, request{method: http.MethodGet, path: path + "/token", query: c.readQuery(opts.query("")), out: &out})
	if err != nil {
		return out, Meta{}, err
	}
	return out, parseMeta(resp.header), nil
}

// RawToken is a token fetched with format=raw: its value, and its id from
// the X-Tokend-Token-Id header.
type RawToken struct {
	ID    string
	Value string
}

// FetchRaw is FetchToken with format=raw: the agent answers with the bare
// value.
func (c *Client) FetchRaw(ctx context.Context, pool string, opts FetchOptions) (RawToken, Meta, error) {
	path, err := poolPath(pool)
	if err != nil {
		return RawToken{}, Meta{}, err
	}
	resp, err := c.send(ctx, request{method: http.MethodGet, path: path + "/token", query: c.readQuery(opts.query("raw"))})
	if err != nil {
		return RawToken{}, Meta{}, err
	}
	id := resp.header.Get(api.HeaderTokenID)
	if id == "" {
		return RawToken{}, Meta{}, fmt.Errorf("tokend at %s: GET %s/token: answer has no %s header", c.addr, path, api.HeaderTokenID)
	}
	return RawToken{ID: id, Value: string(resp.body)}, parseMeta(resp.header), nil
}

// Report tells the agent how using a token went. A change the agent applied
// but has not committed yet comes back with Committed false and no error.
func (c *Client) Report(ctx context.Context, pool, id string, req api.ReportRequest) (api.ReportResponse, error) {
	var out api.ReportResponse
	path, err := tokenPath(pool, id)
	if err != nil {
		return out, err
	}
	_, err = c.do(ctx, http.MethodPost, path+"/report", nil, req, &out)
	return out, err
}

// ResetToken brings a token back to healthy on an operator's word, whatever
// its health was, and returns its metadata after the reset.
func (c *Client) ResetToken(ctx context.Context, pool, id string) (api.TokenInfo, error) {
	var out api.TokenInfo
	path, err := tokenPath(pool, id)
	if err != nil {
		return out, err
	}
	_, err = c.do(ctx, http.MethodPost, path+"/reset", nil, nil, &out)
	return out, err
}

// Rotate asks the leader to replace tokens of pool now: the one named by
// token, or, when token is empty, every active token that has no rotation
// open. It answers at once with the ids of the rotations it opened; their
// results arrive as events. A pool whose provider cannot issue (static)
// comes back as a conflict.
func (c *Client) Rotate(ctx context.Context, pool, token string) (api.RotateResponse, error) {
	var out api.RotateResponse
	path, err := poolPath(pool)
	if err != nil {
		return out, err
	}
	var q url.Values
	if token != "" {
		q = url.Values{"token": {token}}
	}
	_, err = c.do(ctx, http.MethodPost, path+"/rotate", q, nil, &out)
	return out, err
}

// Alerts returns the alerts the leader has firing.
func (c *Client) Alerts(ctx context.Context) (api.Alerts, error) {
	var out api.Alerts
	_, err := c.do(ctx, http.MethodGet, "/v1/alerts", nil, nil, &out)
	return out, err
}

// EventsOptions select what Events returns.
type EventsOptions struct {
	// Since asks for events after this Raft index; see Events for what to
	// pass to get what came next.
	Since uint64
	// Wait, when there is no such event yet, lets the agent hold the
	// request until one happens or Wait passes (at most api.MaxEventsWait).
	// The context must allow for it.
	Wait time.Duration
	// Limit bounds how many events come back; zero takes the agent's
	// default (100), and the most is api.MaxEventsLimit.
	Limit int
}

// Events returns the oldest events after opts.Since that the agent still
// keeps, waiting up to opts.Wait for one when there are none. An answer
// whose Events is empty means Wait passed with nothing new; Truncated says
// events after Since were dropped before they could be read. Pass the
// answer's Index as the next Since: pages end on a Raft entry's last event,
// so nothing is skipped or repeated.
func (c *Client) Events(ctx context.Context, opts EventsOptions) (api.Events, error) {
	var out api.Events
	q := url.Values{}
	if opts.Since != 0 {
		q.Set("since", strconv.FormatUint(opts.Since, 10))
	}
	if opts.Wait != 0 {
		q.Set("wait", opts.Wait.String())
	}
	if opts.Limit != 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	_, err := c.send(ctx, request{method: http.MethodGet, path: "/v1/events", query: c.readQuery(q), out: &out})
	return out, err
}

// Metrics returns the agent's Prometheus metrics in the text exposition
// format.
func (c *Client) Metrics(ctx context.Context) (string, error) {
	resp, err := c.send(ctx, request{method: http.MethodGet, path: "/v1/metrics", accept: "text/plain"})
	if err != nil {
		return "", err
	}
	return string(resp.body), nil
}

// Health returns the agent's own health.
func (c *Client) Health(ctx context.Context) (api.AgentHealth, error) {
	var out api.AgentHealth
	_, err := c.do(ctx, http.MethodGet, "/v1/health", nil, nil, &out)
	return out, err
}

// Leader returns the Raft leader the agent knows; empty fields mean none.
func (c *Client) Leader(ctx context.Context) (api.Leader, error) {
	var out api.Leader
	_, err := c.do(ctx, http.MethodGet, "/v1/status/leader", nil, nil, &out)
	return out, err
}

// Peers returns the servers in the Raft configuration.
func (c *Client) Peers(ctx context.Context) ([]api.Peer, error) {
	var out []api.Peer
	_, err := c.do(ctx, http.MethodGet, "/v1/status/peers", nil, nil, &out)
	return out, err
}

// Members returns the agents gossip knows.
func (c *Client) Members(ctx context.Context) ([]api.Member, error) {
	var out []api.Member
	_, err := c.do(ctx, http.MethodGet, "/v1/members", nil, nil, &out)
	return out, err
}

// Keyring lists every agent's keyring and how many secrets each key seals.
func (c *Client) Keyring(ctx context.Context) (api.Keyring, error) {
	var out api.Keyring
	_, err := c.do(ctx, http.MethodGet, "/v1/operator/keyring", nil, nil, &out)
	return out, err
}

// KeyringInstall installs a base64 key on every agent.
func (c *Client) KeyringInstall(ctx context.Context, key string) (api.KeyringChange, error) {
	var out api.KeyringChange
	_, err := c.do(ctx, http.MethodPost, "/v1/operator/keyring", nil, api.KeyringInstallRequest{Key: key}, &out)
	return out, err
}

// KeyringUse makes the cluster seal new secrets with key id; with force,
// agents that are failed in gossip are passed over.
func (c *Client) KeyringUse(ctx context.Context, id string, force bool) (api.KeyringChange, error) {
	var out api.KeyringChange
	var q url.Values
	if force {
		q = url.Values{"force": {"true"}}
	}
	_, err := c.do(ctx, http.MethodPost, "/v1/operator/keyring/"+url.PathEscape(id)+"/use", q, nil, &out)
	return out, err
}

// KeyringRemove removes key id from every agent.
func (c *Client) KeyringRemove(ctx context.Context, id string) (api.KeyringChange, error) {
	var out api.KeyringChange
	_, err := c.do(ctx, http.MethodDelete, "/v1/operator/keyring/"+url.PathEscape(id), nil, nil, &out)
	return out, err
}

// GossipKeyring lists every agent's gossip key ids.
func (c *Client) GossipKeyring(ctx context.Context) (api.GossipKeyring, error) {
	var out api.GossipKeyring
	_, err := c.do(ctx, http.MethodGet, "/v1/operator/gossip-keyring", nil, nil, &out)
	return out, err
}

// GossipKeyringInstall installs a base64 gossip key on every agent.
func (c *Client) GossipKeyringInstall(ctx context.Context, key string) (api.GossipKeyringChange, error) {
	var out api.GossipKeyringChange
	_, err := c.do(ctx, http.MethodPost, "/v1/operator/gossip-keyring", nil, api.KeyringInstallRequest{Key: key}, &out)
	return out, err
}

// GossipKeyringUse makes every agent encrypt gossip with key id; with
// force, agents that are failed in gossip are passed over.
func (c *Client) GossipKeyringUse(ctx context.Context, id string, force bool) (api.GossipKeyringChange, error) {
	var out api.GossipKeyringChange
	var q url.Values
	if force {
		q = url.Values{"force": {"true"}}
	}
	_, err := c.do(ctx, http.MethodPost, "/v1/operator/gossip-keyring/"+url.PathEscape(id)+"/use", q, nil, &out)
	return out, err
}

// GossipKeyringRemove removes gossip key id from every agent.
func (c *Client) GossipKeyringRemove(ctx context.Context, id string) (api.GossipKeyringChange, error) {
	var out api.GossipKeyringChange
	_, err := c.do(ctx, http.MethodDelete, "/v1/operator/gossip-keyring/"+url.PathEscape(id), nil, nil, &out)
	return out, err
}

// ACLBootstrap creates the management token, once per cluster, and returns
// its secret.
func (c *Client) ACLBootstrap(ctx context.Context) (api.ACLTokenSecret, error) {
	var out api.ACLTokenSecret
	_, err := c.do(ctx, http.MethodPost, "/v1/acl/bootstrap", nil, nil, &out)
	return out, err
}

// ACLPolicies lists the ACL policies.
func (c *Client) ACLPolicies(ctx context.Context) ([]api.ACLPolicy, error) {
	var out []api.ACLPolicy
	_, err := c.do(ctx, http.MethodGet, "/v1/acl/policies", c.readQuery(nil), nil, &out)
	return out, err
}

// ACLPolicyApply creates or replaces policy name.
func (c *Client) ACLPolicyApply(ctx context.Context, name string, p api.ACLPolicyRequest) (api.WriteResponse, error) {
	var out api.WriteResponse
	_, err := c.do(ctx, http.MethodPut, "/v1/acl/policies/"+url.PathEscape(name), nil, p, &out)
	return out, err
}

// ACLPolicyDelete deletes policy name.
func (c *Client) ACLPolicyDelete(ctx context.Context, name string) (api.WriteResponse, error) {
	var out api.WriteResponse
	_, err := c.do(ctx, http.MethodDelete, "/v1/acl/policies/"+url.PathEscape(name), nil, nil, &out)
	return out, err
}

// ACLTokens lists the ACL tokens, without their secrets.
func (c *Client) ACLTokens(ctx context.Context) ([]api.ACLToken, error) {
	var out []api.ACLToken
	_, err := c.do(ctx, http.MethodGet, "/v1/acl/tokens", c.readQuery(nil), nil, &out)
	return out, err
}

// ACLTokenCreate creates a token and returns its secret, shown this once.
func (c *Client) ACLTokenCreate(ctx context.Context, req api.ACLTokenRequest) (api.ACLTokenSecret, error) {
	var out api.ACLTokenSecret
	_, err := c.do(ctx, http.MethodPost, "/v1/acl/tokens", nil, req, &out)
	return out, err
}

// ACLTokenDelete deletes the token with accessor id.
func (c *Client) ACLTokenDelete(ctx context.Context, accessor string) (api.WriteResponse, error) {
	var out api.WriteResponse
	_, err := c.do(ctx, http.MethodDelete, "/v1/acl/tokens/"+url.PathEscape(accessor), nil, nil, &out)
	return out, err
}

// AuditLog returns the agent's newest audit events (up to limit; 0 means
// all it keeps), oldest first.
func (c *Client) AuditLog(ctx context.Context, limit int) ([]api.AuditEvent, error) {
	var out []api.AuditEvent
	var q url.Values
	if limit > 0 {
		q = url.Values{"limit": {strconv.Itoa(limit)}}
	}
	_, err := c.do(ctx, http.MethodGet, "/v1/audit", q, nil, &out)
	return out, err
}

// SnapshotSave returns a snapshot file of the cluster's state, taken on the
// leader: the file's bytes, to keep as they are, and the file as read and
// checked (format, checksum, header).
func (c *Client) SnapshotSave(ctx context.Context) ([]byte, *api.SnapshotFile, error) {
	resp, err := c.send(ctx, request{method: http.MethodGet, path: "/v1/snapshot", accept: "application/octet-stream", limit: api.MaxSnapshotFileBytes})
	if err != nil {
		return nil, nil, err
	}
	file, err := api.DecodeSnapshot(resp.body)
	if err != nil {
		return nil, nil, fmt.Errorf("tokend at %s sent a snapshot that does not check out: %w", c.addr, err)
	}
	return resp.body, file, nil
}

// SnapshotRestore makes the state in a snapshot file the state of every
// agent. The agent checks all of it first; anything it refuses changes
// nothing.
func (c *Client) SnapshotRestore(ctx context.Context, file []byte) (api.SnapshotRestored, error) {
	var out api.SnapshotRestored
	_, err := c.send(ctx, request{method: http.MethodPut, path: "/v1/snapshot", raw: file, contentType: "application/octet-stream", out: &out})
	return out, err
}
