package metrics_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/fleet"
	"github.com/dtfleet/dtfleet/internal/fleet/fleettest"
	"github.com/dtfleet/dtfleet/internal/metrics"
)

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestRealPrometheus runs a real Prometheus server (Debian's prometheus package) that scrapes a
// running fleet with the project's rules file loaded, and checks through its query API that it
// scraped the fleet (up == 1), that the delivered events it stored equal the fake appliance's
// ground truth, and that every rule group loaded and evaluates without error.
func TestRealPrometheus(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus is not on PATH (Debian package prometheus; .ci/run installs it): skipped the real Prometheus test")
	}
	rules, err := filepath.Abs("../../deployments/prometheus/dtfleet-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	env := fleettest.NewEnv(t, 1)
	addrc := make(chan string, 1)
	reg := metrics.NewRegistry()
	f := fleettest.Start(t, fleet.Fleet{Config: env.Config,
		Deps:      fleet.Dependencies{Registerer: reg, Gatherer: reg},
		Overrides: fleet.Overrides{MetricsListen: "127.0.0.1:0"},
		Hooks:     fleet.Hooks{OnMetrics: func(a string) { addrc <- a }}})
	addr := <-addrc
	fleettest.WaitCaughtUp(t, f.Bus, env.Config, env.End, 3*time.Minute)

	dir := t.TempDir()
	cfg := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [%q]
scrape_configs:
  - job_name: dtfleet
    static_configs: [{targets: [%q]}]
`, rules, addr)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	web := freeAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "tsdb"), "--web.listen-address="+web)
	out, _ := os.Create(filepath.Join(dir, "prometheus.log"))
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		<-exited
	}()

	// query returns the values of an instant query's vector result.
	query := func(q string) ([]float64, error) {
		resp, err := http.Get("http://" + web + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var r struct {
			Status string
			Data   struct {
				Result []struct{ Value [2]any }
			}
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			return nil, err
		}
		var vs []float64
		for _, s := range r.Data.Result {
			str, _ := s.Value[1].(string)
			v, err := strconv.ParseFloat(str, 64)
			if err != nil {
				return nil, err
			}
			vs = append(vs, v)
		}
		return vs, nil
	}
	want := float64(len(env.Fake.Keys(config.ServiceModelBreaches)))
	checks := []struct {
		q    string
		want float64
	}{
		{`up{job="dtfleet"}`, 1},
		{`dtfleet_bus_up`, 1},
		{`dtfleet_lane_events_delivered_total{service="modelbreaches"}`, want},
		{`dtfleet_role_leader{role="shipper",lane="darktrace.modelbreaches"}`, 1},
		{`count(dtfleet_darktrace_request_duration_seconds_bucket) > bool 0`, 1},
	}
	for _, c := range checks {
		var last []float64
		var lastErr error
		for {
			last, lastErr = query(c.q)
			if lastErr == nil && len(last) == 1 && last[0] == c.want {
				break
			}
			select {
			case <-ctx.Done():
				log, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
				t.Fatalf("Prometheus: %s = %v (err %v), want %v\nprometheus log:\n%s", c.q, last, lastErr, c.want, log)
			case err := <-exited:
				log, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
				exited <- err
				t.Fatalf("prometheus exited: %v\n%s", err, log)
			case <-time.After(200 * time.Millisecond): // the poll interval
			}
		}
	}

	// Every rule group loaded and, once evaluated, reports no error.
	for {
		resp, err := http.Get("http://" + web + "/api/v1/rules")
		if err != nil {
			t.Fatal(err)
		}
		var r struct {
			Data struct {
				Groups []struct {
					Name  string
					Rules []struct {
						Name, Health, LastError string
					}
				}
			}
		}
		err = json.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		evaluated, n := true, 0
		for _, g := range r.Data.Groups {
			for _, rule := range g.Rules {
				n++
				switch rule.Health {
				case "ok":
				case "unknown":
					evaluated = false
				default:
					t.Errorf("rule %s/%s: health %s: %s", g.Name, rule.Name, rule.Health, rule.LastError)
				}
			}
		}
		if n > 0 && evaluated {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the rules were not all evaluated (%d loaded)", n)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
