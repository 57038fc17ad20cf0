package agent

import (
	"fmt"
	"net/http"
	"os"
	"sync"

	"github.com/tokend/tokend/tokens"
	"github.com/tokend/tokend/tokens/provider/exec"
	httpprovider "github.com/tokend/tokend/tokens/provider/http"
	"github.com/tokend/tokend/tokens/provider/oauth2"
)

// ProviderFactory builds the provider a pool's spec describes.
type ProviderFactory func(spec tokens.ProviderSpec) (tokens.Provider, error)

// HeaderNode names, on every HTTP request a provider makes, the agent that
// makes it: issuers see which agent called (only the leader should).
const HeaderNode = "X-Tokend-Node"

// defaultProviderFactory builds the providers under tokens/provider, their
// HTTP requests marked with this agent's name.
func defaultProviderFactory(node string) ProviderFactory {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	client := &http.Client{Transport: nodeHeader{node: node, next: transport}}
	return func(spec tokens.ProviderSpec) (tokens.Provider, error) {
		var (
			p   tokens.Provider
			err error
		)
		// Each New returns a concrete pointer: assign only on success, so a
		// failure never hides as a non-nil interface holding nil.
		switch spec.Type {
		case tokens.ProviderExec:
			var e *exec.Provider
			if e, err = exec.New(spec, os.Environ()); err == nil {
				p = e
			}
		case tokens.ProviderOAuth2:
			var o *oauth2.Provider
			if o, err = oauth2.New(spec, client); err == nil {
				p = o
			}
		case tokens.ProviderHTTP:
			var h *httpprovider.Provider
			if h, err = httpprovider.New(spec, client); err == nil {
				p = h
			}
		default:
			err = fmt.Errorf("provider type %q cannot issue tokens", spec.Type)
		}
		return p, err
	}
}

// nodeHeader adds HeaderNode to every request.
type nodeHeader struct {
	node string
	next http.RoundTripper
}

func (t nodeHeader) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set(HeaderNode, t.node)
	return t.next.RoundTrip(req)
}

// builtProvider is a pool's provider, and its revoker if it can revoke.
type builtProvider struct {
	Provider tokens.Provider
	Revoker  tokens.Revoker
}

// providerCache keeps each pool's provider until the pool's definition
// changes, so HTTP clients and their connections are reused.
type providerCache struct {
	factory ProviderFactory
	keys    *keyring
	mu      sync.Mutex
	pools   map[string]cachedProvider
}

type cachedProvider struct {
	// pool is the definition it was built from. A definition is never
	// changed in place, so another pointer is another definition — even
	// with the same ModifyIndex, when a restored snapshot (possibly
	// another cluster's) replaced the state.
	pool  *tokens.Pool
	built builtProvider
	err   error
}

func newProviderCache(factory ProviderFactory, keys *keyring) *providerCache {
	return &providerCache{factory: factory, keys: keys, pools: map[string]cachedProvider{}}
}

func (c *providerCache) get(p *tokens.Pool) (builtProvider, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cp, ok := c.pools[p.Name]; ok && cp.pool == p {
		return cp.built, cp.err
	}
	spec, err := c.keys.openSpec(p.Name, p.Provider)
	if err != nil {
		// Not cached: the key may be installed before the next call.
		return builtProvider{}, err
	}
	var built builtProvider
	prov, err := c.factory(spec)
	if err == nil {
		built.Provider = prov
		if rv, ok := prov.(tokens.Revoker); ok {
			can, checks := prov.(interface{ CanRevoke() bool })
			if !checks || can.CanRevoke() {
				built.Revoker = rv
			}
		}
	}
	c.pools[p.Name] = cachedProvider{pool: p, built: built, err: err}
	return built, err
}
