package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/spf13/pflag"
	"github.com/zclconf/go-cty/cty"
)

// An agent config file sets the agent's flags in HCL. Every flag is a key,
// its name with "-" written "_"; a block groups the flags that share its
// name as prefix, and a block's "enabled" is the flag of that name:
//
//	data_dir         = "/var/lib/tokend"
//	join             = ["10.0.0.2:8552", "10.0.0.3:8552"]
//	encrypt_key_file = "/etc/tokend/keyring"
//	tls {
//	  ca_file   = "/etc/tokend/ca.pem"    # --tls-ca-file
//	  cert_file = "/etc/tokend/agent.pem" # --tls-cert-file
//	  key_file  = "/etc/tokend/agent-key.pem"
//	}
//	acl { enabled = true }                # --acl
//
// Deriving the keys from the flags keeps the two from drifting apart: a new
// flag is a new key the day it is added. A flag given on the command line
// wins over every file; a later file wins over an earlier one, except that
// lists (join) add up, as flags repeated on the command line do.

// configFileFlag is the flag that names config files; it is not a key.
const configFileFlag = "config-file"

// configSetting is one flag a config file sets.
type configSetting struct {
	flag   string
	values []string
}

// applyConfigFiles sets from each file, in order, the flags the command
// line left alone. It changes nothing unless every file is valid.
func applyConfigFiles(fs *pflag.FlagSet, paths []string) error {
	fromCLI := map[string]bool{}
	fs.Visit(func(f *pflag.Flag) { fromCLI[f.Name] = true })
	var all []configSetting
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("config file: %w", err)
		}
		settings, err := parseAgentConfig(fs, data, path)
		if err != nil {
			return err
		}
		all = append(all, settings...)
	}
	for _, s := range all {
		if fromCLI[s.flag] {
			continue
		}
		for _, v := range s.values {
			if err := fs.Set(s.flag, v); err != nil {
				// parseAgentConfig checked each value against its flag.
				return fmt.Errorf("config file: %s: %w", s.flag, err)
			}
		}
	}
	return nil
}

// parseAgentConfig reads one config file into the flags it sets, checking
// every key and value against the flag; errors name file:line,column.
func parseAgentConfig(fs *pflag.FlagSet, data []byte, filename string) ([]configSetting, error) {
	file, diags := hclsyntax.ParseConfig(data, filename, hcl.Pos{Line: 1, Column: 1})
	if diags.HasErrors() {
		return nil, diagError(diags)
	}
	body := file.Body.(*hclsyntax.Body)
	var out []configSetting
	errorf := func(rng hcl.Range, format string, args ...any) {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: fmt.Sprintf(format, args...), Subject: rng.Ptr()})
	}
	attr := func(a *hclsyntax.Attribute, prefix string) {
		name := prefix + strings.ReplaceAll(a.Name, "_", "-")
		if prefix != "" && a.Name == "enabled" {
			name = strings.TrimSuffix(prefix, "-")
		}
		f := fs.Lookup(name)
		if f == nil || name == configFileFlag || f.Hidden {
			errorf(a.NameRange, "unknown key %q: config keys are the agent's flags with _ for - (tokend agent --help)", a.Name)
			return
		}
		val, vd := a.Expr.Value(nil)
		if vd.HasErrors() {
			diags = append(diags, vd...)
			return
		}
		values, err := flagValues(f, val)
		if err != nil {
			errorf(a.Expr.Range(), "%s: %v", a.Name, err)
			return
		}
		out = append(out, configSetting{flag: name, values: values})
	}
	for _, a := range sortedAttributes(body.Attributes) {
		attr(a, "")
	}
	for _, b := range body.Blocks {
		if len(b.Labels) > 0 {
			errorf(b.LabelRanges[0], "block %s takes no label", b.Type)
			continue
		}
		if !hasFlagPrefix(fs, b.Type+"-") && fs.Lookup(b.Type) == nil {
			errorf(b.TypeRange, "unknown block %q", b.Type)
			continue
		}
		for _, a := range sortedAttributes(b.Body.Attributes) {
			attr(a, strings.ReplaceAll(b.Type, "_", "-")+"-")
		}
		for _, nested := range b.Body.Blocks {
			errorf(nested.TypeRange, "block %s cannot hold block %s", b.Type, nested.Type)
		}
	}
	if diags.HasErrors() {
		return nil, diagError(diags)
	}
	return out, nil
}

// flagValues renders an HCL value as the text the flag parses, checking
// its type: a string for text and durations ("30m"), a number, a bool, or
// for repeatable flags a list of strings.
func flagValues(f *pflag.Flag, val cty.Value) ([]string, error) {
	if val.IsNull() || !val.IsKnown() {
		return nil, fmt.Errorf("a value is required")
	}
	ty := val.Type()
	switch f.Value.Type() {
	case "bool":
		if ty != cty.Bool {
			return nil, fmt.Errorf("want true or false, not %s", ty.FriendlyName())
		}
		return []string{strconv.FormatBool(val.True())}, nil
	case "int", "float64":
		if ty != cty.Number {
			return nil, fmt.Errorf("want a number, not %s", ty.FriendlyName())
		}
		bf := val.AsBigFloat()
		if f.Value.Type() == "int" && !bf.IsInt() {
			return nil, fmt.Errorf("want a whole number, not %s", bf.Text('g', -1))
		}
		return []string{bf.Text('f', -1)}, nil
	case "stringArray", "stringSlice":
		if ty == cty.String {
			return []string{val.AsString()}, nil
		}
		if !ty.IsTupleType() && !ty.IsListType() {
			return nil, fmt.Errorf("want a list of strings, not %s", ty.FriendlyName())
		}
		var out []string
		for it := val.ElementIterator(); it.Next(); {
			_, v := it.Element()
			if v.IsNull() || v.Type() != cty.String {
				return nil, fmt.Errorf("want a list of strings")
			}
			out = append(out, v.AsString())
		}
		return out, nil
	default:
		if ty != cty.String {
			return nil, fmt.Errorf("want a string, not %s", ty.FriendlyName())
		}
		if f.Value.Type() == "duration" {
			// Checked here so that a bad value in a file changes no flag.
			if _, err := time.ParseDuration(val.AsString()); err != nil {
				return nil, fmt.Errorf("want a duration such as \"30s\" or \"1h\", not %q", val.AsString())
			}
		}
		return []string{val.AsString()}, nil
	}
}

func hasFlagPrefix(fs *pflag.FlagSet, prefix string) bool {
	found := false
	fs.VisitAll(func(f *pflag.Flag) {
		if strings.HasPrefix(f.Name, prefix) {
			found = true
		}
	})
	return found
}

// sortedAttributes lists attributes in the order of the file, so errors and
// repeated settings come out the way they were written.
func sortedAttributes(attrs hclsyntax.Attributes) []*hclsyntax.Attribute {
	out := make([]*hclsyntax.Attribute, 0, len(attrs))
	for _, a := range attrs {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b *hclsyntax.Attribute) int { return a.SrcRange.Start.Byte - b.SrcRange.Start.Byte })
	return out
}
