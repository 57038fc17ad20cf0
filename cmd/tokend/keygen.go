package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tokend/tokend/agent"
	"github.com/tokend/tokend/tokens"
)

func newKeygenCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "keygen",
		Short: "Print a new random key for the keyring that seals secrets",
		Long: `Print a new random 32-byte key, base64-encoded. Every agent of a cluster needs it:
put it in a file readable only by the agent's user and start each agent with
--encrypt-key-file FILE, or set ` + agent.EnvEncryptKey + `. To rotate keys later, see
tokend operator keyring.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), tokens.GenerateKey())
			return err
		},
	}
}
