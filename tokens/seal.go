package tokens

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"strings"
)

// KeySize is the length of a keyring key: AES-256.
const KeySize = 32

// Sealed is a secret encrypted under a keyring key. It is what the replicated
// state holds, so the Raft log, snapshots and data directory see ciphertext
// only. Layout: sealMagic, sealVersion, 4-byte key id, 12-byte nonce,
// AES-256-GCM ciphertext and tag. The magic byte 0xF5 never occurs in UTF-8,
// so a sealed value can never pass for a plaintext token.
type Sealed []byte

const (
	sealMagic   byte = 0xF5
	sealVersion byte = 1
	keyIDLen         = 4
	sealHeader       = 2 + keyIDLen
	nonceLen         = 12
	// SealOverhead is how many bytes sealing adds to a value.
	SealOverhead = sealHeader + nonceLen + 16
)

// String names the key, which is not secret, and hides the rest.
func (s Sealed) String() string {
	if s.Legacy() {
		return redacted
	}
	if id, err := s.KeyID(); err == nil {
		return "[sealed:" + id + "]"
	}
	return "[sealed]"
}

func (s Sealed) GoString() string           { return s.String() }
func (s Sealed) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, s.String()) }

// KeyID returns the id of the key s was sealed with.
func (s Sealed) KeyID() (string, error) {
	if err := s.Check(); err != nil {
		return "", err
	}
	return hex.EncodeToString(s[2:sealHeader]), nil
}

// SealedWith reports whether s is well formed and sealed with the key id,
// as KeyID would say, without allocating.
func (s Sealed) SealedWith(id string) bool {
	if s.Check() != nil || len(id) != 2*keyIDLen {
		return false
	}
	var buf [2 * keyIDLen]byte
	hex.Encode(buf[:], s[2:sealHeader])
	return string(buf[:]) == id
}

// Legacy reports whether s holds a plaintext value: state written before
// tokend sealed secrets. Such values stay readable, and the leader seals
// them (see the agent's resealer).
func (s Sealed) Legacy() bool { return len(s) > 0 && s[0] != sealMagic }

// Check reports whether s is well formed. It cannot tell whether s opens:
// only a keyring holding its key can.
func (s Sealed) Check() error {
	switch {
	case len(s) == 0:
		return invalidf("sealed value is empty")
	case s[0] != sealMagic:
		return invalidf("value is not sealed: the agent must seal secrets before they are replicated")
	case len(s) < SealOverhead:
		return invalidf("sealed value is truncated (%d bytes)", len(s))
	case s[1] != sealVersion:
		return invalidf("sealed value has version %d; this agent reads version %d", s[1], sealVersion)
	}
	return nil
}

// Keyring holds the keys that seal and open secrets. It is immutable: With
// and Without return new keyrings. Every agent of a cluster needs every key
// its state was sealed with.
type Keyring struct {
	keys []*sealKey // keys[0] is this agent's default sealing key
}

type sealKey struct {
	id  string
	raw []byte
	// aead seals; fp keys fingerprints. Both are derived from raw, so
	// neither use of the key weakens the other.
	aead cipher.AEAD
	fp   []byte
}

func newSealKey(raw []byte) (*sealKey, error) {
	if len(raw) != KeySize {
		return nil, invalidf("an encryption key must be %d bytes (base64 of 32 random bytes, as `tokend keygen` prints), got %d", KeySize, len(raw))
	}
	derive := func(info string, n int) []byte {
		b, err := hkdf.Key(sha256.New, raw, nil, info, n)
		if err != nil {
			panic(err) // only for lengths hkdf cannot produce
		}
		return b
	}
	block, err := aes.NewCipher(derive("tokend seal v1", KeySize))
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sealKey{
		id:   hex.EncodeToString(derive("tokend key id v1", keyIDLen)),
		raw:  bytes.Clone(raw),
		aead: aead,
		fp:   derive("tokend fingerprint v1", 32),
	}, nil
}

// GenerateKey returns a new random key, base64-encoded.
func GenerateKey() string {
	var b [KeySize]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return base64.StdEncoding.EncodeToString(b[:])
}

// ParseKey decodes a base64 key. The error never quotes the input: it may
// be a key with a typo.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, invalidf("an encryption key must be base64 (as `tokend keygen` prints): %d characters that do not decode", len(s))
	}
	if len(raw) != KeySize {
		return nil, invalidf("an encryption key must be %d bytes (base64 of 32 random bytes, as `tokend keygen` prints), got %d", KeySize, len(raw))
	}
	return raw, nil
}

// KeyID returns the id of a raw key: derived from it, so a wrong key has a
// different id and is caught by id, before any decryption fails.
func KeyID(raw []byte) (string, error) {
	k, err := newSealKey(raw)
	if err != nil {
		return "", err
	}
	return k.id, nil
}

// ValidKeyID reports whether id has the form of a key id: 8 lowercase hex
// digits.
func ValidKeyID(id string) bool {
	if len(id) != 2*keyIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// NewKeyring returns a keyring of raw keys; the first is the default
// sealing key.
func NewKeyring(raw ...[]byte) (*Keyring, error) {
	kr := &Keyring{}
	for _, r := range raw {
		next, _, err := kr.With(r)
		if err != nil {
			return nil, err
		}
		kr = next
	}
	if len(kr.keys) == 0 {
		return nil, invalidf("a keyring needs at least one key")
	}
	return kr, nil
}

// With returns the keyring with raw added last, and raw's id. Adding a key
// the keyring holds is not an error.
func (k *Keyring) With(raw []byte) (*Keyring, string, error) {
	nk, err := newSealKey(raw)
	if err != nil {
		return nil, "", err
	}
	if old := k.key(nk.id); old != nil {
		if !hmac.Equal(old.raw, nk.raw) {
			return nil, "", Errorf(CodeConflict, "another key with id %s is installed", nk.id)
		}
		return k, nk.id, nil
	}
	return &Keyring{keys: append(slices.Clone(k.keys), nk)}, nk.id, nil
}

// Without returns the keyring without key id.
func (k *Keyring) Without(id string) (*Keyring, error) {
	if k.key(id) == nil {
		return nil, Errorf(CodeNotFound, "no key with id %s is installed", id)
	}
	if len(k.keys) == 1 {
		return nil, Errorf(CodeConflict, "key %s is the only key: install another first", id)
	}
	return &Keyring{keys: slices.DeleteFunc(slices.Clone(k.keys), func(s *sealKey) bool { return s.id == id })}, nil
}

// Preferring returns the keyring with id first, as the default sealing key.
func (k *Keyring) Preferring(id string) (*Keyring, error) {
	i := slices.IndexFunc(k.keys, func(s *sealKey) bool { return s.id == id })
	if i < 0 {
		return nil, Errorf(CodeNotFound, "no key with id %s is installed", id)
	}
	keys := append([]*sealKey{k.keys[i]}, slices.Delete(slices.Clone(k.keys), i, i+1)...)
	return &Keyring{keys: keys}, nil
}

// Default is the id of the key this agent seals with when the cluster has
// not chosen one.
func (k *Keyring) Default() string { return k.keys[0].id }

// IDs returns the ids of every key, the default first.
func (k *Keyring) IDs() []string {
	ids := make([]string, len(k.keys))
	for i, s := range k.keys {
		ids[i] = s.id
	}
	return ids
}

// Has reports whether the keyring holds key id.
func (k *Keyring) Has(id string) bool { return k.key(id) != nil }

// Encode returns every key in base64, the default first, for the keyring
// file.
func (k *Keyring) Encode() []string {
	out := make([]string, len(k.keys))
	for i, s := range k.keys {
		out[i] = base64.StdEncoding.EncodeToString(s.raw)
	}
	return out
}

func (k *Keyring) key(id string) *sealKey {
	for _, s := range k.keys {
		if s.id == id {
			return s
		}
	}
	return nil
}

func (k *Keyring) keyFor(id string) (*sealKey, error) {
	if s := k.key(id); s != nil {
		return s, nil
	}
	return nil, Errorf(CodeKeyMissing, "this agent's keyring has no key %s: install it (tokend operator keyring install) or start the agent with the cluster's key", id)
}

// Seal encrypts plain under key id. aad binds the result to where it is
// stored (a token, a pool's provider), so a sealed value moved elsewhere
// does not open.
func (k *Keyring) Seal(id string, plain Secret, aad string) (Sealed, error) {
	s, err := k.keyFor(id)
	if err != nil {
		return nil, err
	}
	out := make([]byte, sealHeader+nonceLen, SealOverhead+len(plain))
	out[0], out[1] = sealMagic, sealVersion
	if _, err := hex.Decode(out[2:sealHeader], []byte(s.id)); err != nil {
		return nil, err
	}
	_, _ = rand.Read(out[sealHeader:]) // crypto/rand.Read never fails on Linux
	return s.aead.Seal(out, out[sealHeader:], plain, sealAAD(out[:sealHeader], aad)), nil
}

// Open decrypts s. A value that was altered, sealed for another place or
// under a different key with the same id fails.
func (k *Keyring) Open(s Sealed, aad string) (Secret, error) {
	id, err := s.KeyID()
	if err != nil {
		return nil, err
	}
	key, err := k.keyFor(id)
	if err != nil {
		return nil, err
	}
	nonce, ct := s[sealHeader:sealHeader+nonceLen], s[sealHeader+nonceLen:]
	plain, err := key.aead.Open(nil, nonce, ct, sealAAD(s[:sealHeader], aad))
	if err != nil {
		return nil, Errorf(CodeSealBroken, "a sealed value under key %s does not open: it was altered or belongs elsewhere", id)
	}
	return Secret(plain), nil
}

// sealAAD authenticates the header with the place, so that neither the key
// id nor the version can be swapped.
func sealAAD(header []byte, aad string) []byte {
	return append(bytes.Clone(header), aad...)
}

// Fingerprint identifies value without revealing it: a keyed HMAC under key
// id, prefixed by the id, so that equal values are found without comparing
// secrets, and a stolen data directory does not allow guessing them.
func (k *Keyring) Fingerprint(id string, value Secret) (string, error) {
	s, err := k.keyFor(id)
	if err != nil {
		return "", err
	}
	m := hmac.New(sha256.New, s.fp)
	m.Write(value)
	return s.id + ":" + hex.EncodeToString(m.Sum(nil)[:16]), nil
}

// TokenAAD is where a token's value is sealed for.
func TokenAAD(pool, id string) string { return "token/" + pool + "/" + id }

// ProviderAAD is where a pool's provider credentials are sealed for.
func ProviderAAD(pool string) string { return "provider/" + pool }
