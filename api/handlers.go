package api

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/tokend/tokend/tokens"
)

func (s *server) listPools(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	s.setFreshness(w)
	view := s.b.View()
	out := []Pool{}
	for _, p := range view.Pools() {
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
	if err := onlyParams(r); err != nil {
		return err
	}
	s.setFreshness(w)
	view := s.b.View()
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
	p := tokens.Pool{Name: name, Selection: tokens.SelectionPolicy(req.Selection), MinHealthy: req.MinHealthy, Labels: req.Labels}
	if req.Provider != nil {
		p.Provider.Type = tokens.ProviderType(req.Provider.Type)
	}
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
	if err := onlyParams(r); err != nil {
		return err
	}
	s.setFreshness(w)
	view := s.b.View()
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
	view, t, err := s.lookupToken(w, r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toTokenInfo(view, t))
	return nil
}

func (s *server) lookupToken(w http.ResponseWriter, r *http.Request) (View, *tokens.Token, error) {
	name, err := pathName(r, "pool", "pool")
	if err != nil {
		return nil, nil, err
	}
	id, err := pathTokenID(r)
	if err != nil {
		return nil, nil, err
	}
	if err := onlyParams(r); err != nil {
		return nil, nil, err
	}
	s.setFreshness(w)
	view := s.b.View()
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
	t := tokens.Token{Pool: name, Value: tokens.Secret(req.Value), Priority: req.Priority, Labels: req.Labels}
	if req.ExpiresAt != nil {
		t.ExpiresAt = *req.ExpiresAt
	}
	if req.NotBefore != nil {
		t.NotBefore = *req.NotBefore
	}
	id, index, err := s.b.AddToken(r.Context(), t)
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
	pool, err := pathName(r, "pool", "pool")
	if err != nil {
		return err
	}
	id, err := pathTokenID(r)
	if err != nil {
		return err
	}
	if err := onlyParams(r); err != nil {
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

// fetchToken is the hot path: local state only, no Raft.
func (s *server) fetchToken(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r, "pool", "pool")
	if err != nil {
		return err
	}
	q := r.URL.Query()
	raw := false
	for k, vs := range q {
		switch k {
		case "format":
			switch vs[len(vs)-1] {
			case "raw":
				raw = true
			case "json", "":
			default:
				return badRequest(fmt.Sprintf("format %q is not supported: use json or raw", truncate(vs[len(vs)-1])))
			}
		case "exclude":
			for _, id := range vs {
				if !tokens.ValidTokenID(id) {
					return badRequest(fmt.Sprintf("exclude %q is not a token id: it must match %s", truncate(id), tokens.NamePatternString))
				}
			}
		default:
			return badRequest(fmt.Sprintf("unknown query parameter %q: use format, exclude", truncate(k)))
		}
	}
	s.setFreshness(w)
	view := s.b.View()
	t, err := view.Select(name, q["exclude"])
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set(HeaderTokenID, t.ID)
	if raw {
		h.Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, t.Value.Reveal())
		return nil
	}
	writeJSON(w, http.StatusOK, Token{
		ID:        t.ID,
		Pool:      t.Pool,
		Value:     t.Value.Reveal(),
		ExpiresAt: timePtr(t.ExpiresAt),
		Priority:  t.Priority,
		Labels:    t.Labels,
		Health:    string(view.Health(t).StateAt(view.Now())),
	})
	return nil
}

func (s *server) report(w http.ResponseWriter, r *http.Request) error {
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
	resp, err := s.b.Report(r.Context(), t.Pool, t.ID, outcome, retryAfter)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if resp.Changed && !resp.Committed {
		status = http.StatusAccepted
	}
	if resp.Index > 0 {
		setIndex(w, resp.Index)
	}
	writeJSON(w, status, resp)
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

func poolNotFound(name string) error {
	return tokens.Errorf(tokens.CodePoolNotFound, "pool %q does not exist", name)
}

func tokenNotFound(pool, id string) error {
	return tokens.Errorf(tokens.CodeTokenNotFound, "token %q does not exist in pool %q", id, pool)
}

func toPool(view View, p *tokens.Pool, toks []*tokens.Token) Pool {
	eligible := 0
	for _, t := range toks {
		if view.Eligible(t) {
			eligible++
		}
	}
	return Pool{
		Name: p.Name, Selection: string(p.Selection), MinHealthy: p.MinHealthy,
		Provider: Provider{Type: string(p.Provider.Type)}, Labels: p.Labels,
		Tokens: len(toks), Eligible: eligible,
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
		CreatedAt: t.CreatedAt, CreateIndex: t.CreateIndex, ModifyIndex: t.ModifyIndex,
	}
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
