package testutil

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/tokend/tokend/agent"
	"github.com/tokend/tokend/internal/certgen"
)

// PKI is a test CA that writes certificates to files, as `tokend tls`
// does.
type PKI struct {
	t      TB
	CA     *certgen.CA
	CAFile string
	dir    string
	mu     sync.Mutex
	n      int
}

// NewPKI makes a new CA.
func NewPKI(t TB) *PKI {
	t.Helper()
	ca, _, err := certgen.NewCA("tokend test CA", 1)
	if err != nil {
		t.Fatalf("new CA: %v", err)
	}
	p := &PKI{t: t, CA: ca, dir: t.TempDir()}
	p.CAFile = filepath.Join(p.dir, "ca.pem")
	p.write(p.CAFile, ca.CertPEM, 0o644)
	return p
}

func (p *PKI) write(path string, b []byte, mode os.FileMode) {
	p.t.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		p.t.Fatalf("write %s: %v", path, err)
	}
}

// sign writes a new certificate and key and returns their files.
func (p *PKI) sign(kind string, o certgen.Options) (certFile, keyFile string) {
	p.t.Helper()
	certPEM, keyPEM, err := p.CA.Sign(o)
	if err != nil {
		p.t.Fatalf("sign %s certificate: %v", kind, err)
	}
	p.mu.Lock()
	p.n++
	n := p.n
	p.mu.Unlock()
	certFile = filepath.Join(p.dir, fmt.Sprintf("%s-%d.pem", kind, n))
	keyFile = filepath.Join(p.dir, fmt.Sprintf("%s-%d-key.pem", kind, n))
	p.write(certFile, certPEM, 0o644)
	p.write(keyFile, keyPEM, 0o600)
	return certFile, keyFile
}

// Agent writes a new agent certificate, as `tokend tls cert create` makes.
func (p *PKI) Agent() (certFile, keyFile string) {
	return p.sign("agent", certgen.Options{
		CommonName: agent.TLSServerName,
		DNSNames:   []string{agent.TLSServerName, "localhost"},
		IPs:        []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		Days:       1,
	})
}

// Client writes a new client-only certificate, as `tokend tls cert create
// --client` makes.
func (p *PKI) Client() (certFile, keyFile string) {
	return p.sign("client", certgen.Options{CommonName: "client.tokend", DNSNames: []string{"client.tokend"}, Days: 1, Client: true})
}

// Configure gives cfg a new agent certificate of this CA.
func (p *PKI) Configure(cfg *agent.Config) {
	cfg.TLSCAFile = p.CAFile
	cfg.TLSCertFile, cfg.TLSKeyFile = p.Agent()
}

// ClientConfig is TLS for an API client that trusts this CA and presents
// the certificate in certFile and keyFile, none when they are empty.
func (p *PKI) ClientConfig(certFile, keyFile string) *tls.Config {
	p.t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(p.CA.Cert)
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			p.t.Fatalf("load client certificate: %v", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg
}

// TCPS returns a client for the API at addr (host:port) over TLS.
func TCPS(addr string, cfg *tls.Config) *HTTP {
	return &HTTP{base: "https://" + addr, client: &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true},
	}}
}
