package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/api/client"
	"github.com/tokend/tokend/tokens"
)

func newACLCmd(o *clientOpts) *cobra.Command {
	cmd := groupCmd("acl", "Manage ACL policies and tokens",
		newACLBootstrapCmd(o),
		groupCmd("policy", "Manage ACL policies", newACLPolicyApplyCmd(o), newACLPolicyListCmd(o), newACLPolicyDeleteCmd(o)),
		groupCmd("token", "Manage ACL tokens", newACLTokenCreateCmd(o), newACLTokenListCmd(o), newACLTokenDeleteCmd(o)),
	)
	cmd.Long = `Manage ACLs. With ACLs on (the default outside --dev), every request on the TCP
API needs a token (TOKEND_TOKEN, or --token): policies grant read (fetch),
report and write (manage) on pools matched by glob, and operator for cluster
operations. Start with tokend acl bootstrap, which hands out the management
token once.`
	return cmd
}

func newACLBootstrapCmd(o *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "bootstrap",
		Short: "Create the management token (once per cluster) and print its secret",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return call(o, cmd, func(ctx context.Context, c *client.Client) (api.ACLTokenSecret, error) {
				return c.ACLBootstrap(ctx)
			}, printTokenSecret)
		},
	}
}

func printTokenSecret(out io.Writer, t api.ACLTokenSecret) error {
	tw := newTable(out)
	row(tw, "AccessorID:", t.AccessorID)
	row(tw, "SecretID:", t.SecretID)
	if t.Management {
		row(tw, "Management:", "true")
	}
	if len(t.Policies) > 0 {
		row(tw, "Policies:", strings.Join(t.Policies, ", "))
	}
	if t.Description != "" {
		row(tw, "Description:", t.Description)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(out, "\nThe secret is shown this once: keep it safe (export TOKEND_TOKEN=...).")
	return err
}

// policyFile is an ACL policy as a JSON file holds it.
type policyFile struct {
	Name string `json:"name"`
	api.ACLPolicyRequest
}

func newACLPolicyApplyCmd(o *clientOpts) *cobra.Command {
	var (
		name, description string
		rules             []string
		operator          bool
	)
	cmd := &cobra.Command{
		Use:   "apply [FILE|-]",
		Short: "Create or replace a policy, from a JSON file or flags",
		Long: `Create or replace a policy, from a JSON file ("-" reads stdin):

    {"name": "ci", "description": "CI runners",
     "pools": [{"pattern": "github-*", "capabilities": ["read", "report"]}],
     "operator": false}

or from flags:

    tokend acl policy apply --name ci --pool 'github-*=read,report' --pool 'npm=read'

Capabilities: read (fetch tokens, see metadata), report, write (manage pools
and tokens; never read values). --operator grants cluster operations.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var pf policyFile
			switch {
			case len(args) == 1 && (name != "" || len(rules) > 0 || operator || description != ""):
				return fmt.Errorf("give a policy file or flags, not both")
			case len(args) == 1:
				var err error
				if pf, err = readPolicyFile(args[0], cmd.InOrStdin()); err != nil {
					return err
				}
			default:
				pf = policyFile{Name: name, ACLPolicyRequest: api.ACLPolicyRequest{Description: description, Operator: operator}}
				for _, r := range rules {
					rule, err := parsePoolRule(r)
					if err != nil {
						return err
					}
					pf.Pools = append(pf.Pools, rule)
				}
			}
			p := tokens.ACLPolicy{Name: pf.Name, Description: pf.Description, Pools: pf.Pools, Operator: pf.Operator}
			if err := p.Validate(); err != nil {
				return err
			}
			return call(o, cmd, func(ctx context.Context, c *client.Client) (api.WriteResponse, error) {
				return c.ACLPolicyApply(ctx, pf.Name, pf.ACLPolicyRequest)
			}, func(out io.Writer, res api.WriteResponse) error {
				_, err := fmt.Fprintf(out, "Policy %s applied (index %d).\n", pf.Name, res.Index)
				return err
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "policy name")
	f.StringVar(&description, "description", "", "what the policy is for")
	f.StringArrayVar(&rules, "pool", nil, "PATTERN=CAP[,CAP...]: capabilities on the pools PATTERN matches (* and ? are wildcards); repeatable")
	f.BoolVar(&operator, "operator", false, "grant cluster operations (keyring, ACLs, audit, members, events, metrics)")
	return cmd
}

func readPolicyFile(path string, stdin io.Reader) (policyFile, error) {
	var (
		data []byte
		err  error
	)
	if path == "-" {
		data, err = io.ReadAll(io.LimitReader(stdin, api.MaxBodyBytes+1))
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return policyFile{}, err
	}
	var pf policyFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&pf); err != nil {
		return policyFile{}, fmt.Errorf("policy file %s: %v", path, err)
	}
	return pf, nil
}

// parsePoolRule parses PATTERN=CAP[,CAP...].
func parsePoolRule(s string) (tokens.PoolRule, error) {
	pattern, caps, ok := strings.Cut(s, "=")
	if !ok || pattern == "" || caps == "" {
		return tokens.PoolRule{}, fmt.Errorf("--pool %q: want PATTERN=CAP[,CAP...], e.g. 'github-*=read,report'", s)
	}
	rule := tokens.PoolRule{Pattern: pattern}
	for c := range strings.SplitSeq(caps, ",") {
		rule.Capabilities = append(rule.Capabilities, tokens.Capability(strings.TrimSpace(c)))
	}
	return rule, nil
}

func newACLPolicyListCmd(o *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the ACL policies",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return call(o, cmd, func(ctx context.Context, c *client.Client) ([]api.ACLPolicy, error) {
				return c.ACLPolicies(ctx)
			}, func(out io.Writer, res []api.ACLPolicy) error {
				if len(res) == 0 {
					_, err := fmt.Fprintln(out, "No policies.")
					return err
				}
				tw := newTable(out, "NAME", "POOLS", "OPERATOR", "DESCRIPTION")
				for _, p := range res {
					var rules []string
					for _, r := range p.Pools {
						caps := make([]string, len(r.Capabilities))
						for i, c := range r.Capabilities {
							caps[i] = string(c)
						}
						rules = append(rules, r.Pattern+"="+strings.Join(caps, ","))
					}
					row(tw, p.Name, orDash(strings.Join(rules, " ")), fmt.Sprint(p.Operator), orDash(p.Description))
				}
				return tw.Flush()
			})
		},
	}
}

func newACLPolicyDeleteCmd(o *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a policy no token uses",
		Args:  exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(o, cmd, func(ctx context.Context, c *client.Client) (api.WriteResponse, error) {
				return c.ACLPolicyDelete(ctx, args[0])
			}, func(out io.Writer, res api.WriteResponse) error {
				_, err := fmt.Fprintf(out, "Policy %s deleted (index %d).\n", args[0], res.Index)
				return err
			})
		},
	}
}

func newACLTokenCreateCmd(o *clientOpts) *cobra.Command {
	var (
		policies    []string
		description string
	)
	cmd := &cobra.Command{
		Use:   "create --policy NAME [--policy NAME...] [--description TEXT]",
		Short: "Create a token and print its secret, once",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(policies) == 0 {
				return fmt.Errorf("give at least one --policy")
			}
			return call(o, cmd, func(ctx context.Context, c *client.Client) (api.ACLTokenSecret, error) {
				return c.ACLTokenCreate(ctx, api.ACLTokenRequest{Description: description, Policies: policies})
			}, printTokenSecret)
		},
	}
	cmd.Flags().StringArrayVar(&policies, "policy", nil, "policy the token holds; repeatable")
	cmd.Flags().StringVar(&description, "description", "", "what the token is for")
	return cmd
}

func newACLTokenListCmd(o *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the ACL tokens (never their secrets)",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return call(o, cmd, func(ctx context.Context, c *client.Client) ([]api.ACLToken, error) {
				return c.ACLTokens(ctx)
			}, func(out io.Writer, res []api.ACLToken) error {
				tw := newTable(out, "ACCESSOR", "POLICIES", "MANAGEMENT", "CREATED", "DESCRIPTION")
				for _, t := range res {
					row(tw, t.AccessorID, orDash(strings.Join(t.Policies, ",")), fmt.Sprint(t.Management), fmtTime(&t.CreatedAt), orDash(t.Description))
				}
				return tw.Flush()
			})
		},
	}
}

func newACLTokenDeleteCmd(o *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "delete ACCESSOR",
		Short: "Delete a token; its next request is refused on every agent",
		Args:  exactArgs("ACCESSOR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(o, cmd, func(ctx context.Context, c *client.Client) (api.WriteResponse, error) {
				return c.ACLTokenDelete(ctx, args[0])
			}, func(out io.Writer, res api.WriteResponse) error {
				_, err := fmt.Fprintf(out, "Token %s deleted (index %d).\n", args[0], res.Index)
				return err
			})
		},
	}
}

func newAuditCmd(o *clientOpts) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Show this agent's audit log: admin actions and denied requests",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return call(o, cmd, func(ctx context.Context, c *client.Client) ([]api.AuditEvent, error) {
				return c.AuditLog(ctx, limit)
			}, func(out io.Writer, res []api.AuditEvent) error {
				tw := newTable(out, "TIME", "PRINCIPAL", "ACTION", "TARGET", "RESULT", "STATUS")
				for _, e := range res {
					row(tw, fmtTime(&e.At), e.Principal, e.Action, orDash(e.Target), e.Result, fmt.Sprint(e.Status))
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 0, "show at most this many of the newest events")
	return cmd
}
