package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/api/client"
)

func newOperatorCmd(o *clientOpts) *cobra.Command {
	keyring := groupCmd("keyring", "Rotate the keys that seal secrets",
		newKeyringListCmd(o), newKeyringInstallCmd(o), newKeyringUseCmd(o), newKeyringRemoveCmd(o))
	keyring.Long = `Rotate the keys that seal secrets, online:

    tokend keygen > new.key
    tokend operator keyring install new.key   # on every agent
    tokend operator keyring use KEY_ID        # new secrets use it; the leader re-seals the rest
    tokend operator keyring list              # wait until the old key seals 0 secrets
    tokend operator keyring remove OLD_ID     # from every agent

Fetches keep working throughout: every agent holds both keys until the last
step. Keys travel between agents over the agent RPC: run agents with mutual
TLS.`
	gossip := groupCmd("gossip-keyring", "Rotate the keys that encrypt gossip",
		newGossipListCmd(o), newGossipInstallCmd(o), newGossipUseCmd(o), newGossipRemoveCmd(o))
	gossip.Long = `Rotate the keys that encrypt gossip between agents, online:

    tokend keygen > gossip.key
    tokend operator gossip-keyring install gossip.key   # on every agent
    tokend operator gossip-keyring use KEY_ID           # every agent encrypts with it
    tokend operator gossip-keyring remove OLD_ID        # from every agent

Every agent keeps its gossip keys in <data-dir>/gossip-keyring, which wins over
--gossip-key when the agent restarts. Keys are shown by id, never themselves.
An agent started without --gossip-key does not encrypt gossip and cannot
start while it runs: restart every agent with the same --gossip-key instead.
Keys travel between agents over the agent RPC: run agents with mutual TLS.`
	return groupCmd("operator", "Cluster operations", keyring, gossip)
}

func printNodeGossipKeyrings(out io.Writer, nodes []api.NodeGossipKeyring) error {
	tw := newTable(out, "NODE", "PRIMARY", "KEYS", "SAVED", "ERROR")
	for _, n := range nodes {
		saved := yesNo(n.Persisted)
		if n.Error != "" {
			saved = "-"
		}
		row(tw, n.Node, n.Primary, strings.Join(n.Keys, ","), saved, n.Error)
	}
	return tw.Flush()
}

func newGossipListCmd(o *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "Show each agent's gossip key ids, its primary first",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return call(o, cmd, func(ctx context.Context, c *client.Client) (api.GossipKeyring, error) {
				return c.GossipKeyring(ctx)
			}, func(out io.Writer, res api.GossipKeyring) error {
				return printNodeGossipKeyrings(out, res.Nodes)
			})
		},
	}
}

func newGossipInstallCmd(o *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "install [FILE|-]",
		Short: "Install a gossip key (from FILE, or stdin) on every agent",
		Long: `Install a gossip key on every agent: base64 of 16, 24 or 32 bytes, as tokend
keygen prints. The key is read from FILE, or from stdin with - or no argument,
never from the command line (it would stay in the shell history).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, err := readKeyArg(cmd, args)
			if err != nil {
				return err
			}
			return call(o, cmd, func(ctx context.Context, c *client.Client) (api.GossipKeyringChange, error) {
				return c.GossipKeyringInstall(ctx, key)
			}, func(out io.Writer, res api.GossipKeyringChange) error {
				fmt.Fprintf(out, "Installed gossip key %s on every agent.\n\n", res.KeyID)
				return printNodeGossipKeyrings(out, res.Nodes)
			})
		},
	}
}

func newGossipUseCmd(o *clientOpts) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "use KEY_ID",
		Short: "Encrypt gossip with KEY_ID on every agent",
		Long: `Make KEY_ID every agent's primary gossip key, which it encrypts gossip with; it
must be installed on every agent first. --force passes over agents that are
failed and will not come back.`,
		Args: exactArgs("KEY_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(o, cmd, func(ctx context.Context, c *client.Client) (api.GossipKeyringChange, error) {
				return c.GossipKeyringUse(ctx, args[0], force)
			}, func(out io.Writer, res api.GossipKeyringChange) error {
				fmt.Fprintf(out, "Every agent encrypts gossip with key %s.\n\n", res.KeyID)
				return printNodeGossipKeyrings(out, res.Nodes)
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "pass over agents that are failed in gossip")
	return cmd
}

func newGossipRemoveCmd(o *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "remove KEY_ID",
		Short: "Remove gossip key KEY_ID from every agent once none encrypts with it",
		Args:  exactArgs("KEY_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(o, cmd, func(ctx context.Context, c *client.Client) (api.GossipKeyringChange, error) {
				return c.GossipKeyringRemove(ctx, args[0])
			}, func(out io.Writer, res api.GossipKeyringChange) error {
				fmt.Fprintf(out, "Removed gossip key %s from every agent.\n\n", res.KeyID)
				return printNodeGossipKeyrings(out, res.Nodes)
			})
		},
	}
}

func newKeyringListCmd(o *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "Show each agent's key ids and how many secrets each key seals",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return call(o, cmd, func(ctx context.Context, c *client.Client) (api.Keyring, error) {
				return c.Keyring(ctx)
			}, func(out io.Writer, res api.Keyring) error {
				fmt.Fprintf(out, "Sealing key: %s\n\n", orDash(res.Primary))
				tw := newTable(out, "KEY", "SECRETS")
				ids := keyIDs(res)
				for _, id := range ids {
					row(tw, id, fmt.Sprint(res.Secrets[id]))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				fmt.Fprintln(out)
				return printNodeKeyrings(out, res.Nodes)
			})
		},
	}
}

// keyIDs lists every key id the answer mentions, sorted.
func keyIDs(res api.Keyring) []string {
	var ids []string
	add := func(id string) {
		if id != "" && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	add(res.Primary)
	for id := range res.Secrets {
		add(id)
	}
	for _, n := range res.Nodes {
		for _, id := range n.Keys {
			add(id)
		}
	}
	slices.Sort(ids)
	return ids
}

func printNodeKeyrings(out io.Writer, nodes []api.NodeKeyring) error {
	tw := newTable(out, "NODE", "KEYS", "SAVED", "ERROR")
	for _, n := range nodes {
		saved := "yes"
		if !n.Persisted {
			saved = "no"
		}
		if n.Error != "" {
			saved = "-"
		}
		row(tw, n.Node, orDash(strings.Join(n.Keys, ",")), saved, orDash(n.Error))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newKeyringInstallCmd(o *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "install [FILE|-]",
		Short: "Install a key (from FILE, or stdin) on every agent",
		Long: `Install a key on every agent. The key is read from FILE, or from stdin with
- or no argument, never from the command line (it would stay in the shell
history). Agents whose keyring came from --encrypt-key-file save it there;
agents given TOKEND_ENCRYPT_KEY keep it in memory and say so.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, err := readKeyArg(cmd, args)
			if err != nil {
				return err
			}
			return call(o, cmd, func(ctx context.Context, c *client.Client) (api.KeyringChange, error) {
				return c.KeyringInstall(ctx, key)
			}, func(out io.Writer, res api.KeyringChange) error {
				fmt.Fprintf(out, "Installed key %s on every agent.\n\n", res.KeyID)
				return printNodeKeyrings(out, res.Nodes)
			})
		},
	}
}

// readKey reads one base64 key, skipping blank and # lines. Errors never
// quote it.
// readKeyArg reads the one key of the file args names, or of stdin with -
// or no argument.
func readKeyArg(cmd *cobra.Command, args []string) (string, error) {
	if len(args) == 0 || args[0] == "-" {
		return readKey("stdin", cmd.InOrStdin())
	}
	f, err := os.Open(args[0])
	if err != nil {
		return "", err
	}
	defer f.Close()
	return readKey(args[0], f)
}

func readKey(from string, r io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, 4096))
	if err != nil {
		return "", fmt.Errorf("read key from %s: %w", from, err)
	}
	var keys []string
	for line := range strings.SplitSeq(string(b), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			keys = append(keys, line)
		}
	}
	if len(keys) != 1 {
		return "", fmt.Errorf("%s must hold exactly one key (tokend keygen prints one), found %d", from, len(keys))
	}
	return keys[0], nil
}

func newKeyringUseCmd(o *clientOpts) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "use KEY_ID",
		Short: "Seal new secrets with KEY_ID; the leader re-seals the others",
		Long: `Make every agent seal new secrets with KEY_ID, which must be installed on every
agent. The leader then seals every other secret again with it, in batches,
through Raft; keyring list shows the progress. --force passes over agents
that are failed and will not come back.`,
		Args: exactArgs("KEY_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(o, cmd, func(ctx context.Context, c *client.Client) (api.KeyringChange, error) {
				return c.KeyringUse(ctx, args[0], force)
			}, func(out io.Writer, res api.KeyringChange) error {
				_, err := fmt.Fprintf(out, "The cluster seals new secrets with key %s (index %d); the leader is sealing the others again.\n", res.KeyID, res.Index)
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "pass over agents that are failed in gossip")
	return cmd
}

func newKeyringRemoveCmd(o *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "remove KEY_ID",
		Short: "Remove KEY_ID from every agent once nothing is sealed with it",
		Args:  exactArgs("KEY_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(o, cmd, func(ctx context.Context, c *client.Client) (api.KeyringChange, error) {
				return c.KeyringRemove(ctx, args[0])
			}, func(out io.Writer, res api.KeyringChange) error {
				fmt.Fprintf(out, "Removed key %s from every agent.\n\n", res.KeyID)
				return printNodeKeyrings(out, res.Nodes)
			})
		},
	}
}
