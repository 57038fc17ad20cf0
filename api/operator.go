package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/tokend/tokend/tokens"
)

// keyring is one keyring's operations, the sealing keyring's or gossip's:
// the agent fans each out to every member, and the API handles both alike.
type keyring[L, C any] struct {
	s *server
	// name is what logs call it; keyHint says what a key to install looks
	// like.
	name, keyHint string
	list          func(context.Context) (L, error)
	install       func(context.Context, string) (C, error)
	use           func(context.Context, string, bool) (C, error)
	remove        func(context.Context, string) (C, error)
	// keyID names the key a change was about; index is the change's Raft
	// index, 0 when it was no Raft write.
	keyID func(C) string
	index func(C) uint64
}

func (s *server) sealingKeyring() keyring[Keyring, KeyringChange] {
	return keyring[Keyring, KeyringChange]{
		s: s, name: "keyring", keyHint: "a base64 key, as tokend keygen prints",
		list: s.b.Keyring, install: s.b.KeyringInstall, use: s.b.KeyringUse, remove: s.b.KeyringRemove,
		keyID: func(c KeyringChange) string { return c.KeyID },
		index: func(c KeyringChange) uint64 { return c.Index },
	}
}

func (s *server) gossipKeyring() keyring[GossipKeyring, GossipKeyringChange] {
	return keyring[GossipKeyring, GossipKeyringChange]{
		s: s, name: "gossip keyring", keyHint: "a base64 key of 16, 24 or 32 bytes, as tokend keygen prints",
		list: s.b.GossipKeyring, install: s.b.GossipKeyringInstall, use: s.b.GossipKeyringUse, remove: s.b.GossipKeyringRemove,
		keyID: func(c GossipKeyringChange) string { return c.KeyID },
		index: func(GossipKeyringChange) uint64 { return 0 },
	}
}

// keyringRoutes are a keyring's handlers.
type keyringRoutes struct{ list, install, use, remove handlerFunc }

func (k keyring[L, C]) routes() keyringRoutes {
	return keyringRoutes{list: k.listKeys, install: k.installKey, use: k.useKey, remove: k.removeKey}
}

func (k keyring[L, C]) listKeys(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	kr, err := k.list(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, kr)
	return nil
}

func (k keyring[L, C]) installKey(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	var req KeyringInstallRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	if req.Key == "" {
		return badRequest(`field "key" is required: ` + k.keyHint)
	}
	res, err := k.install(r.Context(), req.Key)
	return k.answer(w, res, err, "key installed on every agent")
}

func (k keyring[L, C]) useKey(w http.ResponseWriter, r *http.Request) error {
	id, err := pathKeyID(r)
	if err != nil {
		return err
	}
	if err := onlyParams(r, "force"); err != nil {
		return err
	}
	force, err := boolParam(r, "force")
	if err != nil {
		return err
	}
	res, err := k.use(r.Context(), id, force)
	return k.answer(w, res, err, "every agent now uses key")
}

func (k keyring[L, C]) removeKey(w http.ResponseWriter, r *http.Request) error {
	id, err := pathKeyID(r)
	if err != nil {
		return err
	}
	if err := onlyParams(r); err != nil {
		return err
	}
	res, err := k.remove(r.Context(), id)
	return k.answer(w, res, err, "key removed from every agent")
}

// answer writes a change, with its Raft index if it was a Raft write, and
// logs it by key id, never key.
func (k keyring[L, C]) answer(w http.ResponseWriter, res C, err error, what string) error {
	if err != nil {
		return err
	}
	k.s.logger.Info(k.name+": "+what, "key", k.keyID(res))
	if index := k.index(res); index > 0 {
		setIndex(w, index)
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// pathKeyID returns the key id in the URL path: 8 lowercase hex digits.
func pathKeyID(r *http.Request) (string, error) {
	id := r.PathValue("key")
	if !tokens.ValidKeyID(id) {
		return "", badRequest(fmt.Sprintf("key id %q is invalid: it is 8 lowercase hex digits, as tokend operator keyring list (or gossip-keyring list) shows", truncate(id)))
	}
	return id, nil
}
