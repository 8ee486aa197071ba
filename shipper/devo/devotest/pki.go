// Package devotest is a fake Devo for tests and demos: a syslog receiver on TLS (with client
// certificates, like Devo's cloud load balancers) and plain TCP (like the on-premise relay), and
// Devo's HTTP ingestion endpoint. It parses what it receives exactly as the wire format is
// documented, stores the events by tag, and can inject faults (resets, refusals, stalls, idle
// timeouts, rejected client certificates). It also generates a test PKI. It implements the wire
// format independently and does not import the sender it tests.
package devotest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// PKI is a set of PEM files for TLS tests, generated at run time with ECDSA P-256 keys. Every
// field but Dir is the path of one file in Dir.
type PKI struct {
	Dir string

	// CA is the test CA certificate (ca.crt): the "chain" file of a devo_platform output and the
	// client CA of the fake server.
	CA string
	// ServerCert and ServerKey are a server certificate from CA for 127.0.0.1, ::1 and localhost.
	ServerCert, ServerKey string
	// WrongNameServerCert and WrongNameServerKey are a server certificate from CA for the name
	// devo.invalid only: it passes chain verification but not host name verification.
	WrongNameServerCert, WrongNameServerKey string
	// ForeignServerCert and ForeignServerKey are a server certificate for 127.0.0.1, ::1 and
	// localhost from OtherCA.
	ForeignServerCert, ForeignServerKey string
	// ClientCert and ClientKey are a valid client (domain) certificate from CA.
	ClientCert, ClientKey string
	// ExpiredCert and ExpiredKey are a client certificate from CA that expired a day ago.
	ExpiredCert, ExpiredKey string
	// NotYetValidCert and NotYetValidKey are a client certificate from CA valid from tomorrow.
	NotYetValidCert, NotYetValidKey string
	// OtherCA is a second, unrelated CA.
	OtherCA string
	// OtherClientCert and OtherClientKey are a client certificate from OtherCA.
	OtherClientCert, OtherClientKey string
	// MismatchedKey is a private key that matches none of the certificates.
	MismatchedKey string
}

// NewPKI generates a test PKI and writes it under dir, which must exist.
func NewPKI(dir string) (*PKI, error) {
	now := time.Now()
	p := &PKI{Dir: dir}
	path := func(name string) string { return filepath.Join(dir, name) }

	ca, err := newCA("dtfleet test CA", now)
	if err != nil {
		return nil, err
	}
	other, err := newCA("dtfleet other CA", now)
	if err != nil {
		return nil, err
	}
	localIPs := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	specs := []struct {
		cert, key  *string
		name       string
		issuer     *authority
		server     bool
		dns        []string
		ips        []net.IP
		notBefore  time.Time
		notAfter   time.Time
		commonName string
	}{
		{&p.ServerCert, &p.ServerKey, "server", ca, true, []string{"localhost"}, localIPs, now.Add(-time.Hour), now.Add(24 * time.Hour), "localhost"},
		{&p.WrongNameServerCert, &p.WrongNameServerKey, "wrongname-server", ca, true, []string{"devo.invalid"}, nil, now.Add(-time.Hour), now.Add(24 * time.Hour), "devo.invalid"},
		{&p.ForeignServerCert, &p.ForeignServerKey, "foreign-server", other, true, []string{"localhost"}, localIPs, now.Add(-time.Hour), now.Add(24 * time.Hour), "localhost"},
		{&p.ClientCert, &p.ClientKey, "client", ca, false, nil, nil, now.Add(-time.Hour), now.Add(24 * time.Hour), "dtfleet-test-domain"},
		{&p.ExpiredCert, &p.ExpiredKey, "expired-client", ca, false, nil, nil, now.Add(-72 * time.Hour), now.Add(-24 * time.Hour), "dtfleet-expired-domain"},
		{&p.NotYetValidCert, &p.NotYetValidKey, "future-client", ca, false, nil, nil, now.Add(24 * time.Hour), now.Add(72 * time.Hour), "dtfleet-future-domain"},
		{&p.OtherClientCert, &p.OtherClientKey, "other-client", other, false, nil, nil, now.Add(-time.Hour), now.Add(24 * time.Hour), "dtfleet-other-domain"},
	}
	if err := writePEM(path("ca.crt"), "CERTIFICATE", ca.der, 0o644); err != nil {
		return nil, err
	}
	p.CA = path("ca.crt")
	if err := writePEM(path("other-ca.crt"), "CERTIFICATE", other.der, 0o644); err != nil {
		return nil, err
	}
	p.OtherCA = path("other-ca.crt")
	for i, sp := range specs {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generating the %s key: %w", sp.name, err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(100 + i)),
			Subject:      pkix.Name{CommonName: sp.commonName, Organization: []string{"dtfleet tests"}},
			NotBefore:    sp.notBefore,
			NotAfter:     sp.notAfter,
			KeyUsage:     x509.KeyUsageDigitalSignature,
			DNSNames:     sp.dns,
			IPAddresses:  sp.ips,
		}
		if sp.server {
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		} else {
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, sp.issuer.cert, key.Public(), sp.issuer.key)
		if err != nil {
			return nil, fmt.Errorf("creating the %s certificate: %w", sp.name, err)
		}
		*sp.cert, *sp.key = path(sp.name+".crt"), path(sp.name+".key")
		if err := writePEM(*sp.cert, "CERTIFICATE", der, 0o644); err != nil {
			return nil, err
		}
		if err := writeKey(*sp.key, key); err != nil {
			return nil, err
		}
	}
	mismatched, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the mismatched key: %w", err)
	}
	p.MismatchedKey = path("mismatched.key")
	if err := writeKey(p.MismatchedKey, mismatched); err != nil {
		return nil, err
	}
	return p, nil
}

// authority is a CA's certificate and key.
type authority struct {
	cert *x509.Certificate
	der  []byte
	key  crypto.Signer
}

func newCA(name string, now time.Time) (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the %s key: %w", name, err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return nil, fmt.Errorf("drawing a serial number: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"dtfleet tests"}},
		NotBefore:             now.Add(-2 * time.Hour * 24 * 7),
		NotAfter:              now.Add(2 * time.Hour * 24 * 7),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("creating the %s certificate: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing the %s certificate: %w", name, err)
	}
	return &authority{cert: cert, der: der, key: key}, nil
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encoding the key for %s: %w", path, err)
	}
	return writePEM(path, "PRIVATE KEY", der, 0o600)
}

func writePEM(path, blockType string, der []byte, mode os.FileMode) error {
	data := pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der})
	if err := os.WriteFile(path, data, mode); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
