package api

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/tokend/tokend/tokens"
)

// A snapshot file is a backup of the whole replicated state, as `tokend
// snapshot save` writes it and GET /v1/snapshot serves it:
//
//	tokend-snapshot 1\n          magic and format version
//	{SnapshotInfo as JSON}\n     the header: where and when it was taken, what it holds
//	state                        the state machine's snapshot stream, PayloadBytes long
//	sha256 <64 hex digits>\n     SHA-256 of everything before this line
//
// The state holds secrets only sealed by the cluster's keyring, so the file
// holds no plaintext secret, and restoring it needs the keys it was sealed
// with. The checksum finds corruption and truncation; it does not
// authenticate the file (anyone can recompute it), which is why a restore
// also decodes every record and opens every sealed value before anything
// changes.
const (
	SnapshotMagic = "tokend-snapshot"
	// SnapshotFormat is the version of the file format this tokend writes
	// and the newest it reads.
	SnapshotFormat = 1
	// MaxSnapshotFileBytes bounds a snapshot file: the state and a header.
	MaxSnapshotFileBytes = tokens.MaxSnapshotBytes + maxSnapshotHeader + 128
	maxSnapshotHeader    = 64 << 10
	checksumPrefix       = "sha256 "
	checksumLine         = len(checksumPrefix) + 2*sha256.Size + 1
)

// SnapshotInfo is a snapshot file's header. It names no secret.
type SnapshotInfo struct {
	// Index and Term are the Raft position the state was taken at, in the
	// cluster it came from.
	Index uint64 `json:"index"`
	Term  uint64 `json:"term"`
	// CreatedAt is when the file was written, by agent Node, from the
	// state of leader Leader.
	CreatedAt time.Time `json:"created_at"`
	Node      string    `json:"node"`
	Leader    string    `json:"leader,omitempty"`
	// StateVersion is the version of the state stream inside.
	StateVersion int `json:"state_version"`
	// What the state holds.
	Pools       int `json:"pools"`
	Tokens      int `json:"tokens"`
	Rotations   int `json:"rotations"`
	ACLPolicies int `json:"acl_policies"`
	ACLTokens   int `json:"acl_tokens"`
	Events      int `json:"events"`
	// SealingKey is the key the cluster sealed new secrets with; KeyIDs
	// are the keys the secrets inside are sealed with. A cluster restoring
	// the file needs every one of them in every agent's keyring.
	SealingKey string   `json:"sealing_key,omitempty"`
	KeyIDs     []string `json:"key_ids"`
	// PayloadBytes is the length of the state stream.
	PayloadBytes int64 `json:"payload_bytes"`
}

// SnapshotFile is a snapshot file whose format and checksum are checked.
type SnapshotFile struct {
	Format  int
	Info    SnapshotInfo
	Payload []byte
	// SHA256 is the checksum, in hex; Size the file's length.
	SHA256 string
	Size   int64
}

// EncodeSnapshot returns the snapshot file of payload, with info (its
// PayloadBytes set) as the header.
func EncodeSnapshot(info SnapshotInfo, payload []byte) ([]byte, error) {
	info.PayloadBytes = int64(len(payload))
	if info.KeyIDs == nil {
		info.KeyIDs = []string{}
	}
	header, err := json.Marshal(info)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Grow(len(header) + len(payload) + 128)
	fmt.Fprintf(&b, "%s %d\n", SnapshotMagic, SnapshotFormat)
	b.Write(header)
	b.WriteByte('\n')
	b.Write(payload)
	sum := sha256.Sum256(b.Bytes())
	b.WriteString(checksumPrefix + hex.EncodeToString(sum[:]) + "\n")
	return b.Bytes(), nil
}

// errSnapshotTooLarge is ReadSnapshot's error for a file over
// MaxSnapshotFileBytes.
var errSnapshotTooLarge = tokens.Errorf(tokens.CodeInvalid, "a snapshot file is at most %d bytes", MaxSnapshotFileBytes)

// ReadSnapshot reads a whole snapshot file from r and checks it.
func ReadSnapshot(r io.Reader) (*SnapshotFile, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSnapshotFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxSnapshotFileBytes {
		return nil, errSnapshotTooLarge
	}
	return DecodeSnapshot(data)
}

// DecodeSnapshot checks a snapshot file: its magic, its format version,
// that it is whole and that its checksum matches; then it reads its header.
// Every error is an invalid_request saying what is wrong with the file.
func DecodeSnapshot(data []byte) (*SnapshotFile, error) {
	bad := func(format string, args ...any) error {
		return tokens.Errorf(tokens.CodeInvalid, "snapshot file: "+format, args...)
	}
	if len(data) == 0 {
		return nil, bad("it is empty")
	}
	line, rest, ok := bytes.Cut(data, []byte("\n"))
	magic, version, _ := bytes.Cut(line, []byte(" "))
	if !bytes.Equal(magic, []byte(SnapshotMagic)) {
		return nil, bad("it does not start with %q: it is not a tokend snapshot file", SnapshotMagic+" ")
	}
	format, err := strconv.Atoi(string(version))
	switch {
	case err != nil || format < 1 || !ok:
		return nil, bad("format version %q is not a version tokend ever wrote: the file is corrupt", truncate(string(version)))
	case format > SnapshotFormat:
		return nil, bad("format version %d is newer than this tokend reads (version %d): use a newer tokend", format, SnapshotFormat)
	}
	if len(rest) < checksumLine || data[len(data)-1] != '\n' || !bytes.HasPrefix(data[len(data)-checksumLine:], []byte(checksumPrefix)) {
		return nil, bad("it does not end with its checksum line (%q and 64 hex digits): it is truncated, or has data after it", checksumPrefix)
	}
	body := data[:len(data)-checksumLine]
	want := string(data[len(data)-checksumLine+len(checksumPrefix) : len(data)-1])
	sum := sha256.Sum256(body)
	if got := hex.EncodeToString(sum[:]); got != want {
		return nil, bad("checksum mismatch: the file is corrupt, truncated or altered (its contents hash to sha256 %s; its last line says %s)", got, truncate(want))
	}
	header, payload, ok := bytes.Cut(rest[:len(rest)-checksumLine], []byte("\n"))
	if !ok || len(header) > maxSnapshotHeader {
		return nil, bad("its header line is missing or longer than %d bytes", maxSnapshotHeader)
	}
	var info SnapshotInfo
	dec := json.NewDecoder(bytes.NewReader(header))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&info); err != nil {
		return nil, bad("its header is not a snapshot header: %v", err)
	}
	if info.PayloadBytes != int64(len(payload)) {
		return nil, bad("its header says the state is %d bytes, but %d follow it", info.PayloadBytes, len(payload))
	}
	return &SnapshotFile{Format: format, Info: info, Payload: payload, SHA256: want, Size: int64(len(data))}, nil
}

// SnapshotRestored is the answer to a restore.
type SnapshotRestored struct {
	// Index is the Raft index of the entry that recorded the restore: the
	// agent that answers has applied it.
	Index uint64 `json:"index"`
	// RestoredIndex is the Raft index the state was installed at.
	RestoredIndex uint64 `json:"restored_index"`
	// Snapshot is the header of the file restored, SHA256 its checksum.
	Snapshot SnapshotInfo `json:"snapshot"`
	SHA256   string       `json:"sha256"`
}

func (s *server) snapshotSave(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	info, payload, err := s.b.SaveSnapshot(r.Context())
	if err != nil {
		return err
	}
	file, err := EncodeSnapshot(info, payload)
	if err != nil {
		return err
	}
	s.logger.Info("snapshot saved", "index", info.Index, "term", info.Term, "bytes", len(file))
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.Itoa(len(file)))
	setIndex(w, info.Index)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(file)
	return nil
}

func (s *server) snapshotRestore(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	tooLargeErr := &statusError{http.StatusRequestEntityTooLarge, CodeBodyTooLarge, fmt.Sprintf("request body is larger than %d bytes, the most a snapshot file holds", MaxSnapshotFileBytes)}
	if r.ContentLength > MaxSnapshotFileBytes {
		return tooLargeErr
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxSnapshotFileBytes))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return tooLargeErr
	case err != nil:
		return badRequest(fmt.Sprintf("could not read the request body: %v", err))
	}
	file, err := DecodeSnapshot(data)
	if err != nil {
		return err
	}
	res, err := s.b.RestoreSnapshot(r.Context(), file)
	if err != nil {
		// The file is fine, but this cluster cannot open what it holds.
		if e := tokens.AsError(err); e.Code == tokens.CodeKeyMissing || e.Code == tokens.CodeSealBroken {
			return &statusError{http.StatusUnprocessableEntity, e.Code, e.Message}
		}
		return err
	}
	s.logger.Warn("snapshot restored: the state of every agent was replaced", "from_index", file.Info.Index, "restored_index", res.RestoredIndex, "sha256", file.SHA256)
	setIndex(w, res.Index)
	writeJSON(w, http.StatusOK, res)
	return nil
}
