package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/api/client"
)

func newMembersCmd(o *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "members",
		Short: "List the agents of the cluster as gossip sees them",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return call(o, cmd, func(ctx context.Context, c *client.Client) ([]api.Member, error) {
				return c.Members(ctx)
			}, func(out io.Writer, members []api.Member) error {
				slices.SortFunc(members, func(a, b api.Member) int { return strings.Compare(a.Name, b.Name) })
				tw := newTable(out, "NAME", "ID", "STATUS", "RAFT ADDR", "REGION", "ZONE", "VOTER")
				for _, m := range members {
					row(tw, m.Name, shortID(m.ID), m.Status, m.RaftAddr, m.Region, m.Zone, yesNo(m.Voter))
				}
				return tw.Flush()
			})
		},
	}
}

// statusReport is what `tokend status --json` prints: the answers of the
// three endpoints it reads.
type statusReport struct {
	Health api.AgentHealth `json:"health"`
	Leader api.Leader      `json:"leader"`
	Peers  []api.Peer      `json:"peers"`
}

func newStatusCmd(o *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show this agent's health, the leader and the Raft peers",
		Long: `Show this agent's health, the Raft leader it knows and the servers in the
Raft configuration. With --json, prints {"health":...,"leader":...,"peers":[...]}.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return call(o, cmd, func(ctx context.Context, c *client.Client) (st statusReport, err error) {
				if st.Health, err = c.Health(ctx); err != nil {
					return st, err
				}
				if st.Leader, err = c.Leader(ctx); err != nil {
					return st, err
				}
				st.Peers, err = c.Peers(ctx)
				return st, err
			}, func(out io.Writer, st statusReport) error {
				h := st.Health
				lastContact := "never"
				switch {
				case h.LastContactMS == 0 && strings.EqualFold(h.RaftState, "leader"):
					lastContact = "- (this agent leads)"
				case h.LastContactMS >= 0:
					lastContact = (time.Duration(h.LastContactMS) * time.Millisecond).String() + " ago"
				}
				tw := newTable(out)
				row(tw, "Agent:", h.Node+" ("+shortID(h.ID)+")")
				row(tw, "Status:", h.Status)
				row(tw, "Raft state:", h.RaftState)
				row(tw, "Applied index:", strconv.FormatUint(h.AppliedIndex, 10))
				row(tw, "Last contact:", lastContact)
				leader := "none known"
				if st.Leader.ID != "" {
					leader = fmt.Sprintf("%s (%s) at %s", st.Leader.Node, shortID(st.Leader.ID), st.Leader.RaftAddr)
				}
				row(tw, "Leader:", leader)
				if err := tw.Flush(); err != nil {
					return err
				}
				fmt.Fprintln(out)
				fmt.Fprintln(out, "Raft peers:")
				tw = newTable(out, "NODE", "ID", "ADDRESS", "SUFFRAGE", "LEADER")
				for _, p := range st.Peers {
					row(tw, p.Node, shortID(p.ID), p.Address, p.Suffrage, yesNo(p.Leader))
				}
				return tw.Flush()
			})
		},
	}
}

// shortID shortens a node id the way people quote it.
func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
