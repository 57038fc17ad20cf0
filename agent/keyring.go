package agent

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tokend/tokend/fsm"
	"github.com/tokend/tokend/internal/atomicfile"
	"github.com/tokend/tokend/tokens"
)

// EnvEncryptKey is the environment variable that can hold the keyring key
// instead of a file.
const EnvEncryptKey = "TOKEND_ENCRYPT_KEY"

// keyring holds this agent's sealing keys. Every secret is sealed before it
// enters a Raft command and opened only where it leaves the process (a
// fetch, a provider call, a probe).
type keyring struct {
	kr atomic.Pointer[tokens.Keyring]
	// file is where the keys live and where installed keys are saved; empty
	// when they came from the environment or were made up for --dev.
	file   string
	logger hclog.Logger
	mu     sync.Mutex // serializes changes
	// lastMissing is what watchKeys last found missing ([]string).
	lastMissing atomic.Value

	// cache holds opened token values, per token version.
	cacheMu sync.RWMutex
	cache   map[tokenKey]openedValue
}

type openedValue struct {
	modifyIndex uint64
	plain       tokens.Secret
}

// loadKeyring builds the keyring from the key file or the key given in the
// environment; a dev agent without either gets a random key.
func loadKeyring(cfg *Config) (*keyring, error) {
	k := &keyring{logger: cfg.Logger.Named("keyring"), cache: map[tokenKey]openedValue{}}
	var raw [][]byte
	switch {
	case cfg.EncryptKeyFile != "" && cfg.EncryptKey != "":
		return nil, fmt.Errorf("both --encrypt-key-file and %s are set: give the keyring one way", EnvEncryptKey)
	case cfg.EncryptKeyFile != "":
		keys, err := readKeyFile(cfg.EncryptKeyFile, k.logger)
		if err != nil {
			return nil, err
		}
		raw, k.file = keys, cfg.EncryptKeyFile
	case cfg.EncryptKey != "":
		key, err := tokens.ParseKey(cfg.EncryptKey)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", EnvEncryptKey, err)
		}
		raw = [][]byte{key}
	case cfg.Dev:
		key, _ := tokens.ParseKey(tokens.GenerateKey())
		raw = [][]byte{key}
	default:
		return nil, fmt.Errorf("no encryption key: every agent of a cluster needs the same key to seal and open secrets. " +
			"Create one with `tokend keygen > keyring; chmod 600 keyring` and start every agent with --encrypt-key-file keyring (or " + EnvEncryptKey + ")")
	}
	kr, err := tokens.NewKeyring(raw...)
	if err != nil {
		return nil, err
	}
	k.kr.Store(kr)
	return k, nil
}

// readKeyFile reads one base64 key per line; blank lines and lines starting
// with # are skipped. The first key is this agent's default.
func readKeyFile(path string, logger hclog.Logger) ([][]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("encrypt key file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		logger.Warn("the key file can be read by other users: chmod 600 it", "path", path, "mode", fi.Mode().Perm().String())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("encrypt key file: %w", err)
	}
	var keys [][]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, err := tokens.ParseKey(line)
		if err != nil {
			return nil, fmt.Errorf("encrypt key file %s, line %d: %w", path, n, err)
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("encrypt key file %s holds no key: put the output of `tokend keygen` in it", path)
	}
	return keys, nil
}

// writeKeyFile replaces path with keys, atomically and readable by its owner
// only.
func writeKeyFile(path string, keys []string) error {
	content := "# tokend keyring: one base64 key per line; the first seals new secrets until the cluster chooses one.\n" + strings.Join(keys, "\n") + "\n"
	return atomicfile.Write(path, []byte(content))
}

func (k *keyring) load() *tokens.Keyring { return k.kr.Load() }

// sealingKey is the id of the key new secrets are sealed with: the one the
// cluster chose, or this agent's default until it has chosen.
func (k *keyring) sealingKey(s *fsm.State) (string, error) {
	kr := k.load()
	p := s.Keyring().Primary
	if p == "" {
		return kr.Default(), nil
	}
	if !kr.Has(p) {
		return "", tokens.Errorf(tokens.CodeKeyMissing, "the cluster seals new secrets with key %s, which this agent does not hold: install it with `tokend operator keyring install`", p)
	}
	return p, nil
}

// sealValue seals a token's value and fingerprints it, for the state s.
func (k *keyring) sealValue(s *fsm.State, pool, id string, plain tokens.Secret) (tokens.Sealed, string, error) {
	key, err := k.sealingKey(s)
	if err != nil {
		return nil, "", err
	}
	return k.sealValueWith(key, pool, id, plain)
}

func (k *keyring) sealValueWith(key, pool, id string, plain tokens.Secret) (tokens.Sealed, string, error) {
	kr := k.load()
	sealed, err := kr.Seal(key, plain, tokens.TokenAAD(pool, id))
	if err != nil {
		return nil, "", err
	}
	fp, err := kr.Fingerprint(key, plain)
	return sealed, fp, err
}

// sealSpec seals a provider spec's credentials.
func (k *keyring) sealSpec(s *fsm.State, pool string, spec tokens.ProviderSpec) (tokens.ProviderSpec, error) {
	key, err := k.sealingKey(s)
	if err != nil {
		return tokens.ProviderSpec{}, err
	}
	return k.sealSpecWith(key, pool, spec)
}

func (k *keyring) sealSpecWith(key, pool string, spec tokens.ProviderSpec) (tokens.ProviderSpec, error) {
	kr := k.load()
	return spec.MapSecrets(func(v tokens.Secret) (tokens.Secret, error) {
		sealed, err := kr.Seal(key, v, tokens.ProviderAAD(pool))
		return tokens.Secret(sealed), err
	})
}

// openSpec opens a provider spec's credentials, to build the provider.
func (k *keyring) openSpec(pool string, spec tokens.ProviderSpec) (tokens.ProviderSpec, error) {
	return spec.MapSecrets(func(v tokens.Secret) (tokens.Secret, error) {
		return k.open(tokens.Sealed(v), tokens.ProviderAAD(pool))
	})
}

// open opens a sealed value; a value written before tokend sealed values is
// its own plaintext.
func (k *keyring) open(s tokens.Sealed, aad string) (tokens.Secret, error) {
	if s.Legacy() {
		return tokens.Secret(s), nil
	}
	return k.load().Open(s, aad)
}

// openToken opens t's value, from the cache when this version of t was
// opened before.
func (k *keyring) openToken(t *tokens.Token) (tokens.Secret, error) {
	key := tokenKey{t.Pool, t.ID}
	k.cacheMu.RLock()
	o, ok := k.cache[key]
	k.cacheMu.RUnlock()
	if ok && o.modifyIndex == t.ModifyIndex {
		return o.plain, nil
	}
	plain, err := k.open(t.Value, tokens.TokenAAD(t.Pool, t.ID))
	if err != nil {
		return nil, err
	}
	k.cacheMu.Lock()
	if cur, ok := k.cache[key]; !ok || cur.modifyIndex < t.ModifyIndex {
		k.cache[key] = openedValue{modifyIndex: t.ModifyIndex, plain: plain}
	}
	k.cacheMu.Unlock()
	return plain, nil
}

// prune drops opened values of tokens that are gone or have changed.
func (k *keyring) prune(s *fsm.State) {
	k.cacheMu.Lock()
	defer k.cacheMu.Unlock()
	for key, o := range k.cache {
		if t, ok := s.Token(key.pool, key.id); !ok || t.ModifyIndex != o.modifyIndex {
			delete(k.cache, key)
		}
	}
}

// missing returns the ids of keys that s needs and this agent lacks: the
// cluster's sealing key and every key a secret is sealed with.
func (k *keyring) missing(s *fsm.State) []string {
	kr := k.load()
	var out []string
	if p := s.Keyring().Primary; p != "" && !kr.Has(p) {
		out = append(out, p)
	}
	for id := range s.KeyUsage() {
		if id != "" && !kr.Has(id) && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// missingNow is what the last check found missing.
func (k *keyring) missingNow() []string {
	if m, ok := k.lastMissing.Load().([]string); ok {
		return m
	}
	return nil
}

// watchKeys checks, whenever the state changes, that this agent holds every
// key it needs. An agent that joined with empty state and finds that the
// cluster's secrets need a key it lacks stops, as it would have at start-up
// had it held that state: a wrong key never goes unnoticed. Once it has
// served, it keeps serving what it can open and reports the missing keys in
// its health and logs.
func (a *Agent) watchKeys(ctx context.Context) {
	checkedAt := ^uint64(0)
	var keys *tokens.Keyring
	served := false
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		state, applied, kr := a.fsm.State(), a.fsm.AppliedIndex(), a.keys.load()
		if applied != checkedAt || kr != keys {
			checkedAt, keys = applied, kr
			missing := a.keys.missing(state)
			if len(missing) > 0 && !served {
				a.errCh <- errMissingKeys(missing, kr.IDs())
				return
			}
			if len(missing) > 0 && !slices.Equal(missing, a.keys.missingNow()) {
				a.logger.Error(errMissingKeys(missing, kr.IDs()).Error())
			}
			a.keys.lastMissing.Store(missing)
			if state.Keyring().Primary != "" {
				served = true
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// errMissingKeys says which keys are missing and what to do.
func errMissingKeys(ids, have []string) error {
	return fmt.Errorf("the cluster's secrets are sealed with key %s, which this agent's keyring (%s) does not hold: "+
		"start it with the cluster's key (--encrypt-key-file or %s)", strings.Join(ids, ", "), strings.Join(have, ", "), EnvEncryptKey)
}

// change replaces the keyring with what f makes of it, saving it to the key
// file first: a change that cannot be saved is not made.
func (k *keyring) change(f func(*tokens.Keyring) (*tokens.Keyring, error)) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	next, err := f(k.load())
	if err != nil {
		return err
	}
	if k.file != "" {
		if err := writeKeyFile(k.file, next.Encode()); err != nil {
			return tokens.Errorf(tokens.CodeUnavailable, "save the keyring to %s: %v", k.file, err)
		}
	}
	k.kr.Store(next)
	return nil
}

// persisted says whether changes survive a restart, and if not why.
func (k *keyring) persisted() (bool, string) {
	if k.file != "" {
		return true, ""
	}
	return false, "the keyring came from " + EnvEncryptKey + " or --dev: changes last until the agent restarts, so update the variable before then"
}
