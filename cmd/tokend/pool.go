package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/api/client"
	"github.com/tokend/tokend/tokens"
)

// maxPoolFileBytes bounds a pool file; a real one is a few hundred bytes.
const maxPoolFileBytes = 1 << 20

func newPoolCmd(o *clientOpts) *cobra.Command {
	return groupCmd("pool", "Manage token pools",
		newPoolApplyCmd(o), newPoolListCmd(o), newPoolShowCmd(o), newPoolDeleteCmd(o), newPoolRotateCmd(o))
}

func newPoolApplyCmd(o *clientOpts) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "apply FILE",
		Short: "Create a pool or update its definition from a JSON or HCL file",
		Long: `Create a pool or update its definition from a JSON (.json) or HCL (.hcl)
file; "-" reads JSON from stdin, and --format hcl|json overrides the name:

    {
      "name": "github",
      "selection": "priority",
      "min_healthy": 1,
      "provider": {"type": "static"},
      "labels": {"team": "infra"},
      "health": {
        "window": 20,
        "degraded_failures": 5,
        "degraded_ratio": 0.5,
        "outcome_ttl": "5m",
        "default_cooldown": "60s",
        "report_quorum": 1,
        "report_window": "5m"
      }
    }

Only "name" is required. "health" says how reports become token health, and
any field left out takes its default (the values above): a token is
degraded while at least degraded_failures of its last window error or
timeout outcomes are failures and they are at least degraded_ratio of them;
outcomes older than outcome_ttl are forgotten; a rate_limited report that
says no retry time cools a token down for default_cooldown; and a token
fails once report_quorum agents report it unauthorized or forbidden within
report_window. Durations are strings such as "90s" or "5m".

The HCL form has the same fields under the same names: a value is an
attribute, an object of fields ("provider", "rotation", "health_check",
"health") is a block, and provider clients are repeated blocks:

    name = "github"
    size = 2
    labels = { team = "infra" }

    provider {
      type      = "oauth2"
      token_url = "https://auth.example/token"
      clients {
        client_id     = "app-1"
        client_secret = "s3cret"
      }
      scopes = ["read"]
    }

    rotation {
      max_age = "1h"
      grace   = "1m"
    }

An HCL file is checked before it is sent, and every error says where:
github.hcl:9,3: provider.token_url "ftp://x" must be an http or https URL.`,
		Args: exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, req, err := readPoolFile(args[0], format, cmd.InOrStdin())
			if err != nil {
				return err
			}
			return call(o, cmd, func(ctx context.Context, c *client.Client) (api.Pool, error) {
				return c.ApplyPool(ctx, name, req)
			}, func(out io.Writer, p api.Pool) error {
				fmt.Fprintf(out, "Pool %q applied (index %d).\n", p.Name, p.ModifyIndex)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&format, "format", "", "the file's format, hcl or json (default: from the file name; json for -)")
	return cmd
}

// poolFile is what a pool file holds: the API's request plus the name.
type poolFile struct {
	Name string `json:"name"`
	api.PoolRequest
}

// Pool file formats.
const (
	formatJSON = "json"
	formatHCL  = "hcl"
)

// readPoolFile reads and checks a pool file; "-" is stdin. format is
// formatJSON or formatHCL, or empty to go by the file name.
func readPoolFile(path, format string, stdin io.Reader) (string, api.PoolRequest, error) {
	switch format {
	case "", formatJSON, formatHCL:
	default:
		return "", api.PoolRequest{}, fmt.Errorf("--format %q is not supported: use hcl or json", format)
	}
	shown := path
	var r io.Reader
	if path == "-" {
		shown, r = "<stdin>", stdin
		if format == "" {
			format = formatJSON
		}
	} else {
		if format == "" {
			switch strings.ToLower(filepath.Ext(path)) {
			case ".json":
				format = formatJSON
			case ".hcl":
				format = formatHCL
			default:
				return "", api.PoolRequest{}, fmt.Errorf("pool file %s: unknown format; use a .json or .hcl file, --format hcl|json, or - to read JSON from stdin", path)
			}
		}
		f, err := os.Open(path)
		if err != nil {
			return "", api.PoolRequest{}, fmt.Errorf("pool file: %w", err)
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, maxPoolFileBytes+1))
	if err != nil {
		return "", api.PoolRequest{}, fmt.Errorf("pool file %s: %w", shown, err)
	}
	if len(data) > maxPoolFileBytes {
		return "", api.PoolRequest{}, fmt.Errorf("pool file %s is larger than %d bytes", shown, maxPoolFileBytes)
	}
	if format == formatHCL {
		pf, src, err := parseHCLPool(data, shown)
		if err != nil {
			return "", api.PoolRequest{}, err
		}
		if err := src.check(pf); err != nil {
			return "", api.PoolRequest{}, err
		}
		return pf.Name, pf.PoolRequest, nil
	}
	var pf poolFile
	if err := decodeStrict(data, &pf); err != nil {
		return "", api.PoolRequest{}, fmt.Errorf("pool file %s: %w", shown, err)
	}
	if pf.Name == "" {
		return "", api.PoolRequest{}, fmt.Errorf("pool file %s: \"name\" is required", shown)
	}
	return pf.Name, pf.PoolRequest, nil
}

// decodeStrict decodes exactly one JSON object into v, rejecting unknown
// fields, and says where a problem is.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	var (
		syntax  *json.SyntaxError
		typeErr *json.UnmarshalTypeError
	)
	switch {
	case err == nil:
		if _, err := dec.Token(); err != io.EOF {
			return errors.New("has more data after the JSON object")
		}
		return nil
	case errors.Is(err, io.EOF):
		return errors.New("is empty")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("ends in the middle of a JSON value")
	case errors.As(err, &syntax):
		return fmt.Errorf("invalid JSON at %s: %v", position(data, syntax.Offset), syntax)
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return fmt.Errorf("must hold a JSON object, not %s", typeErr.Value)
		}
		// The path names poolFile's embedded struct, which the file
		// does not show.
		field := strings.TrimPrefix(typeErr.Field, "PoolRequest.")
		return fmt.Errorf("field %q must be %s, not a JSON %s (at %s)", field, withArticle(jsonKind(typeErr.Type)), typeErr.Value, position(data, typeErr.Offset))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return fmt.Errorf("unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	// A type's own UnmarshalJSON failed (a duration, say), and its error
	// does not say where: find the field.
	if field := failingField(data, reflect.TypeOf(v), ""); field != "" {
		return fmt.Errorf("field %q: %w", field, err)
	}
	return err
}

// failingField returns the dotted JSON path of a field of type t, or of a
// struct inside it, whose value in data its own UnmarshalJSON rejects; ""
// if there is none.
func failingField(data []byte, t reflect.Type, prefix string) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return ""
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(data, &fields) != nil {
		return ""
	}
	for _, f := range reflect.VisibleFields(t) {
		if f.Anonymous || !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" {
			name = f.Name
		}
		raw, ok := fields[name]
		if !ok {
			continue
		}
		if reflect.PointerTo(f.Type).Implements(reflect.TypeFor[json.Unmarshaler]()) {
			if json.Unmarshal(raw, reflect.New(f.Type).Interface()) != nil {
				return prefix + name
			}
			continue
		}
		if inner := failingField(raw, f.Type, prefix+name+"."); inner != "" {
			return inner
		}
	}
	return ""
}

func withArticle(noun string) string {
	if strings.ContainsRune("aeiou", rune(noun[0])) {
		return "an " + noun
	}
	return "a " + noun
}

// jsonKind names the JSON type that decodes into t.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return "number"
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Slice, reflect.Array:
		return "array"
	}
	return "object"
}

// position turns a byte offset into "line L, column C".
func position(data []byte, offset int64) string {
	offset = min(max(offset, 0), int64(len(data)))
	before := data[:offset]
	line := bytes.Count(before, []byte("\n")) + 1
	col := int(offset) - (bytes.LastIndexByte(before, '\n') + 1)
	return "line " + strconv.Itoa(line) + ", column " + strconv.Itoa(max(col, 1))
}

func newPoolListCmd(o *clientOpts) *cobra.Command {
	return o.consistentFlag(&cobra.Command{
		Use:   "list",
		Short: "List pools",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return call(o, cmd, func(ctx context.Context, c *client.Client) ([]api.Pool, error) {
				return c.ListPools(ctx)
			}, func(out io.Writer, pools []api.Pool) error {
				if len(pools) == 0 {
					fmt.Fprintln(out, "No pools.")
					return nil
				}
				slices.SortFunc(pools, func(a, b api.Pool) int { return strings.Compare(a.Name, b.Name) })
				tw := newTable(out, "NAME", "SELECTION", "MIN HEALTHY", "PROVIDER", "TOKENS", "ELIGIBLE", "LABELS")
				for _, p := range pools {
					row(tw, p.Name, p.Selection, strconv.Itoa(p.MinHealthy), p.Provider.Type,
						strconv.Itoa(p.Tokens), strconv.Itoa(p.Eligible), fmtLabels(p.Labels))
				}
				return tw.Flush()
			})
		},
	})
}

func newPoolShowCmd(o *clientOpts) *cobra.Command {
	return o.consistentFlag(&cobra.Command{
		Use:   "show NAME",
		Short: "Show one pool",
		Args:  exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(o, cmd, func(ctx context.Context, c *client.Client) (api.Pool, error) {
				return c.GetPool(ctx, args[0])
			}, func(out io.Writer, p api.Pool) error {
				tw := newTable(out)
				row(tw, "Name:", p.Name)
				row(tw, "Selection:", p.Selection)
				row(tw, "Min healthy:", strconv.Itoa(p.MinHealthy))
				row(tw, "Provider:", p.Provider.Type)
				row(tw, "Labels:", fmtLabels(p.Labels))
				row(tw, "Health:", fmtHealthPolicy(p.Health))
				row(tw, "Tokens:", fmt.Sprintf("%d (%d eligible on this agent)", p.Tokens, p.Eligible))
				row(tw, "Created:", fmtTime(&p.CreatedAt))
				row(tw, "Updated:", fmtTime(&p.UpdatedAt))
				row(tw, "Index:", fmt.Sprintf("created %d, modified %d", p.CreateIndex, p.ModifyIndex))
				return tw.Flush()
			})
		},
	})
}

func newPoolDeleteCmd(o *clientOpts) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a pool",
		Long:  "Delete a pool. A pool that still holds tokens is only deleted with --force, which deletes its tokens too.",
		Args:  exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(o, cmd, func(ctx context.Context, c *client.Client) (api.WriteResponse, error) {
				return c.DeletePool(ctx, args[0], force)
			}, func(out io.Writer, res api.WriteResponse) error {
				fmt.Fprintf(out, "Pool %q deleted (index %d).\n", args[0], res.Index)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "delete the pool even if it still holds tokens, and the tokens with it")
	return cmd
}

func newPoolRotateCmd(o *clientOpts) *cobra.Command {
	var token string
	cmd := &cobra.Command{
		Use:   "rotate POOL",
		Short: "Replace a pool's tokens now",
		Long: `Have the leader replace tokens of a pool now, through the pool's provider:
every active token that has no rotation open, or only the one --token names.
The command answers once the rotations have begun, with their ids; how each
one ends shows in the events (tokend events --follow) and in pool show. A
pool with a static provider cannot issue tokens, so it cannot be rotated:
add a new token instead.`,
		Args: exactArgs("POOL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			pool := args[0]
			return call(o, cmd, func(ctx context.Context, c *client.Client) (api.RotateResponse, error) {
				return c.Rotate(ctx, pool, token)
			}, func(out io.Writer, res api.RotateResponse) error {
				what := fmt.Sprintf("pool %q", pool)
				if token != "" {
					what = fmt.Sprintf("token %s of pool %q", token, pool)
				}
				if len(res.Rotations) == 0 {
					fmt.Fprintf(out, "No rotation begun for %s: it has no active token without a rotation open.\n", what)
					return nil
				}
				for _, id := range res.Rotations {
					fmt.Fprintf(out, "Rotation %s begun for %s.\n", cell(id), what)
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&token, "token", "", "replace only the token with this id")
	return cmd
}

// fmtHealthPolicy formats a health policy on one line, in the pool file's
// field names.
func fmtHealthPolicy(h tokens.HealthPolicy) string {
	return fmt.Sprintf("window=%d degraded_failures=%d degraded_ratio=%s outcome_ttl=%s default_cooldown=%s report_quorum=%d report_window=%s",
		h.Window, h.DegradedFailures, strconv.FormatFloat(h.DegradedRatio, 'g', -1, 64),
		fmtDuration(h.OutcomeTTL), fmtDuration(h.DefaultCooldown), h.ReportQuorum, fmtDuration(h.ReportWindow))
}

// fmtDuration formats a duration the way people write it: 5m, not 5m0s.
func fmtDuration(d tokens.Duration) string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// fmtLabels formats labels as k=v pairs in key order.
func fmtLabels(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + labels[k]
	}
	return strings.Join(parts, ",")
}
