package agent

import (
	"fmt"
	"os"
	"sync"

	"github.com/tokend/tokend/tokens"
	"github.com/tokend/tokend/tokens/provider/exec"
	httpprovider "github.com/tokend/tokend/tokens/provider/http"
	"github.com/tokend/tokend/tokens/provider/oauth2"
)

// ProviderFactory builds the provider a pool's spec describes.
type ProviderFactory func(spec tokens.ProviderSpec) (tokens.Provider, error)

// BuildProvider is the default ProviderFactory: the providers under
// tokens/provider.
func BuildProvider(spec tokens.ProviderSpec) (tokens.Provider, error) {
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
		if o, err = oauth2.New(spec, nil); err == nil {
			p = o
		}
	case tokens.ProviderHTTP:
		var h *httpprovider.Provider
		if h, err = httpprovider.New(spec, nil); err == nil {
			p = h
		}
	default:
		err = fmt.Errorf("provider type %q cannot issue tokens", spec.Type)
	}
	return p, err
}

// builtProvider is a pool's provider, and its revoker if it can revoke.
type builtProvider struct {
	Provider tokens.Provider
	Revoker  tokens.Revoker
}

// providerCache keeps each pool's provider until the pool's spec changes,
// so HTTP clients and their connections are reused.
type providerCache struct {
	factory ProviderFactory
	mu      sync.Mutex
	pools   map[string]cachedProvider
}

type cachedProvider struct {
	modifyIndex uint64
	built       builtProvider
	err         error
}

func newProviderCache(factory ProviderFactory) *providerCache {
	if factory == nil {
		factory = BuildProvider
	}
	return &providerCache{factory: factory, pools: map[string]cachedProvider{}}
}

func (c *providerCache) get(p *tokens.Pool) (builtProvider, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cp, ok := c.pools[p.Name]; ok && cp.modifyIndex == p.ModifyIndex {
		return cp.built, cp.err
	}
	var built builtProvider
	prov, err := c.factory(p.Provider)
	if err == nil {
		built.Provider = prov
		if rv, ok := prov.(tokens.Revoker); ok {
			can, checks := prov.(interface{ CanRevoke() bool })
			if !checks || can.CanRevoke() {
				built.Revoker = rv
			}
		}
	}
	c.pools[p.Name] = cachedProvider{modifyIndex: p.ModifyIndex, built: built, err: err}
	return built, err
}
