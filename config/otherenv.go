package config

import "strings"

// nonConfigEnv lists the COHORTSYNC_* variables that are not settings but are
// read elsewhere in the project, so Load does not report them as unknown. A
// name ending in "_" stands for every variable that starts with it. Keep each
// entry next to the reason it is here; a variable that is neither here nor a
// setting is reported as a typo.
func nonConfigEnv() []struct{ name, why string } {
	return []struct{ name, why string }{
		{EnvPrefix + "MIXPANEL_USERNAME", "backfill --from mixpanel: the service account's user name, a credential of that run only (cmd/cohortsync/backfill.go)"},
		{EnvPrefix + "MIXPANEL_SECRET", "backfill --from mixpanel: the service account's secret, never a flag so it stays out of shell history (cmd/cohortsync/backfill.go)"},
		{EnvPrefix + "IMAGE_TAG", "deploy/docker-compose.yml: the image tag compose runs, kept in deploy/.env and often exported in the same shell"},
		{EnvPrefix + "TEST_", "tests: COHORTSYNC_TEST_CLICKHOUSE_ADDR and the like point tests at shared servers (internal/chtest)"},
		{EnvPrefix + "BENCH_", "benchmarks: COHORTSYNC_BENCH_MEMBERS, _DATAPOINTS, _CHANGES and _PARQUET_ROOT size and locate benchmark data (bench/, segments/clickhouse, sinks/parquet/duckdbtest)"},
	}
}

// isNonConfigEnv says whether name is in nonConfigEnv.
func isNonConfigEnv(name string) bool {
	for _, e := range nonConfigEnv() {
		if name == e.name || (strings.HasSuffix(e.name, "_") && strings.HasPrefix(name, e.name)) {
			return true
		}
	}
	return false
}
