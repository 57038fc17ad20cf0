package chaos

import (
	"os"
	"testing"
)

// TestRecheck reruns the checks on a saved run: TOKEND_CHAOS_RECHECK names
// its history.json. Skipped without it.
func TestRecheck(t *testing.T) {
	path := os.Getenv("TOKEND_CHAOS_RECHECK")
	if path == "" {
		t.Skip("TOKEND_CHAOS_RECHECK names no history.json")
	}
	rec, err := LoadRecord(path)
	if err != nil {
		t.Fatal(err)
	}
	in := rec.Input()
	in.ArtifactDir = t.TempDir()
	results, _ := Check(in)
	for _, r := range results {
		t.Logf("%s", r)
		if len(r.Violations) > 0 {
			t.Fail()
		}
	}
}
