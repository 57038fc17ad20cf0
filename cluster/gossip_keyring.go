package cluster

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hashicorp/memberlist"

	"github.com/tokend/tokend/internal/atomicfile"
	"github.com/tokend/tokend/tokens"
)

// Gossip is encrypted with memberlist's keyring: messages are sealed with
// its primary key (AES-GCM) and opened with whichever key fits, so keys
// rotate online: install a new key on every agent, make it primary on every
// agent, remove the old one.
//
// memberlist decides whether to encrypt when it starts, from whether its
// keyring holds a key. An agent started without a gossip key therefore
// cannot start encrypting while it runs: its keyring operations fail, and
// turning encryption on means restarting every agent with a key.
//
// Each agent keeps its keys in <data-dir>/gossip-keyring (JSON, base64 keys,
// primary first, mode 0600), so a restart keeps a rotation. When that file
// exists it wins over Config.GossipKey, as Consul's serf keyring file wins
// over its encrypt setting.

const gossipKeyringFile = "gossip-keyring"

// GossipKeyID names a gossip key without revealing it: 8 hex digits of a
// hash of the key, the form of the sealing keyring's key ids.
func GossipKeyID(raw []byte) string {
	h := sha256.New()
	h.Write([]byte("tokend gossip key id v1\x00"))
	h.Write(raw)
	return hex.EncodeToString(h.Sum(nil)[:4])
}

// ParseGossipKey decodes a base64 gossip key of 16, 24 or 32 bytes (`tokend
// keygen` prints 32). The error never quotes the input.
func ParseGossipKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, tokens.Errorf(tokens.CodeInvalid, "a gossip key must be base64 (as `tokend keygen` prints): %d characters that do not decode", len(s))
	}
	if err := validGossipKey(raw); err != nil {
		return nil, err
	}
	return raw, nil
}

func validGossipKey(raw []byte) error {
	if memberlist.ValidateKey(raw) != nil {
		return tokens.Errorf(tokens.CodeInvalid, "a gossip key must be 16, 24 or 32 bytes, base64-encoded (tokend keygen prints 32), got %d bytes", len(raw))
	}
	return nil
}

// GossipKeyring is this agent's gossip keys, by id.
type GossipKeyring struct {
	// Keys are key ids, the primary first.
	Keys []string
	// Persisted says whether changes are saved in the data dir;
	// NotPersisted says why not.
	Persisted    bool
	NotPersisted string
}

func errGossipPlaintext() error {
	return tokens.Errorf(tokens.CodeConflict, "gossip encryption is off on this agent: it was started without a gossip key, and gossip cannot start encrypting while it runs. Restart every agent with the same --gossip-key to turn it on")
}

func (c *Cluster) gossipKeyringPath() string { return filepath.Join(c.cfg.DataDir, gossipKeyringFile) }

// loadGossipKeys returns the gossip keys to start with, primary first: the
// saved keyring, else the configured key (saved for next time), else none.
func (c *Cluster) loadGossipKeys() ([][]byte, error) {
	if c.cfg.DataDir != "" {
		path := c.gossipKeyringPath()
		keys, err := readGossipKeyring(path)
		switch {
		case err == nil:
			ids := gossipKeyIDs(keys)
			if c.cfg.GossipKey != nil && !slices.ContainsFunc(keys, func(k []byte) bool { return bytes.Equal(k, c.cfg.GossipKey) }) {
				c.logger.Warn("gossip encryption: the saved gossip keyring wins over the configured gossip key, which it does not hold; remove the file to start from the configured key",
					"path", path, "keys", ids, "configured", GossipKeyID(c.cfg.GossipKey))
			} else {
				c.logger.Info("gossip encryption: using the saved gossip keyring", "path", path, "keys", ids, "primary", ids[0])
			}
			return keys, nil
		case !errors.Is(err, fs.ErrNotExist):
			return nil, err
		}
	}
	if c.cfg.GossipKey == nil {
		return nil, nil
	}
	keys := [][]byte{c.cfg.GossipKey}
	if c.cfg.DataDir != "" {
		if err := writeGossipKeyring(c.gossipKeyringPath(), keys); err != nil {
			return nil, err
		}
	}
	c.logger.Info("gossip encryption: on", "primary", GossipKeyID(c.cfg.GossipKey))
	return keys, nil
}

func readGossipKeyring(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var encoded []string
	if err := json.Unmarshal(b, &encoded); err != nil {
		return nil, fmt.Errorf("gossip keyring %s is not a JSON list of base64 keys: %v", path, err)
	}
	if len(encoded) == 0 {
		return nil, fmt.Errorf("gossip keyring %s holds no keys: remove it to start without gossip encryption, or from the configured key", path)
	}
	keys := make([][]byte, len(encoded))
	for i, s := range encoded {
		if keys[i], err = ParseGossipKey(s); err != nil {
			return nil, fmt.Errorf("gossip keyring %s, key %d: %v", path, i+1, err)
		}
	}
	return keys, nil
}

func writeGossipKeyring(path string, keys [][]byte) error {
	encoded := make([]string, len(keys))
	for i, k := range keys {
		encoded[i] = base64.StdEncoding.EncodeToString(k)
	}
	b, _ := json.Marshal(encoded)
	if err := atomicfile.Write(path, append(b, '\n')); err != nil {
		return fmt.Errorf("save gossip keyring: %w", err)
	}
	return nil
}

func gossipKeyIDs(keys [][]byte) []string {
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = GossipKeyID(k)
	}
	return ids
}

// GossipEncrypted reports whether this agent encrypts gossip.
func (c *Cluster) GossipEncrypted() bool { return c.gossipKeys != nil }

// GossipKeyring lists this agent's gossip keys.
func (c *Cluster) GossipKeyring() (GossipKeyring, error) {
	if c.gossipKeys == nil {
		return GossipKeyring{}, errGossipPlaintext()
	}
	c.gossipKeysMu.Lock()
	defer c.gossipKeysMu.Unlock()
	return c.gossipKeyringStatus(), nil
}

func (c *Cluster) gossipKeyringStatus() GossipKeyring {
	kr := GossipKeyring{Keys: gossipKeyIDs(c.gossipKeys.GetKeys()), Persisted: c.cfg.DataDir != ""}
	if !kr.Persisted {
		kr.NotPersisted = "the agent has no data dir: a restart starts from its configured gossip key"
	}
	return kr
}

// changeGossipKeys makes a change to the keyring and saves it, undoing the
// change if it cannot be saved.
func (c *Cluster) changeGossipKeys(change func(kr *memberlist.Keyring) error) (GossipKeyring, error) {
	if c.gossipKeys == nil {
		return GossipKeyring{}, errGossipPlaintext()
	}
	c.gossipKeysMu.Lock()
	defer c.gossipKeysMu.Unlock()
	// GetKeys hands out memberlist's own slice, which RemoveKey edits.
	before := slices.Clone(c.gossipKeys.GetKeys())
	if err := change(c.gossipKeys); err != nil {
		return GossipKeyring{}, err
	}
	after := c.gossipKeys.GetKeys()
	if c.cfg.DataDir != "" && !slices.EqualFunc(before, after, bytes.Equal) {
		if err := writeGossipKeyring(c.gossipKeyringPath(), after); err != nil {
			c.restoreGossipKeys(before)
			return GossipKeyring{}, tokens.Errorf(tokens.CodeUnavailable, "%v; the change was undone", err)
		}
	}
	return c.gossipKeyringStatus(), nil
}

// restoreGossipKeys puts the keyring back to keys, primary first.
func (c *Cluster) restoreGossipKeys(keys [][]byte) {
	for _, k := range keys {
		_ = c.gossipKeys.AddKey(k)
	}
	_ = c.gossipKeys.UseKey(keys[0])
	for _, k := range c.gossipKeys.GetKeys() {
		if !slices.ContainsFunc(keys, func(o []byte) bool { return bytes.Equal(o, k) }) {
			_ = c.gossipKeys.RemoveKey(k)
		}
	}
}

// gossipKey returns the installed key with id, or nil.
func gossipKey(kr *memberlist.Keyring, id string) []byte {
	for _, k := range kr.GetKeys() {
		if GossipKeyID(k) == id {
			return k
		}
	}
	return nil
}

// InstallGossipKey adds a key to this agent's gossip keyring: gossip sealed
// with it can be opened from now on.
func (c *Cluster) InstallGossipKey(raw []byte) (GossipKeyring, error) {
	if err := validGossipKey(raw); err != nil {
		return GossipKeyring{}, err
	}
	return c.changeGossipKeys(func(kr *memberlist.Keyring) error {
		if gossipKey(kr, GossipKeyID(raw)) == nil {
			c.logger.Info("gossip keyring: key installed", "key", GossipKeyID(raw))
		}
		return kr.AddKey(bytes.Clone(raw))
	})
}

// UseGossipKey makes the installed key id this agent's primary gossip key,
// which seals everything it gossips from now on.
func (c *Cluster) UseGossipKey(id string) (GossipKeyring, error) {
	return c.changeGossipKeys(func(kr *memberlist.Keyring) error {
		k := gossipKey(kr, id)
		if k == nil {
			return tokens.Errorf(tokens.CodeConflict, "gossip key %s is not installed on this agent: install it first", id)
		}
		if err := kr.UseKey(k); err != nil {
			return err
		}
		c.logger.Info("gossip keyring: primary key is now", "key", id)
		return nil
	})
}

// RemoveGossipKey removes key id from this agent's gossip keyring. Removing
// a key that is not there succeeds; the primary key cannot be removed.
func (c *Cluster) RemoveGossipKey(id string) (GossipKeyring, error) {
	return c.changeGossipKeys(func(kr *memberlist.Keyring) error {
		k := gossipKey(kr, id)
		if k == nil {
			return nil
		}
		if bytes.Equal(k, kr.GetPrimaryKey()) {
			return tokens.Errorf(tokens.CodeConflict, "gossip key %s is this agent's primary key: use another key first", id)
		}
		if err := kr.RemoveKey(k); err != nil {
			return err
		}
		c.logger.Info("gossip keyring: key removed", "key", id)
		return nil
	})
}
