package agent

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tokend/tokend/cluster"
	"github.com/tokend/tokend/tokens"
)

// Defaults for a production agent. The addresses are loopback so that an
// agent started without flags exposes nothing.
const (
	DefaultHTTPAddr   = "127.0.0.1:8550"
	DefaultRaftAddr   = "127.0.0.1:8551"
	DefaultGossipAddr = "127.0.0.1:8552"
	// DevSocketPath is where `tokend agent --dev` listens.
	DevSocketPath = "/tmp/tokend-dev.sock"
	// DefaultMaxVoters and DefaultDeadServerTimeout are the cluster's.
	DefaultMaxVoters         = cluster.DefaultMaxVoters
	DefaultDeadServerTimeout = cluster.DefaultDeadServerTimeout
	// The range and default of --raft-multiplier, and the Raft timeout it
	// multiplies, are the cluster's.
	MinRaftMultiplier     = cluster.MinRaftMultiplier
	MaxRaftMultiplier     = cluster.MaxRaftMultiplier
	DefaultRaftMultiplier = cluster.DefaultRaftMultiplier
	RaftTimingUnit        = cluster.RaftTimingUnit
	// maxSocketPath is the longest path a unix socket may have on Linux.
	maxSocketPath = 107
)

// Config is an agent's configuration; flag names mirror the fields.
type Config struct {
	NodeName        string
	DataDir         string
	HTTPAddr        string
	RaftAddr        string
	GossipAddr      string
	SocketPath      string
	Join            []string
	BootstrapExpect int
	Region          string
	Zone            string
	NonVoter        bool
	MaxVoters       int
	// DeadServerTimeout is how long a failed server keeps its Raft seat.
	DeadServerTimeout time.Duration
	// Dev runs a single in-memory agent that bootstraps itself.
	Dev bool
	// Timing overrides cluster.DefaultTiming (tests use FastTiming).
	Timing cluster.Timing
	// RaftMultiplier (1 to 10) scales the Raft heartbeat, election and
	// leader lease timeouts of Timing (cluster.Timing.WithRaftMultiplier):
	// 1 fails over fastest, the default 5 is DefaultTiming's 1 s. 0 leaves
	// Timing as it is, and gives a production agent the default.
	RaftMultiplier int
	// ReportCommitWait is how long a report request waits for its change
	// to commit before answering 202 and leaving it to the retry queue.
	ReportCommitWait time.Duration
	// RotationInterval is how often the leader plans rotations and reaps
	// retired tokens (default 1s).
	RotationInterval time.Duration
	// EncryptKeyFile holds the keyring: one base64 key per line. Keys
	// installed with `tokend operator keyring install` are saved to it.
	EncryptKeyFile string
	// EncryptKey is a base64 key given another way (TOKEND_ENCRYPT_KEY).
	// One of the two is required unless Dev.
	EncryptKey string
	// ACL requires an ACL token on the TCP API (the CLI turns it on
	// outside --dev).
	ACL bool
	// ReportRate and ReportBurst limit each principal's reports (default
	// api.DefaultReportRate and api.DefaultReportBurst).
	ReportRate  float64
	ReportBurst int
	// AlertWebhook, when set, receives alerts as Alertmanager JSON.
	AlertWebhook string
	// AlertRepeat is how often a firing alert is sent again (default 1h).
	AlertRepeat time.Duration
	// TLSCAFile, TLSCertFile and TLSKeyFile, all three or none, turn on
	// mutual TLS between agents (Raft, forwarding, node RPCs) and HTTPS on
	// the TCP API (tls.go). The unix socket stays plain HTTP.
	TLSCAFile   string
	TLSCertFile string
	TLSKeyFile  string
	// TLSAPIClientCertOptional lets clients without a certificate use the
	// TCP API over TLS (--tls-verify-incoming-api=false); by default it
	// requires one signed by the CA.
	TLSAPIClientCertOptional bool
	// GossipKey is a base64 key (16, 24 or 32 bytes) that encrypts gossip.
	// The gossip keyring saved in the data dir, once there is one, wins
	// over it.
	GossipKey string
	// ProviderFactory builds providers; nil means the providers under
	// tokens/provider. Tests set it to count and control provider calls.
	ProviderFactory ProviderFactory
	Logger          hclog.Logger
}

// normalize fills in defaults and checks what cannot be right.
func (c *Config) normalize() error {
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.NodeName == "" {
		host, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("no --node given and no hostname: %w", err)
		}
		c.NodeName = strings.ToLower(host)
	}
	if c.Dev {
		if c.HTTPAddr == "" {
			c.HTTPAddr = DefaultHTTPAddr
		}
		if c.RaftAddr == "" {
			c.RaftAddr = "127.0.0.1:0"
		}
		if c.GossipAddr == "" {
			c.GossipAddr = "127.0.0.1:0"
		}
		if c.SocketPath == "" {
			c.SocketPath = DevSocketPath
		}
		if c.BootstrapExpect == 0 && len(c.Join) == 0 {
			c.BootstrapExpect = 1
		}
		if c.Timing == (cluster.Timing{}) {
			c.Timing = cluster.FastTiming()
		}
	} else if c.DataDir == "" {
		return fmt.Errorf("--data-dir is required (or run a throwaway agent with --dev)")
	}
	if err := c.applyRaftMultiplier(); err != nil {
		return err
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = DefaultHTTPAddr
	}
	if c.RaftAddr == "" {
		c.RaftAddr = DefaultRaftAddr
	}
	if c.GossipAddr == "" {
		c.GossipAddr = DefaultGossipAddr
	}
	if c.SocketPath == "" {
		c.SocketPath = filepath.Join(c.DataDir, "tokend.sock")
	}
	if len(c.SocketPath) > maxSocketPath {
		return fmt.Errorf("unix socket path %q is %d bytes, over the limit of %d: set a shorter --socket", c.SocketPath, len(c.SocketPath), maxSocketPath)
	}
	if !tokens.ValidName(c.NodeName) {
		return fmt.Errorf("node name %q is invalid: it must match %s", c.NodeName, tokens.NamePatternString)
	}
	for _, v := range []struct{ what, s string }{{"region", c.Region}, {"zone", c.Zone}} {
		if v.s != "" && !tokens.ValidName(v.s) {
			return fmt.Errorf("%s %q is invalid: it must match %s", v.what, v.s, tokens.NamePatternString)
		}
	}
	if c.ReportCommitWait == 0 {
		c.ReportCommitWait = 2 * time.Second
	}
	if c.RotationInterval == 0 {
		c.RotationInterval = time.Second
	}
	if c.AlertRepeat == 0 {
		c.AlertRepeat = time.Hour
	}
	if err := c.checkTLSFiles(); err != nil {
		return err
	}
	if c.GossipKey != "" {
		if _, err := cluster.ParseGossipKey(c.GossipKey); err != nil {
			return fmt.Errorf("--gossip-key: %w", err)
		}
	}
	if c.AlertWebhook != "" {
		if u, err := url.Parse(c.AlertWebhook); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--alert-webhook %q must be an http or https URL", c.AlertWebhook)
		}
	}
	return nil
}

// applyRaftMultiplier checks RaftMultiplier and scales Timing by it; a
// production agent without either runs on the default multiplier.
func (c *Config) applyRaftMultiplier() error {
	m := c.RaftMultiplier
	if m == 0 {
		if c.Timing != (cluster.Timing{}) {
			return nil
		}
		m = cluster.DefaultRaftMultiplier
	}
	if err := CheckRaftMultiplier(m); err != nil {
		return err
	}
	if c.Timing == (cluster.Timing{}) {
		c.Timing = cluster.DefaultTiming()
	}
	c.Timing = c.Timing.WithRaftMultiplier(m)
	c.RaftMultiplier = m
	return nil
}

// CheckRaftMultiplier says why m cannot be a --raft-multiplier.
func CheckRaftMultiplier(m int) error {
	if m < MinRaftMultiplier || m > MaxRaftMultiplier {
		return fmt.Errorf("--raft-multiplier %d is out of range: it must be %d to %d (%d fails over fastest, %d is the default)",
			m, MinRaftMultiplier, MaxRaftMultiplier, MinRaftMultiplier, DefaultRaftMultiplier)
	}
	return nil
}
