package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/tokend/tokend/tokens"
)

func (s *server) listPools(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r, "consistent"); err != nil {
		return err
	}
	view, err := s.readView(w, r)
	if err != nil {
		return err
	}
	principal, _ := PrincipalFrom(r.Context())
	out := []Pool{}
	for _, p := range view.Pools() {
		if !principal.canRead(p) {
			continue
		}
		_, toks, _ := view.Pool(p.Name)
		out = append(out, toPool(view, p, toks))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) getPool(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r, "pool", "pool")
	if err != nil {
		return err
	}
	if err := onlyParams(r, "consistent"); err != nil {
		return err
	}
	view, err := s.readView(w, r)
	if err != nil {
		return err
	}
	p, toks, ok := view.Pool(name)
	if !ok {
		return poolNotFound(name)
	}
	writeJSON(w, http.StatusOK, toPool(view, p, toks))
	return nil
}

func (s *server) putPool(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r, "pool", "pool")
	if err != nil {
		return err
	}
	if err := onlyParams(r); err != nil {
		return err
	}
	var req PoolRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	p := req.ToPool(name)
	if err := p.Normalize(); err != nil {
		return err
	}
	index, err := s.b.ApplyPool(r.Context(), p)
	if err != nil {
		return err
	}
	s.logger.Info("pool applied", "pool", name, "selection", p.Selection, "index", index)
	setIndex(w, index)
	view := s.b.View()
	if cur, toks, ok := view.Pool(name); ok {
		writeJSON(w, http.StatusOK, toPool(view, cur, toks))
		return nil
	}
	return poolNotFound(name) // deleted again right after the write
}

func (s *server) deletePool(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r, "pool", "pool")
	if err != nil {
		return err
	}
	if err := onlyParams(r, "force"); err != nil {
		return err
	}
	force, err := boolParam(r, "force")
	if err != nil {
		return err
	}
	// The state machine decides whether the pool exists: this agent's
	// state may lag the leader's.
	index, err := s.b.DeletePool(r.Context(), name, force)
	if err != nil {
		return err
	}
	s.logger.Info("pool deleted", "pool", name, "force", force, "index", index)
	setIndex(w, index)
	writeJSON(w, http.StatusOK, WriteResponse{Index: index})
	return nil
}

func (s *server) listTokens(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r, "pool", "pool")
	if err != nil {
		return err
	}
	if err := onlyParams(r, "consistent"); err != nil {
		return err
	}
	view, err := s.readView(w, r)
	if err != nil {
		return err
	}
	_, toks, ok := view.Pool(name)
	if !ok {
		return poolNotFound(name)
	}
	out := make([]TokenInfo, 0, len(toks))
	for _, t := range toks {
		out = append(out, toTokenInfo(view, t))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) getTokenInfo(w http.ResponseWriter, r *http.Request) error {
	view, t, err := s.lookupToken(w, r, "consistent")
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toTokenInfo(view, t))
	return nil
}

// lookupToken finds the token of a path such as /v1/pools/{pool}/tokens/{id},
// for a request that takes the query parameters params.
func (s *server) lookupToken(w http.ResponseWriter, r *http.Request, params ...string) (View, *tokens.Token, error) {
	name, id, err := tokenPath(r, params...)
	if err != nil {
		return nil, nil, err
	}
	view, err := s.readView(w, r)
	if err != nil {
		return nil, nil, err
	}
	_, toks, ok := view.Pool(name)
	if !ok {
		return nil, nil, poolNotFound(name)
	}
	for _, t := range toks {
		if t.ID == id {
			return view, t, nil
		}
	}
	return nil, nil, tokenNotFound(name, id)
}

func (s *server) addToken(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r, "pool", "pool")
	if err != nil {
		return err
	}
	if err := onlyParams(r); err != nil {
		return err
	}
	var req TokenRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	t := tokens.Token{Pool: name, Priority: req.Priority, Labels: req.Labels}
	if req.ExpiresAt != nil {
		t.ExpiresAt = *req.ExpiresAt
	}
	if req.NotBefore != nil {
		t.NotBefore = *req.NotBefore
	}
	id, index, err := s.b.AddToken(r.Context(), t, tokens.Secret(req.Value))
	if err != nil {
		return err
	}
	s.logger.Info("token added", "pool", name, "token", id, "index", index)
	setIndex(w, index)
	view := s.b.View()
	_, toks, _ := view.Pool(name)
	for _, t := range toks {
		if t.ID == id {
			writeJSON(w, http.StatusCreated, toTokenInfo(view, t))
			return nil
		}
	}
	return tokenNotFound(name, id) // removed again right after the write
}

func (s *server) removeToken(w http.ResponseWriter, r *http.Request) error {
	pool, id, err := tokenPath(r)
	if err != nil {
		return err
	}
	index, err := s.b.RemoveToken(r.Context(), pool, id)
	if err != nil {
		return err
	}
	s.logger.Info("token removed", "pool", pool, "token", id, "index", index)
	setIndex(w, index)
	writeJSON(w, http.StatusOK, WriteResponse{Index: index})
	return nil
}

// MaxFetchWait bounds ?wait= on a token fetch.
const MaxFetchWait = time.Minute

// fetchToken is the hot path: local state only, no Raft, unless the client
// asks for a consistent fetch.
func (s *server) fetchToken(w http.ResponseWriter, r *http.Request) error {
	start := time.Now()
	name, err := pathName(r, "pool", "pool")
	if err != nil {
		s.b.ObserveFetch("", tokens.CodeInvalid, time.Since(start))
		return err
	}
	t, raw, view, err := s.selectToken(w, r, name)
	result := "ok"
	if err != nil {
		result = errorCode(err)
	}
	defer func() { s.b.ObserveFetch(name, result, time.Since(start)) }()
	if err != nil {
		return err
	}
	value, err := view.Open(t)
	if err != nil {
		result = errorCode(err)
		return err
	}
	h := w.Header()
	h["Cache-Control"] = headerNoStore
	h[headerTokenID] = []string{t.ID}
	if raw {
		h["Content-Type"] = headerTextPlain
		_, _ = io.WriteString(w, value.Reveal())
		return nil
	}
	// Compact, unlike the other endpoints' indented answers: a fetch is on
	// the hot path of every call a client makes, read by programs, and
	// indenting was 6 % of a busy follower's CPU.
	writeCompactJSON(w, http.StatusOK, Token{
		ID:        t.ID,
		Pool:      t.Pool,
		Value:     value.Reveal(),
		ExpiresAt: timePtr(t.ExpiresAt),
		Priority:  t.Priority,
		Labels:    t.Labels,
		Health:    string(view.Health(t).StateAt(view.Now())),
	})
	return nil
}

// selectToken parses a fetch's query and picks the token. With ?consistent,
// it picks from a state that holds every write committed before the
// request arrived. With ?wait=, a fetch that finds every usable token
// cooling down waits, within that budget, for the first to come back (or
// for the state to change).
func (s *server) selectToken(w http.ResponseWriter, r *http.Request, name string) (*tokens.Token, bool, View, error) {
	var q url.Values
	if r.URL.RawQuery != "" {
		q = r.URL.Query()
	}
	raw := false
	var wait time.Duration
	consistent := false
	for k, vs := range q {
		v := vs[len(vs)-1]
		switch k {
		case "format":
			switch v {
			case "raw":
				raw = true
			case "json", "":
			default:
				return nil, false, nil, badRequest(fmt.Sprintf("format %q is not supported: use json or raw", truncate(v)))
			}
		case "exclude":
			for _, id := range vs {
				if !tokens.ValidTokenID(id) {
					return nil, false, nil, badRequest(fmt.Sprintf("exclude %q is not a token id: it must match %s", truncate(id), tokens.NamePatternString))
				}
			}
		case "wait":
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 || d > MaxFetchWait {
				return nil, false, nil, badRequest(fmt.Sprintf("wait %q must be a duration between 0s and %s, such as 5s", truncate(v), MaxFetchWait))
			}
			wait = d
		case "consistent":
			var err error
			if consistent, err = consistentParam(q); err != nil {
				return nil, false, nil, err
			}
		default:
			return nil, false, nil, badRequest(fmt.Sprintf("unknown query parameter %q: use format, exclude, wait, consistent", truncate(k)))
		}
	}
	var confirmed time.Time
	if consistent {
		var err error
		if confirmed, err = s.b.ConsistentRead(r.Context()); err != nil {
			return nil, false, nil, err
		}
	}
	deadline := time.Now().Add(wait)
	for {
		fresh := s.b.Freshness()
		view := s.b.View()
		t, err := view.Select(name, q["exclude"])
		var te *tokens.Error
		if err == nil || !errors.As(err, &te) || te.Code != tokens.CodeAllCoolingDown || te.RetryAt.After(deadline) {
			if consistent {
				s.setConsistentFreshness(w, fresh, confirmed)
			} else {
				s.setFreshnessFrom(w, fresh)
			}
			return t, raw, view, err
		}
		ctx, cancel := context.WithDeadline(r.Context(), te.RetryAt)
		s.b.WaitForChange(ctx, fresh.AppliedIndex)
		cancel()
		if err := r.Context().Err(); err != nil {
			return nil, false, nil, err
		}
	}
}

func errorCode(err error) string {
	_, body := errorResponse(err)
	return body.Code
}

func (s *server) report(w http.ResponseWriter, r *http.Request) error {
	principal, _ := PrincipalFrom(r.Context())
	if ok, wait := s.reports.allow(principal.String(), time.Now()); !ok {
		e := tokens.Errorf(tokens.CodeRateLimited, "%s sends reports faster than this agent takes them (%g a second, bursts of %d): slow down", principal, float64(s.reports.rate), s.reports.burst)
		e.RetryAt = time.Now().Add(wait)
		return e
	}
	_, t, err := s.lookupToken(w, r)
	if err != nil {
		return err
	}
	var req ReportRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	outcome, err := tokens.ParseOutcome(req.Outcome)
	if err != nil {
		return err
	}
	var retryAfter time.Duration
	if req.RetryAfterSeconds != nil {
		secs := *req.RetryAfterSeconds
		maxSecs := int(tokens.MaxCooldown / time.Second)
		switch {
		case outcome != tokens.OutcomeRateLimited:
			return badRequest("retry_after_seconds is only meaningful with outcome rate_limited")
		case secs < 1 || secs > maxSecs:
			return badRequest(fmt.Sprintf("retry_after_seconds must be between 1 and %d, got %d", maxSecs, secs))
		}
		retryAfter = time.Duration(secs) * time.Second
	}
	var latency time.Duration
	if req.LatencyMS != nil {
		switch {
		case outcome != tokens.OutcomeOK:
			return badRequest("latency_ms is only meaningful with outcome ok")
		case *req.LatencyMS < 0 || *req.LatencyMS > 3_600_000:
			return badRequest(fmt.Sprintf("latency_ms must be between 0 and 3600000, got %d", *req.LatencyMS))
		}
		latency = time.Duration(*req.LatencyMS) * time.Millisecond
	}
	resp, err := s.b.Report(r.Context(), t.Pool, t.ID, outcome, retryAfter, latency)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if resp.Pending != "" {
		status = http.StatusAccepted
	}
	if resp.Index > 0 {
		setIndex(w, resp.Index)
	}
	writeJSON(w, status, resp)
	return nil
}

func (s *server) resetToken(w http.ResponseWriter, r *http.Request) error {
	pool, id, err := tokenPath(r)
	if err != nil {
		return err
	}
	index, err := s.b.ResetToken(r.Context(), pool, id)
	if err != nil {
		return err
	}
	s.logger.Info("token reset", "pool", pool, "token", id, "index", index)
	setIndex(w, index)
	view := s.b.View()
	_, toks, _ := view.Pool(pool)
	for _, t := range toks {
		if t.ID == id {
			writeJSON(w, http.StatusOK, toTokenInfo(view, t))
			return nil
		}
	}
	return tokenNotFound(pool, id) // removed right after the reset
}

func (s *server) rotate(w http.ResponseWriter, r *http.Request) error {
	pool, err := pathName(r, "pool", "pool")
	if err != nil {
		return err
	}
	if err := onlyParams(r, "token"); err != nil {
		return err
	}
	token := r.URL.Query().Get("token")
	if token != "" && !tokens.ValidTokenID(token) {
		return badRequest(fmt.Sprintf("token %q is not a token id: it must match %s", truncate(token), tokens.NamePatternString))
	}
	ids, err := s.b.Rotate(r.Context(), pool, token)
	if err != nil {
		return err
	}
	s.logger.Info("rotation requested", "pool", pool, "token", token, "rotations", len(ids))
	if ids == nil {
		ids = []string{}
	}
	writeJSON(w, http.StatusAccepted, RotateResponse{Rotations: ids})
	return nil
}

// Bounds of GET /v1/events.
const (
	MaxEventsWait  = 5 * time.Minute
	MaxEventsLimit = 1000
)

func (s *server) events(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r, "since", "wait", "limit", "consistent"); err != nil {
		return err
	}
	q := r.URL.Query()
	consistent, err := consistentParam(q)
	if err != nil {
		return err
	}
	var since uint64
	if v := q.Get("since"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return badRequest(fmt.Sprintf("since %q must be a Raft index: a non-negative integer", truncate(v)))
		}
		since = n
	}
	var wait time.Duration
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > MaxEventsWait {
			return badRequest(fmt.Sprintf("wait %q must be a duration between 0s and %s, such as 30s", truncate(v), MaxEventsWait))
		}
		wait = d
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxEventsLimit {
			return badRequest(fmt.Sprintf("limit %q must be an integer between 1 and %d", truncate(v), MaxEventsLimit))
		}
		limit = n
	}
	// A consistent read of events starts from a state that holds every
	// event committed before the request arrived.
	var confirmed time.Time
	if consistent {
		if confirmed, err = s.b.ConsistentRead(r.Context()); err != nil {
			return err
		}
	}
	evs, err := s.b.Events(r.Context(), since, limit, wait)
	if err != nil {
		return err
	}
	if consistent {
		s.setConsistentFreshness(w, s.b.Freshness(), confirmed)
	} else {
		s.setFreshness(w)
	}
	writeJSON(w, http.StatusOK, evs)
	return nil
}

func (s *server) alerts(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	alerts, err := s.b.Alerts(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, alerts)
	return nil
}

func (s *server) metrics(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	s.b.Metrics().ServeHTTP(w, r)
	return nil
}

func (s *server) health(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	s.setFreshness(w)
	writeJSON(w, http.StatusOK, s.b.Health())
	return nil
}

func (s *server) leader(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	s.setFreshness(w)
	writeJSON(w, http.StatusOK, s.b.Leader())
	return nil
}

func (s *server) peers(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	peers, err := s.b.Peers()
	if err != nil {
		return err
	}
	s.setFreshness(w)
	writeJSON(w, http.StatusOK, peers)
	return nil
}

func (s *server) members(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.b.Members())
	return nil
}

func boolParam(r *http.Request, key string) (bool, error) {
	v := r.URL.Query().Get(key)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, badRequest(fmt.Sprintf("%s must be true or false, got %q", key, truncate(v)))
	}
	return b, nil
}

// tokenPath returns the pool and token id of a path such as
// /v1/pools/{pool}/tokens/{id}, for a request that takes the query
// parameters params.
func tokenPath(r *http.Request, params ...string) (pool, id string, err error) {
	if pool, err = pathName(r, "pool", "pool"); err != nil {
		return "", "", err
	}
	if id, err = pathTokenID(r); err != nil {
		return "", "", err
	}
	return pool, id, onlyParams(r, params...)
}

func poolNotFound(name string) error {
	return tokens.Errorf(tokens.CodePoolNotFound, "pool %q does not exist", name)
}

func tokenNotFound(pool, id string) error {
	return tokens.Errorf(tokens.CodeTokenNotFound, "token %q does not exist in pool %q", id, pool)
}

func toPool(view View, p *tokens.Pool, toks []*tokens.Token) Pool {
	rots, status := view.Rotations(p.Name)
	var open []tokens.Rotation
	for _, r := range rots {
		open = append(open, *r)
	}
	eligible := 0
	for _, t := range toks {
		if view.Eligible(t) {
			eligible++
		}
	}
	return Pool{
		Name: p.Name, Selection: string(p.Selection), MinHealthy: p.MinHealthy,
		Provider: ProviderFromSpec(p.Provider), Labels: p.Labels,
		Health: p.Health.WithDefaults(), Size: p.Size, Rotation: p.Rotation.WithDefaults(), HealthCheck: p.HealthCheck,
		RotationStatus: status, OpenRotations: open,
		Tokens: len(toks), Eligible: eligible, AllowUIDs: p.AllowUIDs, AllowGIDs: p.AllowGIDs,
		CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt, CreateIndex: p.CreateIndex, ModifyIndex: p.ModifyIndex,
	}
}

func toTokenInfo(view View, t *tokens.Token) TokenInfo {
	h := view.Health(t).AsOf(view.Now())
	return TokenInfo{
		ID: t.ID, Pool: t.Pool, Priority: t.Priority, Labels: t.Labels,
		ExpiresAt: timePtr(t.ExpiresAt), NotBefore: timePtr(t.NotBefore),
		Lifecycle: string(t.Lifecycle),
		Health: Health{
			State:    string(h.State),
			Reason:   h.Reason,
			Since:    timePtr(h.Since),
			Until:    timePtr(h.Until),
			Reporter: h.Reporter,
		},
		Reports:  view.ReportStats(t),
		Metadata: t.Metadata, RotationID: t.RotationID, Generation: t.Generation, RetireAt: timePtr(t.RetireAt),
		CreatedAt: t.CreatedAt, CreateIndex: t.CreateIndex, ModifyIndex: t.ModifyIndex,
	}
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
