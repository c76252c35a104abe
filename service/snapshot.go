package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/jobs/snapshot"
	"github.com/cohortsync/cohortsync/service/stateofrecord"
	"github.com/cohortsync/cohortsync/sinks/parquet"
)

// parquetConfig is the Parquet sink of cfg's data directory, for the stream
// and for snapshots taken without a server.
func parquetConfig(cfg config.Config) parquet.Config {
	pc := parquet.DefaultConfig()
	pc.Root = filepath.Join(cfg.DataDir, "parquet")
	pc.SnapshotsKept = cfg.Snapshots.Kept
	pc.RollRows, pc.RollInterval = cfg.Parquet.RollRows, cfg.Parquet.RollInterval
	return pc
}

// SnapshotNow writes the snapshots of sel from the state of record itself,
// as one round of serve's snapshot job would, for `cohortsync snapshot`
// without --server. On the embedded default it needs the data directory: it
// fails with stateofrecord.ErrLocked while another process holds it.
func SnapshotNow(ctx context.Context, cfg config.Config, sel snapshot.Selection) ([]snapshot.SnapshotInfo, error) {
	record, err := stateofrecord.Open(ctx, cfg, stateofrecord.Options{LockTimeout: time.Second})
	if err != nil {
		return nil, err
	}
	defer record.Close()
	// A server may be writing the trees (with ClickHouse as the state of
	// record nothing else stops this command): snapshots only, no rolls.
	pq, err := parquet.New(parquetConfig(cfg), parquet.Options{SnapshotsOnly: true})
	if err != nil {
		return nil, err
	}
	defer pq.Close()
	snap, err := snapshot.New(snapshot.Config{Interval: -1}, record.SnapshotSource(), pq, snapshot.Options{})
	if err != nil {
		return nil, err
	}
	res, err := snap.Snapshot(ctx, sel)
	if err != nil {
		return nil, err
	}
	out := make([]snapshot.SnapshotInfo, len(res))
	for i, r := range res {
		out[i] = snapshot.SnapshotInfo{Partner: r.Cohort.Partner, CohortID: r.Cohort.CohortID, Result: r}
	}
	return out, nil
}

// CompactParquet rewrites the Parquet trees of cfg's data directory into the
// current format, for `cohortsync parquet compact`. It fails with a hint
// while a server holds the trees.
func CompactParquet(ctx context.Context, cfg config.Config, log *slog.Logger) (parquet.CompactStats, error) {
	st, err := parquet.Compact(ctx, parquetConfig(cfg), log)
	if errors.Is(err, parquet.ErrTreeLocked) {
		return st, fmt.Errorf("%w\nstop the server that writes %s first: a compaction needs the trees to itself", err, filepath.Join(cfg.DataDir, "parquet"))
	}
	return st, err
}
