// Package deploy holds the deployment files of cohortsync (docker compose,
// Prometheus, Grafana, Kubernetes) and the tests that check them against the
// binary: flags and environment variables that exist, ports and probe paths
// that match the defaults, and dashboard queries that name real metrics.
// The package has no code of its own.
package deploy
