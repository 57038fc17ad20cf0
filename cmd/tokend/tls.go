package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/tokend/tokend/agent"
	"github.com/tokend/tokend/internal/certgen"
)

// Files `tokend tls` writes, as Consul's `consul tls` names its own.
const (
	caCertFile = "tokend-agent-ca.pem"
	caKeyFile  = "tokend-agent-ca-key.pem"
)

func newTLSCmd() *cobra.Command {
	cmd := groupCmd("tls", "Make a CA and certificates for mutual TLS between agents",
		groupCmd("ca", "Make the cluster's certificate authority", newTLSCACreateCmd()),
		groupCmd("cert", "Make certificates signed by the cluster's CA", newTLSCertCreateCmd()))
	cmd.Long = `Make what mutual TLS between agents needs, with ECDSA P-256 keys:

    tokend tls ca create                 # tokend-agent-ca.pem, tokend-agent-ca-key.pem
    tokend tls cert create               # tokend-agent-0.pem, tokend-agent-0-key.pem: one per agent
    tokend tls cert create --client      # tokend-client-0.pem, tokend-client-0-key.pem: for the CLI

Start each agent with --tls-ca-file tokend-agent-ca.pem and its own
--tls-cert-file and --tls-key-file. Agents check that each other's
certificates are signed by the CA and name ` + agent.TLSServerName + `; the TCP API requires a
client certificate signed by the CA. Keep the CA key off the agents' hosts.`
	return cmd
}

func newTLSCACreateCmd() *cobra.Command {
	var (
		dir  string
		days int
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Write a new CA: " + caCertFile + " and " + caKeyFile,
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			certPath, keyPath := filepath.Join(dir, caCertFile), filepath.Join(dir, caKeyFile)
			for _, p := range []string{certPath, keyPath} {
				if err := notExists(p); err != nil {
					return err
				}
			}
			var suffix [4]byte
			_, _ = rand.Read(suffix[:])
			ca, keyPEM, err := certgen.NewCA("tokend agent CA "+hex.EncodeToString(suffix[:]), days)
			if err != nil {
				return err
			}
			return writeNew(cmd.OutOrStdout(), certPath, ca.CertPEM, keyPath, keyPEM)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", ".", "directory to write the files in")
	cmd.Flags().IntVar(&days, "days", 1825, "days the CA is valid for")
	return cmd
}

func newTLSCertCreateCmd() *cobra.Command {
	var (
		dir, caPath, caKeyPath string
		days                   int
		client                 bool
		dnsNames               []string
		ips                    []net.IP
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Write a new agent certificate (or --client certificate) signed by the CA",
		Long: `Write a new certificate and key signed by the CA, as tokend-agent-N.pem and
tokend-agent-N-key.pem with the first N not taken; never overwrites a file.

An agent certificate is good for server and client authentication and names
` + agent.TLSServerName + `, localhost, 127.0.0.1 and ::1, plus --additional-dnsname and
--additional-ipaddress: add the names and addresses clients use to reach the
agent's HTTPS API. With --client, tokend-client-N.pem is for client
authentication only: for people using the CLI, never for agents.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if caPath == "" {
				caPath = filepath.Join(dir, caCertFile)
			}
			if caKeyPath == "" {
				caKeyPath = filepath.Join(dir, caKeyFile)
			}
			if client && (len(dnsNames) > 0 || len(ips) > 0) {
				return errors.New("--additional-dnsname and --additional-ipaddress are for agent certificates, not --client ones")
			}
			caPEM, err := os.ReadFile(caPath)
			if err != nil {
				return fmt.Errorf("read the CA certificate (tokend tls ca create makes one): %w", err)
			}
			caKeyPEM, err := os.ReadFile(caKeyPath)
			if err != nil {
				return fmt.Errorf("read the CA key: %w", err)
			}
			ca, err := certgen.ParseCA(caPEM, caKeyPEM)
			if err != nil {
				return fmt.Errorf("%s and %s: %w", caPath, caKeyPath, err)
			}
			o := certgen.Options{
				CommonName: agent.TLSServerName,
				DNSNames:   append([]string{agent.TLSServerName, "localhost"}, dnsNames...),
				IPs:        append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, ips...),
				Days:       days,
			}
			kind := "agent"
			if client {
				kind = "client"
				o = certgen.Options{CommonName: "client.tokend", DNSNames: []string{"client.tokend"}, Days: days, Client: true}
			}
			certPEM, keyPEM, err := ca.Sign(o)
			if err != nil {
				return err
			}
			for n := 0; ; n++ {
				certPath := filepath.Join(dir, fmt.Sprintf("tokend-%s-%d.pem", kind, n))
				keyPath := filepath.Join(dir, fmt.Sprintf("tokend-%s-%d-key.pem", kind, n))
				if notExists(certPath) != nil || notExists(keyPath) != nil {
					continue
				}
				return writeNew(cmd.OutOrStdout(), certPath, certPEM, keyPath, keyPEM)
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", ".", "directory to write the files in, and to find the CA in")
	f.StringVar(&caPath, "ca", "", "CA certificate (default <dir>/"+caCertFile+")")
	f.StringVar(&caKeyPath, "key", "", "CA key (default <dir>/"+caKeyFile+")")
	f.IntVar(&days, "days", 365, "days the certificate is valid for (never past the CA's expiry)")
	f.BoolVar(&client, "client", false, "make a client-only certificate, for the CLI")
	f.StringArrayVar(&dnsNames, "additional-dnsname", nil, "another DNS name for the agent's certificate; repeatable")
	f.IPSliceVar(&ips, "additional-ipaddress", nil, "another IP address for the agent's certificate; repeatable")
	return cmd
}

// notExists fails when path exists, or cannot be checked.
func notExists(path string) error {
	_, err := os.Lstat(path)
	switch {
	case err == nil:
		return fmt.Errorf("%s exists: refusing to overwrite it", path)
	case errors.Is(err, fs.ErrNotExist):
		return nil
	default:
		return err
	}
}

// writeNew writes a certificate (0644) and its key (0600), neither of
// which may exist yet.
func writeNew(out io.Writer, certPath string, certPEM []byte, keyPath string, keyPEM []byte) error {
	if err := writeExclusive(certPath, certPEM, 0o644); err != nil {
		return err
	}
	if err := writeExclusive(keyPath, keyPEM, 0o600); err != nil {
		os.Remove(certPath)
		return err
	}
	fmt.Fprintf(out, "==> Saved %s\n==> Saved %s\n", certPath, keyPath)
	return nil
}

func writeExclusive(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s exists: refusing to overwrite it", path)
		}
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(path, mode) // the umask may have taken bits away from a certificate
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}
