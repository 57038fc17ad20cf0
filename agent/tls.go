package agent

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"github.com/tokend/tokend/cluster"
)

// TLSServerName is the name every agent certificate must carry (a DNS SAN):
// agents check it in each other's certificates (cluster/tls.go).
const TLSServerName = cluster.TLSServerName

// EnvGossipKey is the environment variable that can hold the gossip key
// instead of --gossip-key, which shows in ps.
const EnvGossipKey = "TOKEND_GOSSIP_KEY"

// tlsOn reports whether TLS is configured; checkTLSFiles has checked that
// it is all or nothing.
func (c *Config) tlsOn() bool { return c.TLSCAFile != "" }

// checkTLSFiles requires the three TLS files together.
func (c *Config) checkTLSFiles() error {
	given := map[string]string{"--tls-ca-file": c.TLSCAFile, "--tls-cert-file": c.TLSCertFile, "--tls-key-file": c.TLSKeyFile}
	var missing []string
	for _, flag := range []string{"--tls-ca-file", "--tls-cert-file", "--tls-key-file"} {
		if given[flag] == "" {
			missing = append(missing, flag)
		}
	}
	if len(missing) == 0 || len(missing) == 3 {
		return nil
	}
	return fmt.Errorf("TLS needs --tls-ca-file, --tls-cert-file and --tls-key-file together: %s missing", strings.Join(missing, " and "))
}

// tlsSetup is TLS for the cluster (mutual, between agents) and for the
// TCP API.
type tlsSetup struct {
	cluster *cluster.TLS
	api     *tls.Config
}

// loadTLS reads the TLS files. Its errors name the file at fault.
func loadTLS(c *Config) (*tlsSetup, error) {
	if !c.tlsOn() {
		return nil, nil
	}
	caPEM, err := os.ReadFile(c.TLSCAFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca-file: %w", err)
	}
	cas := x509.NewCertPool()
	if !cas.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("--tls-ca-file %s holds no PEM certificate", c.TLSCAFile)
	}
	certPEM, err := os.ReadFile(c.TLSCertFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert-file: %w", err)
	}
	keyPEM, err := os.ReadFile(c.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-key-file: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert-file %s with --tls-key-file %s: %w", c.TLSCertFile, c.TLSKeyFile, err)
	}
	ct := &cluster.TLS{CAs: cas, Certificate: cert}
	if err := ct.Validate(); err != nil {
		return nil, fmt.Errorf("--tls-cert-file %s: %w", c.TLSCertFile, err)
	}
	// The TCP API, like Consul's with verify_incoming, requires a client
	// certificate from the CA: an agent's, or one made for people with
	// `tokend tls cert create --client`. Its ACL tokens still apply.
	clientAuth := tls.RequireAndVerifyClientCert
	if c.TLSAPIClientCertOptional {
		clientAuth = tls.VerifyClientCertIfGiven
	}
	api := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    cas,
		ClientAuth:   clientAuth,
	}
	return &tlsSetup{cluster: ct, api: api}, nil
}
