package procs

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// EtcdMember is one member of an EtcdCluster.
type EtcdMember struct {
	Name      string
	ClientURL string
	Proc      *Proc
}

// EtcdCluster is n etcd members on loopback, each with its own data dir,
// started with etcd's defaults (fsync on every commit, 100 ms heartbeat)
// apart from addresses.
type EtcdCluster struct {
	Members []*EtcdMember
}

// StartEtcd starts n members of bin under dir and waits until every one
// answers and knows the leader.
func StartEtcd(ctx context.Context, bin, dir string, n int) (*EtcdCluster, error) {
	c := &EtcdCluster{}
	var peers []string
	peerURLs := make([]string, n)
	for i := range n {
		cp, err := FreePort()
		if err != nil {
			return nil, err
		}
		pp, err := FreePort()
		if err != nil {
			return nil, err
		}
		m := &EtcdMember{Name: fmt.Sprintf("etcd%d", i+1), ClientURL: fmt.Sprintf("http://127.0.0.1:%d", cp)}
		peerURLs[i] = fmt.Sprintf("http://127.0.0.1:%d", pp)
		peers = append(peers, m.Name+"="+peerURLs[i])
		c.Members = append(c.Members, m)
	}
	for i, m := range c.Members {
		args := []string{
			"--name", m.Name,
			"--data-dir", filepath.Join(dir, m.Name),
			"--listen-client-urls", m.ClientURL,
			"--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", peerURLs[i],
			"--initial-advertise-peer-urls", peerURLs[i],
			"--initial-cluster", strings.Join(peers, ","),
			"--initial-cluster-token", "tokend-bench",
			"--initial-cluster-state", "new",
			"--logger", "zap",
			"--log-outputs", "stderr",
		}
		p, err := Start(m.Name, bin, args, nil, filepath.Join(dir, m.Name+".log"))
		if err != nil {
			c.Stop()
			return nil, err
		}
		m.Proc = p
	}
	if _, err := c.Leader(ctx, 30*time.Second); err != nil {
		c.Stop()
		return nil, fmt.Errorf("etcd cluster: %w", err)
	}
	return c, nil
}

// Stop stops every member.
func (c *EtcdCluster) Stop() {
	for _, m := range c.Members {
		m.Proc.Stop()
	}
}

// Client is an etcd client of the given members that logs nothing.
func Client(urls ...string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: urls, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// Leader waits until every member answers Status naming the same leader,
// and returns that member.
func (c *EtcdCluster) Leader(ctx context.Context, timeout time.Duration) (*EtcdMember, error) {
	var urls []string
	var procs []*Proc
	for _, m := range c.Members {
		urls = append(urls, m.ClientURL)
		procs = append(procs, m.Proc)
	}
	cli, err := Client(urls...)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	var leader *EtcdMember
	err = WaitFor(ctx, timeout, procs, func() error {
		leader = nil
		var lid uint64
		for _, m := range c.Members {
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			st, err := cli.Status(sctx, m.ClientURL)
			cancel()
			if err != nil {
				return fmt.Errorf("%s: %w", m.Name, err)
			}
			if st.Leader == 0 || (lid != 0 && st.Leader != lid) {
				return fmt.Errorf("%s follows %x, others %x", m.Name, st.Leader, lid)
			}
			lid = st.Leader
			if st.Header.MemberId == st.Leader {
				leader = m
			}
		}
		if leader == nil {
			return fmt.Errorf("no member leads")
		}
		return nil
	})
	return leader, err
}

// Version is the server version a member reports.
func (c *EtcdCluster) Version(ctx context.Context) (string, error) {
	cli, err := Client(c.Members[0].ClientURL)
	if err != nil {
		return "", err
	}
	defer cli.Close()
	st, err := cli.Status(ctx, c.Members[0].ClientURL)
	if err != nil {
		return "", err
	}
	return st.Version, nil
}

// Follower returns a member other than leader.
func (c *EtcdCluster) Follower(leader *EtcdMember) *EtcdMember {
	for _, m := range c.Members {
		if m != leader {
			return m
		}
	}
	return leader
}
