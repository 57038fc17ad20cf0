package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tokend/tokend/tokens"
)

// Operators' snapshots, as Consul takes them: SaveSnapshot has the leader
// take a Raft snapshot (a consistent cut of the state machine, at a known
// index and term) and hands its bytes out; RestoreSnapshot has the leader
// install bytes an operator kept as a Raft snapshot, which Raft then sends
// to every follower. The bytes are the state machine's own snapshot stream:
// the cluster neither reads nor checks them; the caller does.

// SnapshotMeta is where a snapshot stands in the Raft log.
type SnapshotMeta struct {
	Index uint64
	Term  uint64
}

// snapshotTimeout bounds taking, sending and installing a snapshot.
func (c *Cluster) snapshotTimeout() time.Duration {
	return max(c.cfg.Timing.ApplyTimeout, time.Minute)
}

// Headers of the snapshot RPC's answer.
const (
	headerSnapshotIndex = "X-Raft-Snapshot-Index"
	headerSnapshotTerm  = "X-Raft-Snapshot-Term"
)

// SaveSnapshot has the leader snapshot its state now and returns the
// snapshot: taken here if this agent leads, otherwise over the agent RPC.
func (c *Cluster) SaveSnapshot(ctx context.Context) (SnapshotMeta, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.snapshotTimeout())
	defer cancel()
	addr, err := c.waitForLeader(ctx)
	if err != nil {
		return SnapshotMeta{}, nil, err
	}
	if c.IsLeader() {
		return c.snapshotLocal(ctx)
	}
	return c.forwardSnapshot(ctx, addr)
}

// snapshotLocal takes a snapshot on the leader. A Barrier first makes sure
// every entry committed so far, by this leader or an earlier one, is in it.
// Raft refuses to snapshot while a configuration change is in flight, so it
// is tried again until ctx ends.
func (c *Cluster) snapshotLocal(ctx context.Context) (SnapshotMeta, []byte, error) {
	if !c.IsLeader() {
		return SnapshotMeta{}, nil, errNoLeader()
	}
	if err := c.barrier(ctx); err != nil {
		return SnapshotMeta{}, nil, translateRaftError(err)
	}
	for {
		f := c.raft.Snapshot()
		err := f.Error()
		if err == nil {
			return readSnapshot(f)
		}
		switch {
		case errors.Is(err, raft.ErrRaftShutdown):
			return SnapshotMeta{}, nil, translateRaftError(err)
		case errors.Is(err, raft.ErrNothingNewToSnapshot):
			return SnapshotMeta{}, nil, tokens.Errorf(tokens.CodeUnavailable, "the leader has applied nothing since it started: retry once it has committed an entry")
		}
		select {
		case <-ctx.Done():
			return SnapshotMeta{}, nil, tokens.Errorf(tokens.CodeUnavailable, "raft could not take a snapshot: %v", err)
		case <-time.After(c.cfg.Timing.RaftHeartbeat):
		}
	}
}

func readSnapshot(f raft.SnapshotFuture) (SnapshotMeta, []byte, error) {
	meta, rc, err := f.Open()
	if err != nil {
		return SnapshotMeta{}, nil, tokens.Errorf(tokens.CodeUnavailable, "open the snapshot raft took: %v", err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, tokens.MaxSnapshotBytes+1))
	switch {
	case err != nil:
		return SnapshotMeta{}, nil, tokens.Errorf(tokens.CodeUnavailable, "read the snapshot raft took: %v", err)
	case len(data) > tokens.MaxSnapshotBytes:
		return SnapshotMeta{}, nil, tokens.Errorf(tokens.CodeUnavailable, "the state is larger than the %d bytes a snapshot may hold", tokens.MaxSnapshotBytes)
	}
	return SnapshotMeta{Index: meta.Index, Term: meta.Term}, data, nil
}

// handleSnapshot is the leader's end of SaveSnapshot: the snapshot's bytes,
// with its index and term in headers; or an rpcError as JSON, with a status
// other than 200.
func (c *Cluster) handleSnapshot(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), c.snapshotTimeout())
	defer cancel()
	meta, data, err := c.snapshotLocal(ctx)
	if err != nil {
		e := tokens.AsError(err)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(rpcError{Code: e.Code, Message: e.Message})
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set(headerSnapshotIndex, strconv.FormatUint(meta.Index, 10))
	w.Header().Set(headerSnapshotTerm, strconv.FormatUint(meta.Term, 10))
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	_, _ = w.Write(data)
}

func (c *Cluster) forwardSnapshot(ctx context.Context, leaderAddr string) (SnapshotMeta, []byte, error) {
	fail := func(err error) (SnapshotMeta, []byte, error) {
		return SnapshotMeta{}, nil, tokens.Errorf(tokens.CodeNoLeader, "get a snapshot from the leader at %s: %v", leaderAddr, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+leaderAddr+"/rpc/snapshot", nil)
	if err != nil {
		return fail(err)
	}
	resp, err := c.rpcClient.Do(req)
	if err != nil {
		return fail(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e rpcError
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e); err != nil || e.Code == "" {
			return fail(fmt.Errorf("status %d", resp.StatusCode))
		}
		return SnapshotMeta{}, nil, tokens.Errorf(e.Code, "%s", e.Message)
	}
	var meta SnapshotMeta
	if meta.Index, err = strconv.ParseUint(resp.Header.Get(headerSnapshotIndex), 10, 64); err != nil {
		return fail(fmt.Errorf("no snapshot index in the answer"))
	}
	if meta.Term, err = strconv.ParseUint(resp.Header.Get(headerSnapshotTerm), 10, 64); err != nil {
		return fail(fmt.Errorf("no snapshot term in the answer"))
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, tokens.MaxSnapshotBytes+1))
	switch {
	case err != nil:
		return fail(err)
	case len(data) > tokens.MaxSnapshotBytes:
		return fail(fmt.Errorf("the snapshot is larger than %d bytes", tokens.MaxSnapshotBytes))
	case resp.ContentLength >= 0 && int64(len(data)) != resp.ContentLength:
		return fail(fmt.Errorf("the snapshot was cut short: %d of %d bytes", len(data), resp.ContentLength))
	}
	return meta, data, nil
}

// RestoreSnapshot makes data, a state machine snapshot an operator kept,
// the state of every agent. It runs on the leader only. Raft stores data as
// a snapshot above both after (the highest index anything in data names)
// and this log's last entry, so indexes keep growing; restores it into this
// agent's state machine, which takes that new index as its applied index;
// and sends it to every follower, which installs it the same way. It
// returns once a quorum has it, with the index this agent's state machine
// stands at.
//
// The leader's tasks are stopped before the state is replaced and started
// again, after a Barrier, on the restored state, as if leadership had
// changed hands: none of them acts on what the restore threw away.
//
// Raft panics if the state machine cannot restore data, so the caller must
// have checked that it restores.
func (c *Cluster) RestoreSnapshot(ctx context.Context, after uint64, data []byte) (uint64, error) {
	if !c.restoreMu.TryLock() {
		return 0, tokens.Errorf(tokens.CodeConflict, "another restore is running on the leader: wait for it to finish")
	}
	defer c.restoreMu.Unlock()
	if !c.IsLeader() {
		return 0, errNoLeader()
	}
	if err := c.pauseDuties(); err != nil {
		return 0, err
	}
	defer func() {
		if err := c.resumeDuties(); err != nil {
			c.logger.Warn("leader duties not resumed after a restore", "error", err)
		}
	}()
	timeout := c.snapshotTimeout()
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	deadline := time.Now().Add(timeout)
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: after, Size: int64(len(data))}
	c.logger.Warn("restoring an operator's snapshot: the state of every agent is replaced", "bytes", len(data))
	for {
		err := c.raft.Restore(meta, bytes.NewReader(data), time.Until(deadline))
		if err == nil {
			break
		}
		// Raft refuses, before it changes anything, while a configuration
		// change is uncommitted; membership changes are paused with the
		// other leader tasks, so it commits soon.
		if !strings.Contains(err.Error(), "wait until the configuration entry") || time.Now().After(deadline) {
			return 0, translateRaftError(err)
		}
		select {
		case <-ctx.Done():
			return 0, translateRaftError(err)
		case <-time.After(c.cfg.Timing.RaftHeartbeat):
		}
	}
	index := c.sm.AppliedIndex()
	c.logger.Warn("operator's snapshot restored", "index", index)
	return index, nil
}
