package tokens

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestDurationJSONRoundTrip(t *testing.T) {
	tests := []struct {
		in   string // JSON
		want time.Duration
		out  string // JSON written back
	}{
		{`"90s"`, 90 * time.Second, `"1m30s"`},
		{`"1m30s"`, 90 * time.Second, `"1m30s"`},
		{`"1h0m0s"`, time.Hour, `"1h0m0s"`},
		{`"1h"`, time.Hour, `"1h0m0s"`},
		{`"5m"`, 5 * time.Minute, `"5m0s"`},
		{`"1.5h"`, 90 * time.Minute, `"1h30m0s"`},
		{`"250ms"`, 250 * time.Millisecond, `"250ms"`},
		{`"0s"`, 0, `"0s"`},
		{`"0"`, 0, `"0s"`},
		// Out of range values decode; HealthPolicy.Validate rejects them.
		{`"-5s"`, -5 * time.Second, `"-5s"`},
	}
	for _, tt := range tests {
		var d Duration
		if err := json.Unmarshal([]byte(tt.in), &d); err != nil {
			t.Errorf("Unmarshal(%s): %v", tt.in, err)
			continue
		}
		if time.Duration(d) != tt.want {
			t.Errorf("Unmarshal(%s) = %v, want %v", tt.in, time.Duration(d), tt.want)
		}
		b, err := json.Marshal(d)
		if err != nil || string(b) != tt.out {
			t.Errorf("Marshal(%v) = %s, %v; want %s", time.Duration(d), b, err, tt.out)
		}
		var back Duration
		if err := json.Unmarshal(b, &back); err != nil || back != d {
			t.Errorf("round trip of %s = %v, %v", b, time.Duration(back), err)
		}
		if d.String() != strings.Trim(tt.out, `"`) {
			t.Errorf("String() = %q, want %s", d.String(), tt.out)
		}
	}
}

func TestDurationJSONRejects(t *testing.T) {
	const notString = `a duration is a string such as "90s" or "5m"`
	tests := []struct {
		in   string
		want string
	}{
		{`90`, notString},
		{`1.5`, notString},
		{`-1`, notString},
		{`true`, notString},
		{`{}`, notString},
		{`["90s"]`, notString},
		{`""`, `"" is not a duration such as "90s" or "5m"`},
		{`"90"`, `"90" is not a duration`},
		{`"5 minutes"`, `"5 minutes" is not a duration`},
		{`"1d"`, `"1d" is not a duration`},
		{`"abc"`, `"abc" is not a duration`},
		{`" 90s"`, `" 90s" is not a duration`},
		{`"` + strings.Repeat("9", 200) + `h"`, `"` + strings.Repeat("9", 40) + `..." is not a duration`},
	}
	for _, tt := range tests {
		d := Duration(time.Minute)
		err := json.Unmarshal([]byte(tt.in), &d)
		if err == nil {
			t.Errorf("Unmarshal(%s) = %v, want an error", tt.in, time.Duration(d))
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Unmarshal(%s) error %q does not contain %q", tt.in, err, tt.want)
		}
		if strings.Contains(err.Error(), "Go value") || strings.Contains(err.Error(), "tokens.Duration") {
			t.Errorf("Unmarshal(%s) error %q speaks Go, not JSON", tt.in, err)
		}
		if d != Duration(time.Minute) {
			t.Errorf("Unmarshal(%s) failed but changed the value to %v", tt.in, time.Duration(d))
		}
	}
}

// null leaves a duration as it is, as encoding/json does for its own types,
// so a client that writes "outcome_ttl": null gets the default.
func TestDurationJSONNull(t *testing.T) {
	d := Duration(time.Minute)
	if err := json.Unmarshal([]byte(`null`), &d); err != nil || d != Duration(time.Minute) {
		t.Fatalf("Unmarshal(null) = %v, %v; want 1m0s kept, nil", time.Duration(d), err)
	}
	var p HealthPolicy
	if err := json.Unmarshal([]byte(`{"outcome_ttl":null,"report_window":"1m"}`), &p); err != nil {
		t.Fatalf("policy with a null duration: %v", err)
	}
	if p != (HealthPolicy{ReportWindow: Duration(time.Minute)}) {
		t.Fatalf("decoded %+v", p)
	}
}

// Durations inside a struct: errors surface from the struct's decoding,
// and omitempty leaves out zero.
func TestDurationInStruct(t *testing.T) {
	var p HealthPolicy
	err := json.Unmarshal([]byte(`{"report_window":300}`), &p)
	if err == nil || !strings.Contains(err.Error(), "a duration is a string") {
		t.Fatalf("report_window 300: %v, want the string-duration error", err)
	}
	err = json.Unmarshal([]byte(`{"outcome_ttl":"5 min"}`), &p)
	if err == nil || !strings.Contains(err.Error(), `"5 min" is not a duration`) {
		t.Fatalf(`outcome_ttl "5 min": %v, want the bad-duration error`, err)
	}
}
