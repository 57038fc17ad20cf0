package agent_test

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokend/tokend/agent"
	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
	"github.com/tokend/tokend/tokens"
)

// stateOf is what a client sees of an agent's replicated state: each pool
// with its token ids, lifecycles and health, in order.
func stateOf(t *testing.T, n *testutil.Node) string {
	t.Helper()
	h := tcpClient(n)
	var pools []api.Pool
	h.Must(t, "GET", "/v1/pools", nil, http.StatusOK, &pools)
	var b strings.Builder
	for _, p := range pools {
		fmt.Fprintf(&b, "%s:", p.Name)
		for _, tk := range listTokens(t, h, p.Name) {
			fmt.Fprintf(&b, " %s/%s/%s", tk.ID, tk.Lifecycle, tk.Health.State)
		}
		b.WriteString("; ")
	}
	return b.String()
}

// indexHeader is the X-Tokend-Index an agent's health answer carries.
func indexHeader(n *testutil.Node) (uint64, error) {
	r, err := tcpClient(n).Do("GET", "/v1/health", nil)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(r.Header.Get(api.HeaderIndex), 10, 64)
}

func saveSnapshot(t *testing.T, n *testutil.Node) ([]byte, *api.SnapshotFile) {
	t.Helper()
	r := tcpClient(n).Must(t, "GET", "/v1/snapshot", nil, http.StatusOK, nil)
	file, err := api.DecodeSnapshot(r.Body)
	if err != nil {
		t.Fatalf("the saved snapshot does not check out: %v", err)
	}
	if got := r.Header.Get(api.HeaderIndex); got != strconv.FormatUint(file.Info.Index, 10) {
		t.Fatalf("%s %q, the file says index %d", api.HeaderIndex, got, file.Info.Index)
	}
	return r.Body, file
}

func hasEvent(t *testing.T, n *testutil.Node, typ tokens.EventType) bool {
	t.Helper()
	var evs api.Events
	tcpClient(n).Must(t, "GET", "/v1/events?limit=1000", nil, http.StatusOK, &evs)
	return slices.ContainsFunc(evs.Events, func(e tokens.Event) bool { return e.Type == typ })
}

// A snapshot saved through a follower and restored through another agent
// becomes the state of every agent, whose applied index only ever grows;
// the file holds no secret in any form; writes go on after it, and an
// agent restarted afterwards comes back with the restored state.
func TestSnapshotRoundTrip(t *testing.T) {
	fake := testutil.NewFakeProvider(time.Hour)
	c := testutil.NewClusterWith(t, 3, func(cfg *agent.Config) { cfg.ProviderFactory = fake.Factory(cfg.NodeName) })
	followers := c.Followers()
	h := tcpClient(followers[0])
	canary := func(what string) string { return "SnapCanary-" + what + "-Wm4kP0zR" }
	// A label is not secret: finding it proves the search reads the state.
	const marker = "snap-marker-5d1e77"
	h.Must(t, "PUT", "/v1/pools/static", api.PoolRequest{Labels: map[string]string{"marker": marker}}, http.StatusOK, nil)
	first := h.AddToken(t, "static", canary("value-0"), 0)
	h.AddToken(t, "static", canary("value-1"), 1)
	h.Must(t, "PUT", "/v1/pools/oauth", api.PoolRequest{Provider: &api.Provider{
		Type: "oauth2", TokenURL: "https://auth.example.com/token", ClientID: "c0", ClientSecret: canary("client-secret"),
	}}, http.StatusOK, nil)
	h.Must(t, "PUT", "/v1/pools/issuer", api.PoolRequest{Provider: &api.Provider{
		Type: "http", URL: "https://issuer.example.com/issue", Headers: map[string]string{"Authorization": "Bearer " + canary("header")},
	}}, http.StatusOK, nil)
	secrets := []string{canary("value-0"), canary("value-1"), canary("client-secret"), "Bearer " + canary("header")}
	// The issuing pools fill up, so issued credentials are in the file
	// too, and no rotation is open when it is saved.
	testutil.WaitFor(t, 10*time.Second, func() error {
		for _, name := range []string{"oauth", "issuer"} {
			var p api.Pool
			h.Must(t, "GET", "/v1/pools/"+name, nil, http.StatusOK, &p)
			if toks := listTokens(t, h, name); len(toks) != 2 || len(p.OpenRotations) > 0 {
				return fmt.Errorf("pool %s holds %d tokens, %d rotations open", name, len(toks), len(p.OpenRotations))
			}
		}
		return nil
	})
	for _, cr := range fake.Issued() {
		secrets = append(secrets, cr.Value)
	}

	data, file := saveSnapshot(t, followers[0])
	if !bytes.Contains(data, []byte(marker)) {
		t.Fatalf("the file does not hold the label %q: does the search read it?", marker)
	}
	for _, s := range secrets {
		for _, n := range needles(s) {
			if bytes.Contains(data, n) {
				t.Fatalf("the snapshot file holds secret %q (as %q)", s, n)
			}
		}
	}
	if file.Info.Pools != 3 || file.Info.Tokens != 6 || file.Info.Rotations != 0 || file.Info.Node != followers[0].Name || file.Info.Leader != c.Leader().Name || len(file.Info.KeyIDs) != 1 {
		t.Fatalf("header %+v", file.Info)
	}
	saved := stateOf(t, followers[0])

	// Change everything a restore must undo.
	h.Must(t, "DELETE", "/v1/pools/static/tokens/"+first, nil, http.StatusOK, nil)
	h.AddToken(t, "static", canary("later"), -1)
	h.Must(t, "DELETE", "/v1/pools/issuer?force=true", nil, http.StatusOK, nil)
	h.Must(t, "PUT", "/v1/pools/later", api.PoolRequest{}, http.StatusOK, nil)
	var before uint64
	for _, n := range c.Running() {
		testutil.WaitFor(t, 5*time.Second, func() error {
			if s := stateOf(t, n); s == saved {
				return errors.New("the changes have not reached " + n.Name)
			}
			return nil
		})
		idx, err := indexHeader(n)
		if err != nil {
			t.Fatal(err)
		}
		before = max(before, idx)
	}

	// Watch every agent's index while the restore runs: it must never go
	// back.
	stop := make(chan struct{})
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		backwards []string
	)
	for _, n := range c.Running() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last uint64
			tick := time.NewTicker(2 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				idx, err := indexHeader(n)
				if err != nil {
					continue
				}
				if idx < last {
					mu.Lock()
					backwards = append(backwards, fmt.Sprintf("%s: %d after %d", n.Name, idx, last))
					mu.Unlock()
				}
				last = idx
			}
		}()
	}

	var res api.SnapshotRestored
	r := tcpClient(followers[1]).Must(t, "PUT", "/v1/snapshot", string(data), http.StatusOK, &res)
	if res.RestoredIndex <= before || res.Index < res.RestoredIndex || r.Header.Get(api.HeaderIndex) != strconv.FormatUint(res.Index, 10) {
		t.Fatalf("restored at %d (recorded at %d, header %s); the agents were at %d before", res.RestoredIndex, res.Index, r.Header.Get(api.HeaderIndex), before)
	}
	if res.Snapshot.Index != file.Info.Index || res.SHA256 != file.SHA256 {
		t.Fatalf("answer %+v does not name the file %+v", res, file.Info)
	}
	// The agent that answered has applied the restore already.
	if got := stateOf(t, followers[1]); got != saved {
		t.Fatalf("%s right after the restore:\n%s\nwant\n%s", followers[1].Name, got, saved)
	}
	for _, n := range c.Running() {
		testutil.WaitFor(t, 10*time.Second, func() error {
			if got := stateOf(t, n); got != saved {
				return fmt.Errorf("%s holds\n%s\nwant\n%s", n.Name, got, saved)
			}
			if idx, err := indexHeader(n); err != nil || idx < res.Index {
				return fmt.Errorf("%s at index %d, want %d or later (%v)", n.Name, idx, res.Index, err)
			}
			if !hasEvent(t, n, tokens.EventSnapshotRestored) {
				return fmt.Errorf("%s has no snapshot_restored event", n.Name)
			}
			return nil
		})
	}
	waitServes(t, c.Running(), "static", first)
	// Writes go on, through any agent.
	later := tcpClient(followers[1]).AddToken(t, "static", canary("after"), -5)
	waitServes(t, c.Running(), "static", later)
	close(stop)
	wg.Wait()
	if len(backwards) > 0 {
		t.Fatalf("applied indexes went back: %v", backwards)
	}

	// A restarted agent comes back with the restored state and what came
	// after, from its own data dir.
	want := stateOf(t, followers[0])
	c.Stop(followers[0])
	c.Restart(followers[0])
	testutil.WaitFor(t, 10*time.Second, func() error {
		if got := stateOf(t, followers[0]); got != want {
			return fmt.Errorf("after a restart:\n%s\nwant\n%s", got, want)
		}
		return nil
	})
	waitServes(t, []*testutil.Node{followers[0]}, "static", later)
}

// A file whose secrets this cluster's keyring cannot open is refused, and
// nothing changes: by the agent asked when it lacks the keys, by the leader
// when another agent does. Once every agent holds them, the same file is
// restored: the way to move a backup into a new cluster.
func TestSnapshotRestoreNeedsEveryAgentsKeys(t *testing.T) {
	otherKey := tokens.GenerateKey()
	other := testutil.StartAgent(t, func(cfg *agent.Config) { cfg.EncryptKey = otherKey })
	oh := testutil.TCP(other.HTTPAddr())
	oh.Must(t, "PUT", "/v1/pools/elsewhere", api.PoolRequest{}, http.StatusOK, nil)
	id := oh.AddToken(t, "elsewhere", "value-sealed-elsewhere", 0)
	r := oh.Must(t, "GET", "/v1/snapshot", nil, http.StatusOK, nil)
	foreign := string(r.Body)

	c := testutil.NewCluster(t, 3)
	leader := c.Leader()
	followers := c.Followers()
	h := tcpClient(followers[0])
	h.Must(t, "PUT", "/v1/pools/here", api.PoolRequest{}, http.StatusOK, nil)
	h.AddToken(t, "here", "value-here", 0)
	before := stateOf(t, followers[0])
	// The other agents learn the add's commit up to a commit timeout later.
	testutil.WaitFor(t, 5*time.Second, func() error {
		for _, n := range c.Running() {
			if got := stateOf(t, n); got != before {
				return fmt.Errorf("%s has %s, want %s", n.Name, got, before)
			}
		}
		return nil
	})
	unchanged := func() {
		t.Helper()
		for _, n := range c.Running() {
			if got := stateOf(t, n); got != before || hasEvent(t, n, tokens.EventSnapshotRestored) {
				t.Fatalf("%s changed after a refused restore:\n%s\nwant\n%s", n.Name, got, before)
			}
		}
	}
	refused := func(n *testutil.Node, mentions ...string) {
		t.Helper()
		r, err := tcpClient(n).Do("PUT", "/v1/snapshot", foreign)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != http.StatusUnprocessableEntity || r.ErrorCode() != tokens.CodeKeyMissing {
			t.Fatalf("restore through %s: %d %s, want 422 key_missing", n.Name, r.Status, r.Body)
		}
		for _, m := range mentions {
			if !strings.Contains(string(r.Body), m) {
				t.Fatalf("refusal %s does not mention %q", r.Body, m)
			}
		}
	}
	otherID := keyID(t, otherKey)
	refused(followers[0], otherID, "install it")
	unchanged()

	// The agent asked and the leader hold the key; the third agent does
	// not, and the leader finds out.
	third := followers[1]
	for _, n := range []*testutil.Node{followers[0], leader} {
		if err := n.InstallKeyLocally(otherKey); err != nil {
			t.Fatal(err)
		}
	}
	refused(followers[0], third.Name+" lacks "+otherID)
	unchanged()

	if err := third.InstallKeyLocally(otherKey); err != nil {
		t.Fatal(err)
	}
	tcpClient(followers[0]).Must(t, "PUT", "/v1/snapshot", foreign, http.StatusOK, nil)
	waitServes(t, c.Running(), "elsewhere", id)
	for _, n := range c.Running() {
		r := tcpClient(n).Must(t, "GET", "/v1/pools/elsewhere/token?format=raw", nil, http.StatusOK, nil)
		if string(r.Body) != "value-sealed-elsewhere" {
			t.Fatalf("%s serves %q", n.Name, r.Body)
		}
	}
}

// A rotation open in the snapshot belonged to the leader of the state's
// time: the leader that restores it resumes it in its own term, with the
// same idempotency key, as a new leader would, instead of waiting forever
// for a provider call that is not running.
func TestSnapshotRestoreResumesOpenRotations(t *testing.T) {
	fp := testutil.NewFakeProvider(time.Hour)
	c := rotationCluster(t, fp)
	leader := c.Leader()
	h := tcpClient(leader)
	fp.Hold(false)
	issuingPool(t, h, "p", api.PoolRequest{Size: 1})
	testutil.WaitFor(t, 5*time.Second, func() error {
		if fp.Waiting() == 0 {
			return errors.New("no provider call in flight yet")
		}
		return nil
	})
	data, file := saveSnapshot(t, leader)
	if file.Info.Rotations != 1 {
		t.Fatalf("the snapshot holds %d open rotations, want the one in flight", file.Info.Rotations)
	}
	// Restoring stops the leader's tasks, so the held call ends. A leader
	// deposed while the restore commits (50 ms leases on a loaded machine)
	// answers 503 no_leader, applied or not: the restore is sent again, as
	// an operator would, to whichever agent leads then.
	testutil.WaitFor(t, 10*time.Second, func() error {
		r, err := tcpClient(c.Leader()).Do("PUT", "/v1/snapshot", string(data))
		switch {
		case err != nil:
			return err
		case r.Status == http.StatusServiceUnavailable && r.ErrorCode() == "no_leader":
			return fmt.Errorf("restore: %s", r.Body)
		case r.Status != http.StatusOK:
			t.Fatalf("PUT /v1/snapshot: status %d, want 200: %s", r.Status, r.Body)
		}
		return nil
	})
	testutil.WaitFor(t, 5*time.Second, func() error {
		var evs api.Events
		h.Must(t, "GET", "/v1/events?limit=1000", nil, http.StatusOK, &evs)
		for _, e := range evs.Events {
			if e.Type == tokens.EventRotationResumed {
				return nil
			}
		}
		return errors.New("the restored rotation was not resumed")
	})
	fp.Release()
	testutil.WaitFor(t, 10*time.Second, func() error {
		toks := listTokens(t, h, "p")
		if len(toks) != 1 || toks[0].Lifecycle != "active" {
			return fmt.Errorf("tokens %+v", toks)
		}
		return nil
	})
	issued := fp.Issued()
	if len(issued) != 1 {
		t.Fatalf("issued %+v; want one credential", issued)
	}
	var evs api.Events
	h.Must(t, "GET", "/v1/events?limit=1000", nil, http.StatusOK, &evs)
	if !slices.ContainsFunc(evs.Events, func(e tokens.Event) bool {
		return e.Type == tokens.EventRotationCommitted && e.Rotation == issued[0].Key
	}) {
		t.Fatalf("the credential issued for %s was not committed: %+v", issued[0].Key, evs.Events)
	}
}

// A restore is checked (decoded, every value opened) once by the agent
// asked, when it is a follower, and once by the leader; asked directly,
// the leader checks it once, not twice: at 10,000 tokens each check costs
// a decode of the whole state and its garbage (tokend-bench scale).
func TestSnapshotRestoreCheckedOnceOnLeader(t *testing.T) {
	c := testutil.NewCluster(t, 3)
	leader, follower := c.Leader(), c.Followers()[0]
	h := tcpClient(leader)
	h.Must(t, "PUT", "/v1/pools/static", api.PoolRequest{}, http.StatusOK, nil)
	h.AddToken(t, "static", "checked-once-value-0", 0)
	data, _ := saveSnapshot(t, leader)
	checks := func() (int64, int64) { return leader.SnapshotChecks(), follower.SnapshotChecks() }

	l0, f0 := checks()
	tcpClient(leader).Must(t, "PUT", "/v1/snapshot", string(data), http.StatusOK, nil)
	if l, f := checks(); l-l0 != 1 || f-f0 != 0 {
		t.Fatalf("restore through the leader: the leader checked %d times, a follower %d; want 1 and 0", l-l0, f-f0)
	}
	l0, f0 = checks()
	tcpClient(follower).Must(t, "PUT", "/v1/snapshot", string(data), http.StatusOK, nil)
	if l, f := checks(); l-l0 != 1 || f-f0 != 1 {
		t.Fatalf("restore through a follower: the leader checked %d times, the follower %d; want 1 and 1", l-l0, f-f0)
	}
}
