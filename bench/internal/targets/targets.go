// Package targets makes the load workers for each system the suite
// measures. Every worker is one client with its own connection (its own
// HTTP transport, or its own etcd client and gRPC connection), so that
// concurrency C means C clients, the same for every system.
package targets

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/api/client"
	"github.com/tokend/tokend/bench/internal/load"
	"github.com/tokend/tokend/bench/internal/procs"
)

// Endpoint is where an HTTP server listens: Network "tcp" with Addr
// host:port, or "unix" with Addr the socket's path.
type Endpoint struct {
	Network string
	Addr    string
}

func (e Endpoint) String() string { return e.Network + ":" + e.Addr }

// client is an HTTP/1.1 client with a single keep-alive connection to e.
func (e Endpoint) client() (*http.Client, string) {
	tr := &http.Transport{
		MaxIdleConnsPerHost: 1,
		DisableCompression:  true,
	}
	base := "http://" + e.Addr
	if e.Network == "unix" {
		path := e.Addr
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
		base = "http://tokend"
	}
	return &http.Client{Transport: tr}, base
}

// HTTPGet makes workers that GET path from e and read the whole answer,
// which must be 200.
func HTTPGet(e Endpoint, path string) load.NewWorker {
	return func(int) (load.Worker, error) {
		c, base := e.client()
		u := base + path
		return load.Worker{
			Op: func(ctx context.Context) error {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
				if err != nil {
					return err
				}
				return do(c, req, http.StatusOK)
			},
			Close: c.CloseIdleConnections,
		}, nil
	}
}

// TokendCached makes workers that fetch a token of pool through the Go
// client's cache (client.NewCache) in front of the agent at e: each worker
// is one client process with its own cache and change watch, ready (watch
// confirmed, pool fetched once) before the run. A fetch the cache serves
// makes no request.
func TokendCached(e Endpoint, pool string) load.NewWorker {
	return func(int) (load.Worker, error) {
		addr := "unix://" + e.Addr
		if e.Network == "tcp" {
			addr = "http://" + e.Addr
		}
		c, err := client.New(addr)
		if err != nil {
			return load.Worker{}, err
		}
		k := client.NewCache(c, client.CacheOptions{})
		closeAll := func() {
			_ = k.Close()
			c.CloseIdleConnections()
		}
		for deadline := time.Now().Add(10 * time.Second); !k.Stats().Fresh; {
			if time.Now().After(deadline) {
				closeAll()
				return load.Worker{}, fmt.Errorf("the cache's watch of %s did not confirm freshness: %s", e, k.Stats().WatchError)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if _, _, err := k.FetchToken(context.Background(), pool, client.FetchOptions{}); err != nil {
			closeAll()
			return load.Worker{}, err
		}
		return load.Worker{
			Op: func(ctx context.Context) error {
				_, _, err := k.FetchToken(ctx, pool, client.FetchOptions{})
				return err
			},
			Close: closeAll,
		}, nil
	}
}

// do sends req and reads the answer, which must have status want.
func do(c *http.Client, req *http.Request, want int) error {
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %s", req.Method, req.URL.Path, resp.Status)
	}
	return nil
}

// PoolTokenLimit is how many tokens a write worker adds to one pool
// before it replaces the pool with a new one: the largest pool a provider
// keeps issued (tokens.MaxPoolSize), so that the pools written hold as
// many tokens as large real ones, and the state stays the same size
// however long the run (at most PoolTokenLimit tokens per client).
const PoolTokenLimit = 100

// UniqueValue is base with its last 10 bytes replaced by n, zero-padded:
// a value of len(base) bytes that differs for each n (a pool refuses a
// value it holds already). base must be at least 10 bytes long.
func UniqueValue(base string, n int) string {
	b := make([]byte, 0, len(base))
	b = append(b, base[:len(base)-10]...)
	d := strconv.Itoa(n % 1e10)
	for range 10 - len(d) {
		b = append(b, '0')
	}
	return string(append(b, d...))
}

// TokendAdd makes workers that add tokens through the API of the agent at
// e: POST /v1/pools/{pool}/tokens with a value of len(value) bytes (value
// made unique by UniqueValue), answered 201 once committed through Raft.
// Worker i writes to pools named prefix-i-k of its own: the first made
// before the run; when one holds PoolTokenLimit tokens, the worker makes
// the next and deletes the full one with its tokens (two writes that are
// not counted — the operation returns load.ErrSkip — but take time inside
// the window: about 2 % of the writes); the last deleted when the worker
// closes.
func TokendAdd(e Endpoint, prefix, value string) load.NewWorker {
	return func(i int) (load.Worker, error) {
		c, base := e.client()
		w := &addWorker{c: c, base: base, prefix: fmt.Sprintf("%s-%d", prefix, i)}
		if err := w.newPool(); err != nil {
			return load.Worker{}, err
		}
		return load.Worker{
			Op: func(ctx context.Context) error {
				if w.added >= PoolTokenLimit {
					full := w.pool
					if err := w.newPool(); err != nil {
						return err
					}
					if err := w.deletePool(full); err != nil {
						return err
					}
					return load.ErrSkip
				}
				w.n++
				body := mustJSON(api.TokenRequest{Value: UniqueValue(value, w.n)})
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.base+"/v1/pools/"+w.pool+"/tokens", bytes.NewReader(body))
				if err != nil {
					return err
				}
				req.Header.Set("Content-Type", "application/json")
				if err := do(c, req, http.StatusCreated); err != nil {
					return err
				}
				w.added++
				return nil
			},
			Close: w.close,
		}, nil
	}
}

type addWorker struct {
	c            *http.Client
	base, prefix string
	pools        int
	pool         string
	added, n     int
}

func (w *addWorker) newPool() error {
	name := w.prefix + "-" + strconv.Itoa(w.pools)
	req, err := http.NewRequest(http.MethodPut, w.base+"/v1/pools/"+name, bytes.NewReader(mustJSON(api.PoolRequest{})))
	if err != nil {
		return err
	}
	if err := do(w.c, req, http.StatusOK); err != nil {
		return fmt.Errorf("create pool %s: %w", name, err)
	}
	w.pools++
	w.pool, w.added = name, 0
	return nil
}

func (w *addWorker) deletePool(name string) error {
	req, err := http.NewRequest(http.MethodDelete, w.base+"/v1/pools/"+url.PathEscape(name)+"?force=true", nil)
	if err != nil {
		return err
	}
	if err := do(w.c, req, http.StatusOK); err != nil {
		return fmt.Errorf("delete pool %s: %w", name, err)
	}
	return nil
}

func (w *addWorker) close() {
	_ = w.deletePool(w.pool)
	w.c.CloseIdleConnections()
}

// EtcdGet makes workers, each with its own etcd client of endpoint, that
// read key with serializable consistency (answered by that member from
// its own state, like a tokend fetch) and expect one value.
func EtcdGet(endpoint, key string) load.NewWorker {
	return func(int) (load.Worker, error) {
		cli, err := procs.Client(endpoint)
		if err != nil {
			return load.Worker{}, err
		}
		return load.Worker{
			Op: func(ctx context.Context) error {
				resp, err := cli.Get(ctx, key, clientv3.WithSerializable())
				if err != nil {
					return err
				}
				if len(resp.Kvs) != 1 {
					return fmt.Errorf("get %s: %d values", key, len(resp.Kvs))
				}
				return nil
			},
			Close: func() { cli.Close() },
		}, nil
	}
}

// EtcdPut makes workers, each with its own etcd client of endpoint, that
// put values of len(value) bytes (made unique by UniqueValue, as
// TokendAdd's) under keys prefix/i/0 … prefix/i/999 in turn.
func EtcdPut(endpoint, prefix, value string) load.NewWorker {
	return func(i int) (load.Worker, error) {
		cli, err := procs.Client(endpoint)
		if err != nil {
			return load.Worker{}, err
		}
		keys := make([]string, 1000)
		for k := range keys {
			keys[k] = fmt.Sprintf("%s/%d/%d", prefix, i, k)
		}
		n := 0
		return load.Worker{
			Op: func(ctx context.Context) error {
				n++
				_, err := cli.Put(ctx, keys[n%len(keys)], UniqueValue(value, n))
				return err
			},
			Close: func() { cli.Close() },
		}, nil
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
