package main

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/tokens"
)

// HCL pool files mirror the JSON form field for field, with the same names
// (the json tags of poolFile): a JSON scalar, list or string map is an HCL
// attribute, a JSON object of fields is a block, and a list of such objects
// is a repeated block:
//
//	name = "github"
//	size = 2
//	labels = { team = "infra" }
//	provider {
//	  type      = "oauth2"
//	  token_url = "https://auth.example/token"
//	  clients {
//	    client_id     = "a"
//	    client_secret = "x"
//	  }
//	}
//	rotation { max_age = "1h" }
//
// The decoder walks the struct types by reflection, so a field the API
// gains is accepted in HCL the day it is accepted in JSON. Values must have
// the JSON type exactly (no "2" for 2); durations are strings such as "1h".
// Expressions may not use variables or functions.

// hclSource remembers where an HCL pool file wrote each field, so that an
// error about a field can point at it.
type hclSource struct {
	filename string
	// fields maps a field path such as "provider.token_url" or
	// "provider.clients[1]" to the attribute's name or the block's header;
	// a repeated block's path without index maps to its first block.
	fields map[string]hcl.Range
	// elems maps the path of a list or map attribute to its elements.
	elems map[string][]hclElem
}

// hclElem is one element of a list, or one item of a map.
type hclElem struct {
	// match is what a message quotes to name it: a list element's value
	// as text, a map item's key.
	match string
	rng   hcl.Range
}

// parseHCLPool decodes an HCL pool file. Its errors name the file, line and
// column: HCL's own diagnostics for syntax, unknown fields and wrong types.
func parseHCLPool(data []byte, filename string) (poolFile, *hclSource, error) {
	var pf poolFile
	file, diags := hclsyntax.ParseConfig(data, filename, hcl.Pos{Line: 1, Column: 1})
	if diags.HasErrors() {
		return pf, nil, diagError(diags)
	}
	d := &hclDecoder{src: &hclSource{filename: filename, fields: map[string]hcl.Range{}, elems: map[string][]hclElem{}}}
	d.body(file.Body, "", reflect.ValueOf(&pf).Elem())
	if !d.diags.HasErrors() {
		if _, ok := d.src.fields["name"]; !ok {
			r := file.Body.MissingItemRange()
			d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: `name is required: add name = "pool-name"`, Subject: &r})
		}
	}
	if d.diags.HasErrors() {
		return pf, nil, diagError(d.diags)
	}
	return pf, d.src, nil
}

// maxDiagsShown bounds how many errors one pool file reports.
const maxDiagsShown = 10

// diagError formats HCL's error diagnostics one a line, in the order of
// the file, each as file:line,column: summary; detail.
func diagError(diags hcl.Diagnostics) error {
	diags = slices.Clone(diags)
	at := func(d *hcl.Diagnostic) int {
		if d.Subject == nil {
			return -1
		}
		return d.Subject.Start.Byte
	}
	slices.SortStableFunc(diags, func(a, b *hcl.Diagnostic) int { return at(a) - at(b) })
	var lines []string
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		if len(lines) == maxDiagsShown {
			lines = append(lines, "(and more errors)")
			break
		}
		msg := d.Summary
		if d.Detail != "" {
			msg += "; " + d.Detail
		}
		if d.Subject != nil {
			msg = fmt.Sprintf("%s:%d,%d: %s", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, msg)
		}
		lines = append(lines, msg)
	}
	return errors.New(strings.Join(lines, "\n"))
}

type hclDecoder struct {
	src   *hclSource
	diags hcl.Diagnostics
}

func (d *hclDecoder) errorf(rng hcl.Range, format string, args ...any) {
	d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: fmt.Sprintf(format, args...), Subject: rng.Ptr()})
}

// jsonName is a field's name in the JSON wire form, "" for none.
func jsonName(f reflect.StructField) string {
	if f.Anonymous || !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	if name == "-" {
		return ""
	}
	return name
}

// hclFields returns the fields of struct type t by their JSON names.
func hclFields(t reflect.Type) (names []string, fields map[string]reflect.StructField) {
	fields = map[string]reflect.StructField{}
	for _, f := range reflect.VisibleFields(t) {
		if name := jsonName(f); name != "" {
			names = append(names, name)
			fields[name] = f
		}
	}
	return names, fields
}

var (
	durationType = reflect.TypeFor[tokens.Duration]()
	timeType     = reflect.TypeFor[time.Time]()
)

// isBlock says whether a field of type t is written as a block (a struct,
// a pointer to one) or a repeated block (a slice of them).
func isBlock(t reflect.Type) bool {
	if t.Kind() == reflect.Slice || t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Kind() == reflect.Struct && t != timeType
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// body decodes an HCL body into the struct v, the field at path ("" for
// the file itself).
func (d *hclDecoder) body(body hcl.Body, path string, v reflect.Value) {
	names, fields := hclFields(v.Type())
	schema := &hcl.BodySchema{}
	for _, name := range names {
		if isBlock(fields[name].Type) {
			schema.Blocks = append(schema.Blocks, hcl.BlockHeaderSchema{Type: name})
		} else {
			schema.Attributes = append(schema.Attributes, hcl.AttributeSchema{Name: name})
		}
	}
	content, diags := body.Content(schema)
	d.diags = append(d.diags, diags...)

	// In the order of the file, so that errors are too.
	attrs := make([]*hcl.Attribute, 0, len(content.Attributes))
	for _, a := range content.Attributes {
		attrs = append(attrs, a)
	}
	slices.SortFunc(attrs, func(a, b *hcl.Attribute) int { return a.Range.Start.Byte - b.Range.Start.Byte })
	for _, a := range attrs {
		d.attribute(a, join(path, a.Name), v.FieldByIndex(fields[a.Name].Index))
	}

	seen := map[string]*hcl.Block{}
	for _, b := range content.Blocks {
		p := join(path, b.Type)
		fv := v.FieldByIndex(fields[b.Type].Index)
		if fv.Kind() == reflect.Slice {
			i := fv.Len()
			if i == 0 {
				d.src.fields[p] = b.DefRange
			}
			p = fmt.Sprintf("%s[%d]", p, i)
			d.src.fields[p] = b.DefRange
			elem := reflect.New(fv.Type().Elem()).Elem()
			d.body(b.Body, p, elem)
			fv.Set(reflect.Append(fv, elem))
			continue
		}
		if prev := seen[b.Type]; prev != nil {
			d.errorf(b.DefRange, "duplicate %s block: the first is at line %d, and only one is allowed", p, prev.DefRange.Start.Line)
			continue
		}
		seen[b.Type] = b
		d.src.fields[p] = b.DefRange
		if fv.Kind() == reflect.Pointer {
			nv := reflect.New(fv.Type().Elem())
			d.body(b.Body, p, nv.Elem())
			fv.Set(nv)
		} else {
			d.body(b.Body, p, fv)
		}
	}
}

// attribute decodes attribute a into the field fv at path.
func (d *hclDecoder) attribute(a *hcl.Attribute, path string, fv reflect.Value) {
	d.src.fields[path] = a.NameRange
	val, diags := a.Expr.Value(nil)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() || val.IsNull() {
		return // null leaves the field out, as it does in JSON
	}
	val, _ = val.Unmark()
	rng := a.Expr.Range()
	t := fv.Type()
	switch t.Kind() {
	case reflect.Slice:
		if !val.Type().IsTupleType() && !val.Type().IsListType() {
			d.errorf(rng, "%s must be a list of %ss, such as %s, not %s", path, kindName(t.Elem()), listExample(t.Elem()), typeName(val))
			return
		}
		// The element expressions say where each element is.
		exprs, _ := hcl.ExprList(a.Expr)
		n := val.LengthInt()
		out := reflect.MakeSlice(t, 0, n)
		var elems []hclElem
		i := 0
		for _, ev := range val.Elements() {
			erng := rng
			if len(exprs) == n {
				erng = exprs[i].Range()
			}
			if v, ok := d.scalar(ev, erng, fmt.Sprintf("%s[%d]", path, i), t.Elem()); ok {
				out = reflect.Append(out, v)
				elems = append(elems, hclElem{match: valueText(ev), rng: erng})
			}
			i++
		}
		d.src.elems[path] = elems
		fv.Set(out)
	case reflect.Map:
		if !val.Type().IsObjectType() && !val.Type().IsMapType() {
			d.errorf(rng, "%s must be a map of %ss, such as { key = %s }, not %s", path, kindName(t.Elem()), mapExample(t.Elem()), typeName(val))
			return
		}
		// The item expressions say where each key and value is; HCL
		// itself lets a repeated key replace the first.
		type where struct{ key, value hcl.Range }
		at := map[string]where{}
		pairs, _ := hcl.ExprMap(a.Expr)
		for _, p := range pairs {
			kv, kd := p.Key.Value(nil)
			if kd.HasErrors() || kv.IsNull() || !kv.IsKnown() || kv.Type() != cty.String {
				continue
			}
			k := kv.AsString()
			if _, dup := at[k]; dup {
				d.errorf(p.Key.Range(), "%s: key %q appears twice", path, k)
				continue
			}
			at[k] = where{p.Key.Range(), p.Value.Range()}
		}
		out := reflect.MakeMapWithSize(t, val.LengthInt())
		var elems []hclElem
		for kv, ev := range val.Elements() {
			k := kv.AsString()
			w, ok := at[k]
			if !ok {
				w = where{rng, rng}
			}
			if v, ok := d.scalar(ev, w.value, fmt.Sprintf("%s[%q]", path, k), t.Elem()); ok {
				out.SetMapIndex(reflect.ValueOf(k).Convert(t.Key()), v)
				elems = append(elems, hclElem{match: k, rng: w.key})
			}
		}
		slices.SortFunc(elems, func(a, b hclElem) int { return a.rng.Start.Byte - b.rng.Start.Byte })
		d.src.elems[path] = elems
		fv.Set(out)
	default:
		if v, ok := d.scalar(val, rng, path, t); ok {
			fv.Set(v)
		}
	}
}

// scalar converts val, written at rng, to a value of type t for the field
// at path.
func (d *hclDecoder) scalar(val cty.Value, rng hcl.Range, path string, t reflect.Type) (reflect.Value, bool) {
	val, _ = val.Unmark()
	var want cty.Type
	switch {
	case t == durationType || t.Kind() == reflect.String:
		want = cty.String
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Float64:
		want = cty.Number
	case t.Kind() == reflect.Bool:
		want = cty.Bool
	default:
		d.errorf(rng, "%s cannot be written in an HCL pool file (it is a %s): use JSON", path, t)
		return reflect.Value{}, false
	}
	if val.IsNull() || !val.IsKnown() || !val.Type().Equals(want) {
		d.errorf(rng, "%s must be %s, not %s", path, describe(t), typeName(val))
		return reflect.Value{}, false
	}
	out := reflect.New(t).Elem()
	switch {
	case t == durationType:
		s := val.AsString()
		dur, err := time.ParseDuration(s)
		if err != nil {
			d.errorf(rng, "%s: %q is not a duration such as \"90s\" or \"5m\"", path, truncateText(s, 40))
			return reflect.Value{}, false
		}
		out.SetInt(int64(dur))
	case t.Kind() == reflect.String:
		out.SetString(val.AsString())
	case t.Kind() == reflect.Bool:
		out.SetBool(val.True())
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		f, _ := val.AsBigFloat().Float64()
		if math.IsInf(f, 0) || out.OverflowFloat(f) {
			d.errorf(rng, "%s: %s is out of range", path, valueText(val))
			return reflect.Value{}, false
		}
		out.SetFloat(f)
	default:
		bf := val.AsBigFloat()
		if !bf.IsInt() {
			d.errorf(rng, "%s must be a whole number, not %s", path, valueText(val))
			return reflect.Value{}, false
		}
		bi, _ := bf.Int(nil)
		if t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uintptr {
			if !bi.IsUint64() || out.OverflowUint(bi.Uint64()) {
				d.errorf(rng, "%s: %s is out of range", path, valueText(val))
				return reflect.Value{}, false
			}
			out.SetUint(bi.Uint64())
			break
		}
		if !bi.IsInt64() || out.OverflowInt(bi.Int64()) {
			d.errorf(rng, "%s: %s is out of range", path, valueText(val))
			return reflect.Value{}, false
		}
		out.SetInt(bi.Int64())
	}
	return out, true
}

// kindName names what a field of type t holds.
func kindName(t reflect.Type) string {
	switch {
	case t == durationType:
		return "duration string"
	case t.Kind() == reflect.String:
		return "string"
	case t.Kind() == reflect.Bool:
		return "bool"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "number"
	}
	return "whole number"
}

// describe says what a value of type t must be.
func describe(t reflect.Type) string {
	if t == durationType {
		return `a duration string such as "90s" or "5m"`
	}
	return withArticle(kindName(t))
}

func mapExample(t reflect.Type) string {
	switch kindName(t) {
	case "string":
		return `"value"`
	case "duration string":
		return `"90s"`
	case "bool":
		return "true"
	}
	return "1"
}

func listExample(t reflect.Type) string {
	switch kindName(t) {
	case "string":
		return `["a", "b"]`
	case "duration string":
		return `["1s", "5m"]`
	}
	return "[200, 204]"
}

// typeName names the type of an HCL value for an error message.
func typeName(val cty.Value) string {
	ty := val.Type()
	switch {
	case val.IsNull():
		return "null"
	case ty == cty.String:
		return "a string"
	case ty == cty.Number:
		return "a number"
	case ty == cty.Bool:
		return "a bool"
	case ty.IsTupleType() || ty.IsListType() || ty.IsSetType():
		return "a list"
	case ty.IsObjectType() || ty.IsMapType():
		return "a map"
	}
	return ty.FriendlyName()
}

// valueText is a scalar value as text: a string as it is, a number in
// decimal.
func valueText(val cty.Value) string {
	val, _ = val.Unmark()
	switch {
	case val.IsNull() || !val.IsKnown():
		return ""
	case val.Type() == cty.String:
		return val.AsString()
	case val.Type() == cty.Number:
		return val.AsBigFloat().Text('f', -1)
	case val.Type() == cty.Bool:
		return strconv.FormatBool(val.True())
	}
	return ""
}

func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// checkPool validates a pool definition the way the agent does before it
// applies one (api's putPool): the same tokens.Pool, normalized. It runs
// before anything is sent, so that an error can say where in the file the
// problem is; the agent still checks again.
func checkPool(name string, req api.PoolRequest) error {
	p := req.ToPool(name)
	return p.Normalize()
}

// check validates the pool an HCL file defines and points an error at the
// field it names.
func (s *hclSource) check(pf poolFile) error {
	err := checkPool(pf.Name, pf.PoolRequest)
	if err == nil {
		return nil
	}
	msg := err.Error()
	r := s.locate(msg)
	return fmt.Errorf("%s:%d,%d: %s", s.filename, r.Start.Line, r.Start.Column, msg)
}

// locate finds where the field a validation message starts with was
// written: the list element or map key the message quotes, else the
// attribute or block, else the block around it, else the start of the file.
func (s *hclSource) locate(msg string) hcl.Range {
	path, rest := errorPath(msg)
	if elems := s.elems[path]; len(elems) > 0 {
		if q, ok := quotedAfter(rest); ok {
			for _, e := range elems {
				if elemMatches(e, q) {
					return e.rng
				}
			}
		}
	}
	if r, ok := s.fields[path]; ok {
		return r
	}
	// The field was left out: another the message names, such as
	// rotation.retry_max in "rotation.retry_min (1s) must not exceed
	// rotation.retry_max (500ms)", may be the one written.
	for word := range strings.FieldsFuncSeq(rest, func(r rune) bool { return !isPathRune(r) }) {
		if r, ok := s.fields[strings.TrimSuffix(word, ".")]; ok && strings.Contains(word, ".") {
			return r
		}
	}
	for p := parentPath(path); p != ""; p = parentPath(p) {
		if r, ok := s.fields[p]; ok {
			return r
		}
	}
	return hcl.Range{Filename: s.filename, Start: hcl.InitialPos, End: hcl.InitialPos}
}

// isPathRune says whether r may be part of a field path.
func isPathRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '[' || r == ']'
}

// errorPath splits a tokens validation message into the field path it
// starts with ("provider.token_url", "provider.clients[1]", "size") and
// the rest.
func errorPath(msg string) (path, rest string) {
	for _, prefix := range []struct{ text, path string }{
		{"pool name ", "name"},
		{"provider type ", "provider.type"},
		{"too many labels", "labels"},
		{"label key ", "labels"},
		{"label ", "labels"},
	} {
		if r, ok := strings.CutPrefix(msg, prefix.text); ok {
			if prefix.path == "labels" && !strings.HasPrefix(r, `"`) {
				r = "" // a count, not a key
			}
			return prefix.path, r
		}
	}
	end := strings.IndexFunc(msg, func(r rune) bool { return !isPathRune(r) })
	if end < 0 {
		end = len(msg)
	}
	return strings.TrimSuffix(msg[:end], "."), msg[end:]
}

// quotedAfter returns the value a message quotes, or the number it gives,
// right after its field path.
func quotedAfter(rest string) (string, bool) {
	rest = strings.TrimLeft(strings.TrimPrefix(rest, ":"), " ")
	if strings.HasPrefix(rest, `"`) {
		q, err := strconv.QuotedPrefix(rest)
		if err != nil {
			return "", false
		}
		s, err := strconv.Unquote(q)
		return s, err == nil
	}
	end := strings.IndexFunc(rest, func(r rune) bool { return !(r >= '0' && r <= '9' || r == '-' || r == '.') })
	if end < 0 {
		end = len(rest)
	}
	if _, ok := new(big.Float).SetString(strings.TrimSuffix(rest[:end], ".")); end == 0 || !ok {
		return "", false
	}
	return strings.TrimSuffix(rest[:end], "."), true
}

// elemMatches says whether q, as a message quotes it (perhaps cut short
// with "..."), names e.
func elemMatches(e hclElem, q string) bool {
	return e.match == q || len(q) > 3 && strings.HasSuffix(q, "...") && strings.HasPrefix(e.match, strings.TrimSuffix(q, "..."))
}

// parentPath is the path of the block around path's field: provider for
// provider.token_url, provider.clients for provider.clients[1].
func parentPath(path string) string {
	if i := strings.LastIndexAny(path, ".["); i >= 0 {
		return path[:i]
	}
	return ""
}
