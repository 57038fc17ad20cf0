package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/bench/internal/floor"
	"github.com/tokend/tokend/bench/internal/load"
	"github.com/tokend/tokend/bench/internal/procs"
	"github.com/tokend/tokend/bench/internal/suite"
	"github.com/tokend/tokend/bench/internal/targets"
)

// envOptions says what to start.
type envOptions struct {
	tokend    string // built tokend binary
	etcd      string // etcd binary, "" for none
	valueSize int
	raw       bool   // fetch with ?format=raw
	writeTo   string // "leader" or "follower"
	dir       string // parent of the temp dir ("" for the system's)
	keep      bool   // keep the temp dir (logs, data) after the run
}

// env is every server of a suite, running: a 3-agent tokend cluster, the
// floor server, and a 3-member etcd cluster.
type env struct {
	opts      envOptions
	dir       string
	value     string
	fetchPath string

	tokend           *procs.TokendCluster
	tLeader, tReader *procs.TokendNode
	floor            *procs.Proc
	floorTCP         string
	floorUnix        string
	etcd             *procs.EtcdCluster
	eLeader, eReader *procs.EtcdMember
	etcdVersion      string
	etcdWriter       string // client URL the puts go to
	tokendWriter     string // HTTP address the token adds go to
}

const (
	benchPool = "bench"
	etcdKey   = "/tokend-bench/token"
)

// startEnv starts every server and loads the data: the pool with one token
// of valueSize bytes, the same bytes under etcdKey. Reads go to a follower
// of each cluster (as from a host that does not lead, most of them);
// writes to the leader unless writeTo is "follower".
func startEnv(ctx context.Context, o envOptions) (e *env, err error) {
	e = &env{opts: o}
	defer func() {
		if err != nil {
			e.Close()
			e = nil
		}
	}()
	if e.dir, err = os.MkdirTemp(o.dir, "tkb-"); err != nil {
		return nil, err
	}
	e.value = randomValue(o.valueSize)
	e.fetchPath = "/v1/pools/" + benchPool + "/token"
	if o.raw {
		e.fetchPath += "?format=raw"
	}

	logf("starting 3 tokend agents (%s) in %s", o.tokend, e.dir)
	tdir := filepath.Join(e.dir, "tokend")
	if err = os.Mkdir(tdir, 0o700); err != nil {
		return nil, err
	}
	if e.tokend, err = procs.StartTokend(ctx, o.tokend, tdir, 3); err != nil {
		return nil, err
	}
	if e.tLeader, err = e.tokend.Leader(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	e.tReader = e.tokend.Follower(e.tLeader)
	e.tokendWriter = e.tLeader.HTTPAddr
	if o.writeTo == "follower" {
		e.tokendWriter = e.tReader.HTTPAddr
	}
	if err = e.loadTokend(ctx); err != nil {
		return nil, err
	}

	// The floor answers with the bytes the reader just answered.
	resp, err := captureFetch(e.tReader.HTTPAddr, e.fetchPath)
	if err != nil {
		return nil, err
	}
	respFile := filepath.Join(e.dir, "floor-response.json")
	if err = floor.WriteResponse(respFile, resp); err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	port, err := procs.FreePort()
	if err != nil {
		return nil, err
	}
	e.floorTCP = fmt.Sprintf("127.0.0.1:%d", port)
	e.floorUnix = filepath.Join(e.dir, "floor.sock")
	logf("starting the floor server on %s and %s (%d-byte body)", e.floorTCP, e.floorUnix, len(resp.Body))
	if e.floor, err = procs.Start("floor", self, []string{"floor", "-tcp", e.floorTCP, "-unix", e.floorUnix, "-response", respFile}, nil, filepath.Join(e.dir, "floor.log")); err != nil {
		return nil, err
	}
	if err = procs.WaitFor(ctx, 10*time.Second, []*procs.Proc{e.floor}, func() error {
		_, err := captureFetch(e.floorTCP, e.fetchPath)
		if err == nil {
			_, err = os.Stat(e.floorUnix)
		}
		return err
	}); err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}

	if o.etcd != "" {
		logf("starting 3 etcd members (%s)", o.etcd)
		edir := filepath.Join(e.dir, "etcd")
		if err = os.Mkdir(edir, 0o700); err != nil {
			return nil, err
		}
		if e.etcd, err = procs.StartEtcd(ctx, o.etcd, edir, 3); err != nil {
			return nil, err
		}
		if e.eLeader, err = e.etcd.Leader(ctx, 30*time.Second); err != nil {
			return nil, err
		}
		e.eReader = e.etcd.Follower(e.eLeader)
		e.etcdWriter = e.eLeader.ClientURL
		if o.writeTo == "follower" {
			e.etcdWriter = e.eReader.ClientURL
		}
		if e.etcdVersion, err = e.etcd.Version(ctx); err != nil {
			return nil, err
		}
		if err = e.loadEtcd(ctx); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// loadTokend makes the bench pool with one token holding e.value, and
// waits until the reader serves it over both transports.
func (e *env) loadTokend(ctx context.Context) error {
	if status, b, err := procs.Call(e.tLeader.HTTPAddr, "PUT", "/v1/pools/"+benchPool, api.PoolRequest{}); err != nil || status != http.StatusOK {
		return fmt.Errorf("create pool: %d %s %v", status, b, err)
	}
	if status, b, err := procs.Call(e.tLeader.HTTPAddr, "POST", "/v1/pools/"+benchPool+"/tokens", api.TokenRequest{Value: e.value}); err != nil || status != http.StatusCreated {
		return fmt.Errorf("add token: %d %s %v", status, b, err)
	}
	unix := procs.UnixClient(e.tReader.Socket)
	defer unix.CloseIdleConnections()
	return procs.WaitFor(ctx, 10*time.Second, []*procs.Proc{e.tReader.Proc}, func() error {
		if _, err := captureFetch(e.tReader.HTTPAddr, e.fetchPath); err != nil {
			return err
		}
		resp, err := unix.Get("http://tokend" + e.fetchPath)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("unix fetch: %s", resp.Status)
		}
		return nil
	})
}

// loadEtcd puts e.value under etcdKey and waits until the reader has it.
func (e *env) loadEtcd(ctx context.Context) error {
	cli, err := procs.Client(e.eLeader.ClientURL)
	if err != nil {
		return err
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, etcdKey, e.value); err != nil {
		return err
	}
	return procs.WaitFor(ctx, 10*time.Second, nil, func() error {
		return func() error {
			w, err := targets.EtcdGet(e.eReader.ClientURL, etcdKey)(0)
			if err != nil {
				return err
			}
			defer w.Close()
			return w.Op(ctx)
		}()
	})
}

// captureFetch fetches path from addr over TCP and keeps the answer.
func captureFetch(addr, path string) (floor.Response, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return floor.Response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return floor.Response{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return floor.Response{}, fmt.Errorf("GET %s: %s %s", path, resp.Status, b)
	}
	return floor.Capture(resp, b), nil
}

// workers returns how to make the workers of each system.
func (e *env) workers(run int) map[string]load.NewWorker {
	w := map[string]load.NewWorker{
		suite.TokendUnix:  targets.HTTPGet(targets.Endpoint{Network: "unix", Addr: e.tReader.Socket}, e.fetchPath),
		suite.TokendCache: targets.TokendCached(targets.Endpoint{Network: "unix", Addr: e.tReader.Socket}, benchPool),
		suite.TokendTCP:   targets.HTTPGet(targets.Endpoint{Network: "tcp", Addr: e.tReader.HTTPAddr}, e.fetchPath),
		suite.FloorUnix:   targets.HTTPGet(targets.Endpoint{Network: "unix", Addr: e.floorUnix}, e.fetchPath),
		suite.FloorTCP:    targets.HTTPGet(targets.Endpoint{Network: "tcp", Addr: e.floorTCP}, e.fetchPath),
		suite.TokendAdd:   targets.TokendAdd(targets.Endpoint{Network: "tcp", Addr: e.tokendWriter}, fmt.Sprintf("w%d", run), e.value),
	}
	if e.etcd != nil {
		w[suite.EtcdGet] = targets.EtcdGet(e.eReader.ClientURL, etcdKey)
		w[suite.EtcdPut] = targets.EtcdPut(e.etcdWriter, fmt.Sprintf("/tokend-bench/put/%d", run), e.value)
	}
	return w
}

// Close stops every process and removes the temp dir unless kept.
func (e *env) Close() {
	if e == nil {
		return
	}
	if e.tokend != nil {
		e.tokend.Stop()
	}
	e.floor.Stop()
	if e.etcd != nil {
		e.etcd.Stop()
	}
	if e.dir == "" {
		return
	}
	if e.opts.keep {
		logf("kept %s (logs and data)", e.dir)
		return
	}
	if err := os.RemoveAll(e.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		logf("remove %s: %v", e.dir, err)
	}
}

// randomValue is n printable bytes, like an API token.
func randomValue(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[rand.IntN(len(alphabet))]
	}
	return string(b)
}
