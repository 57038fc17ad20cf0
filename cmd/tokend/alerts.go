package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/api/client"
)

func newAlertsCmd(o *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "alerts",
		Short: "Show the alerts the leader has firing",
		Long: `Show the alerts the cluster's leader has firing: tokens about to expire with
no replacement (token_expiring), pools whose rotations keep failing
(rotation_failing), pools with fewer healthy tokens than min_healthy
(pool_below_min_healthy), degraded tokens (token_degraded) and static tokens
due for replacement (static_token_due). SINCE is when the condition began
(UTC). Any agent answers, from the leader.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return call(o, cmd, func(ctx context.Context, c *client.Client) (api.Alerts, error) {
				return c.Alerts(ctx)
			}, func(out io.Writer, res api.Alerts) error {
				if len(res.Alerts) == 0 {
					fmt.Fprintln(out, "No alerts.")
					return nil
				}
				alerts := slices.Clone(res.Alerts)
				slices.SortStableFunc(alerts, func(a, b api.Alert) int {
					if c := strings.Compare(a.Pool, b.Pool); c != 0 {
						return c
					}
					if c := strings.Compare(a.Name, b.Name); c != 0 {
						return c
					}
					return strings.Compare(a.Token, b.Token)
				})
				tw := newTable(out, "NAME", "POOL", "TOKEN", "SEVERITY", "SINCE", "SUMMARY")
				for _, a := range alerts {
					row(tw, a.Name, a.Pool, a.Token, a.Severity, fmtTime(&a.Since), a.Summary)
				}
				return tw.Flush()
			})
		},
	}
}
