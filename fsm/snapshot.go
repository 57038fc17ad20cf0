package fsm

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"

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

// Restore replaces the whole state with the snapshot read from r. On error the
// current state is kept.
func (f *FSM) Restore(r io.Reader) error {
	dec := json.NewDecoder(bufio.NewReader(r))
	var h snapshotHeader
	if err := dec.Decode(&h); err != nil {
		return fmt.Errorf("read snapshot header: %w", err)
	}
	if h.Format != snapshotFormat {
		return fmt.Errorf("not a tokend snapshot (format %q)", h.Format)
	}
	if h.Version > snapshotVersion || h.Version < 1 {
		return fmt.Errorf("snapshot version %d is not supported by this agent (it reads version %d): upgrade the agent", h.Version, snapshotVersion)
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
				return fmt.Errorf("snapshot ends after %d records without an end record: it is truncated", count)
			}
			return fmt.Errorf("read snapshot record %d: %w", count, err)
		}
		switch rec.Type {
		case recordPool:
			if rec.Pool == nil || !tokens.ValidName(rec.Pool.Name) {
				return fmt.Errorf("snapshot record %d: pool record without a valid pool", count)
			}
			if _, dup := next.pools[rec.Pool.Name]; dup {
				return fmt.Errorf("snapshot record %d: pool %q appears twice", count, rec.Pool.Name)
			}
			if rec.Status != nil && h.Version < 3 {
				return fmt.Errorf("snapshot record %d: pool status not valid in version %d", count, h.Version)
			}
			ps := &PoolState{Pool: rec.Pool}
			if rec.Status != nil {
				ps.Status = *rec.Status
			}
			next.pools[rec.Pool.Name] = ps
		case recordToken:
			if rec.Token == nil {
				return fmt.Errorf("snapshot record %d: token record without a token", count)
			}
			ps, ok := next.pools[rec.Token.Pool]
			if !ok {
				return fmt.Errorf("snapshot record %d: token %q belongs to pool %q, which the snapshot has not defined", count, rec.Token.ID, rec.Token.Pool)
			}
			key := tokenKey{rec.Token.Pool, rec.Token.ID}
			if seen[key] {
				return fmt.Errorf("snapshot record %d: token %q of pool %q appears twice", count, rec.Token.ID, rec.Token.Pool)
			}
			seen[key] = true
			ps.Tokens = append(ps.Tokens, rec.Token)
		case recordRotation:
			if h.Version < 3 || rec.Rotation == nil {
				return fmt.Errorf("snapshot record %d: rotation record not valid in version %d", count, h.Version)
			}
			ps, ok := next.pools[rec.Rotation.Pool]
			if !ok {
				return fmt.Errorf("snapshot record %d: rotation %q belongs to pool %q, which the snapshot has not defined", count, rec.Rotation.ID, rec.Rotation.Pool)
			}
			if _, dup := ps.Rotation(rec.Rotation.ID); dup {
				return fmt.Errorf("snapshot record %d: rotation %q appears twice", count, rec.Rotation.ID)
			}
			ps.Rotations = append(ps.Rotations, rec.Rotation)
		case recordEvent:
			if h.Version < 2 || rec.Event == nil {
				return fmt.Errorf("snapshot record %d: event record not valid in version %d", count, h.Version)
			}
			if n := len(events); n > 0 && rec.Event.Index < events[n-1].Index {
				return fmt.Errorf("snapshot record %d: events out of order", count)
			}
			events = append(events, *rec.Event)
		case recordKeyring:
			if h.Version < 4 || rec.Keyring == nil {
				return fmt.Errorf("snapshot record %d: keyring record not valid in version %d", count, h.Version)
			}
			if next.keyring != (KeyringState{}) {
				return fmt.Errorf("snapshot record %d: keyring appears twice", count)
			}
			next.keyring = *rec.Keyring
		case recordACL:
			if h.Version < 5 || rec.ACL == nil || next.acl.bootstrapped {
				return fmt.Errorf("snapshot record %d: acl record not valid here", count)
			}
			next.acl.bootstrapped = rec.ACL.Bootstrapped
		case recordPolicy:
			if h.Version < 5 || rec.Policy == nil || !tokens.ValidName(rec.Policy.Name) {
				return fmt.Errorf("snapshot record %d: acl_policy record not valid here", count)
			}
			if _, dup := next.acl.policies[rec.Policy.Name]; dup {
				return fmt.Errorf("snapshot record %d: policy %q appears twice", count, rec.Policy.Name)
			}
			next.acl.putPolicy(rec.Policy)
		case recordACLToken:
			if h.Version < 5 || rec.ACLToken == nil || rec.ACLToken.AccessorID == "" || rec.ACLToken.SecretHash == "" {
				return fmt.Errorf("snapshot record %d: acl_token record not valid here", count)
			}
			if _, dup := next.acl.tokens[rec.ACLToken.AccessorID]; dup {
				return fmt.Errorf("snapshot record %d: acl token %s appears twice", count, rec.ACLToken.AccessorID)
			}
			if _, dup := next.acl.byHash[rec.ACLToken.SecretHash]; dup {
				return fmt.Errorf("snapshot record %d: two acl tokens share a secret", count)
			}
			next.acl.putToken(rec.ACLToken)
		case recordEnd:
			if rec.Count != count {
				return fmt.Errorf("snapshot end record counts %d records, read %d", rec.Count, count)
			}
			for _, ps := range next.pools {
				slices.SortFunc(ps.Tokens, compareTokens)
			}
			if len(events) > tokens.MaxEvents {
				return fmt.Errorf("snapshot holds %d events, more than the %d kept", len(events), tokens.MaxEvents)
			}
			f.state.Store(next)
			f.applied.Store(h.AppliedIndex)
			f.events.reset(events, h.EventsDropped)
			return nil
		default:
			return fmt.Errorf("snapshot record %d has unknown type %q", count, rec.Type)
		}
	}
}
