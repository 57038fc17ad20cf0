package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokend/tokend/api/client"
)

// requestTimeout bounds one client command, so a wedged agent cannot hang it.
const requestTimeout = 30 * time.Second

// clientOpts are the flags every client command shares.
type clientOpts struct {
	addr  string
	token string
	json  bool
	tls   client.TLS
	// consistent is --consistent, which read commands take.
	consistent bool
}

// consistentFlag gives a read command --consistent.
func (o *clientOpts) consistentFlag(cmd *cobra.Command) *cobra.Command {
	cmd.Flags().BoolVar(&o.consistent, "consistent", false,
		"read only once the leader confirms that the agent holds every write committed before the request (a quorum round trip; fails without a leader instead of answering from the agent's local state)")
	return cmd
}

// addClientCommands registers the commands that talk to an agent.
func addClientCommands(root *cobra.Command) {
	o := &clientOpts{}
	// The flags belong to the client commands only, not to `tokend agent`.
	for _, cmd := range []*cobra.Command{newPoolCmd(o), newTokenCmd(o), newEventsCmd(o), newAlertsCmd(o), newMembersCmd(o), newStatusCmd(o), newOperatorCmd(o), newACLCmd(o), newAuditCmd(o), newSnapshotCmd(o)} {
		pf := cmd.PersistentFlags()
		pf.StringVar(&o.addr, "addr", "", "agent address: unix:///path, http(s)://host:port or host:port (overrides $"+client.EnvAddr+", default "+client.DefaultAddr+")")
		pf.BoolVar(&o.json, "json", false, "print the agent's JSON answer instead of a table or text")
		pf.StringVar(&o.token, "token", "", "ACL token secret (overrides $"+client.EnvToken+"; prefer the variable: arguments show in ps)")
		pf.StringVar(&o.tls.CAFile, "ca-file", "", "PEM CA certificate that signed the agent's certificate, for https:// (overrides $"+client.EnvCACert+")")
		pf.StringVar(&o.tls.CertFile, "client-cert", "", "PEM client certificate for an agent running with TLS (overrides $"+client.EnvClientCert+"; tokend tls cert create --client)")
		pf.StringVar(&o.tls.KeyFile, "client-key", "", "PEM key of --client-cert (overrides $"+client.EnvClientKey+")")
		root.AddCommand(cmd)
	}
}

// client returns a client for --addr, or for TOKEND_ADDR without it; each
// TLS flag overrides its variable.
func (o *clientOpts) client() (*client.Client, error) {
	t := client.EnvTLS()
	for _, f := range []struct{ flag, env *string }{{&o.tls.CAFile, &t.CAFile}, {&o.tls.CertFile, &t.CertFile}, {&o.tls.KeyFile, &t.KeyFile}} {
		if *f.flag != "" {
			*f.env = *f.flag
		}
	}
	if t.Set() {
		if _, err := t.Config(); err != nil {
			return nil, err
		}
	}
	addr, from := o.addr, "--addr"
	if addr == "" {
		addr, from = os.Getenv(client.EnvAddr), "$"+client.EnvAddr
	}
	if addr == "" {
		addr, from = client.DefaultAddress(t), "default address"
	}
	opts := []client.Option{client.WithTLS(t)}
	if o.consistent {
		opts = append(opts, client.WithConsistentReads())
	}
	c, err := client.New(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", from, err)
	}
	c.SetToken(os.Getenv(client.EnvToken))
	if o.token != "" {
		c.SetToken(o.token)
	}
	return c, nil
}

// call runs one request against the agent and prints its answer: the
// agent's JSON with --json, otherwise what text writes.
func call[T any](o *clientOpts, cmd *cobra.Command,
	do func(ctx context.Context, c *client.Client) (T, error),
	text func(out io.Writer, res T) error) error {
	return callWait(o, cmd, 0, do, text)
}

// callWait is call for a request the agent may hold open for up to wait:
// the command's timeout is stretched by wait.
func callWait[T any](o *clientOpts, cmd *cobra.Command, wait time.Duration,
	do func(ctx context.Context, c *client.Client) (T, error),
	text func(out io.Writer, res T) error) error {
	c, err := o.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), requestTimeout+max(wait, 0))
	defer cancel()
	res, err := do(ctx, c)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if o.json {
		return printJSON(out, res)
	}
	return text(out, res)
}

// printJSON writes v the way the agent formats its answers.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// groupCmd is a command that only holds subcommands; an unknown
// subcommand is an error rather than a silent help page.
func groupCmd(use, short string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(subs...)
	return cmd
}

// exactArgs checks the positional arguments against their names.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == len(names) {
			return nil
		}
		want := "no arguments"
		if len(names) > 0 {
			want = strings.Join(names, " ")
		}
		return fmt.Errorf("%s takes %s, got %d argument(s); see '%s --help'", cmd.CommandPath(), want, len(args), cmd.CommandPath())
	}
}

// newTable returns a tabwriter for a table with the given header, if any.
func newTable(w io.Writer, header ...string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if len(header) > 0 {
		fmt.Fprintln(tw, strings.Join(header, "\t"))
	}
	return tw
}

// row writes one table row, making each cell safe to print.
func row(tw *tabwriter.Writer, cells ...string) {
	for i, c := range cells {
		cells[i] = cell(c)
	}
	fmt.Fprintln(tw, strings.Join(cells, "\t"))
}

// cell replaces control characters, which would break the table or drive
// the terminal, and shows an empty cell as "-".
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}

// fmtTime formats a time for people, "-" when unset.
func fmtTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// yesNo formats a bool for a table.
func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
