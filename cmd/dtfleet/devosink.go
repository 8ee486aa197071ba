package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/dtfleet/dtfleet/shipper/devo/devotest"
)

// devoSinkFlags are the devo-sink command's flags.
type devoSinkFlags struct {
	listen      string
	useTLS      bool
	ca          string
	cert        string
	key         string
	relayListen string
	httpListen  string
	httpToken   string
	out         string
	idleTimeout time.Duration
}

func newDevoSinkCmd(g *globalFlags) *cobra.Command {
	f := &devoSinkFlags{}
	cmd := &cobra.Command{
		Use:   "devo-sink",
		Short: "Run a fake Devo receiver that writes what it receives to one file per tag",
		Long: `devo-sink receives events the way Devo does and appends each event's message, one per line,
to DIR/<tag>.log. --listen is a syslog listener (TLS with client certificates from --ca with --tls,
plain TCP otherwise); --relay-listen adds a plain TCP listener like the on-premise relay and
--http-listen Devo's HTTP ingestion endpoint (/event/... and /stream/...). Each syslog frame may be
an LF-terminated line, an octet-counted frame or a gzip member. It prints one line per listener,
"<kind> <address>", then runs until interrupted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger()
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			opts, err := f.options()
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			opts.Logger = logger
			srv, err := devotest.NewServer(opts)
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("starting devo-sink: %w", err)}
			}
			out := cmd.OutOrStdout()
			for _, l := range []struct{ kind, addr string }{
				{"tls", srv.TLSAddr()}, {"relay", srv.RelayAddr()}, {"http", srv.HTTPURL()},
			} {
				if l.addr != "" {
					fmt.Fprintln(out, l.kind, l.addr)
				}
			}
			logger.Info("devo-sink running", "out", f.out)
			<-cmd.Context().Done()
			count := srv.Count()
			if err := srv.Close(); err != nil {
				return &exitError{code: 1, err: fmt.Errorf("stopping devo-sink: %w", err)}
			}
			logger.Info("devo-sink stopped", "events", count, "malformed", srv.MalformedCount())
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.listen, "listen", "", "syslog listener address, e.g. 127.0.0.1:6514 (TLS with --tls, else plain TCP)")
	fl.BoolVar(&f.useTLS, "tls", false, "serve TLS on --listen and require client certificates from --ca")
	fl.StringVar(&f.ca, "ca", "", "PEM file of the CA that client certificates must chain to (with --tls)")
	fl.StringVar(&f.cert, "cert", "", "PEM file of the server certificate (with --tls)")
	fl.StringVar(&f.key, "key", "", "PEM file of the server key (with --tls)")
	fl.StringVar(&f.relayListen, "relay-listen", "", "plain TCP syslog listener address, like the relay's 13000")
	fl.StringVar(&f.httpListen, "http-listen", "", "HTTP ingestion listener address")
	fl.StringVar(&f.httpToken, "http-token", "", "the only token the HTTP endpoint accepts (default: any)")
	fl.StringVar(&f.out, "out", "", "directory that receives <tag>.log files (required)")
	fl.DurationVar(&f.idleTimeout, "idle-timeout", 0, "close syslog connections idle this long (0: never)")
	return cmd
}

// options checks the flags and turns them into the fake server's options.
func (f *devoSinkFlags) options() (devotest.Options, error) {
	var opts devotest.Options
	if f.out == "" {
		return opts, errors.New("devo-sink: --out is required")
	}
	if f.listen == "" && f.relayListen == "" && f.httpListen == "" {
		return opts, errors.New("devo-sink: give at least one of --listen, --relay-listen, --http-listen")
	}
	tlsFiles := f.ca != "" || f.cert != "" || f.key != ""
	switch {
	case f.useTLS && (f.listen == "" || f.ca == "" || f.cert == "" || f.key == ""):
		return opts, errors.New("devo-sink: --tls needs --listen, --ca, --cert and --key")
	case !f.useTLS && tlsFiles:
		return opts, errors.New("devo-sink: --ca, --cert and --key need --tls")
	case !f.useTLS && f.listen != "" && f.relayListen != "":
		return opts, errors.New("devo-sink: without --tls, --listen is already a plain TCP listener; drop --relay-listen")
	}
	opts = devotest.Options{
		HTTPAddr:    f.httpListen,
		HTTPToken:   f.httpToken,
		Dir:         f.out,
		IdleTimeout: f.idleTimeout,
		CountOnly:   true,
	}
	if f.useTLS {
		opts.TLSAddr, opts.CertFile, opts.KeyFile, opts.ClientCAFile = f.listen, f.cert, f.key, f.ca
		opts.RelayAddr = f.relayListen
	} else {
		opts.RelayAddr = f.listen
		if opts.RelayAddr == "" {
			opts.RelayAddr = f.relayListen
		}
	}
	return opts, nil
}
