package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// Mutual TLS between agents, as in Consul with verify_incoming,
// verify_outgoing and verify_server_hostname:
//
//   - Every agent certificate is signed by the cluster's CA and names
//     TLSServerName (a DNS SAN), whatever the agent's address: addresses
//     change, and gossip hands them around, so they prove nothing.
//   - A dialing agent verifies the chain and TLSServerName in the accepting
//     agent's certificate, and presents its own.
//   - An accepting agent requires a client certificate, verifies its chain
//     and, since the same CA signs certificates for people using the CLI
//     (client authentication only), also requires TLSServerName in it: only
//     agents may speak Raft or call another agent's node RPCs, which carry
//     keys and need no ACL token.
//
// The TLS handshake comes first on every connection and the protocol byte
// (protoRaft, protoRPC) follows inside it, so nothing at all is read in
// plaintext and there is no plaintext fallback: a plaintext peer's protocol
// byte is not a TLS record, and its connection is dropped. (Consul sends its
// byte before TLS so that one port can serve both; tokend never needs to.)

// TLSServerName is the name every agent certificate carries and every agent
// checks in its peer's.
const TLSServerName = "server.tokend"

// tlsMinVersion is TLS 1.3: both ends are tokend agents, so nothing older
// needs to be accepted.
const tlsMinVersion = tls.VersionTLS13

// TLS is what mutual TLS between agents needs.
type TLS struct {
	// CAs verify peers' certificates: the cluster's CA.
	CAs *x509.CertPool
	// Certificate is this agent's: signed by the CA, good for server and
	// client authentication, naming TLSServerName.
	Certificate tls.Certificate
}

// Validate checks that this agent's certificate is one its peers accept.
func (t *TLS) Validate() error {
	if t.CAs == nil {
		return errors.New("no CA certificates")
	}
	if len(t.Certificate.Certificate) == 0 {
		return errors.New("no certificate")
	}
	leaf := t.Certificate.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(t.Certificate.Certificate[0]); err != nil {
			return fmt.Errorf("parse the certificate: %w", err)
		}
	}
	intermediates := x509.NewCertPool()
	for _, der := range t.Certificate.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			intermediates.AddCert(c)
		}
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		_, err := leaf.Verify(x509.VerifyOptions{
			Roots:         t.CAs,
			Intermediates: intermediates,
			DNSName:       TLSServerName,
			KeyUsages:     []x509.ExtKeyUsage{usage},
		})
		if err != nil {
			return fmt.Errorf("the certificate is not an agent certificate of this CA (signed by the CA, for server and client authentication, naming %s; tokend tls cert create makes one): %w", TLSServerName, err)
		}
	}
	return nil
}

// serverConfig is for connections this agent accepts.
func (t *TLS) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion:       tlsMinVersion,
		Certificates:     []tls.Certificate{t.Certificate},
		ClientAuth:       tls.RequireAndVerifyClientCert,
		ClientCAs:        t.CAs,
		VerifyConnection: verifyAgentClient,
	}
}

// clientConfig is for connections this agent dials.
func (t *TLS) clientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tlsMinVersion,
		Certificates: []tls.Certificate{t.Certificate},
		RootCAs:      t.CAs,
		ServerName:   TLSServerName,
	}
}

// verifyAgentClient runs after the client's chain has been verified, and
// refuses a certificate that is not an agent's.
func verifyAgentClient(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no client certificate")
	}
	if err := cs.PeerCertificates[0].VerifyHostname(TLSServerName); err != nil {
		return fmt.Errorf("the client certificate is not an agent's: %w", err)
	}
	return nil
}
