package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync/schemas"
)

// sustainConfig is a sustained-stream run: records produced at a steady
// rate for a duration while one `cohortsync serve` consumes them.
type sustainConfig struct {
	duration time.Duration
	rate     int           // changes per second
	drain    time.Duration // longest wait after the stream for the group to catch up
}

// partCount is one row of system.parts grouped by (table, partition).
type partCount struct {
	table, partition string
	active, dirs     uint64 // dirs: active and inactive part directories
}

// tablePeak is one table's peak over a run: the most active parts any one of
// its partitions held in one sample, since parts_to_throw_insert counts
// active parts per partition.
type tablePeak struct {
	active    uint64
	partition string
	at        time.Duration
	// endActive is the most active parts per partition in the last sample,
	// endDirs the table's part directories then.
	endActive, endDirs uint64
}

// partsPeak folds the samples of system.parts of one database.
type partsPeak struct {
	samples  int
	tables   map[string]*tablePeak
	max      uint64 // peak over the run of the maximum across (table, partition)
	maxTable string
	maxAt    time.Duration
	// dirsAtMax are the database's part directories (active and inactive) in
	// the sample of max; endDirs in the last sample.
	dirsAtMax, endDirs uint64
}

// add folds one sample taken at at (since the stream started).
func (p *partsPeak) add(at time.Duration, counts []partCount) {
	if p.tables == nil {
		p.tables = map[string]*tablePeak{}
	}
	p.samples++
	// A table's end figures are those of this sample, so a table without
	// rows in it (dropped, or every part merged away) ends at zero.
	for _, t := range p.tables {
		t.endActive, t.endDirs = 0, 0
	}
	var dirs, most uint64
	var mostTable string
	for _, c := range counts {
		t := p.tables[c.table]
		if t == nil {
			t = &tablePeak{}
			p.tables[c.table] = t
		}
		if c.active > t.active {
			t.active, t.partition, t.at = c.active, c.partition, at
		}
		t.endActive = max(t.endActive, c.active)
		t.endDirs += c.dirs
		dirs += c.dirs
		if c.active > most {
			most, mostTable = c.active, c.table
		}
	}
	if p.samples == 1 || most > p.max {
		p.max, p.maxTable, p.maxAt, p.dirsAtMax = most, mostTable, at, dirs
	}
	p.endDirs = dirs
}

// partCounts reads system.parts of db. The columns (database, table,
// partition, active) are those of 18.16.
func partCounts(ctx context.Context, conn driver.Conn, db string) ([]partCount, error) {
	rows, err := conn.Query(ctx, `SELECT table, partition, sum(active), count()
		FROM system.parts WHERE database = '`+db+`'
		GROUP BY table, partition`)
	if err != nil {
		return nil, fmt.Errorf("system.parts: %w", err)
	}
	defer rows.Close()
	var out []partCount
	for rows.Next() {
		var c partCount
		if err := rows.Scan(&c.table, &c.partition, &c.active, &c.dirs); err != nil {
			return nil, fmt.Errorf("system.parts: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// sustainResult is a sustained run.
type sustainResult struct {
	produced    int64 // records
	stream      time.Duration
	ready       time.Duration
	parts       partsPeak
	peakLag     int64 // records produced and not yet committed, most over the samples
	endLag      int64 // the same when the stream stopped
	drained     time.Duration
	drainedOK   bool
	ownCPU      float64 // cohortsync, from ready to the end of the stream
	serverCPU   float64
	ownRSS      int64
	historyRows uint64
}

// sustainRound starts `cohortsync serve`, waits until its stream runs, then
// produces cfg.rate changes per second for cfg.duration and samples
// system.parts and the group's lag every second. Produce and sample run
// apart so that a slow query does not slow the stream it measures.
func sustainRound(ctx context.Context, conn driver.Conn, env roundEnv, cfg sustainConfig, logf func(string, ...any)) (sustainResult, error) {
	const db = "peers_sustain"
	var r sustainResult
	dataDir := filepath.Join(env.tmp, "cohortsync-sustain")
	if err := resetServe(ctx, conn, env, db, dataDir); err != nil {
		return r, err
	}
	start := time.Now()
	sp, err := launchServe(ctx, env, db, dataDir)
	if err != nil {
		return r, err
	}
	defer sp.log.Close()
	defer sp.stop()
	r.ready = time.Since(start)
	pid := sp.cmd.Process.Pid
	ownReady, err := sample(pid)
	if err != nil {
		return r, err
	}
	serverReady, err := sample(env.serverPid)
	if err != nil {
		return r, err
	}
	logf("ready in %.1f s; streaming %d changes/s in records of %d ids for %s", r.ready.Seconds(), cfg.rate, env.work.idsPerMessage, cfg.duration)

	streamCtx, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()
	prodErr := make(chan error, 1)
	streamStart := time.Now()
	go func() { prodErr <- produce(streamCtx, env, cfg) }()

	parts := slices.Sorted(maps.Keys(env.ends))
	lag := func() (int64, error) {
		end, err := ends(ctx, env.client, env.topic, len(parts))
		if err != nil {
			return 0, err
		}
		got, err := env.client.Committed(ctx, streamGroup, env.topic, parts)
		if err != nil {
			return 0, err
		}
		var l int64
		for p, e := range end {
			l += max(e-max(got[p], 0), 0)
		}
		return l, nil
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for sampling := true; sampling; {
		select {
		case <-streamCtx.Done():
			sampling = false
		case <-tick.C:
		}
		if ctx.Err() != nil {
			return r, ctx.Err()
		}
		at := time.Since(streamStart)
		counts, err := partCounts(ctx, conn, db)
		if err != nil {
			return r, err
		}
		r.parts.add(at, counts)
		var now uint64
		for _, c := range counts {
			now = max(now, c.active)
		}
		l, err := lag()
		if err != nil {
			return r, err
		}
		r.peakLag = max(r.peakLag, l)
		if r.parts.samples%60 == 0 {
			logf("%s: most active parts in a partition %d (peak %d), lag %d records", at.Round(time.Second), now, r.parts.max, l)
		}
		select {
		case <-sp.done:
			return r, fmt.Errorf("cohortsync exited: %v (log: %s)", sp.err, sp.log.Name())
		default:
		}
	}
	if err := <-prodErr; err != nil {
		return r, err
	}
	r.stream = time.Since(streamStart)
	own, err := sample(pid)
	if err != nil {
		return r, err
	}
	srv, err := sample(env.serverPid)
	if err != nil {
		return r, err
	}
	r.ownCPU, r.serverCPU, r.ownRSS = own.cpu-ownReady.cpu, srv.cpu-serverReady.cpu, own.rss
	if r.endLag, err = lag(); err != nil {
		return r, err
	}
	r.peakLag = max(r.peakLag, r.endLag)

	// The drain only tells whether the group catches up; a consumer that fell
	// behind shows as lag and a drain that did not finish, not as a failure.
	drainEnv := env
	if drainEnv.ends, err = ends(ctx, env.client, env.topic, len(parts)); err != nil {
		return r, err
	}
	// The topic held nothing before the stream: its ends are what was
	// produced, including a last write the end of the stream cut short.
	for _, e := range drainEnv.ends {
		r.produced += e
	}
	drainStart := time.Now()
	for time.Since(drainStart) < cfg.drain {
		done, err := committedAll(ctx, drainEnv)
		if err != nil {
			return r, err
		}
		if done {
			r.drainedOK = true
			break
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	r.drained = time.Since(drainStart)
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".membership_changes").Scan(&r.historyRows); err != nil {
		return r, fmt.Errorf("cohortsync: count: %w", err)
	}
	// Stop the consumer before the drop, and leave the server as it was.
	sp.stop()
	if err := conn.Exec(ctx, "DROP DATABASE "+db); err != nil {
		return r, fmt.Errorf("cohortsync: %w", err)
	}
	return r, nil
}

// produce writes records of env.work.idsPerMessage ids at cfg.rate changes
// per second until ctx ends. Every 100 ms it
// writes the records due by then, so a write that took long is made up in
// the next instead of lowering the rate.
func produce(ctx context.Context, env roundEnv, cfg sustainConfig) error {
	wr := env.client.Writer(env.topic)
	defer wr.Close()
	perSec := float64(cfg.rate) / float64(env.work.idsPerMessage)
	start := time.Now()
	var n int64
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		due := int64(perSec * time.Since(start).Seconds())
		if due <= n {
			continue
		}
		msgs := make([]kafkago.Message, 0, due-n)
		now := time.Now().UTC()
		for i := n; i < due; i++ {
			e := env.work.envelope(int(i), now)
			v, err := schemas.Encode(e)
			if err != nil {
				return err
			}
			msgs = append(msgs, kafkago.Message{Key: e.PartitionKey(), Value: v})
		}
		// The stream's end may cut a write short: the figures read the
		// broker's offsets, not a count kept here.
		if err := wr.WriteMessages(ctx, msgs...); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("produce: %w", err)
		}
		n = due
	}
}

func reportSustain(out io.Writer, w workload, cfg sustainConfig, r sustainResult) {
	changes := r.produced * int64(w.idsPerMessage)
	fmt.Fprintf(out, "sustained stream: %d records × %d ids = %d changes in %.0f s (%.0f changes/s, target %d), %d cohorts, %d users; ready in %.1f s\n\n",
		r.produced, w.idsPerMessage, changes, r.stream.Seconds(), float64(changes)/r.stream.Seconds(), cfg.rate, w.cohorts, w.users, r.ready.Seconds())
	tw := tabwriter.NewWriter(out, 2, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "table\tpeak active parts/partition\tpartition\tat s\tend active parts/partition\tend part dirs\t")
	for _, name := range slices.Sorted(maps.Keys(r.parts.tables)) {
		t := r.parts.tables[name]
		fmt.Fprintf(tw, "%s\t%d\t%s\t%.0f\t%d\t%d\t\n", name, t.active, t.partition, t.at.Seconds(), t.endActive, t.endDirs)
	}
	tw.Flush()
	fmt.Fprintf(out, "\npeak of the maximum across partitions: %d active parts (%s, at %.0f s; parts_to_throw_insert 300)\n", r.parts.max, r.parts.maxTable, r.parts.maxAt.Seconds())
	fmt.Fprintf(out, "part directories, active and inactive: %d at the peak, %d at the end (%d samples)\n", r.parts.dirsAtMax, r.parts.endDirs, r.parts.samples)
	drain := fmt.Sprintf("caught up %.1f s after the stream stopped", r.drained.Seconds())
	if !r.drainedOK {
		drain = fmt.Sprintf("not caught up %.0f s after the stream stopped", r.drained.Seconds())
	}
	fmt.Fprintf(out, "consumer lag: %d records at the end of the stream, %d at most; %s; %d history rows\n", r.endLag, r.peakLag, drain, r.historyRows)
	per := float64(changes) / 1e6
	fmt.Fprintf(out, "CPU during the stream: cohortsync %.0f s (%.2f cores, %.2f s per 1M changes), server %.0f s (%.2f cores, %.2f s per 1M); cohortsync peak RSS %d MiB\n",
		r.ownCPU, r.ownCPU/r.stream.Seconds(), r.ownCPU/per, r.serverCPU, r.serverCPU/r.stream.Seconds(), r.serverCPU/per, r.ownRSS>>20)
}
