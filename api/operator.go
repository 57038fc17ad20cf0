package api

import (
	"fmt"
	"net/http"

	"github.com/tokend/tokend/tokens"
)

func (s *server) keyringList(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	kr, err := s.b.Keyring(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, kr)
	return nil
}

func (s *server) keyringInstall(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	var req KeyringInstallRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	if req.Key == "" {
		return badRequest(`field "key" is required: a base64 key, as tokend keygen prints`)
	}
	res, err := s.b.KeyringInstall(r.Context(), req.Key)
	if err != nil {
		return err
	}
	s.logger.Info("keyring: key installed on every agent", "key", res.KeyID)
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (s *server) keyringUse(w http.ResponseWriter, r *http.Request) error {
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
	res, err := s.b.KeyringUse(r.Context(), id, force)
	if err != nil {
		return err
	}
	setIndex(w, res.Index)
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (s *server) keyringRemove(w http.ResponseWriter, r *http.Request) error {
	id, err := pathKeyID(r)
	if err != nil {
		return err
	}
	if err := onlyParams(r); err != nil {
		return err
	}
	res, err := s.b.KeyringRemove(r.Context(), id)
	if err != nil {
		return err
	}
	s.logger.Info("keyring: key removed from every agent", "key", res.KeyID)
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (s *server) gossipKeyringList(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	kr, err := s.b.GossipKeyring(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, kr)
	return nil
}

func (s *server) gossipKeyringInstall(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	var req KeyringInstallRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	if req.Key == "" {
		return badRequest(`field "key" is required: a base64 key of 16, 24 or 32 bytes, as tokend keygen prints`)
	}
	res, err := s.b.GossipKeyringInstall(r.Context(), req.Key)
	if err != nil {
		return err
	}
	s.logger.Info("gossip keyring: key installed on every agent", "key", res.KeyID)
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (s *server) gossipKeyringUse(w http.ResponseWriter, r *http.Request) error {
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
	res, err := s.b.GossipKeyringUse(r.Context(), id, force)
	if err != nil {
		return err
	}
	s.logger.Info("gossip keyring: every agent encrypts gossip with key", "key", res.KeyID)
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (s *server) gossipKeyringRemove(w http.ResponseWriter, r *http.Request) error {
	id, err := pathKeyID(r)
	if err != nil {
		return err
	}
	if err := onlyParams(r); err != nil {
		return err
	}
	res, err := s.b.GossipKeyringRemove(r.Context(), id)
	if err != nil {
		return err
	}
	s.logger.Info("gossip keyring: key removed from every agent", "key", res.KeyID)
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
