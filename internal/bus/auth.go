package bus

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/dtfleet/dtfleet/internal/config"
)

// AuthFile is the file in nats.store_dir that holds the client credentials the embedded server
// requires on its listener. `dtfleet run` creates it once, owner-only (0600), and reuses it;
// every process that joins that server through its listener reads it from the same store
// directory. Another local user, who cannot read the file, cannot connect, so cannot read or
// purge the streams.
const AuthFile = "dtfleet-client.auth"

// embeddedUser is the user name of the generated credentials; the password is the secret.
const embeddedUser = "dtfleet"

// Credentials are a user name and password for the embedded server's listener.
type Credentials struct {
	User     string        `json:"user"`
	Password config.Secret `json:"-"`
}

// credentialsFile is the on-disk form of Credentials. Password is a plain string here, and only
// here: config.Secret refuses to marshal its value.
type credentialsFile struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

// embeddedCredentials returns the credentials stored in dir, creating them first when dir has
// none. The file is created exclusively with mode 0600, so two processes racing to create it
// agree on one (the loser reads the winner's).
func embeddedCredentials(dir string) (Credentials, error) {
	path := filepath.Join(dir, AuthFile)
	c, err := ReadCredentials(dir)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return c, err
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return Credentials{}, fmt.Errorf("generating the embedded server's credentials: %w", err)
	}
	data, err := json.Marshal(credentialsFile{User: embeddedUser, Password: base64.RawURLEncoding.EncodeToString(raw[:])})
	if err != nil {
		return Credentials{}, fmt.Errorf("encoding the embedded server's credentials: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return ReadCredentials(dir)
	}
	if err != nil {
		return Credentials{}, fmt.Errorf("creating the embedded server's credentials %s: %w", path, err)
	}
	_, werr := f.Write(append(data, '\n'))
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		_ = os.Remove(path)
		return Credentials{}, fmt.Errorf("writing the embedded server's credentials %s: %w", path, err)
	}
	return ReadCredentials(dir)
}

// ReadCredentials reads the credentials of the embedded server on store directory dir (AuthFile).
// A file that other users may read or write is refused, as ssh refuses a private key: its
// password may already be known. The error wraps fs.ErrNotExist when dir has no such file (no
// `dtfleet run` ever ran on it). The password never appears in an error.
func ReadCredentials(dir string) (Credentials, error) {
	path := filepath.Join(dir, AuthFile)
	f, err := os.Open(path)
	if err != nil {
		return Credentials{}, fmt.Errorf("reading the embedded server's credentials: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Credentials{}, fmt.Errorf("reading the embedded server's credentials: %w", err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return Credentials{}, fmt.Errorf("the embedded server's credentials %s have mode %#o: other users may read them; "+
			"run `chmod 600 %s` (or delete the file to generate new credentials at the next `dtfleet run`)", path, perm, path)
	}
	var cf credentialsFile
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cf); err != nil {
		// The decoder's message may quote a piece of the file; it is not passed on.
		return Credentials{}, fmt.Errorf("the embedded server's credentials %s are not valid (delete the file to generate new ones at the next `dtfleet run`)", path)
	}
	if cf.User == "" || cf.Password == "" {
		return Credentials{}, fmt.Errorf("the embedded server's credentials %s lack a user or password (delete the file to generate new ones at the next `dtfleet run`)", path)
	}
	return Credentials{User: cf.User, Password: config.Secret(cf.Password)}, nil
}

// option returns the client option that presents c.
func (c Credentials) option() nats.Option { return nats.UserInfo(c.User, c.Password.Reveal()) }

// isLocalHost reports whether host (no port) is this machine: a loopback address, "localhost"
// or the unspecified address (a listener on 0.0.0.0 is reached on loopback).
func isLocalHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && (ip.IsLoopback() || ip.IsUnspecified())
}

// isLoopback reports whether host (no port) accepts connections only from this machine.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// localURLs reports whether every server of a comma-separated NATS URL list is on this machine.
func localURLs(list string) bool {
	for p := range strings.SplitSeq(list, ",") {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || !isLocalHost(u.Hostname()) {
			return false
		}
	}
	return true
}

// hasAuth reports whether cfg names a way to authenticate to an external server.
func hasAuth(cfg config.NATS) bool {
	return cfg.CredsFile != "" || cfg.User != "" || cfg.NKeyFile != "" || strings.Contains(cfg.URL, "@")
}

// warnInsecure logs, loudly, that certificate verification is off for the NATS connection.
func warnInsecure(logger *slog.Logger) {
	logger.Warn("SECURITY: nats.tls.insecure_skip_verify is true: the NATS server's certificate is NOT verified, " +
		"so anyone on the network path can impersonate it and read the credentials and every event; use it only to test, " +
		"and set nats.tls.ca_file instead")
}

// tlsOptions returns the client TLS options of cfg.TLS.
func tlsOptions(t config.TLS) []nats.Option {
	var o []nats.Option
	if t.InsecureSkipVerify {
		// Secure must come first: it replaces the TLS configuration, which RootCAs and
		// ClientCert only complete (through callbacks run at connect time).
		o = append(o, nats.Secure(&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})) //nolint:gosec // the user asked for it, and is warned
	}
	if t.CAFile != "" {
		o = append(o, nats.RootCAs(t.CAFile))
	}
	if t.CertFile != "" || t.KeyFile != "" {
		o = append(o, nats.ClientCert(t.CertFile, t.KeyFile))
	}
	return o
}
