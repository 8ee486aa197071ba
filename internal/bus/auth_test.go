package bus_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"github.com/dtfleet/dtfleet/internal/logtest"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/config"
)

// TestEmbeddedListenerRequiresCredentials proves that another local user, who cannot read the
// store directory, cannot connect to the embedded server's listener, while a process that reads
// the store's credentials (JoinStore) can; and that the credentials file is owner-only and
// reused across restarts.
func TestEmbeddedListenerRequiresCredentials(t *testing.T) {
	t.Parallel()
	store := t.TempDir()
	b, err := bus.Connect(t.Context(), config.NATS{StoreDir: store}, bus.Options{ListenOverride: "127.0.0.1:-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	path := filepath.Join(store, bus.AuthFile)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o600 {
		t.Errorf("%s has mode %#o, want 0600", bus.AuthFile, perm)
	}
	first, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	// Without credentials (another local user): refused.
	if nc, err := nats.Connect(b.ClientURL); err == nil {
		nc.Close()
		t.Fatal("a client without credentials connected to the embedded listener")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("connecting without credentials: %v, want an authorization violation", err)
	}
	// With a wrong password: refused too.
	if nc, err := nats.Connect(b.ClientURL, nats.UserInfo("dtfleet", "guess")); err == nil {
		nc.Close()
		t.Fatal("a client with a guessed password connected to the embedded listener")
	}
	// Through bus.Connect with no store to read: refused, with a hint and no password.
	_, joinErr := bus.Connect(t.Context(), config.NATS{URL: b.ClientURL, StoreDir: t.TempDir()}, bus.Options{})
	if joinErr == nil || !strings.Contains(joinErr.Error(), bus.AuthFile) {
		t.Fatalf("joining without the store's credentials: %v, want an error naming %s", joinErr, bus.AuthFile)
	}
	creds, err := bus.ReadCredentials(store)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(joinErr.Error(), creds.Password.Reveal()) || strings.Contains(fmt.Sprintf("%+v %#v", creds, creds), creds.Password.Reveal()) {
		t.Fatalf("the error or the printed credentials reveal the password: %v", joinErr)
	}
	// A role process that shares the store directory joins, explicitly or by the local rule.
	for name, opts := range map[string]struct {
		cfg  config.NATS
		opts bus.Options
	}{
		"JoinStore":         {config.NATS{URL: b.ClientURL}, bus.Options{JoinStore: store}},
		"local url + store": {config.NATS{URL: b.ClientURL, StoreDir: store}, bus.Options{}},
	} {
		cli, err := bus.Connect(t.Context(), opts.cfg, opts.opts)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		cli.Close()
	}
	b.Close()

	// A restart reuses the credentials.
	again, err := bus.Connect(t.Context(), config.NATS{StoreDir: store}, bus.Options{ListenOverride: "none"})
	if err != nil {
		t.Fatal(err)
	}
	again.Close()
	second, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, second) {
		t.Error("a restart replaced the credentials file; processes that read it before could no longer join")
	}
}

// TestReadCredentialsRefusesWideModes proves that credentials other users may read are refused,
// by a joining process and by the embedded server itself, with a message saying how to fix it.
func TestReadCredentialsRefusesWideModes(t *testing.T) {
	t.Parallel()
	store := t.TempDir()
	b, err := bus.Connect(t.Context(), config.NATS{StoreDir: store}, bus.Options{ListenOverride: "none"})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	path := filepath.Join(store, bus.AuthFile)
	for _, tc := range []struct {
		mode    os.FileMode
		wantErr bool
	}{{0o600, false}, {0o400, false}, {0o640, true}, {0o604, true}, {0o660, true}} {
		t.Run(fmt.Sprintf("%#o", tc.mode), func(t *testing.T) {
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			_, err := bus.ReadCredentials(store)
			if (err != nil) != tc.wantErr {
				t.Fatalf("ReadCredentials with mode %#o: %v, want error %v", tc.mode, err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "chmod 600") {
				t.Errorf("the error does not say how to fix it: %v", err)
			}
		})
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Connect(t.Context(), config.NATS{StoreDir: store}, bus.Options{ListenOverride: "none"}); err == nil {
		t.Fatal("the embedded server started with world-readable credentials")
	}
}

func TestNonLoopbackListenerWarns(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		listen string
		warn   bool
	}{{"127.0.0.1:-1", false}, {"0.0.0.0:-1", true}} {
		t.Run(tc.listen, func(t *testing.T) {
			var buf logtest.Buffer
			logger := slog.New(slog.NewTextHandler(&buf, nil))
			b, err := bus.Connect(t.Context(), config.NATS{StoreDir: t.TempDir()}, bus.Options{Logger: logger, ListenOverride: tc.listen})
			if err != nil {
				t.Fatal(err)
			}
			b.Close()
			if got := strings.Contains(buf.String(), "non-loopback address without TLS"); got != tc.warn {
				t.Fatalf("listen %s: warning logged %v, want %v; log:\n%s", tc.listen, got, tc.warn, buf.String())
			}
		})
	}
}

// selfSignedTLS returns a server TLS configuration with a certificate for 127.0.0.1 that no
// client trusts.
func selfSignedTLS(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "dtfleet-test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
}

// TestInsecureSkipVerify proves that nats.tls.insecure_skip_verify is honoured (a server whose
// certificate no CA vouches for is reached only with it) and that it is loudly logged.
func TestInsecureSkipVerify(t *testing.T) {
	t.Parallel()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		TLSConfig: selfSignedTLS(t), TLSTimeout: 5})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("the TLS server did not start")
	}
	url := fmt.Sprintf("tls://127.0.0.1:%d", srv.Addr().(*net.TCPAddr).Port)
	for _, tc := range []struct {
		insecure bool
		wantErr  bool
	}{{false, true}, {true, false}} {
		t.Run(fmt.Sprint("insecure=", tc.insecure), func(t *testing.T) {
			var buf logtest.Buffer
			logger := slog.New(slog.NewTextHandler(&buf, nil))
			cfg := config.NATS{URL: url, StoreDir: t.TempDir(), TLS: config.TLS{InsecureSkipVerify: tc.insecure}}
			b, err := bus.Connect(t.Context(), cfg, bus.Options{Logger: logger})
			if b != nil {
				b.Close()
			}
			if (err != nil) != tc.wantErr {
				t.Fatalf("Connect with insecure_skip_verify=%v: %v, want error %v", tc.insecure, err, tc.wantErr)
			}
			if warned := strings.Contains(buf.String(), "insecure_skip_verify is true"); warned != tc.insecure {
				t.Fatalf("warning logged %v, want %v; log:\n%s", warned, tc.insecure, buf.String())
			}
		})
	}
}
