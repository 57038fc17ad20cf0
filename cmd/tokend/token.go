package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/api/client"
	"github.com/tokend/tokend/tokens"
)

func newTokenCmd(o *clientOpts) *cobra.Command {
	return groupCmd("token", "Manage and fetch the tokens of a pool",
		newTokenAddCmd(o), newTokenListCmd(o), newTokenGetCmd(o), newTokenReportCmd(o), newTokenResetCmd(o), newTokenRmCmd(o))
}

func newTokenAddCmd(o *clientOpts) *cobra.Command {
	var (
		valueFile  string
		valueStdin bool
		expiresAt  string
		notBefore  string
		priority   int
		labels     []string
	)
	cmd := &cobra.Command{
		Use:   "add POOL (--value-file FILE | --value-stdin)",
		Short: "Add a token to a pool",
		Long: `Add a token to a pool and print its id. The value is read from a file or
stdin, never from the command line, and one trailing newline is dropped.
Lower priorities are served first.`,
		Args: exactArgs("POOL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			fileSet := cmd.Flags().Changed("value-file")
			if fileSet == valueStdin {
				return errors.New("give exactly one of --value-file FILE or --value-stdin")
			}
			if fileSet && valueFile == "" {
				return errors.New("--value-file needs a file name")
			}
			req := api.TokenRequest{Priority: priority}
			var err error
			if req.ExpiresAt, err = parseTimeFlag("expires-at", expiresAt); err != nil {
				return err
			}
			if req.NotBefore, err = parseTimeFlag("not-before", notBefore); err != nil {
				return err
			}
			if req.Labels, err = parseLabels(labels); err != nil {
				return err
			}
			if fileSet {
				req.Value, err = readValueFile(valueFile)
			} else {
				req.Value, err = readValue("stdin", cmd.InOrStdin())
			}
			if err != nil {
				return err
			}
			return call(o, cmd, func(ctx context.Context, c *client.Client) (api.TokenInfo, error) {
				return c.AddToken(ctx, args[0], req)
			}, func(out io.Writer, info api.TokenInfo) error {
				fmt.Fprintln(out, info.ID)
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&valueFile, "value-file", "", "read the token value from this file")
	f.BoolVar(&valueStdin, "value-stdin", false, "read the token value from stdin")
	f.StringVar(&expiresAt, "expires-at", "", "when the token expires, RFC 3339 (2030-01-02T15:04:05Z)")
	f.StringVar(&notBefore, "not-before", "", "when the token becomes valid, RFC 3339")
	f.IntVar(&priority, "priority", 0, "priority; lower is served first")
	f.StringArrayVar(&labels, "label", nil, "label as key=value; repeatable")
	return cmd
}

func parseTimeFlag(name, v string) (*time.Time, error) {
	if v == "" {
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return nil, fmt.Errorf("--%s %q is not an RFC 3339 time such as 2030-01-02T15:04:05Z", name, v)
	}
	return &t, nil
}

func parseLabels(pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	labels := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--label %q must be key=value", p)
		}
		if _, dup := labels[k]; dup {
			return nil, fmt.Errorf("--label %q is given twice", k)
		}
		labels[k] = v
	}
	return labels, nil
}

func readValueFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("--value-file: %w", err)
	}
	defer f.Close()
	return readValue(path, f)
}

// readValue reads a token value and drops one trailing newline. Errors
// never quote the value.
func readValue(from string, r io.Reader) (string, error) {
	// Room for the longest value, a \r\n, and one byte to notice more.
	const limit = tokens.MaxTokenValueLen + 3
	b, err := io.ReadAll(io.LimitReader(r, limit))
	if err != nil {
		return "", fmt.Errorf("read token value from %s: %w", from, err)
	}
	if bytes.HasSuffix(b, []byte("\r\n")) {
		b = b[:len(b)-2]
	} else if bytes.HasSuffix(b, []byte("\n")) {
		b = b[:len(b)-1]
	}
	switch {
	case len(b) > tokens.MaxTokenValueLen:
		return "", fmt.Errorf("token value from %s is longer than %d bytes", from, tokens.MaxTokenValueLen)
	case len(bytes.TrimSpace(b)) == 0:
		return "", fmt.Errorf("token value from %s is empty", from)
	}
	return string(b), nil
}

func newTokenListCmd(o *clientOpts) *cobra.Command {
	return o.consistentFlag(&cobra.Command{
		Use:   "list POOL",
		Short: "List a pool's tokens (never their values)",
		Long: `List a pool's tokens, never their values. OK and ERR count the ok and the
error or timeout reports this agent received about each token; LATENCY is
the latency of the last ok report that gave one.`,
		Args: exactArgs("POOL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(o, cmd, func(ctx context.Context, c *client.Client) ([]api.TokenInfo, error) {
				return c.ListTokens(ctx, args[0])
			}, func(out io.Writer, toks []api.TokenInfo) error {
				if len(toks) == 0 {
					fmt.Fprintf(out, "Pool %q has no tokens.\n", args[0])
					return nil
				}
				tw := newTable(out, "ID", "PRIORITY", "LIFECYCLE", "HEALTH", "OK", "ERR", "LATENCY", "EXPIRES", "REASON")
				for _, t := range toks {
					reason := t.Health.Reason
					if t.Health.State == "cooldown" && t.Health.Until != nil {
						reason = strings.TrimSpace(reason + " until " + fmtTime(t.Health.Until))
					}
					ok, errs, latency := "0", "0", ""
					if r := t.Reports; r != nil {
						ok, errs = strconv.FormatUint(r.OK, 10), strconv.FormatUint(r.Error+r.Timeout, 10)
						if r.LastLatencyMS > 0 {
							latency = strconv.FormatInt(r.LastLatencyMS, 10) + "ms"
						}
					}
					row(tw, t.ID, strconv.Itoa(t.Priority), t.Lifecycle, t.Health.State, ok, errs, latency, fmtTime(t.ExpiresAt), reason)
				}
				return tw.Flush()
			})
		},
	})
}

func newTokenGetCmd(o *clientOpts) *cobra.Command {
	var (
		raw     bool
		exclude []string
		wait    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "get POOL",
		Short: "Fetch the token the agent serves from a pool now",
		Long: `Fetch the token the agent serves from a pool now, as a program would. With
--raw only the value is printed, followed by a newline. With --wait, when
every usable token is cooling down, the agent holds the fetch until the
first comes back, if that is within the wait (at most ` + api.MaxFetchWait.String() + `). With
--consistent the agent first waits until it holds every write committed
before the request, as the leader confirms, so a token removed or failed
before it is never served.`,
		Args: exactArgs("POOL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if raw && o.json {
				return errors.New("--raw and --json cannot be used together")
			}
			if wait < 0 || wait > api.MaxFetchWait {
				return fmt.Errorf("--wait %s must be between 0s and %s", wait, api.MaxFetchWait)
			}
			opts := client.FetchOptions{Exclude: exclude, Wait: wait}
			if raw {
				return callWait(o, cmd, wait, func(ctx context.Context, c *client.Client) (client.RawToken, error) {
					tok, meta, err := c.FetchRaw(ctx, args[0], opts)
					if err == nil {
						warnStale(cmd, meta)
					}
					return tok, err
				}, func(out io.Writer, tok client.RawToken) error {
					_, err := fmt.Fprintln(out, tok.Value)
					return err
				})
			}
			return callWait(o, cmd, wait, func(ctx context.Context, c *client.Client) (api.Token, error) {
				tok, meta, err := c.FetchToken(ctx, args[0], opts)
				if err == nil {
					warnStale(cmd, meta)
				}
				return tok, err
			}, func(out io.Writer, tok api.Token) error {
				expires := "never"
				if tok.ExpiresAt != nil {
					expires = fmtTime(tok.ExpiresAt)
				}
				tw := newTable(out)
				row(tw, "ID:", tok.ID)
				// The value is printed as it is: it is what was asked for.
				fmt.Fprintf(tw, "Value:\t%s\n", tok.Value)
				row(tw, "Expires:", expires)
				return tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&raw, "raw", false, "print only the value")
	cmd.Flags().StringSliceVar(&exclude, "exclude", nil, "token id not to serve; repeatable")
	cmd.Flags().DurationVar(&wait, "wait", 0, "if every usable token is cooling down, wait up to this long (such as 10s) for one")
	return o.consistentFlag(cmd)
}

// warnStale tells stderr when the answer came from an agent cut off from
// the leader.
func warnStale(cmd *cobra.Command, m client.Meta) {
	if !m.KnownLeader {
		fmt.Fprintln(cmd.ErrOrStderr(), "Warning: the agent knows no leader; its tokens may be out of date.")
	}
}

func newTokenReportCmd(o *clientOpts) *cobra.Command {
	var (
		retryAfter int
		latencyMS  int64
	)
	cmd := &cobra.Command{
		Use:   "report POOL ID OUTCOME",
		Short: "Report how using a token went",
		Long: `Report how using a token went. OUTCOME is one of ok, unauthorized, forbidden,
rate_limited, error, timeout. unauthorized and forbidden fail the token;
rate_limited cools it down for --retry-after seconds (default: the pool's
default cooldown). An ok report may say how long the call took with
--latency-ms.`,
		Args: exactArgs("POOL", "ID", "OUTCOME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.ReportRequest{Outcome: args[2]}
			if cmd.Flags().Changed("retry-after") {
				if args[2] != string(tokens.OutcomeRateLimited) {
					return fmt.Errorf("--retry-after only applies to outcome %s", tokens.OutcomeRateLimited)
				}
				req.RetryAfterSeconds = &retryAfter
			}
			if cmd.Flags().Changed("latency-ms") {
				if args[2] != string(tokens.OutcomeOK) {
					return fmt.Errorf("--latency-ms only applies to outcome %s", tokens.OutcomeOK)
				}
				req.LatencyMS = &latencyMS
			}
			return call(o, cmd, func(ctx context.Context, c *client.Client) (api.ReportResponse, error) {
				return c.Report(ctx, args[0], args[1], req)
			}, func(out io.Writer, res api.ReportResponse) error {
				health := res.Health.State
				if res.Health.Until != nil && res.Health.State == "cooldown" {
					health += " until " + fmtTime(res.Health.Until)
				}
				switch {
				case res.Pending != "":
					fmt.Fprintf(out, "Token %s health is %s on this agent; not committed yet: %s\n", res.ID, health, res.Pending)
				case !res.Changed:
					fmt.Fprintf(out, "Token %s health is unchanged: %s.\n", res.ID, health)
				default:
					fmt.Fprintf(out, "Token %s health is now %s (index %d).\n", res.ID, health, res.Index)
				}
				return nil
			})
		},
	}
	cmd.Flags().IntVar(&retryAfter, "retry-after", 0, "seconds to cool a rate_limited token down for")
	cmd.Flags().Int64Var(&latencyMS, "latency-ms", 0, "how long the call took, in milliseconds (outcome ok only)")
	return cmd
}

func newTokenResetCmd(o *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "reset POOL ID",
		Short: "Bring a token back to healthy",
		Long: `Bring a token back to healthy, whatever its health: a failed token stays
failed until an operator resets it, once its value is known to work again.`,
		Args: exactArgs("POOL", "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(o, cmd, func(ctx context.Context, c *client.Client) (api.TokenInfo, error) {
				return c.ResetToken(ctx, args[0], args[1])
			}, func(out io.Writer, info api.TokenInfo) error {
				fmt.Fprintf(out, "Token %s reset to %s (index %d).\n", cell(info.ID), cell(info.Health.State), info.ModifyIndex)
				return nil
			})
		},
	}
}

func newTokenRmCmd(o *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "rm POOL ID",
		Short: "Remove a token from a pool",
		Args:  exactArgs("POOL", "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(o, cmd, func(ctx context.Context, c *client.Client) (api.WriteResponse, error) {
				return c.RemoveToken(ctx, args[0], args[1])
			}, func(out io.Writer, res api.WriteResponse) error {
				fmt.Fprintf(out, "Token %s removed from pool %q (index %d).\n", args[1], args[0], res.Index)
				return nil
			})
		},
	}
}
