package config

import (
	"fmt"

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

// BindFlags registers the configuration flags on fs. Load applies those the
// user set; the defaults shown in help are Default()'s.
func BindFlags(fs *pflag.FlagSet) {
	d := Default()
	fs.String(FlagConfig, "", "YAML configuration `file` (overridden by COHORTSYNC_* variables and flags)")
	fs.String(FlagDataDir, d.DataDir, "`directory` for local state: the embedded broker's log and Parquet output")
	fs.String(FlagHTTPAddr, d.HTTPAddr, "`HOST:PORT` the HTTP API listens on")
	fs.StringSlice(FlagKafkaBrokers, d.Kafka.Brokers, "Kafka bootstrap `brokers` as HOST:PORT, comma-separated; none starts the embedded broker")
	fs.String(FlagClickHouseAddr, d.ClickHouse.Addr, "ClickHouse native protocol `HOST:PORT`; empty disables ClickHouse")
	fs.String(FlagClickHouseDatabase, d.ClickHouse.Database, "ClickHouse `database`")
	fs.String(FlagLogLevel, d.Log.Level, "log `level`: debug, info, warn or error")
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
