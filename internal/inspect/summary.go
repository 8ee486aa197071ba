package inspect

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
)

// Summary writes what cfg runs, as `dtfleet validate` prints it after OK: the bus, each input
// with its services (and why an off service is off), each output.
func Summary(w io.Writer, cfg *config.Config) {
	fmt.Fprintln(w, "OK")
	if cfg.NATS.Embedded() {
		fmt.Fprintf(w, "nats: embedded server, store_dir %s, listen %s, replicas %d\n", cfg.NATS.StoreDir, cfg.NATS.Listen, cfg.NATS.Replicas)
	} else {
		fmt.Fprintf(w, "nats: %d server(s), replicas %d\n", len(cfg.NATS.URLs()), cfg.NATS.Replicas)
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Inputs)) {
		in := cfg.Inputs[name]
		if !in.IsEnabled() {
			fmt.Fprintf(w, "input %s: disabled\n", name)
			continue
		}
		fmt.Fprintf(w, "input %s: %s, %s requests/s\n", name, in.Credentials.Instance, strconv.FormatFloat(in.RequestsPerSecond, 'f', -1, 64))
		if in.TLS.InsecureSkipVerify {
			fmt.Fprintf(w, "  warning: tls.insecure_skip_verify is true: the appliance's certificate is not verified and the connection can be intercepted; prefer tls.ca_file\n")
		}
		if in.ServicesListed {
			fmt.Fprintf(w, "  services: only the ones listed under inputs.%s.services run; add a service there to collect it\n", name)
		} else {
			fmt.Fprintf(w, "  services: no services mapping, so all %d run with their defaults\n", len(config.Services))
		}
		for _, svc := range config.Services {
			s, ok := in.Services[svc]
			if !ok {
				continue
			}
			if !s.IsEnabled() {
				if s.Listed {
					fmt.Fprintf(w, "  %s: disabled (enabled: false)\n", svc)
				} else {
					fmt.Fprintf(w, "  %s: off (not listed under services)\n", svc)
				}
				continue
			}
			parts := []string{"tag " + s.Tag}
			if s.Snapshot {
				parts = append(parts, "snapshot")
			} else {
				parts = append(parts, "window "+shortDuration(s.Window))
			}
			parts = append(parts, "period "+shortDuration(s.Period))
			if svc == config.ServiceModelBreaches {
				parts = append(parts, "look-back "+shortDuration(s.LookBack))
			}
			if svc == config.ServiceStatus {
				parts = append(parts, "flatten "+strconv.FormatBool(s.FlattenStatus()))
			}
			if !s.Snapshot {
				if s.StartTime.IsZero() {
					parts = append(parts, "start now")
				} else {
					parts = append(parts, "start "+s.StartTime.UTC().Format(time.RFC3339))
				}
			}
			if s.Obfuscation != nil {
				parts = append(parts, fmt.Sprintf("obfuscation %d hashed/%d masked", len(s.Obfuscation.Hash), len(s.Obfuscation.Mask)))
			}
			fmt.Fprintf(w, "  %s: %s\n", svc, strings.Join(parts, ", "))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Outputs)) {
		o := cfg.Outputs[name]
		if !o.IsEnabled() {
			fmt.Fprintf(w, "output %s: %s, disabled\n", name, o.Type)
			continue
		}
		c := o.Config
		switch o.Type {
		case config.OutputDevoPlatform, config.OutputRelay:
			fmt.Fprintf(w, "output %s: %s %s:%d\n", name, o.Type, c.Address, c.Port)
		case config.OutputHTTP:
			fmt.Fprintf(w, "output %s: http %s, domain %s\n", name, c.URL, c.Domain)
		case config.OutputFile:
			fmt.Fprintf(w, "output %s: file %s\n", name, c.Path)
		default:
			fmt.Fprintf(w, "output %s: %s\n", name, o.Type)
		}
	}
}

// shortDuration prints whole minutes and hours without trailing zero units: 1h, 90m → 1h30m, 60s → 1m.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
