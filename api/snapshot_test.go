package api_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/agent"
	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/tokens"
)

// withChecksum ends body with a checksum line that matches it, as a file
// altered by someone who knows the format would be.
func withChecksum(body []byte) []byte {
	sum := sha256.Sum256(body)
	return append(bytes.Clone(body), "sha256 "+hex.EncodeToString(sum[:])+"\n"...)
}

// withoutChecksum is the file before its checksum line.
func withoutChecksum(file []byte) []byte { return file[:len(file)-len("sha256 ")-64-1] }

// altered rebuilds file with its header changed by edit and its state by
// state, with a checksum that matches.
func altered(t *testing.T, file []byte, edit func(*api.SnapshotInfo), state func([]byte) []byte) []byte {
	t.Helper()
	f, err := api.DecodeSnapshot(file)
	if err != nil {
		t.Fatal(err)
	}
	info, payload := f.Info, bytes.Clone(f.Payload)
	if edit != nil {
		edit(&info)
	}
	if state != nil {
		payload = state(payload)
	}
	out, err := api.EncodeSnapshot(info, payload)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The file format: what EncodeSnapshot writes DecodeSnapshot reads back;
// anything else is refused with a message that says what is wrong.
func TestSnapshotFileFormat(t *testing.T) {
	info := api.SnapshotInfo{Index: 42, Term: 3, CreatedAt: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), Node: "n1", Leader: "n2",
		StateVersion: 5, Pools: 1, Tokens: 2, Events: 3, SealingKey: "0a1b2c3d", KeyIDs: []string{"0a1b2c3d"}}
	payload := []byte("{\"format\":\"tokend-state\"}\nstate\n")
	file, err := api.EncodeSnapshot(info, payload)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(file, []byte("tokend-snapshot 1\n{")) {
		t.Fatalf("file starts %q", file[:30])
	}
	got, err := api.DecodeSnapshot(file)
	if err != nil {
		t.Fatal(err)
	}
	info.PayloadBytes = int64(len(payload))
	sum := sha256.Sum256(withoutChecksum(file))
	if !bytes.Equal(got.Payload, payload) || got.Format != 1 || got.Size != int64(len(file)) || got.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("decoded %+v", got)
	}
	gj, _ := json.Marshal(got.Info)
	wj, _ := json.Marshal(info)
	if !bytes.Equal(gj, wj) {
		t.Fatalf("header %s, want %s", gj, wj)
	}
	if rd, err := api.ReadSnapshot(bytes.NewReader(file)); err != nil || !bytes.Equal(rd.Payload, payload) {
		t.Fatalf("ReadSnapshot: %v", err)
	}

	flip := func(i int) []byte {
		b := bytes.Clone(file)
		b[i] ^= 0x20
		return b
	}
	body := withoutChecksum(file)
	header, _, _ := bytes.Cut(body[len("tokend-snapshot 1\n"):], []byte("\n"))
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "it is empty"},
		{"another format", []byte("GIF89a\x01\x00"), "not a tokend snapshot file"},
		{"no version", []byte("tokend-snapshot\n"), "not a version"},
		{"bad version", bytes.Replace(file, []byte("tokend-snapshot 1"), []byte("tokend-snapshot x"), 1), "not a version"},
		{"newer version", bytes.Replace(file, []byte("tokend-snapshot 1"), []byte("tokend-snapshot 2"), 1), "newer than this tokend reads (version 1)"},
		{"version zero", bytes.Replace(file, []byte("tokend-snapshot 1"), []byte("tokend-snapshot 0"), 1), "not a version"},
		{"magic only", []byte("tokend-snapshot 1\n"), "truncated"},
		{"truncated in the state", file[:len(file)-100], "truncated"},
		{"truncated in the checksum", file[:len(file)-5], "truncated"},
		{"no final newline", file[:len(file)-1], "truncated"},
		{"data after the checksum", append(bytes.Clone(file), "more\n"...), "data after it"},
		{"a flipped bit in the state", flip(len(file) - 90), "checksum mismatch"},
		{"a flipped bit in the header", flip(len("tokend-snapshot 1\n") + 3), "checksum mismatch"},
		{"a wrong checksum", append(bytes.Clone(body), "sha256 "+strings.Repeat("0", 64)+"\n"...), "checksum mismatch"},
		{"no header line", withChecksum([]byte("tokend-snapshot 1\n")), "header line is missing"},
		{"header not JSON", withChecksum([]byte("tokend-snapshot 1\nnot json\nstate")), "not a snapshot header"},
		{"unknown header field", withChecksum(bytes.Replace(body, []byte(`{"index"`), []byte(`{"bogus":1,"index"`), 1)), "not a snapshot header"},
		{"state shorter than said", withChecksum(body[:len(body)-3]), "but 29 follow it"},
		{"state longer than said", withChecksum(append(bytes.Clone(body), "xyz"...)), "but 35 follow it"},
		{"header without state", withChecksum(append([]byte("tokend-snapshot 1\n"), header...)), "header line is missing"},
	} {
		_, err := api.DecodeSnapshot(c.data)
		var te *tokens.Error
		if err == nil || !strings.Contains(err.Error(), c.want) || !errors.As(err, &te) || te.Code != tokens.CodeInvalid {
			t.Errorf("%s: %v, want an invalid_request saying %q", c.name, err, c.want)
		}
	}
}

func base64Std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// zeros is an endless body, for a request larger than any limit.
type zeros struct{ n, limit int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.n >= z.limit {
		return 0, io.EOF
	}
	n := min(int64(len(p)), z.limit-z.n)
	clear(p[:n])
	z.n += n
	return int(n), nil
}

// sized is a body whose length the request announces.
type sized struct{ zeros }

// GET /v1/snapshot serves a snapshot file over TCP and the socket; PUT
// /v1/snapshot restores one. Every bad file is refused with the status and
// code that say what is wrong, and changes nothing; then the good one is
// restored.
func TestSnapshotAPI(t *testing.T) {
	ta := startAgent(t)
	c := ta.tcp
	c.putPool(t, "saved", api.PoolRequest{})
	tok := c.addToken(t, "saved", api.TokenRequest{Value: ta.secret("saved-value")})
	var file []byte
	for _, conn := range ta.conns() {
		r := expect(t, conn.get(t, "/v1/snapshot"), http.StatusOK)
		if ct := r.Header.Get("Content-Type"); ct != "application/octet-stream" {
			t.Fatalf("Content-Type %q", ct)
		}
		f, err := api.DecodeSnapshot(r.Body)
		if err != nil {
			t.Fatalf("over %s: %v", conn.name, err)
		}
		if f.Info.Pools != 1 || f.Info.Tokens != 1 || f.Info.Node != "n1" || r.Header.Get(api.HeaderIndex) != strconv.FormatUint(f.Info.Index, 10) {
			t.Fatalf("over %s: header %+v, index %s", conn.name, f.Info, r.Header.Get(api.HeaderIndex))
		}
		assertNoSecrets(t, "snapshot file", string(r.Body), ta.secretList())
		file = r.Body
	}
	expectError(t, c.get(t, "/v1/snapshot?stale=true"), http.StatusBadRequest, tokens.CodeInvalid, "stale")
	saved := c.snapshot(t)

	c.putPool(t, "later", api.PoolRequest{})
	c.addToken(t, "saved", api.TokenRequest{Value: ta.secret("later-value")})

	other := startAgentWith(t, func(cfg *agent.Config) { cfg.EncryptKey = tokens.GenerateKey() })
	other.tcp.putPool(t, "elsewhere", api.PoolRequest{})
	other.tcp.addToken(t, "elsewhere", api.TokenRequest{Value: other.secret("elsewhere-value")})
	foreign := expect(t, other.tcp.get(t, "/v1/snapshot"), http.StatusOK).Body

	f, err := api.DecodeSnapshot(file)
	if err != nil {
		t.Fatal(err)
	}
	b64 := func(b []byte) []byte { return []byte(`"value":"` + base64Std(b) + `"`) }
	var sealed tokens.Sealed
	{
		var rec struct {
			Token *tokens.Token `json:"token"`
		}
		for line := range bytes.Lines(f.Payload) {
			if bytes.Contains(line, []byte(`"type":"token"`)) && json.Unmarshal(line, &rec) == nil {
				sealed = rec.Token.Value
			}
		}
		if sealed == nil {
			t.Fatal("no token record in the state")
		}
	}
	tampered := bytes.Clone(sealed)
	tampered[len(tampered)-1] ^= 1
	plain := []byte("plaintext-value")

	for _, tc := range []struct {
		name, path string
		body       io.Reader
		status     int
		code       string
		mentions   []string
	}{
		{"empty", "/v1/snapshot", nil, 400, tokens.CodeInvalid, []string{"empty"}},
		{"not a snapshot", "/v1/snapshot", strings.NewReader(`{"pools":[]}`), 400, tokens.CodeInvalid, []string{"not a tokend snapshot file"}},
		{"unknown version", "/v1/snapshot", bytes.NewReader(bytes.Replace(file, []byte("tokend-snapshot 1"), []byte("tokend-snapshot 7"), 1)), 400, tokens.CodeInvalid, []string{"format version 7", "newer"}},
		{"truncated", "/v1/snapshot", bytes.NewReader(file[:len(file)/2]), 400, tokens.CodeInvalid, []string{"truncated"}},
		{"bad checksum", "/v1/snapshot", bytes.NewReader(bytes.Replace(file, []byte(`"pool"`), []byte(`"Pool"`), 1)), 400, tokens.CodeInvalid, []string{"checksum mismatch"}},
		{"too large", "/v1/snapshot", &zeros{limit: api.MaxSnapshotFileBytes + 1}, 413, api.CodeBodyTooLarge, []string{strconv.Itoa(api.MaxSnapshotFileBytes)}},
		{"said to be too large", "/v1/snapshot", &sized{zeros{limit: api.MaxSnapshotFileBytes + 1}}, 413, api.CodeBodyTooLarge, []string{strconv.Itoa(api.MaxSnapshotFileBytes)}},
		{"unknown parameter", "/v1/snapshot?force=true", bytes.NewReader(file), 400, tokens.CodeInvalid, []string{"force"}},
		{"header does not match the state", "/v1/snapshot", bytes.NewReader(altered(t, file, func(i *api.SnapshotInfo) { i.Tokens = 5 }, nil)), 400, tokens.CodeInvalid, []string{"header says tokens 5", "holds 1"}},
		{"index below the state's", "/v1/snapshot", bytes.NewReader(altered(t, file, func(i *api.SnapshotInfo) { i.Index = 1 }, nil)), 400, tokens.CodeInvalid, []string{"header says index 1"}},
		{"state does not decode", "/v1/snapshot", bytes.NewReader(altered(t, file, nil, func(p []byte) []byte { return p[:len(p)-30] })), 400, tokens.CodeInvalid, []string{"state does not decode"}},
		{"unsealed value", "/v1/snapshot", bytes.NewReader(altered(t, file, func(i *api.SnapshotInfo) { i.KeyIDs = nil }, func(p []byte) []byte {
			return bytes.Replace(p, b64(sealed), b64(plain), 1)
		})), 400, tokens.CodeInvalid, []string{"1 secrets that are not sealed"}},
		{"tampered value", "/v1/snapshot", bytes.NewReader(altered(t, file, nil, func(p []byte) []byte {
			return bytes.Replace(p, b64(sealed), b64(tampered), 1)
		})), 422, tokens.CodeSealBroken, []string{"token " + tok.ID, "does not open"}},
		{"sealed with another key", "/v1/snapshot", bytes.NewReader(foreign), 422, tokens.CodeKeyMissing, []string{"does not hold", "install it"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := c.snapshot(t)
			req, err := http.NewRequest(http.MethodPut, c.base+tc.path, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			if s, ok := tc.body.(*sized); ok {
				req.ContentLength = s.limit
			}
			res, err := c.hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(res.Body)
			res.Body.Close()
			r := &response{Status: res.StatusCode, Header: res.Header, Body: data}
			expectError(t, r, tc.status, tc.code, tc.mentions...)
			assertNoSecrets(t, "error response", r.String(), append(ta.secretList(), other.secretList()...))
			if d := before.diff(c.snapshot(t)); d != "" {
				t.Fatalf("a refused restore changed the state: %s", d)
			}
		})
	}
	// The foreign file's secret is not in its error either: checked above.
	// Now the good file.
	index := freshness(t, c.get(t, "/v1/pools"))
	r := expect(t, c.do(t, http.MethodPut, "/v1/snapshot", file), http.StatusOK)
	res := decode[api.SnapshotRestored](t, r)
	if res.RestoredIndex <= index || res.Index < res.RestoredIndex || writeIndex(t, r) != res.Index || res.SHA256 != f.SHA256 || res.Snapshot.Index != f.Info.Index {
		t.Fatalf("restore answered %+v (index before %d)", res, index)
	}
	after := c.snapshot(t)
	if after.pools != saved.pools || after.tokens["saved"] != saved.tokens["saved"] {
		t.Fatalf("restored state differs: %s", saved.diff(after))
	}
	if got := string(expect(t, c.fetch(t, "saved", "?format=raw"), http.StatusOK).Body); got != "saved-value" {
		t.Fatalf("serves %q after the restore", got)
	}
	evs := decode[api.Events](t, expect(t, c.get(t, "/v1/events?since="+strconv.FormatUint(index, 10)), http.StatusOK))
	if len(evs.Events) != 1 || evs.Events[0].Type != tokens.EventSnapshotRestored || evs.Events[0].Index != res.Index {
		t.Fatalf("events after the restore: %+v", evs.Events)
	}
}
