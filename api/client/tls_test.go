package client

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/agent"
	"github.com/tokend/tokend/internal/testutil"
)

// Every endpoint works over HTTPS with a client certificate, and the
// agent refuses a client without one.
func TestAgentTLS(t *testing.T) {
	pki := testutil.NewPKI(t)
	a := testutil.StartAgent(t, pki.Configure)
	cert, key := pki.Client()
	files := TLS{CAFile: pki.CAFile, CertFile: cert, KeyFile: key}

	c, err := New("https://"+a.HTTPAddr(), WithTLS(files))
	if err != nil {
		t.Fatal(err)
	}
	testEndpoints(t, c, "pool-https")

	// A bare host:port means https when TLS settings are given.
	c, err = New(a.HTTPAddr(), WithTLS(files))
	if err != nil || !strings.HasPrefix(c.base, "https://") {
		t.Fatalf("bare address with TLS: %v, %v", c, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Health(ctx); err != nil {
		t.Fatal(err)
	}
	// The socket stays plain HTTP, whatever the TLS settings.
	c, err = New("unix://"+a.SocketPath(), WithTLS(files))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Health(ctx); err != nil {
		t.Fatal(err)
	}

	for name, f := range map[string]TLS{
		"no client certificate":   {CAFile: pki.CAFile},
		"another CA's":            anotherCA(t, pki.CAFile),
		"without trusting the CA": {CertFile: cert, KeyFile: key},
	} {
		c, err := New("https://"+a.HTTPAddr(), WithTLS(f))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := c.Health(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("%s: Health = %v, want a certificate error", name, err)
		}
	}
}

// anotherCA is a client certificate of another CA, presented to an agent
// whose CA the client trusts.
func anotherCA(t *testing.T, caFile string) TLS {
	other := testutil.NewPKI(t)
	cert, key := other.Client()
	return TLS{CAFile: caFile, CertFile: cert, KeyFile: key}
}

func TestTLSSettingsErrors(t *testing.T) {
	pki := testutil.NewPKI(t)
	cert, key := pki.Client()
	for _, tc := range []struct {
		addr string
		tls  TLS
		want string
	}{
		{"http://127.0.0.1:1", TLS{CAFile: pki.CAFile}, "is plain HTTP"},
		{"https://127.0.0.1:1", TLS{CertFile: cert}, "without its key"},
		{"https://127.0.0.1:1", TLS{KeyFile: key}, "without its certificate"},
		{"https://127.0.0.1:1", TLS{CAFile: "/nonexistent/ca.pem"}, "/nonexistent/ca.pem"},
		{"https://127.0.0.1:1", TLS{CAFile: key}, "holds no PEM certificate"},
		{"https://127.0.0.1:1", TLS{CertFile: cert, KeyFile: pki.CAFile}, cert},
	} {
		if _, err := New(tc.addr, WithTLS(tc.tls)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%s, %+v) = %v, want an error with %q", tc.addr, tc.tls, err, tc.want)
		}
	}
}

func TestFromEnvTLS(t *testing.T) {
	pki := testutil.NewPKI(t)
	a := testutil.StartAgent(t, func(cfg *agent.Config) { pki.Configure(cfg) })
	cert, key := pki.Client()
	t.Setenv(EnvAddr, "")
	t.Setenv(EnvCACert, pki.CAFile)
	t.Setenv(EnvClientCert, cert)
	t.Setenv(EnvClientKey, key)
	c, err := FromEnv()
	if err != nil || c.Addr() != "https://127.0.0.1:8550" {
		t.Fatalf("FromEnv() without %s but with TLS = %v, %v; want https://127.0.0.1:8550", EnvAddr, c, err)
	}
	t.Setenv(EnvAddr, a.HTTPAddr())
	if c, err = FromEnv(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Health(ctx); err != nil {
		t.Fatalf("with the TLS variables: %v", err)
	}
}
