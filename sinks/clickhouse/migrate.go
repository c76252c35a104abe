package clickhouse

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// MigrationResult says what Migrate found and did.
type MigrationResult struct {
	// From is the schema version the database had (0: none); To the one it has now.
	From, To uint32
	// Applied lists the versions Migrate ran, in order; empty when it had nothing to do.
	Applied []uint32
}

// Migrate creates the database and its tables, or brings them up to
// SchemaVersion. It records each applied step in schema_migrations and skips
// recorded steps, so running it again is a no-op, and two processes running
// it at once end in the same schema (every statement is IF NOT EXISTS and the
// version table collapses duplicates). With a cluster every statement is ON
// CLUSTER. It does not retry: it is run at start-up and by `cohortsync
// migrate`, where failing loudly is the better answer.
func (s *Sink) Migrate(ctx context.Context) (MigrationResult, error) {
	for _, q := range s.layout.bootstrap() {
		if err := s.exec(ctx, q); err != nil {
			return MigrationResult{}, fmt.Errorf("migrate: %w", err)
		}
	}
	applied, err := s.appliedVersions(ctx)
	if err != nil {
		return MigrationResult{}, fmt.Errorf("migrate: %w", err)
	}
	var res MigrationResult
	if len(applied) > 0 {
		res.From = slices.Max(applied)
	}
	for _, m := range migrations {
		if slices.Contains(applied, m.version) {
			continue
		}
		for _, q := range m.statements(s.layout) {
			if err := s.exec(ctx, q); err != nil {
				return res, fmt.Errorf("migrate to version %d (%s): %w", m.version, m.name, err)
			}
		}
		rec := insert{table: schemaMigrationsTable, rows: 1, columns: []any{
			[]uint32{m.version}, []string{m.name}, []int64{time.Now().Unix()},
		}}
		if err := s.insertOnce(ctx, rec); err != nil {
			return res, fmt.Errorf("migrate: record version %d: %w", m.version, err)
		}
		res.Applied = append(res.Applied, m.version)
		s.log.Info("clickhouse schema migrated", "database", s.cfg.Database, "version", m.version, "step", m.name)
	}
	res.To = max(res.From, SchemaVersion())
	if res.From > SchemaVersion() {
		// Steps only ever add, and every insert names its columns, so an
		// older release keeps writing correctly into a newer schema.
		s.log.Warn("clickhouse schema is newer than this release", "database", s.cfg.Database,
			"schema_version", res.From, "release_version", SchemaVersion())
	}
	return res, nil
}

// appliedVersions lists the versions recorded in schema_migrations.
func (s *Sink) appliedVersions(ctx context.Context) ([]uint32, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	rows, err := s.conn.Query(ctx, "SELECT DISTINCT version FROM "+s.layout.qualified(TableSchemaMigrations))
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	defer rows.Close()
	var out []uint32
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("read schema_migrations: %w", err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	return out, nil
}
