package main

import "github.com/spf13/cobra"

// addClientCommands registers the commands that talk to an agent.
func addClientCommands(root *cobra.Command) {}
