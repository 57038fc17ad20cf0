package main

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// snapshot save, inspect and restore end to end on one agent: the file is
// written whole and 0600, holds no value, inspect needs no agent, and
// restore brings back the saved state.
func TestSnapshotCommands(t *testing.T) {
	a := startAgent(t)
	addr := "--addr=http://" + a.HTTPAddr()
	const value = "SnapshotCliCanary-8Jd2"
	mustRun(t, "", "pool", "apply", writeFile(t, "p.json", `{"name":"p"}`), addr)
	id := strings.TrimSpace(mustRun(t, value+"\n", "token", "add", "p", "--value-stdin", addr))

	dir := t.TempDir()
	path := filepath.Join(dir, "backup.snap")
	if err := os.WriteFile(path, []byte("an older file"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := mustRun(t, "", "snapshot", "save", path, addr)
	if !strings.Contains(out, "Saved snapshot of index ") || !strings.Contains(out, "sha256 ") || !strings.Contains(out, "1 pools, 1 tokens") {
		t.Fatalf("save printed:\n%s", out)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("the file's mode is %v, want 0600", fi.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("the directory holds %d files, want the snapshot alone: a temporary file was left", len(entries))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), value) || strings.Contains(string(data), base64.StdEncoding.EncodeToString([]byte(value))) {
		t.Fatal("the snapshot file holds the token's value")
	}

	// inspect reads the file alone: no agent listens at this address.
	out = mustRun(t, "", "snapshot", "inspect", path, "--addr=http://127.0.0.1:1")
	for _, want := range []string{"Format          1", "Pools           1", "Tokens          1", "Saved by        n1", "Checksum        sha256 ", " OK"} {
		if !strings.Contains(out, want) {
			t.Fatalf("inspect printed:\n%s\nwant %q", out, want)
		}
	}
	if strings.Contains(out, value) {
		t.Fatal("inspect printed the token's value")
	}
	var rep snapshotFileReport
	if err := json.Unmarshal([]byte(mustRun(t, "", "snapshot", "inspect", path, "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.ChecksumOK || rep.Info.Tokens != 1 || rep.Info.Index == 0 || rep.Size != int64(len(data)) || len(rep.SHA256) != 64 {
		t.Fatalf("inspect --json: %+v", rep)
	}

	mustRun(t, "second-value\n", "token", "add", "p", "--value-stdin", "--priority=-1", addr)
	mustRun(t, "", "pool", "apply", writeFile(t, "q.json", `{"name":"q"}`), addr)
	out = mustRun(t, "", "snapshot", "restore", path, addr)
	if !strings.Contains(out, "Restored the snapshot of index ") || !strings.Contains(out, "1 pools, 1 tokens") {
		t.Fatalf("restore printed:\n%s", out)
	}
	if got := mustRun(t, "", "token", "get", "p", "--raw", addr); got != value+"\n" {
		t.Fatalf("after the restore token get printed %q", got)
	}
	if out := mustRun(t, "", "pool", "list", addr); strings.Contains(out, "q ") || !strings.Contains(out, "p ") {
		t.Fatalf("pools after the restore:\n%s", out)
	}
	if out := mustRun(t, "", "token", "list", "p", addr); !strings.Contains(out, id) || strings.Count(out, "tok_") != 1 {
		t.Fatalf("tokens after the restore:\n%s", out)
	}
	if out := mustRun(t, "", "events", addr); !strings.Contains(out, "snapshot_restored") {
		t.Fatalf("events after the restore:\n%s", out)
	}

	// Bad files are refused before anything is sent, naming the file.
	bad := filepath.Join(t.TempDir(), "bad.snap")
	corrupt := []byte(strings.Replace(string(data), `"pool"`, `"Pool"`, 1))
	if err := os.WriteFile(bad, corrupt, 0o600); err != nil {
		t.Fatal(err)
	}
	mustFail(t, "", []string{"snapshot", "inspect", bad}, bad, "checksum mismatch")
	mustFail(t, "", []string{"snapshot", "restore", bad, addr}, bad, "checksum mismatch")
	mustFail(t, "", []string{"snapshot", "inspect", writeFile(t, "x.json", `{"name":"p"}`)}, "not a tokend snapshot file")
	mustFail(t, "", []string{"snapshot", "restore", filepath.Join(dir, "missing.snap"), addr}, "no such file")
	mustFail(t, "", []string{"snapshot", "save", filepath.Join(dir, "no", "such", "dir.snap"), addr}, "write the snapshot")
	mustFail(t, "", []string{"snapshot", "save", addr}, "takes FILE")
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("the directory holds %d files after the failures", len(entries))
	}
}
