package testutil

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/tokend/tokend/agent"
	"github.com/tokend/tokend/tokens"
)

// FakeProvider is a provider for cluster tests. It issues values with a
// fixed lifetime and records every call with the node that made it, so a
// test can check that only the leader calls it and that every credential it
// issued is accounted for.
type FakeProvider struct {
	mu       sync.Mutex
	lifetime time.Duration
	seq      int
	issued   []IssuedCredential
	revoked  map[string]bool
	fail     error
	// hold, when set, makes Issue wait until it is closed.
	hold chan struct{}
	// ignoreCancel makes a held Issue still issue after its context ends,
	// like an issuer that finished the request as the caller gave up.
	ignoreCancel bool
	waiting      int
}

// IssuedCredential is one credential the fake issued.
type IssuedCredential struct {
	Value string
	Node  string
	Key   string
	At    time.Time
}

// NewFakeProvider returns a fake whose credentials live for lifetime (0:
// forever).
func NewFakeProvider(lifetime time.Duration) *FakeProvider {
	return &FakeProvider{lifetime: lifetime, revoked: map[string]bool{}}
}

// Factory returns the ProviderFactory for the agent called node.
func (f *FakeProvider) Factory(node string) agent.ProviderFactory {
	return func(spec tokens.ProviderSpec) (tokens.Provider, error) {
		return fakeHandle{f: f, node: node}, nil
	}
}

// Fail makes every call fail with err (nil: succeed again).
func (f *FakeProvider) Fail(err error) {
	f.mu.Lock()
	f.fail = err
	f.mu.Unlock()
}

// Hold makes calls wait until Release; with ignoreCancel a held call issues
// even after its context ends.
func (f *FakeProvider) Hold(ignoreCancel bool) {
	f.mu.Lock()
	f.hold, f.ignoreCancel = make(chan struct{}), ignoreCancel
	f.mu.Unlock()
}

// Release lets held calls go on.
func (f *FakeProvider) Release() {
	f.mu.Lock()
	if f.hold != nil {
		close(f.hold)
		f.hold = nil
	}
	f.mu.Unlock()
}

// Waiting is how many calls are held.
func (f *FakeProvider) Waiting() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.waiting
}

// Issued returns every credential issued so far.
func (f *FakeProvider) Issued() []IssuedCredential {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]IssuedCredential(nil), f.issued...)
}

// Revoked reports whether value was revoked.
func (f *FakeProvider) Revoked(value string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.revoked[value]
}

type fakeHandle struct {
	f    *FakeProvider
	node string
}

func (h fakeHandle) Issue(ctx context.Context, req tokens.IssueRequest) (tokens.Issued, error) {
	f := h.f
	f.mu.Lock()
	hold, ignore := f.hold, f.ignoreCancel
	if hold != nil {
		f.waiting++
	}
	f.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			if !ignore {
				f.mu.Lock()
				f.waiting--
				f.mu.Unlock()
				return tokens.Issued{}, ctx.Err()
			}
			<-hold
		}
		f.mu.Lock()
		f.waiting--
		f.mu.Unlock()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return tokens.Issued{}, f.fail
	}
	f.seq++
	now := time.Now()
	c := IssuedCredential{Value: fmt.Sprintf("fake-%s-%d", h.node, f.seq), Node: h.node, Key: req.Key, At: now}
	f.issued = append(f.issued, c)
	out := tokens.Issued{Value: tokens.Secret(c.Value), Metadata: map[string]string{"issuer": "fake", "node": h.node}}
	if f.lifetime > 0 {
		out.ExpiresAt = now.Add(f.lifetime)
	}
	return out, nil
}

func (h fakeHandle) Revoke(_ context.Context, req tokens.RevokeRequest) error {
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	h.f.revoked[string(req.Value)] = true
	return nil
}
