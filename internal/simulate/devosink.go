package simulate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/dtfleet/dtfleet/shipper/devo/devotest"
)

// DevoSink are the settings of the fake Devo receiver (the flags of `dtfleet devo-sink`).
type DevoSink struct {
	Listen      string // syslog listener: TLS with TLS set, plain TCP otherwise
	TLS         bool
	CA          string
	Cert        string
	Key         string
	RelayListen string
	HTTPListen  string
	HTTPToken   string
	Out         string // directory of the <tag>.log files
	IdleTimeout time.Duration
}

// ServeDevoSink runs the fake receiver of opts (from DevoSink.Options) until ctx ends. It prints
// one line per listener, "<kind> <address>", to out first.
func ServeDevoSink(ctx context.Context, opts devotest.Options, logger *slog.Logger, out io.Writer) error {
	opts.Logger = logger
	srv, err := devotest.NewServer(opts)
	if err != nil {
		return fmt.Errorf("starting devo-sink: %w", err)
	}
	for _, l := range []struct{ kind, addr string }{
		{"tls", srv.TLSAddr()}, {"relay", srv.RelayAddr()}, {"http", srv.HTTPURL()},
	} {
		if l.addr != "" {
			fmt.Fprintln(out, l.kind, l.addr)
		}
	}
	logger.Info("devo-sink running", "out", opts.Dir)
	<-ctx.Done()
	count := srv.Count()
	if err := srv.Close(); err != nil {
		return fmt.Errorf("stopping devo-sink: %w", err)
	}
	logger.Info("devo-sink stopped", "events", count, "malformed", srv.MalformedCount())
	return nil
}

// Options turns the settings into the fake receiver's options; an error names the flag at fault.
func (f *DevoSink) Options() (devotest.Options, error) {
	var opts devotest.Options
	if f.Out == "" {
		return opts, errors.New("devo-sink: --out is required")
	}
	if f.Listen == "" && f.RelayListen == "" && f.HTTPListen == "" {
		return opts, errors.New("devo-sink: give at least one of --listen, --relay-listen, --http-listen")
	}
	tlsFiles := f.CA != "" || f.Cert != "" || f.Key != ""
	switch {
	case f.TLS && (f.Listen == "" || f.CA == "" || f.Cert == "" || f.Key == ""):
		return opts, errors.New("devo-sink: --tls needs --listen, --ca, --cert and --key")
	case !f.TLS && tlsFiles:
		return opts, errors.New("devo-sink: --ca, --cert and --key need --tls")
	case !f.TLS && f.Listen != "" && f.RelayListen != "":
		return opts, errors.New("devo-sink: without --tls, --listen is already a plain TCP listener; drop --relay-listen")
	}
	opts = devotest.Options{
		HTTPAddr:    f.HTTPListen,
		HTTPToken:   f.HTTPToken,
		Dir:         f.Out,
		IdleTimeout: f.IdleTimeout,
		CountOnly:   true,
	}
	if f.TLS {
		opts.TLSAddr, opts.CertFile, opts.KeyFile, opts.ClientCAFile = f.Listen, f.Cert, f.Key, f.CA
		opts.RelayAddr = f.RelayListen
	} else {
		opts.RelayAddr = f.Listen
		if opts.RelayAddr == "" {
			opts.RelayAddr = f.RelayListen
		}
	}
	return opts, nil
}
