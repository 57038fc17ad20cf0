package api_test

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/tokens"
)

// racingBackend serves a view of the state at index 5, and applies index 6
// — which would remove the token the view serves — right after the view is
// taken: the race between a fetch and Apply.
type racingBackend struct {
	api.Backend // unused methods panic
	applied     atomic.Uint64
}

func (b *racingBackend) View() api.View {
	b.applied.Store(6)
	return racingView{}
}

func (b *racingBackend) Freshness() api.Freshness {
	return api.Freshness{AppliedIndex: b.applied.Load(), KnownLeader: true}
}

func (b *racingBackend) ObserveFetch(string, string, time.Duration) {}

type racingView struct{ api.View }

func (racingView) Select(pool string, _ []string) (*tokens.Token, error) {
	return &tokens.Token{ID: "tok_0000000000000001", Pool: pool}, nil
}
func (racingView) Open(*tokens.Token) (tokens.Secret, error) { return tokens.Secret("value"), nil }
func (racingView) Health(*tokens.Token) tokens.Health        { return tokens.Health{} }
func (racingView) Now() time.Time                            { return time.Now() }

// TestFetchIndexIsTheServedState checks that a fetch's X-Tokend-Index is
// never newer than the state the token was picked from: a client that
// knows a token was deleted at index 6 must be able to trust that an answer
// saying 6 does not serve it, as the chaos suite's no-dead-tokens check
// does.
func TestFetchIndexIsTheServedState(t *testing.T) {
	b := &racingBackend{}
	b.applied.Store(5)
	h := api.NewHandler(b, hclog.NewNullLogger(), api.Options{})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/v1/pools/p/token", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if got := w.Header().Get(api.HeaderIndex); got != "5" {
		t.Errorf("%s = %s for a token picked from the state at index 5", api.HeaderIndex, got)
	}
}
