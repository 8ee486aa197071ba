package darktrace

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
)

// writeKeyPair writes cert's certificate and private key as PEM files in dir.
func writeKeyPair(t *testing.T, dir, name string, cert tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestClientCertificate checks that tls.cert_file and tls.key_file present a client certificate
// to an appliance that requires mutual TLS, and that a half-configured pair is refused.
func TestClientCertificate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	serverCert, serverPEM, err := darktracetest.SelfSignedCert("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	clientCert, _, err := darktracetest.SelfSignedCert("dtfleet-client")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, serverPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := writeKeyPair(t, dir, "client", clientCert)

	srv := httptest.NewUnstartedServer(darktracetest.NewHandler(fakeOptions()))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, clientCert.Certificate[0]) {
				return errors.New("not the expected client certificate")
			}
			return nil
		}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()

	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr bool
	}{
		{"with the client certificate", func(c *Config) { c.CAFile, c.CertFile, c.KeyFile = caFile, certFile, keyFile }, false},
		{"without a client certificate", func(c *Config) { c.CAFile = caFile }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, srv.URL, nil, tt.mod)
			if err := c.Check(t.Context()); (err != nil) != tt.wantErr {
				t.Fatalf("Check: %v, want error %v", err, tt.wantErr)
			}
		})
	}

	for _, cfg := range []Config{
		{BaseURL: srv.URL, PublicToken: "a", PrivateToken: "b", CertFile: certFile},
		{BaseURL: srv.URL, PublicToken: "a", PrivateToken: "b", KeyFile: keyFile},
		{BaseURL: srv.URL, PublicToken: "a", PrivateToken: "b", CertFile: caFile, KeyFile: filepath.Join(dir, "missing.key")},
	} {
		if _, err := New(cfg); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "client certificate") {
			t.Errorf("New(cert %q, key %q) = %v, want an invalid client certificate error", cfg.CertFile, cfg.KeyFile, err)
		}
	}
}
