package main

import (
	"github.com/spf13/cobra"

	"github.com/dtfleet/dtfleet/internal/simulate"
)

func newDevoSinkCmd(g *globalFlags) *cobra.Command {
	f := &simulate.DevoSink{}
	cmd := &cobra.Command{
		Use:   "devo-sink",
		Short: "Run a fake Devo receiver that writes what it receives to one file per tag",
		Long:  help("devo-sink"),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger()
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			opts, err := f.Options()
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			if err := simulate.ServeDevoSink(cmd.Context(), opts, logger, cmd.OutOrStdout()); err != nil {
				return &exitError{code: 1, err: err}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.Listen, "listen", "", "syslog listener address, e.g. 127.0.0.1:6514 (TLS with --tls, else plain TCP)")
	fl.BoolVar(&f.TLS, "tls", false, "serve TLS on --listen and require client certificates from --ca")
	fl.StringVar(&f.CA, "ca", "", "PEM file of the CA that client certificates must chain to (with --tls)")
	fl.StringVar(&f.Cert, "cert", "", "PEM file of the server certificate (with --tls)")
	fl.StringVar(&f.Key, "key", "", "PEM file of the server key (with --tls)")
	fl.StringVar(&f.RelayListen, "relay-listen", "", "plain TCP syslog listener address, like the relay's 13000")
	fl.StringVar(&f.HTTPListen, "http-listen", "", "HTTP ingestion listener address")
	fl.StringVar(&f.HTTPToken, "http-token", "", "the only token the HTTP endpoint accepts (default: any)")
	fl.StringVar(&f.Out, "out", "", "directory that receives <tag>.log files (required)")
	fl.DurationVar(&f.IdleTimeout, "idle-timeout", 0, "close syslog connections idle this long (0: never)")
	return cmd
}
