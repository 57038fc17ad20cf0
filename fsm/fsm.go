// Package fsm is tokend's replicated state machine. Apply is deterministic:
// every time, id and generation comes from the proposer inside the command,
// so that every agent, and every replay of the log, reaches the same state.
package fsm

import (
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tokend/tokend/tokens"
)

// FSM applies committed log entries to the state.
type FSM struct {
	logger  hclog.Logger
	state   atomic.Pointer[State]
	applied atomic.Uint64
	events  eventLog
}

// New returns an FSM holding empty state. A nil logger discards logs.
func New(logger hclog.Logger) *FSM {
	if logger == nil {
		// Apply logs on its recovery path: a nil logger there would turn
		// a rejected entry into a crash.
		logger = hclog.NewNullLogger()
	}
	f := &FSM{logger: logger}
	f.state.Store(emptyState())
	return f
}

// State returns the current state. It never blocks, and the State it returns
// never changes.
func (f *FSM) State() *State { return f.state.Load() }

// AppliedIndex is the index of the last log entry Apply has finished with,
// whether it was accepted or rejected.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// Apply applies the log entry at index. A non-nil error is a rejection: the
// same on every agent, returned to the proposer, and leaving the state as it
// was. An entry that cannot be decoded, or whose application panics, is
// rejected rather than crashing every agent at once.
func (f *FSM) Apply(index uint64, entry []byte) (err error) {
	// The index is published after the state: whoever reads the index
	// first and the state second gets a state at least that new.
	defer f.applied.Store(index)
	defer f.recoverInto(&err, index)
	next, events, err := f.run(f.logger, f.state.Load(), index, entry)
	if err != nil {
		return err
	}
	f.state.Store(next)
	f.events.append(events)
	return nil
}

// Check reports the rejection entry would meet if it were applied to the
// current state, without applying it. The leader calls it before
// committing, so a write the state machine would refuse costs no log entry
// and changes nothing. Apply stays the authority: entries committed in the
// meantime may still change its answer.
func (f *FSM) Check(entry []byte) (err error) {
	defer f.recoverInto(&err, 0)
	_, _, err = f.run(hclog.NewNullLogger(), f.state.Load(), f.applied.Load()+1, entry)
	return err
}

func (f *FSM) recoverInto(err *error, index uint64) {
	if r := recover(); r != nil {
		f.logger.Error("log entry panicked in apply; rejected", "index", index, "panic", r, "stack", string(debug.Stack()))
		*err = tokens.Errorf(tokens.CodeInvalid, "log entry %d could not be applied", index)
	}
}

// applyFunc computes the state after one command, and the events it causes.
type applyFunc func(s *State, index uint64, body []byte, logger hclog.Logger) (*State, []tokens.Event, error)

// run computes the state after entry; logger receives the apply functions'
// logs.
func (f *FSM) run(logger hclog.Logger, s *State, index uint64, entry []byte) (*State, []tokens.Event, error) {
	return f.runEntry(logger, s, index, entry, false)
}

// runEntry is run; nested is set for the command inside an Authorized
// entry, which may not be another.
func (f *FSM) runEntry(logger hclog.Logger, s *State, index uint64, entry []byte, nested bool) (*State, []tokens.Event, error) {
	if len(entry) == 0 {
		return nil, nil, f.corrupt(index, 0, fmt.Errorf("empty entry"))
	}
	t, body := MessageType(entry[0]), entry[1:]
	var apply applyFunc
	switch t {
	case PoolUpsertType:
		apply = applyPoolUpsert
	case PoolDeleteType:
		apply = applyPoolDelete
	case TokenAddType:
		apply = applyTokenAdd
	case TokenRemoveType:
		apply = applyTokenRemove
	case TokenHealthType:
		apply = applyTokenHealth
	case TokenResetType:
		apply = applyTokenReset
	case RotationBeginType:
		apply = applyRotationBegin
	case RotationResumeType:
		apply = applyRotationResume
	case RotationCommitType:
		apply = applyRotationCommit
	case RotationFailType:
		apply = applyRotationFail
	case RotationAbandonType:
		apply = applyRotationAbandon
	case TokenOrphanType:
		apply = applyTokenOrphan
	case KeyringUseType:
		apply = applyKeyringUse
	case SecretsResealType:
		apply = applySecretsReseal
	case ACLBootstrapType:
		apply = applyACLBootstrap
	case ACLPolicyUpsertType:
		apply = applyACLPolicyUpsert
	case ACLPolicyDeleteType:
		apply = applyACLPolicyDelete
	case ACLTokenCreateType:
		apply = applyACLTokenCreate
	case ACLTokenDeleteType:
		apply = applyACLTokenDelete
	case SnapshotRestoredType:
		apply = applySnapshotRestored
	case AuthorizedType:
		if nested {
			return nil, nil, f.corrupt(index, t, fmt.Errorf("an authorized entry inside another"))
		}
		apply = func(s *State, index uint64, body []byte, logger hclog.Logger) (*State, []tokens.Event, error) {
			return f.applyAuthorized(logger, s, index, body)
		}
	default:
		if t&IgnoreUnknownTypeFlag != 0 {
			logger.Warn("ignoring log entry of unknown type; an agent is newer than this one", "index", index, "type", uint8(t))
			return s, nil, nil
		}
		return nil, nil, f.corrupt(index, t, fmt.Errorf("unknown command type %d", uint8(t)))
	}
	next, events, err := apply(s, index, body, logger)
	var decodeErr *decodeError
	if errors.As(err, &decodeErr) {
		return nil, nil, f.corrupt(index, t, decodeErr.err)
	}
	return next, events, err
}

func (f *FSM) corrupt(index uint64, t MessageType, err error) error {
	f.logger.Error("rejecting log entry that cannot be decoded", "index", index, "type", t.String(), "error", err)
	return tokens.Errorf(tokens.CodeInvalid, "log entry %d (%s) is malformed", index, t)
}

type decodeError struct{ err error }

func (e *decodeError) Error() string { return e.err.Error() }

func decode(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return &decodeError{err}
	}
	return nil
}

func applyPoolUpsert(s *State, index uint64, body []byte, _ hclog.Logger) (*State, []tokens.Event, error) {
	var req PoolUpsertRequest
	if err := decode(body, &req); err != nil {
		return nil, nil, err
	}
	p := req.Pool
	if err := p.Normalize(); err != nil {
		return nil, nil, err
	}
	p.UpdatedAt, p.ModifyIndex = req.At, index
	ps := &PoolState{Pool: &p}
	if old, ok := s.pools[p.Name]; ok {
		p.CreatedAt, p.CreateIndex = old.Pool.CreatedAt, old.Pool.CreateIndex
		ps = old.shallow()
		ps.Pool = &p
	} else {
		p.CreatedAt, p.CreateIndex = req.At, index
	}
	ev := tokens.Event{Index: index, At: req.At, Type: tokens.EventPoolApplied, Pool: p.Name}
	return s.withPool(p.Name, ps), []tokens.Event{ev}, nil
}

func applyPoolDelete(s *State, index uint64, body []byte, _ hclog.Logger) (*State, []tokens.Event, error) {
	var req PoolDeleteRequest
	if err := decode(body, &req); err != nil {
		return nil, nil, err
	}
	ps, ok := s.pools[req.Name]
	if !ok {
		return nil, nil, tokens.Errorf(tokens.CodePoolNotFound, "pool %q does not exist", req.Name)
	}
	n := len(ps.Tokens)
	if n > 0 && !req.Force {
		return nil, nil, tokens.Errorf(tokens.CodeConflict, "pool %q still holds %d tokens: remove them first, or delete with force", req.Name, n)
	}
	ev := tokens.Event{Index: index, At: req.At, Type: tokens.EventPoolDeleted, Pool: req.Name}
	if n > 0 {
		ev.Reason = fmt.Sprintf("forced, with %d tokens", n)
	}
	return s.withPool(req.Name, nil), []tokens.Event{ev}, nil
}

func applyTokenAdd(s *State, index uint64, body []byte, _ hclog.Logger) (*State, []tokens.Event, error) {
	var req TokenAddRequest
	if err := decode(body, &req); err != nil {
		return nil, nil, err
	}
	t := req.Token
	if err := t.Validate(req.At); err != nil {
		return nil, nil, err
	}
	ps, ok := s.pools[t.Pool]
	if !ok {
		return nil, nil, tokens.Errorf(tokens.CodePoolNotFound, "pool %q does not exist", t.Pool)
	}
	for _, old := range ps.Tokens {
		switch {
		case old.ID == t.ID:
			return nil, nil, tokens.Errorf(tokens.CodeConflict, "token %q already exists in pool %q", t.ID, t.Pool)
		case old.Fingerprint == t.Fingerprint:
			return nil, nil, tokens.Errorf(tokens.CodeConflict, "pool %q already holds this value as token %q", t.Pool, old.ID)
		}
	}
	if len(ps.Tokens) >= tokens.MaxTokensPerPool {
		return nil, nil, tokens.Errorf(tokens.CodeConflict, "pool %q is full: it holds %d tokens", t.Pool, len(ps.Tokens))
	}
	t.Lifecycle = tokens.LifecycleActive
	t.Health = tokens.Health{State: tokens.Healthy, Since: req.At}
	t.CreatedAt, t.CreateIndex, t.ModifyIndex = req.At, index, index
	// An operator's token was issued by no rotation, and is not retiring.
	t.RotationID, t.Generation, t.RetireAt = "", 0, time.Time{}
	ev := tokens.Event{Index: index, At: req.At, Type: tokens.EventTokenAdded, Pool: t.Pool, Token: t.ID, To: tokens.Healthy}
	return s.withPool(t.Pool, ps.withToken(&t)), []tokens.Event{ev}, nil
}

func applyTokenRemove(s *State, index uint64, body []byte, _ hclog.Logger) (*State, []tokens.Event, error) {
	var req TokenRemoveRequest
	if err := decode(body, &req); err != nil {
		return nil, nil, err
	}
	ps, i, err := s.lookup(req.Pool, req.ID)
	if err != nil {
		return nil, nil, err
	}
	ev := tokens.Event{Index: index, At: req.At, Type: tokens.EventTokenRemoved, Pool: req.Pool, Token: req.ID, Reason: truncateError(req.Reason)}
	return s.withPool(req.Pool, ps.withoutToken(i)), []tokens.Event{ev}, nil
}

// applyTokenHealth applies the leader's health decisions with tokens.Merge,
// so a late or repeated decision cannot undo a stronger one. Changes for
// tokens that are gone, or that change nothing, are skipped: they raced
// with another write and are not errors.
func applyTokenHealth(s *State, index uint64, body []byte, logger hclog.Logger) (*State, []tokens.Event, error) {
	var req TokenHealthRequest
	if err := decode(body, &req); err != nil {
		return nil, nil, err
	}
	for _, c := range req.Changes {
		switch c.Health.State {
		case tokens.Healthy, tokens.Degraded, tokens.Cooldown, tokens.Failed:
		default:
			return nil, nil, tokens.Errorf(tokens.CodeInvalid, "health change for token %q has unknown state %q", c.TokenID, c.Health.State)
		}
	}
	next := s
	var events []tokens.Event
	for _, c := range req.Changes {
		ps, ok := next.pools[c.Pool]
		if !ok {
			continue
		}
		i := ps.indexOf(c.TokenID)
		if i < 0 {
			continue
		}
		old := ps.Tokens[i]
		h, changed := tokens.Merge(old.Health, c.Health)
		if !changed {
			continue
		}
		t := *old
		t.Health, t.ModifyIndex = h, index
		next = next.withPool(c.Pool, ps.withToken(&t))
		// The event is the decision's, at its time: h.Since is older when
		// h extends a cooldown.
		at := c.Health.Since
		events = append(events, tokens.Event{
			Index: index, At: at, Type: tokens.EventTokenHealth, Pool: c.Pool, Token: c.TokenID,
			From: old.Health.StateAt(at), To: h.State, Reason: h.Reason, Reporter: h.Reporter,
		})
		logger.Debug("token health changed", "pool", c.Pool, "token", c.TokenID, "from", old.Health.State, "to", h.State, "reason", h.Reason, "reporter", h.Reporter, "index", index)
	}
	return next, events, nil
}

// applyTokenReset brings a token back to healthy on an operator's word.
func applyTokenReset(s *State, index uint64, body []byte, _ hclog.Logger) (*State, []tokens.Event, error) {
	var req TokenResetRequest
	if err := decode(body, &req); err != nil {
		return nil, nil, err
	}
	ps, i, err := s.lookup(req.Pool, req.ID)
	if err != nil {
		return nil, nil, err
	}
	old := ps.Tokens[i]
	t := *old
	t.Health, t.ModifyIndex = tokens.ResetHealth(req.At, req.By), index
	ev := tokens.Event{
		Index: index, At: req.At, Type: tokens.EventTokenReset, Pool: req.Pool, Token: req.ID,
		From: old.Health.StateAt(req.At), To: tokens.Healthy, Reason: t.Health.Reason, Reporter: req.By,
	}
	return s.withPool(req.Pool, ps.withToken(&t)), []tokens.Event{ev}, nil
}
