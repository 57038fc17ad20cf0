package main

import (
	"github.com/spf13/cobra"
)

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "tokend",
		Short: "tokend keeps API tokens available",
		Long: `tokend keeps API tokens available: agents on every host form one Raft cluster
that replicates token pools, and each agent hands out tokens locally.

Client commands reach an agent through TOKEND_ADDR (unix:///path or
http://host:port, default http://127.0.0.1:8550).`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newAgentCmd(), newKeygenCmd(), newTLSCmd())
	addClientCommands(root)
	return root
}
