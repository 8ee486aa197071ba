package devo

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"
)

// Certificate problems NewOutput reports; each error also names the file(s) involved.
var (
	ErrCertExpired     = errors.New("certificate has expired")
	ErrCertNotYetValid = errors.New("certificate is not valid yet")
	ErrKeyMismatch     = errors.New("private key does not match the certificate")
	ErrCertUntrusted   = errors.New("certificate does not verify against the chain")
	ErrBadPEM          = errors.New("no usable PEM data")
	// errChainMismatch is the verify_hostname: false check's failure (Go's own verification
	// reports a *tls.CertificateVerificationError instead).
	errChainMismatch = errors.New("verifying the server certificate against the chain")
)

// credentials are a devo_platform output's loaded TLS material.
type credentials struct {
	cert  tls.Certificate
	chain *x509.CertPool
}

// loadCredentials reads the chain, certificate and key files, and checks that the key matches the
// certificate, that the certificate is valid at now, and that it verifies against the chain.
func loadCredentials(chainFile, certFile, keyFile string, now time.Time) (*credentials, error) {
	for _, f := range []struct{ key, path string }{{"chain", chainFile}, {"cert", certFile}, {"key", keyFile}} {
		if f.path == "" {
			return nil, fmt.Errorf("%w: %s is required for a devo_platform output", ErrBadConfig, f.key)
		}
	}
	chainCerts, err := readCertificates(chainFile, "chain")
	if err != nil {
		return nil, err
	}
	leafChain, err := readCertificates(certFile, "cert")
	if err != nil {
		return nil, err
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("reading cert file %s: %w", certFile, err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("reading key file %s: %w", keyFile, err)
	}
	if err := checkPrivateKey(keyPEM); err != nil {
		return nil, fmt.Errorf("key file %s: %w", keyFile, err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("cert file %s and key file %s: %w (%v)", certFile, keyFile, ErrKeyMismatch, err)
	}
	leaf := leafChain[0]
	switch {
	case now.After(leaf.NotAfter):
		return nil, fmt.Errorf("cert file %s: %w: it was valid from %s to %s", certFile, ErrCertExpired,
			leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return nil, fmt.Errorf("cert file %s: %w: it is valid from %s to %s", certFile, ErrCertNotYetValid,
			leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	pool := x509.NewCertPool()
	for _, c := range chainCerts {
		pool.AddCert(c)
	}
	inter := x509.NewCertPool()
	for _, c := range leafChain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, fmt.Errorf("cert file %s against chain file %s: %w: %v", certFile, chainFile, ErrCertUntrusted, err)
	}
	return &credentials{cert: pair, chain: pool}, nil
}

// readCertificates parses every CERTIFICATE block of a PEM file; what names the file in errors.
func readCertificates(path, what string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s file %s: %w", what, path, err)
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing %s file %s: %w", what, path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s file %s: %w: it holds no PEM certificate", what, path, ErrBadPEM)
	}
	return certs, nil
}

// checkPrivateKey reports whether keyPEM holds a private key Go can use.
func checkPrivateKey(keyPEM []byte) error {
	for {
		var block *pem.Block
		block, keyPEM = pem.Decode(keyPEM)
		if block == nil {
			return fmt.Errorf("%w: it holds no PEM private key", ErrBadPEM)
		}
		switch block.Type {
		case "PRIVATE KEY":
			_, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			return wrapKeyErr(err)
		case "RSA PRIVATE KEY":
			_, err := x509.ParsePKCS1PrivateKey(block.Bytes)
			return wrapKeyErr(err)
		case "EC PRIVATE KEY":
			_, err := x509.ParseECPrivateKey(block.Bytes)
			return wrapKeyErr(err)
		}
	}
}

func wrapKeyErr(err error) error {
	if err != nil {
		return fmt.Errorf("parsing the private key: %w", err)
	}
	return nil
}

// clientTLSConfig builds the TLS client configuration of a devo_platform output: TLS 1.2+, the
// client certificate, only the chain as roots, and the host name checked unless verifyHostname is
// false, in which case the server's chain is still verified against the chain file.
func clientTLSConfig(cr *credentials, serverName string, verifyHostname bool) *tls.Config {
	conf := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		Certificates:       []tls.Certificate{cr.cert},
		RootCAs:            cr.chain,
		ServerName:         serverName,
		ClientSessionCache: tls.NewLRUClientSessionCache(16),
	}
	if !verifyHostname {
		// Go's verification includes the host name; skip it and verify the chain ourselves. The
		// callback runs on every handshake, resumed ones included.
		conf.InsecureSkipVerify = true
		conf.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the server sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
				Roots:         cr.chain,
				Intermediates: inter,
				KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			}); err != nil {
				return fmt.Errorf("%w: %w", errChainMismatch, err)
			}
			return nil
		}
	}
	return conf
}
