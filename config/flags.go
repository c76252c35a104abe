package config

import (
	"fmt"
	"slices"

	"github.com/spf13/pflag"
)

// Names of the flags BindFlags registers.
const (
	FlagConfig             = "config"
	FlagDataDir            = "data-dir"
	FlagHTTPAddr           = "http-addr"
	FlagKafkaBrokers       = "kafka-brokers"
	FlagClickHouseAddr     = "clickhouse-addr"
	FlagClickHouseDatabase = "clickhouse-database"
	FlagLogLevel           = "log-level"
	// FlagNoMigrate is bound by serve only (BindNoMigrateFlag).
	FlagNoMigrate = "no-migrate"
)

// BindFlags registers --config and the configuration flags named (all of
// them when none is named) on fs. A command binds only the flags of the
// settings it uses, so its help lists nothing it would ignore. Load applies
// those the user set; the defaults shown in help are Default()'s.
func BindFlags(fs *pflag.FlagSet, names ...string) {
	d := Default()
	all := []struct {
		name, usage string
		bind        func(name, usage string)
	}{
		{FlagDataDir, "`directory` for local state: the embedded broker's log and Parquet output", func(n, u string) { fs.String(n, d.DataDir, u) }},
		{FlagHTTPAddr, "`HOST:PORT` the HTTP API listens on", func(n, u string) { fs.String(n, d.HTTPAddr, u) }},
		{FlagKafkaBrokers, "Kafka bootstrap `brokers` as HOST:PORT, comma-separated; none starts the embedded broker", func(n, u string) { fs.StringSlice(n, d.Kafka.Brokers, u) }},
		{FlagClickHouseAddr, "ClickHouse native protocol `HOST:PORT`; empty disables ClickHouse", func(n, u string) { fs.String(n, d.ClickHouse.Addr, u) }},
		{FlagClickHouseDatabase, "ClickHouse `database`", func(n, u string) { fs.String(n, d.ClickHouse.Database, u) }},
		{FlagLogLevel, "log `level`: debug, info, warn or error", func(n, u string) { fs.String(n, d.Log.Level, u) }},
	}
	fs.String(FlagConfig, "", "YAML configuration `file` (overridden by COHORTSYNC_* variables and flags)")
	for _, f := range all {
		if len(names) == 0 || slices.Contains(names, f.name) {
			f.bind(f.name, f.usage)
		}
	}
}

// BindNoMigrateFlag registers --no-migrate, which turns clickhouse.migrate_on_start off.
func BindNoMigrateFlag(fs *pflag.FlagSet) {
	fs.Bool(FlagNoMigrate, false, "do not create or upgrade the ClickHouse tables at start (run 'cohortsync migrate' instead)")
}

// applyFlags overlays the flags of fs that were set on cfg and returns every
// problem. Flags that fs does not have count as not set, so any flag set works.
func applyFlags(cfg *Config, fs *pflag.FlagSet) []error {
	var errs []error
	strs := []struct {
		name string
		dst  *string
	}{
		{FlagDataDir, &cfg.DataDir},
		{FlagHTTPAddr, &cfg.HTTPAddr},
		{FlagClickHouseAddr, &cfg.ClickHouse.Addr},
		{FlagClickHouseDatabase, &cfg.ClickHouse.Database},
		{FlagLogLevel, &cfg.Log.Level},
	}
	for _, f := range strs {
		if !fs.Changed(f.name) {
			continue
		}
		v, err := fs.GetString(f.name)
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s: %w", f.name, err))
			continue
		}
		*f.dst = v
	}
	if fs.Changed(FlagKafkaBrokers) {
		v, err := fs.GetStringSlice(FlagKafkaBrokers)
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s: %w", FlagKafkaBrokers, err))
		} else {
			cfg.Kafka.Brokers = v
		}
	}
	if fs.Changed(FlagNoMigrate) {
		v, err := fs.GetBool(FlagNoMigrate)
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s: %w", FlagNoMigrate, err))
		} else {
			cfg.ClickHouse.MigrateOnStart = !v
		}
	}
	return errs
}
