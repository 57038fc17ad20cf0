package fsm

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tokend/tokend/tokens"
)

// Snapshot format: one JSON header line, then one JSON record per line, then
// an end record that proves the stream was not cut short. The version only
// ever goes up; Restore reads every older version and refuses a newer one
// rather than guessing and losing state.
//
//	version 1: pool and token records
//	version 2: adds event records and the header's events_dropped
//	version 3: adds rotation records and the pool record's status
//	version 4: adds the keyring record; values may be sealed
//	version 5: adds the acl, acl_policy and acl_token records
const (
	snapshotFormat  = "tokend-state"
	snapshotVersion = 5
)

type snapshotACL struct {
	Bootstrapped bool `json:"bootstrapped"`
}

type snapshotHeader struct {
	Format       string `json:"format"`
	Version      int    `json:"version"`
	AppliedIndex uint64 `json:"applied_index"`
	// EventsDropped is the index of the newest event no longer kept.
	EventsDropped uint64 `json:"events_dropped,omitempty"`
}

const (
	recordPool     = "pool"
	recordToken    = "token"
	recordRotation = "rotation"
	recordEvent    = "event"
	recordKeyring  = "keyring"
	recordACL      = "acl"
	recordPolicy   = "acl_policy"
	recordACLToken = "acl_token"
	recordEnd      = "end"
)

type snapshotRecord struct {
	Type     string                 `json:"type"`
	Pool     *tokens.Pool           `json:"pool,omitempty"`
	Status   *tokens.RotationStatus `json:"status,omitempty"`
	Token    *tokens.Token          `json:"token,omitempty"`
	Rotation *tokens.Rotation       `json:"rotation,omitempty"`
	Event    *tokens.Event          `json:"event,omitempty"`
	Keyring  *KeyringState          `json:"keyring,omitempty"`
	// ACL, on the acl record, says whether ACLs were bootstrapped.
	ACL      *snapshotACL      `json:"acl,omitempty"`
	Policy   *tokens.ACLPolicy `json:"policy,omitempty"`
	ACLToken *tokens.ACLToken  `json:"acl_token,omitempty"`
	// Count, on the end record, is the number of records before it.
	Count int `json:"count,omitempty"`
}

// Snapshot captures the current state: a pointer copy and a copy of the
// event log (at most tokens.MaxEvents). The I/O is done by WriteTo, which
// may run while Apply goes on.
func (f *FSM) Snapshot() (io.WriterTo, error) {
	events, dropped := f.events.snapshot()
	return &snapshot{state: f.state.Load(), applied: f.applied.Load(), events: events, dropped: dropped}, nil
}

type snapshot struct {
	state   *State
	applied uint64
	events  []tokens.Event
	dropped uint64
}

func (s *snapshot) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriter(w)
	cw := &countingWriter{w: bw}
	enc := json.NewEncoder(cw)
	if err := enc.Encode(snapshotHeader{Format: snapshotFormat, Version: snapshotVersion, AppliedIndex: s.applied, EventsDropped: s.dropped}); err != nil {
		return cw.n, err
	}
	count := 0
	if kr := s.state.Keyring(); kr != (KeyringState{}) {
		if err := enc.Encode(snapshotRecord{Type: recordKeyring, Keyring: &kr}); err != nil {
			return cw.n, err
		}
		count++
	}
	if s.state.ACLBootstrapped() {
		if err := enc.Encode(snapshotRecord{Type: recordACL, ACL: &snapshotACL{Bootstrapped: true}}); err != nil {
			return cw.n, err
		}
		count++
	}
	for _, p := range s.state.ACLPolicies() {
		if err := enc.Encode(snapshotRecord{Type: recordPolicy, Policy: p}); err != nil {
			return cw.n, err
		}
		count++
	}
	for _, t := range s.state.ACLTokens() {
		if err := enc.Encode(snapshotRecord{Type: recordACLToken, ACLToken: t}); err != nil {
			return cw.n, err
		}
		count++
	}
	for _, ps := range s.state.Pools() {
		rec := snapshotRecord{Type: recordPool, Pool: ps.Pool}
		if ps.Status != (tokens.RotationStatus{}) {
			rec.Status = &ps.Status
		}
		if err := enc.Encode(rec); err != nil {
			return cw.n, err
		}
		count++
		for _, t := range ps.Tokens {
			if err := enc.Encode(snapshotRecord{Type: recordToken, Token: t}); err != nil {
				return cw.n, err
			}
			count++
		}
		for _, r := range ps.Rotations {
			if err := enc.Encode(snapshotRecord{Type: recordRotation, Rotation: r}); err != nil {
				return cw.n, err
			}
			count++
		}
	}
	for i := range s.events {
		if err := enc.Encode(snapshotRecord{Type: recordEvent, Event: &s.events[i]}); err != nil {
			return cw.n, err
		}
		count++
	}
	if err := enc.Encode(snapshotRecord{Type: recordEnd, Count: count}); err != nil {
		return cw.n, err
	}
	err := bw.Flush()
	return cw.n, err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Restore replaces the whole state with the snapshot read from r. index is
// the Raft index the snapshot stands for, which becomes the applied index:
// Raft's, not the one in the stream's header, which may lag it (entries
// that never reach the state machine) or belong to another cluster's log
// (a backup restored by an operator). Zero takes the header's. On error
// the current state is kept.
func (f *FSM) Restore(r io.Reader, index uint64) error {
	c, err := decodeSnapshot(r, false)
	if err != nil {
		return err
	}
	if index == 0 {
		index = c.header.AppliedIndex
	}
	f.state.Store(c.state)
	f.applied.Store(index)
	f.events.reset(c.events, c.header.EventsDropped)
	return nil
}

// SnapshotContents is a snapshot stream decoded and checked, but not
// installed in any state machine: what an operator's backup holds.
type SnapshotContents struct {
	header snapshotHeader
	state  *State
	events []tokens.Event
}

// DecodeSnapshot reads a whole snapshot stream, with every check Restore
// makes, and refuses anything after its end record.
func DecodeSnapshot(r io.Reader) (*SnapshotContents, error) {
	return decodeSnapshot(r, true)
}

// State is the state the snapshot holds.
func (c *SnapshotContents) State() *State { return c.state }

// Version is the version of the stream's format.
func (c *SnapshotContents) Version() int { return c.header.Version }

// AppliedIndex is the applied index its header records.
func (c *SnapshotContents) AppliedIndex() uint64 { return c.header.AppliedIndex }

// Events counts the events it keeps.
func (c *SnapshotContents) Events() int { return len(c.events) }

// MaxIndex is the highest Raft index the snapshot names anywhere: its
// header, events, pools, tokens and ACL objects. A restored state must be
// installed above it, or a later write could carry a lower index than what
// it replaces.
func (c *SnapshotContents) MaxIndex() uint64 {
	m := max(c.header.AppliedIndex, c.header.EventsDropped)
	for _, e := range c.events {
		m = max(m, e.Index)
	}
	for _, ps := range c.state.pools {
		m = max(m, ps.Pool.CreateIndex, ps.Pool.ModifyIndex)
		for _, t := range ps.Tokens {
			m = max(m, t.CreateIndex, t.ModifyIndex)
		}
	}
	for _, p := range c.state.acl.policies {
		m = max(m, p.CreateIndex, p.ModifyIndex)
	}
	for _, t := range c.state.acl.tokens {
		m = max(m, t.CreateIndex)
	}
	return m
}

// Disowned returns the contents with every open rotation's term cleared:
// the leader that owned it is not this cluster's, so no leader may finish
// it as its own. The leader that installs the state resumes each one in its
// own term, with the same idempotency key, or abandons it, as it does the
// rotations a deposed leader left open.
func (c *SnapshotContents) Disowned() *SnapshotContents {
	next := *c
	st := *c.state
	st.pools = make(map[string]*PoolState, len(c.state.pools))
	for name, ps := range c.state.pools {
		if len(ps.Rotations) > 0 {
			cp := ps.shallow()
			cp.Rotations = make([]*tokens.Rotation, len(ps.Rotations))
			for i, r := range ps.Rotations {
				rc := *r
				rc.Term = 0
				cp.Rotations[i] = &rc
			}
			ps = cp
		}
		st.pools[name] = ps
	}
	next.state = &st
	return &next
}

// WriteTo writes the contents as a snapshot stream of the current format
// version, the one Restore reads.
func (c *SnapshotContents) WriteTo(w io.Writer) (int64, error) {
	s := &snapshot{state: c.state, applied: c.header.AppliedIndex, events: c.events, dropped: c.header.EventsDropped}
	return s.WriteTo(w)
}

// decodeSnapshot reads a snapshot stream; strict refuses data after its
// end record.
func decodeSnapshot(r io.Reader, strict bool) (*SnapshotContents, error) {
	dec := json.NewDecoder(bufio.NewReader(r))
	var h snapshotHeader
	if err := dec.Decode(&h); err != nil {
		return nil, fmt.Errorf("read snapshot header: %w", err)
	}
	if h.Format != snapshotFormat {
		return nil, fmt.Errorf("not a tokend snapshot (format %q)", h.Format)
	}
	if h.Version > snapshotVersion || h.Version < 1 {
		return nil, fmt.Errorf("snapshot version %d is not supported by this agent (it reads version %d): upgrade the agent", h.Version, snapshotVersion)
	}
	next := emptyState()
	// A pool or token that appears twice would lose the first copy's
	// tokens, or break the unique ids that keep the token order total.
	type tokenKey struct{ pool, id string }
	seen := map[tokenKey]bool{}
	var events []tokens.Event
	for count := 0; ; count++ {
		var rec snapshotRecord
		if err := dec.Decode(&rec); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("snapshot ends after %d records without an end record: it is truncated", count)
			}
			return nil, fmt.Errorf("read snapshot record %d: %w", count, err)
		}
		switch rec.Type {
		case recordPool:
			if rec.Pool == nil || !tokens.ValidName(rec.Pool.Name) {
				return nil, fmt.Errorf("snapshot record %d: pool record without a valid pool", count)
			}
			if _, dup := next.pools[rec.Pool.Name]; dup {
				return nil, fmt.Errorf("snapshot record %d: pool %q appears twice", count, rec.Pool.Name)
			}
			if rec.Status != nil && h.Version < 3 {
				return nil, fmt.Errorf("snapshot record %d: pool status not valid in version %d", count, h.Version)
			}
			ps := &PoolState{Pool: rec.Pool}
			if rec.Status != nil {
				ps.Status = *rec.Status
			}
			next.pools[rec.Pool.Name] = ps
		case recordToken:
			if rec.Token == nil {
				return nil, fmt.Errorf("snapshot record %d: token record without a token", count)
			}
			ps, ok := next.pools[rec.Token.Pool]
			if !ok {
				return nil, fmt.Errorf("snapshot record %d: token %q belongs to pool %q, which the snapshot has not defined", count, rec.Token.ID, rec.Token.Pool)
			}
			key := tokenKey{rec.Token.Pool, rec.Token.ID}
			if seen[key] {
				return nil, fmt.Errorf("snapshot record %d: token %q of pool %q appears twice", count, rec.Token.ID, rec.Token.Pool)
			}
			seen[key] = true
			ps.Tokens = append(ps.Tokens, rec.Token)
		case recordRotation:
			if h.Version < 3 || rec.Rotation == nil {
				return nil, fmt.Errorf("snapshot record %d: rotation record not valid in version %d", count, h.Version)
			}
			ps, ok := next.pools[rec.Rotation.Pool]
			if !ok {
				return nil, fmt.Errorf("snapshot record %d: rotation %q belongs to pool %q, which the snapshot has not defined", count, rec.Rotation.ID, rec.Rotation.Pool)
			}
			if _, dup := ps.Rotation(rec.Rotation.ID); dup {
				return nil, fmt.Errorf("snapshot record %d: rotation %q appears twice", count, rec.Rotation.ID)
			}
			ps.Rotations = append(ps.Rotations, rec.Rotation)
		case recordEvent:
			if h.Version < 2 || rec.Event == nil {
				return nil, fmt.Errorf("snapshot record %d: event record not valid in version %d", count, h.Version)
			}
			if n := len(events); n > 0 && rec.Event.Index < events[n-1].Index {
				return nil, fmt.Errorf("snapshot record %d: events out of order", count)
			}
			events = append(events, *rec.Event)
		case recordKeyring:
			if h.Version < 4 || rec.Keyring == nil {
				return nil, fmt.Errorf("snapshot record %d: keyring record not valid in version %d", count, h.Version)
			}
			if next.keyring != (KeyringState{}) {
				return nil, fmt.Errorf("snapshot record %d: keyring appears twice", count)
			}
			next.keyring = *rec.Keyring
		case recordACL:
			if h.Version < 5 || rec.ACL == nil || next.acl.bootstrapped {
				return nil, fmt.Errorf("snapshot record %d: acl record not valid here", count)
			}
			next.acl.bootstrapped = rec.ACL.Bootstrapped
		case recordPolicy:
			if h.Version < 5 || rec.Policy == nil || !tokens.ValidName(rec.Policy.Name) {
				return nil, fmt.Errorf("snapshot record %d: acl_policy record not valid here", count)
			}
			if _, dup := next.acl.policies[rec.Policy.Name]; dup {
				return nil, fmt.Errorf("snapshot record %d: policy %q appears twice", count, rec.Policy.Name)
			}
			next.acl.putPolicy(rec.Policy)
		case recordACLToken:
			if h.Version < 5 || rec.ACLToken == nil || rec.ACLToken.AccessorID == "" || rec.ACLToken.SecretHash == "" {
				return nil, fmt.Errorf("snapshot record %d: acl_token record not valid here", count)
			}
			if _, dup := next.acl.tokens[rec.ACLToken.AccessorID]; dup {
				return nil, fmt.Errorf("snapshot record %d: acl token %s appears twice", count, rec.ACLToken.AccessorID)
			}
			if _, dup := next.acl.byHash[rec.ACLToken.SecretHash]; dup {
				return nil, fmt.Errorf("snapshot record %d: two acl tokens share a secret", count)
			}
			next.acl.putToken(rec.ACLToken)
		case recordEnd:
			if rec.Count != count {
				return nil, fmt.Errorf("snapshot end record counts %d records, read %d", rec.Count, count)
			}
			for _, ps := range next.pools {
				slices.SortFunc(ps.Tokens, compareTokens)
			}
			if len(events) > tokens.MaxEvents {
				return nil, fmt.Errorf("snapshot holds %d events, more than the %d kept", len(events), tokens.MaxEvents)
			}
			if strict {
				if _, err := dec.Token(); !errors.Is(err, io.EOF) {
					return nil, fmt.Errorf("snapshot has data after its end record")
				}
			}
			return &SnapshotContents{header: h, state: next, events: events}, nil
		default:
			return nil, fmt.Errorf("snapshot record %d has unknown type %q", count, rec.Type)
		}
	}
}

// applySnapshotRestored records the restore that Raft has just installed:
// the state is already the snapshot's, so only the event is new. Credentials
// issued after the snapshot was taken are not in it, and the event says so.
func applySnapshotRestored(s *State, index uint64, body []byte, _ hclog.Logger) (*State, []tokens.Event, error) {
	var req SnapshotRestoredRequest
	if err := decode(body, &req); err != nil {
		return nil, nil, err
	}
	reason := fmt.Sprintf("the state was replaced by a snapshot taken at index %d (term %d), saved by %s at %s, holding %d pools and %d tokens; credentials issued after it was taken are not tracked",
		req.FromIndex, req.FromTerm, truncateError(req.SavedBy), req.SavedAt.UTC().Format(time.RFC3339), req.Pools, req.Tokens)
	ev := tokens.Event{Index: index, At: req.At, Type: tokens.EventSnapshotRestored, Reason: reason, Reporter: truncateError(req.By)}
	return s, []tokens.Event{ev}, nil
}
