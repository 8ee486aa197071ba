package deployments

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"

	"github.com/dtfleet/dtfleet/internal/config"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// contractMetrics are the metric names dtfleet exports (the contract of issue 11): fleet-wide
// lane and lease series read from NATS at each scrape, and per-process series.
var contractMetrics = []string{
	"dtfleet_lane_planned_slots",
	"dtfleet_lane_delivered_slots",
	"dtfleet_lane_backlog_slots",
	"dtfleet_lane_pending_publish_slots",
	"dtfleet_lane_lag_seconds",
	"dtfleet_lane_events_delivered_total",
	"dtfleet_lane_duplicates_dropped_total",
	"dtfleet_lane_failed_slots_passed_total",
	"dtfleet_lane_failed_slots",
	"dtfleet_workers",
	"dtfleet_leader",
	"dtfleet_bus_up",
	"dtfleet_darktrace_request_duration_seconds",
	"dtfleet_darktrace_retries_total",
	"dtfleet_worker_slots_total",
	"dtfleet_worker_events_received_total",
	"dtfleet_devo_lines_sent_total",
	"dtfleet_devo_bytes_sent_total",
	"dtfleet_devo_batches_confirmed_total",
	"dtfleet_devo_reconnects_total",
	"dtfleet_devo_confirm_duration_seconds",
	"dtfleet_jetstream_consumer_pending",
	"dtfleet_role_leader",
}

// histograms are the contract metrics that are histograms: their _bucket, _count and _sum series
// may be named in queries.
var histograms = []string{"dtfleet_darktrace_request_duration_seconds", "dtfleet_devo_confirm_duration_seconds"}

var metricName = regexp.MustCompile(`\bdtfleet_[a-z0-9_]+`)

// metricsIn returns the contract metrics a PromQL expression names, and the dtfleet_ names it
// uses that are not in the contract.
func metricsIn(expr string) (known, unknown []string) {
	for _, name := range metricName.FindAllString(expr, -1) {
		base := name
		for _, h := range histograms {
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				if name == h+suffix {
					base = h
				}
			}
		}
		if slices.Contains(contractMetrics, base) {
			known = append(known, base)
		} else {
			unknown = append(unknown, name)
		}
	}
	return known, unknown
}

func TestMetricsIn(t *testing.T) {
	t.Parallel()
	tests := []struct {
		expr           string
		known, unknown []string
	}{
		{`max(dtfleet_lane_lag_seconds) > 3600`, []string{"dtfleet_lane_lag_seconds"}, nil},
		{`rate(dtfleet_devo_confirm_duration_seconds_bucket[5m])`, []string{"dtfleet_devo_confirm_duration_seconds"}, nil},
		{`rate(dtfleet_devo_lines_sent_total_bucket[5m])`, nil, []string{"dtfleet_devo_lines_sent_total_bucket"}},
		{`up == 0`, nil, nil},
		{`dtfleet_lag > 1`, nil, []string{"dtfleet_lag"}},
	}
	for _, tt := range tests {
		known, unknown := metricsIn(tt.expr)
		if !slices.Equal(known, tt.known) || !slices.Equal(unknown, tt.unknown) {
			t.Errorf("metricsIn(%q) = %v, %v; want %v, %v", tt.expr, known, unknown, tt.known, tt.unknown)
		}
	}
}

// testEnv is the environment the example configurations expand; any other ${NAME} without a
// default fails validation, so a configuration cannot depend on an undocumented variable.
var testEnv = map[string]string{
	"DT_PUBLIC_TOKEN":       "test-public-token",
	"DT_PRIVATE_TOKEN":      "test-private-token",
	"DTFLEET_NATS_PASSWORD": "test-nats-password",
}

func lookupTestEnv(k string) (string, bool) { v, ok := testEnv[k]; return v, ok }

// TestDtfleetConfigs validates every example dtfleet configuration in deployments/ the way
// `dtfleet validate` does: the top-level examples, the compose configuration and the one inside
// the Kubernetes ConfigMap.
func TestDtfleetConfigs(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "compose/config.yaml")
	if len(files) < 3 {
		t.Fatalf("expected config.example.yaml, config.cluster.yaml and compose/config.yaml, found %v", files)
	}
	for _, f := range files {
		if _, err := config.Load(f, config.LoadOptions{LookupEnv: lookupTestEnv}); err != nil {
			t.Errorf("%s does not validate:\n%v", f, err)
		}
	}

	cm := kubeObject(t, "kubernetes/configmap.yaml", "ConfigMap", "dtfleet-config")
	data, _ := dig(cm, "data", "config.yaml").(string)
	if data == "" {
		t.Fatal("kubernetes/configmap.yaml: no data.config.yaml")
	}
	cfg, err := config.Parse([]byte(data), config.LoadOptions{LookupEnv: lookupTestEnv})
	if err != nil {
		t.Fatalf("kubernetes/configmap.yaml config.yaml does not validate:\n%v", err)
	}
	if cfg.NATS.Embedded() || cfg.NATS.Replicas != 3 {
		t.Errorf("the Kubernetes config must use a NATS cluster with 3 replicas, got url %q replicas %d", cfg.NATS.URL, cfg.NATS.Replicas)
	}
	// The secrets come from the environment (the Secret), never from the ConfigMap.
	for _, want := range []string{"${DT_PRIVATE_TOKEN}", "${DT_PUBLIC_TOKEN}", "${DTFLEET_NATS_PASSWORD}"} {
		if !strings.Contains(data, want) {
			t.Errorf("kubernetes/configmap.yaml: config.yaml should take %s from the environment", want)
		}
	}
}

// yamlDocs decodes every document of a (multi-document) YAML file.
func yamlDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	var docs []map[string]any
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
	return docs
}

// dig follows keys (strings for mappings, ints for lists) and returns nil when one is missing.
func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

// kubeObjects returns every Kubernetes object under kubernetes/, by file.
func kubeObjects(t *testing.T) map[string][]map[string]any {
	t.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("kubernetes manifests: %v %v", files, err)
	}
	out := map[string][]map[string]any{}
	for _, f := range files {
		out[f] = yamlDocs(t, f)
	}
	return out
}

func kubeObject(t *testing.T, file, kind, name string) map[string]any {
	t.Helper()
	for _, d := range yamlDocs(t, file) {
		if d["kind"] == kind && dig(d, "metadata", "name") == name {
			return d
		}
	}
	t.Fatalf("%s: no %s %s", file, kind, name)
	return nil
}

// TestKubernetesManifests checks what the operations guide relies on: the three roles with
// probes on /healthz and /readyz, non-root and read-only, secrets referenced from the Secret,
// standbys for the coordinator and the shipper, a PDB per role and a metrics Service.
func TestKubernetesManifests(t *testing.T) {
	t.Parallel()
	byKind := map[string][]map[string]any{}
	for file, docs := range kubeObjects(t) {
		for _, d := range docs {
			kind, _ := d["kind"].(string)
			if kind == "" {
				t.Errorf("%s: a document without kind", file)
				continue
			}
			byKind[kind] = append(byKind[kind], d)
			if kind != "Kustomization" && kind != "Namespace" && dig(d, "metadata", "namespace") != "dtfleet" {
				t.Errorf("%s: %s %v is not in namespace dtfleet", file, kind, dig(d, "metadata", "name"))
			}
		}
	}
	for _, kind := range []string{"Namespace", "ConfigMap", "Secret", "Deployment", "PodDisruptionBudget", "Service"} {
		if len(byKind[kind]) == 0 {
			t.Errorf("no %s in kubernetes/", kind)
		}
	}

	secretNames := map[string]map[string]any{}
	for _, s := range byKind["Secret"] {
		name, _ := dig(s, "metadata", "name").(string)
		secretNames[name] = s
		data, _ := s["stringData"].(map[string]any)
		for k, v := range data {
			if str, _ := v.(string); !strings.HasPrefix(str, "REPLACE-ME") {
				t.Errorf("Secret %s: %s must be an obvious placeholder (REPLACE-ME...), not a value", name, k)
			}
		}
		if s["data"] != nil {
			t.Errorf("Secret %s: use stringData placeholders, not base64 data", name)
		}
	}

	roles := map[string]map[string]any{}
	for _, d := range byKind["Deployment"] {
		component, _ := dig(d, "spec", "template", "metadata", "labels", "app.kubernetes.io/component").(string)
		roles[component] = d
		name := dig(d, "metadata", "name")
		pod := dig(d, "spec", "template", "spec")
		if dig(pod, "securityContext", "runAsNonRoot") != true {
			t.Errorf("Deployment %v: pod securityContext.runAsNonRoot must be true", name)
		}
		if uid, _ := dig(pod, "securityContext", "runAsUser").(int); uid == 0 {
			t.Errorf("Deployment %v: runAsUser must be a non-zero uid", name)
		}
		containers, _ := dig(pod, "containers").([]any)
		if len(containers) != 1 {
			t.Fatalf("Deployment %v: want one container, got %d", name, len(containers))
		}
		c := containers[0]
		if args, _ := dig(c, "args").([]any); len(args) == 0 || args[0] != component || !slices.Contains(args, "--metrics-listen") {
			t.Errorf("Deployment %v: args %v must start with its role %q and set --metrics-listen", name, args, component)
		}
		for _, probe := range []struct{ key, path string }{{"livenessProbe", "/healthz"}, {"readinessProbe", "/readyz"}} {
			if got := dig(c, probe.key, "httpGet", "path"); got != probe.path {
				t.Errorf("Deployment %v: %s must GET %s, got %v", name, probe.key, probe.path, got)
			}
			if got := dig(c, probe.key, "httpGet", "port"); got != "metrics" {
				t.Errorf("Deployment %v: %s must probe the metrics port, got %v", name, probe.key, got)
			}
		}
		if dig(c, "ports", 0, "containerPort") != 9464 || dig(c, "ports", 0, "name") != "metrics" {
			t.Errorf("Deployment %v: the container must expose port 9464 named metrics", name)
		}
		sc := dig(c, "securityContext")
		if dig(sc, "readOnlyRootFilesystem") != true || dig(sc, "allowPrivilegeEscalation") != false {
			t.Errorf("Deployment %v: container must have a read-only root filesystem and no privilege escalation", name)
		}
		if drop, _ := dig(sc, "capabilities", "drop").([]any); !slices.Contains(drop, any("ALL")) {
			t.Errorf("Deployment %v: container must drop ALL capabilities", name)
		}
		for _, k := range []string{"requests", "limits"} {
			if dig(c, "resources", k, "cpu") == nil || dig(c, "resources", k, "memory") == nil {
				t.Errorf("Deployment %v: resources.%s needs cpu and memory", name, k)
			}
		}
		env, _ := dig(c, "env").([]any)
		referenced := 0
		for _, e := range env {
			envName, _ := dig(e, "name").(string)
			if strings.Contains(envName, "TOKEN") || strings.Contains(envName, "PASSWORD") {
				if dig(e, "value") != nil {
					t.Errorf("Deployment %v: %s is inlined; reference the Secret", name, envName)
				}
				secret, _ := dig(e, "valueFrom", "secretKeyRef", "name").(string)
				key := dig(e, "valueFrom", "secretKeyRef", "key")
				if _, ok := secretNames[secret]; !ok {
					t.Errorf("Deployment %v: %s references Secret %q, which is not in kubernetes/", name, envName, secret)
				} else if dig(secretNames[secret], "stringData", key) == nil {
					t.Errorf("Deployment %v: %s references key %v missing from Secret %s", name, envName, key, secret)
				}
				referenced++
			}
		}
		for k := range testEnv {
			if !slices.ContainsFunc(env, func(e any) bool { return dig(e, "name") == k }) {
				t.Errorf("Deployment %v: %s, which config.yaml expands, is not set", name, k)
			}
		}
		if referenced == 0 {
			t.Errorf("Deployment %v: no secret referenced", name)
		}
	}
	for role, min := range map[string]int{"coordinator": 2, "shipper": 2, "worker": 1} {
		d, ok := roles[role]
		if !ok {
			t.Errorf("no Deployment for the %s role", role)
			continue
		}
		if n, _ := dig(d, "spec", "replicas").(int); n < min {
			t.Errorf("Deployment for %s: %d replicas, want at least %d", role, n, min)
		}
		labels := dig(d, "spec", "template", "metadata", "labels").(map[string]any)
		covered := false
		for _, pdb := range byKind["PodDisruptionBudget"] {
			sel, _ := dig(pdb, "spec", "selector", "matchLabels").(map[string]any)
			if selects(sel, labels) {
				covered = true
			}
		}
		if !covered {
			t.Errorf("no PodDisruptionBudget selects the %s pods", role)
		}
		metrics := false
		for _, svc := range byKind["Service"] {
			sel, _ := dig(svc, "spec", "selector").(map[string]any)
			if selects(sel, labels) && dig(svc, "spec", "ports", 0, "port") == 9464 {
				metrics = true
			}
		}
		if !metrics {
			t.Errorf("no Service exposes the metrics port of the %s pods", role)
		}
	}
}

// selects reports whether a non-empty label selector matches labels.
func selects(sel, labels map[string]any) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// TestCompose checks the compose file: a three-node NATS cluster on deployments/nats, the three
// roles with two workers, the fakes, and that every file it mounts exists.
func TestCompose(t *testing.T) {
	t.Parallel()
	docs := yamlDocs(t, "compose/docker-compose.yaml")
	if len(docs) != 1 {
		t.Fatalf("compose: %d documents", len(docs))
	}
	services, _ := docs[0]["services"].(map[string]any)
	for _, name := range []string{"certs", "n1", "n2", "n3", "simulator", "devo-sink", "coordinator", "worker", "shipper"} {
		if services[name] == nil {
			t.Errorf("compose: no service %s", name)
		}
	}
	for _, n := range []string{"n1", "n2", "n3"} {
		vols, _ := dig(services, n, "volumes").([]any)
		if !slices.Contains(vols, any("../nats/"+n+".conf:/etc/nats/"+n+".conf:ro")) {
			t.Errorf("compose: %s must mount ../nats/%s.conf", n, n)
		}
		if dig(services, n, "depends_on", "certs", "condition") != "service_completed_successfully" {
			t.Errorf("compose: %s must wait for the certificates", n)
		}
	}
	if dig(services, "worker", "deploy", "replicas") != 2 {
		t.Errorf("compose: want 2 workers, got %v", dig(services, "worker", "deploy", "replicas"))
	}
	for _, role := range []string{"coordinator", "worker", "shipper"} {
		cmd, _ := dig(services, role, "command").([]any)
		if len(cmd) == 0 || cmd[0] != role || !slices.Contains(cmd, any("/etc/dtfleet/config.yaml")) {
			t.Errorf("compose: %s must run `dtfleet %s -c /etc/dtfleet/config.yaml`, got %v", role, role, cmd)
		}
		if dig(services, role, "read_only") != true {
			t.Errorf("compose: %s must have a read-only root filesystem", role)
		}
	}
	for name, svc := range services {
		vols, _ := dig(svc, "volumes").([]any)
		for _, v := range vols {
			src, _, _ := strings.Cut(v.(string), ":")
			if strings.HasPrefix(src, ".") {
				if _, err := os.Stat(filepath.Join("compose", src)); err != nil {
					t.Errorf("compose: service %s mounts %s: %v", name, src, err)
				}
			}
		}
	}
}

// TestNATSConfigs parses each NATS server configuration with nats-server itself, with test
// certificates and the documented environment, and checks the properties dtfleet relies on:
// JetStream with fsync on every write, client TLS, certificate-checked routes between n1..n3,
// monitoring on loopback, and a "dtfleet" user in a JetStream account, matching
// config.cluster.yaml. It sets process environment variables, so it does not run in parallel.
func TestNATSConfigs(t *testing.T) {
	certs := t.TempDir()
	writeTestPKI(t, certs, "n1", "n2", "n3")
	t.Setenv("DTFLEET_NATS_PASSWORD", "test-nats-password")
	t.Setenv("NATS_SYSTEM_PASSWORD", "test-system-password")

	cluster, err := config.Load("config.cluster.yaml", config.LoadOptions{LookupEnv: lookupTestEnv})
	if err != nil {
		t.Fatal(err)
	}
	var clusterHosts []string
	for _, u := range cluster.NATS.URLs() {
		host, _, _ := strings.Cut(strings.TrimPrefix(u, "nats://"), ":")
		clusterHosts = append(clusterHosts, host)
	}

	for _, n := range []string{"n1", "n2", "n3"} {
		raw, err := os.ReadFile(filepath.Join("nats", n+".conf"))
		if err != nil {
			t.Fatal(err)
		}
		conf := strings.ReplaceAll(string(raw), "/etc/nats/certs/", certs+"/")
		conf = strings.ReplaceAll(conf, "/var/lib/nats", filepath.Join(t.TempDir(), "js"))
		path := filepath.Join(t.TempDir(), n+".conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		opts, err := server.ProcessConfigFile(path)
		if err != nil {
			t.Errorf("nats/%s.conf: %v", n, err)
			continue
		}
		if opts.ServerName != n || !opts.JetStream || !opts.SyncAlways {
			t.Errorf("nats/%s.conf: server_name %q jetstream %v sync_always %v; want %s, JetStream, sync always", n, opts.ServerName, opts.JetStream, opts.SyncAlways, n)
		}
		if opts.TLSConfig == nil {
			t.Errorf("nats/%s.conf: clients must use TLS", n)
		}
		if opts.Cluster.TLSConfig == nil || !opts.Cluster.TLSCheckKnownURLs {
			t.Errorf("nats/%s.conf: routes must use TLS with verify_cert_and_check_known_urls (route authorization)", n)
		}
		var routeHosts []string
		for _, r := range opts.Routes {
			routeHosts = append(routeHosts, r.Hostname())
		}
		if !slices.Equal(routeHosts, clusterHosts) {
			t.Errorf("nats/%s.conf: routes %v; config.cluster.yaml names the servers %v", n, routeHosts, clusterHosts)
		}
		if opts.HTTPHost != "127.0.0.1" || opts.HTTPPort == 0 {
			t.Errorf("nats/%s.conf: monitoring on %s:%d, want loopback", n, opts.HTTPHost, opts.HTTPPort)
		}
		if opts.SystemAccount != "SYS" {
			t.Errorf("nats/%s.conf: system account %q, want SYS", n, opts.SystemAccount)
		}
		var user *server.User
		for _, u := range opts.Users {
			if u.Username == cluster.NATS.User {
				user = u
			}
		}
		switch {
		case user == nil:
			t.Errorf("nats/%s.conf: no user %q (nats.user of config.cluster.yaml)", n, cluster.NATS.User)
		case user.Password != "test-nats-password":
			t.Errorf("nats/%s.conf: user %s's password must come from $DTFLEET_NATS_PASSWORD", n, user.Username)
		case user.Account == nil || user.Account.Name == "SYS":
			t.Errorf("nats/%s.conf: user %s must be in the dtfleet account, not the system account", n, user.Username)
		}
		// nats-server keeps an account's JetStream setting unexported until the server runs, so
		// read it from the account's block.
		jsAccount := user != nil && user.Account != nil &&
			regexp.MustCompile(`(?m)^\s*`+regexp.QuoteMeta(user.Account.Name)+`\s*\{\s*jetstream:\s*enabled`).MatchString(conf)
		if !jsAccount {
			t.Errorf("nats/%s.conf: the dtfleet user's account must have jetstream: enabled", n)
		}
	}
}

// writeTestPKI writes ca.crt and, per host, HOST.crt and HOST.key in dir, as gen-certs.sh does.
func writeTestPKI(t *testing.T, dir string, hosts ...string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(dir, "ca.crt"), "CERTIFICATE", caDER)
	ca, _ := x509.ParseCertificate(caDER)
	for i, h := range hosts {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: h}, DNSNames: []string{h},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		writePEM(t, filepath.Join(dir, h+".crt"), "CERTIFICATE", der)
		writePEM(t, filepath.Join(dir, h+".key"), "PRIVATE KEY", keyDER)
	}
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestGenCerts runs compose/gen-certs.sh and checks what the NATS configurations need from it:
// a CA, and per server a certificate for its DNS name usable for server and client (route)
// authentication, with a private key only its owner can read.
func TestGenCerts(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not on PATH; gen-certs.sh needs it")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "sh", "compose/gen-certs.sh", dir, "n1", "n2").CombinedOutput(); err != nil {
		t.Fatalf("gen-certs.sh: %v\n%s", err, out)
	}
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil || !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("ca.crt: %v", err)
	}
	for _, h := range []string{"n1", "n2"} {
		raw, err := os.ReadFile(filepath.Join(dir, h+".crt"))
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(raw)
		if block == nil {
			t.Fatalf("%s.crt: no PEM", h)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if _, err := cert.Verify(x509.VerifyOptions{DNSName: h, Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
				t.Errorf("%s.crt for %s, usage %v: %v", h, h, usage, err)
			}
		}
		st, err := os.Stat(filepath.Join(dir, h+".key"))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s.key has mode %v; want no group or other access", h, st.Mode().Perm())
		}
	}
}

// rulesFile is the part of a Prometheus rules file the tests read.
type rulesFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// TestPrometheusRules checks that every alert names a metric of the contract (and no other
// dtfleet_ metric), has a severity, a summary and a description, and is explained in
// docs/operations.md; the alerts the brief asks for exist. With promtool on PATH it also runs
// `promtool check rules` and the rules' unit tests.
func TestPrometheusRules(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("prometheus/dtfleet-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rf rulesFile
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("dtfleet-rules.yml: %v", err)
	}
	ops, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	var alerts []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			known, unknown := metricsIn(r.Expr)
			if len(known) == 0 {
				t.Errorf("alert %s: expr names no metric of the contract: %s", r.Alert, r.Expr)
			}
			if len(unknown) > 0 {
				t.Errorf("alert %s: expr names metrics outside the contract: %v", r.Alert, unknown)
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" || r.For == "" {
				t.Errorf("alert %s: needs for, labels.severity, annotations.summary and annotations.description", r.Alert)
			}
			if !bytes.Contains(ops, []byte("`"+r.Alert+"`")) {
				t.Errorf("alert %s is not explained in docs/operations.md", r.Alert)
			}
		}
	}
	for _, want := range []string{"DtfleetLaneLagging", "DtfleetFailedSlots", "DtfleetNoCoordinator", "DtfleetNoShipperLeader", "DtfleetDevoDown"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("no alert %s (lag, failed slots, no leader, Devo down)", want)
		}
	}

	if _, err := exec.LookPath("promtool"); err != nil {
		t.Log("promtool is not on PATH (Debian package prometheus): skipped promtool check rules and test rules")
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	for _, args := range [][]string{{"check", "rules", "dtfleet-rules.yml"}, {"test", "rules", "dtfleet-rules_test.yml"}} {
		cmd := exec.CommandContext(ctx, "promtool", args...)
		cmd.Dir = "prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestPrometheusScrapeConfig checks that the scrape configuration loads the rules file and
// scrapes the hosts and the Kubernetes metrics Service.
func TestPrometheusScrapeConfig(t *testing.T) {
	t.Parallel()
	docs := yamlDocs(t, "prometheus/prometheus.yml")
	if len(docs) != 1 {
		t.Fatalf("prometheus.yml: %d documents", len(docs))
	}
	files, _ := docs[0]["rule_files"].([]any)
	if !slices.Contains(files, any("dtfleet-rules.yml")) {
		t.Errorf("prometheus.yml must load dtfleet-rules.yml, has %v", files)
	}
	jobs, _ := docs[0]["scrape_configs"].([]any)
	var names []string
	for _, j := range jobs {
		name, _ := dig(j, "job_name").(string)
		names = append(names, name)
	}
	if !slices.Contains(names, "dtfleet") || !slices.Contains(names, "dtfleet-kubernetes") {
		t.Errorf("prometheus.yml jobs %v; want dtfleet and dtfleet-kubernetes", names)
	}
	if !bytes.Contains(mustRead(t, "prometheus/prometheus.yml"), []byte("dtfleet-metrics;metrics")) {
		t.Error("prometheus.yml: the Kubernetes job must keep the dtfleet-metrics Service's metrics port")
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGrafanaDashboard checks that the dashboard is valid JSON with a stable uid, that every
// query names metrics of the contract only, and that every metric of the contract is on a panel.
func TestGrafanaDashboard(t *testing.T) {
	t.Parallel()
	var dash struct {
		UID    string `json:"uid"`
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(mustRead(t, "grafana/dtfleet.json"), &dash); err != nil {
		t.Fatalf("dtfleet.json: %v", err)
	}
	if dash.UID == "" || dash.Title == "" || len(dash.Panels) == 0 {
		t.Fatalf("dtfleet.json: uid %q title %q, %d panels", dash.UID, dash.Title, len(dash.Panels))
	}
	used := map[string]bool{}
	for _, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			known, unknown := metricsIn(tg.Expr)
			if len(unknown) > 0 {
				t.Errorf("panel %q names metrics outside the contract: %v", p.Title, unknown)
			}
			for _, k := range known {
				used[k] = true
			}
		}
	}
	for _, m := range contractMetrics {
		if !used[m] {
			t.Errorf("no dashboard panel shows %s", m)
		}
	}
}

// TestSystemdUnits checks the units' contract: restarts stop on the configuration-error and
// authentication-failure exit codes, secrets come by LoadCredential=, state lives in a
// StateDirectory=, and the sandbox holds; with systemd-analyze on PATH, the exposure must be
// below 5 (--threshold counts tenths).
func TestSystemdUnits(t *testing.T) {
	t.Parallel()
	units, err := filepath.Glob("systemd/*.service")
	if err != nil || len(units) != 2 {
		t.Fatalf("systemd units: %v %v", units, err)
	}
	for _, u := range units {
		directives := map[string][]string{}
		for line := range strings.SplitSeq(string(mustRead(t, u)), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
				directives[k] = append(directives[k], v)
			}
		}
		want := map[string]string{
			"RestartPreventExitStatus": "2 3",
			"StateDirectory":           "dtfleet",
			"DynamicUser":              "yes",
			"NoNewPrivileges":          "yes",
			"ProtectSystem":            "strict",
			"Restart":                  "on-failure",
		}
		for k, v := range want {
			if !slices.Contains(directives[k], v) {
				t.Errorf("%s: want %s=%s, have %v", u, k, v, directives[k])
			}
		}
		if len(directives["LoadCredential"]) < 2 {
			t.Errorf("%s: the tokens must come by LoadCredential=", u)
		}
		if len(directives["EnvironmentFile"]) > 0 {
			t.Errorf("%s: secrets in an EnvironmentFile= are visible to the whole service tree; use LoadCredential=", u)
		}
		if !strings.Contains(strings.Join(directives["ExecStart"], ""), "--metrics-listen") {
			t.Errorf("%s: ExecStart must serve metrics and health (--metrics-listen)", u)
		}
	}

	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Log("systemd-analyze is not on PATH: skipped the exposure check")
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for _, u := range units {
		abs, err := filepath.Abs(u)
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.CommandContext(ctx, "systemd-analyze", "security", "--offline=true", "--threshold=49", "--no-pager", abs).CombinedOutput()
		if err != nil {
			last := strings.TrimSpace(string(out))
			if i := strings.LastIndex(last, "\n"); i >= 0 {
				last = last[i+1:]
			}
			t.Errorf("systemd-analyze security %s: %v: %s", u, err, last)
		}
	}
}

// TestDockerfile checks the image's contract statically, and builds it when a Docker daemon is
// reachable: a static, trimmed build, a non-root final stage, a health check on /healthz.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	df := string(mustRead(t, "docker/Dockerfile"))
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "USER 65532:65532", "HEALTHCHECK", "/healthz", "--metrics-listen"} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	froms := regexp.MustCompile(`(?m)^FROM (\S+)`).FindAllStringSubmatch(df, -1)
	if len(froms) == 0 || !strings.Contains(froms[len(froms)-1][1], "nonroot") {
		t.Errorf("the final stage must be a nonroot base image, stages: %v", froms)
	}

	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("docker is not on PATH: image not built")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Skipf("no Docker daemon reachable (%v: %s): image not built", err, bytes.TrimSpace(out))
	}
	tag := fmt.Sprintf("dtfleet-test:%d", time.Now().UnixNano())
	build := exec.CommandContext(ctx, "docker", "build", "-f", "deployments/docker/Dockerfile", "-t", tag, ".")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	defer func() { _ = exec.Command("docker", "image", "rm", "-f", tag).Run() }()
	user, err := exec.CommandContext(ctx, "docker", "image", "inspect", "--format", "{{.Config.User}}", tag).Output()
	if err != nil {
		t.Fatal(err)
	}
	if u := strings.TrimSpace(string(user)); u == "" || u == "0" || strings.HasPrefix(u, "root") || strings.HasPrefix(u, "0:") {
		t.Errorf("image runs as %q; want a non-root user", u)
	}
	if out, err := exec.CommandContext(ctx, "docker", "run", "--rm", tag, "validate", "--help").CombinedOutput(); err != nil {
		t.Errorf("docker run %s validate --help: %v\n%s", tag, err, out)
	}
}
