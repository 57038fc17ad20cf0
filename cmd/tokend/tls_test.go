package main

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tokend/tokend/agent"
	"github.com/tokend/tokend/api/client"
	"github.com/tokend/tokend/internal/testutil"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s holds no PEM", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// tokend tls makes a CA, agent certificates and a client certificate that
// an agent and the CLI accept: the agent serves HTTPS with the agent
// certificate and the CLI reaches it with the client certificate, by flags
// or variables, and not without one.
func TestTLSCommands(t *testing.T) {
	dir := t.TempDir()
	in := "--dir=" + dir
	p := func(name string) string { return filepath.Join(dir, name) }

	out := mustRun(t, "", "tls", "ca", "create", in)
	if !strings.Contains(out, p("tokend-agent-ca.pem")) || !strings.Contains(out, p("tokend-agent-ca-key.pem")) {
		t.Fatalf("ca create printed %q", out)
	}
	mustFail(t, "", []string{"tls", "ca", "create", in}, "exists: refusing to overwrite")
	if m := mode(t, p("tokend-agent-ca-key.pem")); m != 0o600 {
		t.Fatalf("CA key mode %v", m)
	}
	mustRun(t, "", "tls", "cert", "create", in, "--additional-dnsname=node0.example", "--additional-ipaddress=10.0.0.7", "--additional-ipaddress=10.0.0.8")
	mustRun(t, "", "tls", "cert", "create", in)
	mustRun(t, "", "tls", "cert", "create", in, "--client")
	mustFail(t, "", []string{"tls", "cert", "create", in, "--client", "--additional-dnsname=x"}, "not --client")
	mustFail(t, "", []string{"tls", "cert", "create", "--dir=" + t.TempDir()}, "tokend tls ca create")

	ca := readCert(t, p("tokend-agent-ca.pem"))
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, name := range []string{"tokend-agent-0", "tokend-agent-1", "tokend-client-0"} {
		if m := mode(t, p(name+"-key.pem")); m != 0o600 {
			t.Fatalf("%s key mode %v", name, m)
		}
	}
	a0 := readCert(t, p("tokend-agent-0.pem"))
	if !slices.Equal(a0.DNSNames, []string{agent.TLSServerName, "localhost", "node0.example"}) ||
		!slices.ContainsFunc(a0.IPAddresses, func(ip net.IP) bool { return ip.Equal(net.ParseIP("10.0.0.8")) }) ||
		!slices.Equal(a0.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Fatalf("agent certificate: DNS %v IPs %v usage %v", a0.DNSNames, a0.IPAddresses, a0.ExtKeyUsage)
	}
	c0 := readCert(t, p("tokend-client-0.pem"))
	if !slices.Equal(c0.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || slices.Contains(c0.DNSNames, agent.TLSServerName) {
		t.Fatalf("client certificate: DNS %v usage %v", c0.DNSNames, c0.ExtKeyUsage)
	}
	for _, c := range []*x509.Certificate{a0, c0} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("%s does not verify against the CA: %v", c.Subject, err)
		}
	}

	// A client certificate is no agent's.
	cfg := testutil.NodeConfig(t, "n1", t.TempDir(), t.TempDir())
	cfg.TLSCAFile, cfg.TLSCertFile, cfg.TLSKeyFile = p("tokend-agent-ca.pem"), p("tokend-client-0.pem"), p("tokend-client-0-key.pem")
	if a, err := agent.New(cfg); err == nil {
		_ = a.Shutdown(t.Context())
		t.Fatal("an agent started with a client certificate")
	}

	a := testutil.StartAgent(t, func(cfg *agent.Config) {
		cfg.TLSCAFile, cfg.TLSCertFile, cfg.TLSKeyFile = p("tokend-agent-ca.pem"), p("tokend-agent-1.pem"), p("tokend-agent-1-key.pem")
	})
	if !a.TLS() {
		t.Fatal("the agent runs without TLS")
	}
	addr := "--addr=https://" + a.HTTPAddr()
	flags := []string{addr, "--ca-file=" + p("tokend-agent-ca.pem"), "--client-cert=" + p("tokend-client-0.pem"), "--client-key=" + p("tokend-client-0-key.pem")}
	mustRun(t, "", append([]string{"pool", "apply", writeFile(t, "p.json", `{"name":"p"}`)}, flags...)...)
	mustRun(t, "tls-secret\n", append([]string{"token", "add", "p", "--value-stdin"}, flags...)...)
	if got := mustRun(t, "", append([]string{"token", "get", "p", "--raw"}, flags...)...); got != "tls-secret\n" {
		t.Fatalf("token get printed %q", got)
	}
	mustFail(t, "", []string{"token", "get", "p", addr, "--ca-file=" + p("tokend-agent-ca.pem")}, "certificate")
	mustFail(t, "", []string{"token", "get", "p", "--addr=http://" + a.HTTPAddr(), "--ca-file=" + p("tokend-agent-ca.pem")}, "use https://")

	// The same with the variables, and a bare address.
	t.Setenv(client.EnvAddr, a.HTTPAddr())
	t.Setenv(client.EnvCACert, p("tokend-agent-ca.pem"))
	t.Setenv(client.EnvClientCert, p("tokend-client-0.pem"))
	t.Setenv(client.EnvClientKey, p("tokend-client-0-key.pem"))
	if got := mustRun(t, "", "token", "get", "p", "--raw"); got != "tls-secret\n" {
		t.Fatalf("token get with the variables printed %q", got)
	}
}
