package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/tokend/tokend/agent"
	"github.com/tokend/tokend/api"
)

func newAgentCmd() *cobra.Command {
	var (
		cfg                  agent.Config
		logLevel             string
		logJSON              bool
		configFiles          []string
		tlsVerifyIncomingAPI bool
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run a tokend agent",
		Long: `Run a tokend agent. With --dev, a single agent that keeps everything in
memory, bootstraps itself and listens on 127.0.0.1:8550 and ` + agent.DevSocketPath + `.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyConfigFiles(cmd.Flags(), configFiles); err != nil {
				return err
			}
			level := hclog.LevelFromString(logLevel)
			if level == hclog.NoLevel {
				return fmt.Errorf("--log-level %q is not one of trace, debug, info, warn, error", logLevel)
			}
			if cfg.Dev && !cmd.Flags().Changed("acl") {
				cfg.ACL = false
			}
			if cmd.Flags().Changed("raft-multiplier") {
				// The agent takes 0 for "not given": refuse it here.
				if err := agent.CheckRaftMultiplier(cfg.RaftMultiplier); err != nil {
					return err
				}
			} else if cfg.Dev {
				cfg.RaftMultiplier = 0 // the dev agent's 50 ms test timing
			}
			cfg.TLSAPIClientCertOptional = !tlsVerifyIncomingAPI
			cfg.Logger = hclog.New(&hclog.LoggerOptions{
				Name:       "tokend",
				Level:      level,
				JSONFormat: logJSON,
				Output:     os.Stderr,
			})
			return runAgent(cmd, cfg)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&configFiles, configFileFlag, nil, "HCL file of agent settings, keyed by flag name with _ for - (tls { ca_file = ... }, acl { enabled = true }); repeatable; flags given here win")
	f.StringVar(&cfg.NodeName, "node", "", "node name, unique in the cluster (default: the hostname)")
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for Raft data and the node id (required unless --dev)")
	f.StringVar(&cfg.HTTPAddr, "http-addr", "", "host:port for the HTTP API (default "+agent.DefaultHTTPAddr+")")
	f.StringVar(&cfg.RaftAddr, "raft-addr", "", "IP:port for Raft and agent-to-agent RPC (default "+agent.DefaultRaftAddr+")")
	f.StringVar(&cfg.GossipAddr, "gossip-addr", "", "IP:port for gossip, TCP and UDP (default "+agent.DefaultGossipAddr+")")
	f.StringVar(&cfg.SocketPath, "socket", "", "unix socket for the local API (default <data-dir>/tokend.sock)")
	f.StringArrayVar(&cfg.Join, "join", nil, "gossip address of a member to join; repeatable; retried until one answers")
	f.IntVar(&cfg.BootstrapExpect, "bootstrap-expect", 0, "number of servers to wait for before bootstrapping a new cluster")
	f.StringVar(&cfg.Region, "region", "", "region this agent runs in")
	f.StringVar(&cfg.Zone, "zone", "", "zone this agent runs in")
	f.BoolVar(&cfg.Dev, "dev", false, "run a single in-memory dev agent that needs nothing else")
	f.BoolVar(&cfg.NonVoter, "non-voter", false, "replicate and serve, but never vote in Raft")
	f.IntVar(&cfg.MaxVoters, "max-voters", agent.DefaultMaxVoters, "most servers the leader promotes to voters")
	f.IntVar(&cfg.RaftMultiplier, "raft-multiplier", agent.DefaultRaftMultiplier, fmt.Sprintf("scales Raft's leader failure detection: heartbeat and election timeouts are %s × this, %d to %d; %d fails over fastest (a LAN of healthy hosts), the default %d (1s) is safe over a WAN and on loaded hosts; --dev runs on 50ms unless it is given",
		agent.RaftTimingUnit, agent.MinRaftMultiplier, agent.MaxRaftMultiplier, agent.MinRaftMultiplier, agent.DefaultRaftMultiplier))
	f.DurationVar(&cfg.DeadServerTimeout, "dead-server-timeout", agent.DefaultDeadServerTimeout, "how long a server must be failed before the leader removes it from Raft")
	f.StringVar(&cfg.EncryptKeyFile, "encrypt-key-file", "", "file holding the keyring that seals secrets: one base64 key per line (tokend keygen); or set "+agent.EnvEncryptKey)
	f.BoolVar(&cfg.ACL, "acl", true, "require an ACL token on the TCP API (default true, false with --dev); bootstrap with tokend acl bootstrap")
	f.Float64Var(&cfg.ReportRate, "report-rate", api.DefaultReportRate, "reports a second each caller may send")
	f.IntVar(&cfg.ReportBurst, "report-burst", api.DefaultReportBurst, "reports a caller may send at once")
	f.StringVar(&cfg.AlertWebhook, "alert-webhook", "", "URL that receives alerts as Alertmanager JSON (POST)")
	f.DurationVar(&cfg.AlertRepeat, "alert-repeat", time.Hour, "how often a firing alert is sent again")
	f.StringVar(&cfg.TLSCAFile, "tls-ca-file", "", "PEM CA certificate that signs every agent's certificate; with --tls-cert-file and --tls-key-file, turns on mutual TLS between agents and HTTPS on the TCP API (tokend tls ca create)")
	f.StringVar(&cfg.TLSCertFile, "tls-cert-file", "", "PEM certificate of this agent, signed by the CA, naming "+agent.TLSServerName+" (tokend tls cert create)")
	f.StringVar(&cfg.TLSKeyFile, "tls-key-file", "", "PEM private key of --tls-cert-file")
	f.BoolVar(&tlsVerifyIncomingAPI, "tls-verify-incoming-api", true, "with TLS, require a client certificate signed by the CA on the TCP API (tokend tls cert create --client makes one)")
	f.StringVar(&cfg.GossipKey, "gossip-key", "", "base64 key of 16, 24 or 32 bytes that encrypts gossip (tokend keygen); or set "+agent.EnvGossipKey+". Once saved in <data-dir>/gossip-keyring, the saved keyring wins; rotate with tokend operator gossip-keyring")
	f.StringVar(&logLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	f.BoolVar(&logJSON, "log-json", false, "log as JSON")
	return cmd
}

func runAgent(cmd *cobra.Command, cfg agent.Config) error {
	cfg.EncryptKey = os.Getenv(agent.EnvEncryptKey)
	if env := os.Getenv(agent.EnvGossipKey); env != "" {
		if cfg.GossipKey != "" {
			return fmt.Errorf("both --gossip-key and %s are set: give the gossip key one way", agent.EnvGossipKey)
		}
		cfg.GossipKey = env
	}
	// Files the agent creates (Raft data, node id) are for its user only.
	unix.Umask(0o077)
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if cfg.Dev {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := a.WaitForLeader(ctx)
		cancel()
		if err != nil {
			_ = a.Shutdown(context.Background())
			return err
		}
		scheme := "http"
		if a.TLS() {
			scheme = "https"
		}
		fmt.Fprintf(out, `tokend dev agent is ready. Data is kept in memory and lost when it stops.

    HTTP API:    %[1]s://%[2]s
    unix socket: %[3]s

    export TOKEND_ADDR=%[1]s://%[2]s
    tokend pool apply pool.json     # or: curl -X PUT %[1]s://%[2]s/v1/pools/github -d '{}'

`, scheme, a.HTTPAddr(), a.SocketPath())
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	var runErr error
	select {
	case sig := <-sigs:
		cfg.Logger.Info("shutting down", "signal", sig.String())
	case runErr = <-a.Err():
		cfg.Logger.Error("shutting down after a fatal error", "error", runErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil && runErr == nil {
		runErr = err
	}
	return runErr
}
