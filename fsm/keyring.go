package fsm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tokend/tokend/tokens"
)

// KeyringState is what the cluster agreed about its sealing keys. The keys
// themselves are never replicated: every agent is given them.
type KeyringState struct {
	// Primary is the key id new secrets are sealed with; empty until an
	// operator chose one, when each agent seals with its default key.
	Primary   string    `json:"primary,omitempty"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	By        string    `json:"by,omitempty"`
}

// Keyring returns the cluster's keyring decisions.
func (s *State) Keyring() KeyringState { return s.keyring }

// KeyUsage counts the secrets in the state by the id of the key they are
// sealed with; "" counts secrets written before tokend sealed them.
func (s *State) KeyUsage() map[string]int {
	use := map[string]int{}
	for _, ps := range s.pools {
		ps.Pool.Provider.SecretKeyIDs(func(id string) { use[id]++ })
		for _, t := range ps.Tokens {
			use[tokenKeyID(t)]++
		}
	}
	return use
}

// tokenKeyID returns the id of the key t's value is sealed with, "" if it is
// not sealed.
func tokenKeyID(t *tokens.Token) string {
	id, _ := t.Value.KeyID()
	return id
}

func applyKeyringUse(s *State, index uint64, body []byte, _ hclog.Logger) (*State, []tokens.Event, error) {
	var req KeyringUseRequest
	if err := decode(body, &req); err != nil {
		return nil, nil, err
	}
	if !tokens.ValidKeyID(req.KeyID) {
		return nil, nil, tokens.Errorf(tokens.CodeInvalid, "key id %q is invalid: it is 8 hex digits, as `tokend operator keyring list` shows", truncateError(req.KeyID))
	}
	next := *s
	next.keyring = KeyringState{Primary: req.KeyID, UpdatedAt: req.At, By: req.By}
	ev := tokens.Event{Index: index, At: req.At, Type: tokens.EventKeyringUse, Reason: "new secrets are sealed with key " + req.KeyID, Reporter: req.By}
	return &next, []tokens.Event{ev}, nil
}

// applySecretsReseal swaps secrets for the same secrets sealed again. Items
// whose token or pool changed since the proposer read it, or is gone, are
// skipped: the proposer reads again and retries them.
func applySecretsReseal(s *State, index uint64, body []byte, _ hclog.Logger) (*State, []tokens.Event, error) {
	var req SecretsResealRequest
	if err := decode(body, &req); err != nil {
		return nil, nil, err
	}
	for _, r := range req.Tokens {
		if err := r.Value.Check(); err != nil {
			return nil, nil, tokens.Errorf(tokens.CodeInvalid, "token %q: %v", truncateError(r.ID), err)
		}
		if r.Fingerprint == "" {
			return nil, nil, tokens.Errorf(tokens.CodeInvalid, "token %q: no fingerprint", truncateError(r.ID))
		}
	}
	next, n := s, 0
	for _, r := range req.Tokens {
		ps, ok := next.pools[r.Pool]
		if !ok {
			continue
		}
		i := ps.indexOf(r.ID)
		if i < 0 || ps.Tokens[i].ModifyIndex != r.ModifyIndex {
			continue
		}
		t := *ps.Tokens[i]
		t.Value, t.Fingerprint, t.ModifyIndex = r.Value, r.Fingerprint, index
		next = next.withPool(r.Pool, ps.withToken(&t))
		n++
	}
	for _, r := range req.Pools {
		ps, ok := next.pools[r.Name]
		if !ok || ps.Pool.ModifyIndex != r.ModifyIndex {
			continue
		}
		if !sameJSON(ps.Pool.Provider.Redacted(), r.Provider.Redacted()) {
			return nil, nil, tokens.Errorf(tokens.CodeInvalid, "pool %q: a reseal may change only the provider's credentials", r.Name)
		}
		sealed := true
		r.Provider.SecretKeyIDs(func(id string) { sealed = sealed && id != "" })
		if !sealed {
			return nil, nil, tokens.Errorf(tokens.CodeInvalid, "pool %q: a reseal must seal every credential", r.Name)
		}
		p := *ps.Pool
		p.Provider, p.ModifyIndex = r.Provider, index
		c := ps.shallow()
		c.Pool = &p
		next = next.withPool(r.Name, c)
		n++
	}
	if n == 0 {
		return next, nil, nil
	}
	ev := tokens.Event{Index: index, At: req.At, Type: tokens.EventSecretsResealed, Reason: fmt.Sprintf("%d secrets sealed again", n)}
	return next, []tokens.Event{ev}, nil
}

func sameJSON(a, b any) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}
