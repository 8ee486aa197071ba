// Package deployments holds dtfleet's deployment artefacts (container image, compose, Kubernetes,
// Prometheus, Grafana, systemd, NATS cluster configurations) and, in its tests only, the checks
// that keep them consistent with the code: every example configuration validates, the manifests
// have the structure operations rely on, and every metric they name is one dtfleet exports. It
// has no non-test code.
package deployments
