package service_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/internal/chtest"
	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/jobs/snapshot"
	"github.com/cohortsync/cohortsync/kafka"
	"github.com/cohortsync/cohortsync/kafka/kafkatest"
	"github.com/cohortsync/cohortsync/service"
	chsink "github.com/cohortsync/cohortsync/sinks/clickhouse"
	"github.com/cohortsync/cohortsync/sinks/state"
)

// stateOfRecord reads what a finished run left behind.
type stateOfRecord interface {
	members(t *testing.T) []string
	billable(t *testing.T) int64
}

type embeddedState struct{ dir string }

func (e embeddedState) open(t *testing.T) *state.Store {
	st, err := state.Open(state.DefaultConfig(e.dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func (e embeddedState) members(t *testing.T) []string {
	st := e.open(t)
	defer st.Close()
	m, err := st.Members("default", "mixpanel", "dyn")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (e embeddedState) billable(t *testing.T) int64 {
	st := e.open(t)
	defer st.Close()
	dps, err := st.DataPoints("default", time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, d := range dps {
		n += d.Billable
	}
	return n
}

type clickhouseState struct{ cfg chsink.Config }

func (c clickhouseState) open(t *testing.T) *chsink.Sink {
	s, err := chsink.New(c.cfg, chsink.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func (c clickhouseState) members(t *testing.T) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := c.open(t).Members(ctx, "default", "mixpanel", "dyn")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (c clickhouseState) billable(t *testing.T) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tot, err := c.open(t).DataPointTotals(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, d := range tot {
		n += int64(d.Total)
	}
	return n
}

// TestDynamicSyncRestartedAndReplayed runs the sinks' acceptance scenario on
// both states of record: a Mixpanel-style dynamic sync sends adds and
// removes, one sync is restarted from the top (the same changes arrive
// again as new records), and then everything landed is replayed from Kafka
// through the same transforms and sinks. Membership, the newest snapshot
// and the data points must be exact throughout.
func TestDynamicSyncRestartedAndReplayed(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"embedded", "clickhouse"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			brokers := kafkatest.NewCluster(t)
			const admin = "cst_sinks-test-admin-token"
			cfg := config.Default()
			cfg.Embedded.KafkaAddr = "127.0.0.1:0" // tests run in parallel: any free port
			cfg.DataDir, cfg.Kafka.Brokers, cfg.AdminToken = dir, brokers, admin
			cfg.Kafka.Partitions = 3
			var sor stateOfRecord = embeddedState{dir}
			if backend == "clickhouse" {
				addr, db := chtest.NewDatabase(t)
				cfg.ClickHouse.Addr, cfg.ClickHouse.Database = addr, db
				sor = clickhouseState{cfg.ClickHouse.SinkConfig()}
			}
			svc := startWith(t, cfg)
			base := "http://" + svc.addr
			var first map[string]any
			if err := json.Unmarshal([]byte(curlLine.FindStringSubmatch(svc.out.String())[2]), &first); err != nil {
				t.Fatal(err)
			}

			var idents strings.Builder
			for i := range 30 {
				fmt.Fprintf(&idents, "{\"user_id\":\"u%02d\",\"external_id\":\"e%02d\"}\n", i, i)
			}
			if code, resp := post(t, base+"/v1/workspaces/default/identities", "application/x-ndjson", admin, idents.String()); code != http.StatusOK {
				t.Fatalf("identities: %d %s", code, resp)
			}
			time.Sleep(time.Second) // the directory applies its topic asynchronously

			ids := func(from, to int) string {
				var q []string
				for i := from; i < to; i++ {
					q = append(q, fmt.Sprintf("%q", fmt.Sprintf("e%02d", i)))
				}
				return "[" + strings.Join(q, ",") + "]"
			}
			accepted := 0
			push := func(from, to int, remove bool) {
				body := fmt.Sprintf(`{"partner_api_key":%q,"client_secret":%q,"cohort_id":"dyn","cohort_changes":[{"user_ids":%s,"should_remove":%v}]}`,
					first["partner_api_key"], first["client_secret"], ids(from, to), remove)
				if code, resp := post(t, base+"/partners/mixpanel/cohorts/users", "application/json", "", body); code != http.StatusCreated {
					t.Fatalf("push: %d %s", code, resp)
				}
				accepted += to - from
			}
			// Sync 1 adds 20 users in two requests.
			push(0, 10, false)
			push(10, 20, false)
			// Sync 2 adds 5 and removes 5; it fails midway and is restarted
			// from the top, so its requests arrive twice.
			sync2 := func() { push(20, 25, false); push(0, 5, true) }
			sync2()
			sync2()
			// Sync 3 removes 5 and adds one back.
			push(5, 10, true)
			push(0, 1, false)
			want := []string{"u00"}
			for i := 10; i < 25; i++ {
				want = append(want, fmt.Sprintf("u%02d", i))
			}

			waitNoLag(t, svc.addr)
			// Through the client `cohortsync snapshot --server` uses.
			snaps, err := snapshot.Request(testkit.Context(t, time.Minute), nil, base, admin, "default", "mixpanel/dyn")
			if err != nil || len(snaps) != 1 {
				t.Fatalf("snapshot answer %+v: %v", snaps, err)
			}
			if err := svc.stop(); err != nil {
				t.Fatal(err)
			}
			check := func(when string) {
				t.Helper()
				if got := sor.members(t); !slices.Equal(got, want) {
					t.Errorf("%s: members %v, want %v", when, got, want)
				}
				if got := sor.billable(t); got != int64(accepted) {
					t.Errorf("%s: %d billable data points, want %d (one per accepted assignment)", when, got, accepted)
				}
				if got := newestSnapshot(t, dir); !slices.Equal(got, want) {
					t.Errorf("%s: newest snapshot holds %v, want %v", when, got, want)
				}
				// Each data point once: a plain count over the tree is
				// the API's figure, after the replay too.
				if rows, distinct := dataPointRows(t, dir); rows != accepted || distinct != accepted {
					t.Errorf("%s: datapoints/ holds %d rows of %d distinct (record_id, position), want %d of %d", when, rows, distinct, accepted, accepted)
				}
			}
			check("after the syncs")

			// Replay every landed record through the same transforms and
			// sinks, under a consumer group of its own.
			replay(t, cfg)
			check("after a replay from Kafka")
		})
	}
}

// replay runs the stream of cfg from the first offset of the landing topic
// under a new consumer group until that group has committed every offset,
// then takes the snapshots that changed.
func replay(t *testing.T, cfg config.Config) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	reg := prometheus.NewRegistry()
	core, err := service.OpenCore(ctx, cfg, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer core.Close()
	gcfg := kafka.DefaultGroupConfig()
	gcfg.GroupID = "replay"
	topic := core.Kafka.Config().Topics.Exports
	src, err := core.Kafka.NewGroupSource(topic, gcfg, reg, log)
	if err != nil {
		t.Fatal(err)
	}
	st, err := service.StartStream(ctx, cfg, core, log, reg, service.StreamOptions{Source: src})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := st.Stop(); err != nil {
			t.Errorf("stop replay: %v", err)
		}
	}()
	ends, err := core.Kafka.PartitionEnds(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if err := core.Kafka.WaitCommitted(ctx, gcfg.GroupID, topic, ends, 0, nil); err != nil {
		t.Fatalf("replay did not catch up: %v", err)
	}
	if _, err := st.Snapshots().Snapshot(ctx, snapshot.Selection{}); err != nil {
		t.Fatal(err)
	}
}

func parquetFiles(t *testing.T, root string) []string {
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".parquet") {
			out = append(out, p)
		}
		if err != nil && !strings.Contains(err.Error(), "no such file") {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// readParquet reads files with Arrow's reader, independent of the writer.
func readParquet(t *testing.T, path string, fn func(rec arrow.RecordBatch, i int)) {
	t.Helper()
	rdr, err := file.OpenParquetFile(path, false)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer rdr.Close()
	fr, err := pqarrow.NewFileReader(rdr, pqarrow.ArrowReadProperties{BatchSize: 4096}, memory.NewGoAllocator())
	if err != nil {
		t.Fatal(err)
	}
	rr, err := fr.GetRecordReader(context.Background(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rr.Release()
	for rr.Next() {
		rec := rr.RecordBatch()
		for i := range int(rec.NumRows()) {
			fn(rec, i)
		}
	}
}

func stringCol(t *testing.T, rec arrow.RecordBatch, name string) *array.String {
	idx := rec.Schema().FieldIndices(name)
	if len(idx) != 1 {
		t.Fatalf("no column %s in %s", name, rec.Schema())
	}
	c, ok := rec.Column(idx[0]).(*array.String)
	if !ok {
		t.Fatalf("column %s is %s", name, rec.Column(idx[0]).DataType())
	}
	return c
}

// newestSnapshot reads the highest-version snapshot file of cohort dyn.
func newestSnapshot(t *testing.T, dataDir string) []string {
	files := parquetFiles(t, filepath.Join(dataDir, "parquet", "snapshots", "workspace=default", "partner=mixpanel", "cohort_id=dyn"))
	if len(files) == 0 {
		t.Fatal("no snapshot of cohort dyn")
	}
	version := func(p string) uint64 {
		var v uint64
		_, _ = fmt.Sscanf(filepath.Base(p), "version=%d.parquet", &v)
		return v
	}
	newest := files[0]
	for _, f := range files {
		if version(f) > version(newest) {
			newest = f
		}
	}
	var users []string
	readParquet(t, newest, func(rec arrow.RecordBatch, i int) { users = append(users, stringCol(t, rec, "user_id").Value(i)) })
	return users
}

// dataPointRows counts the rows of the datapoints/ files and their distinct
// (record_id, position).
func dataPointRows(t *testing.T, dataDir string) (rows, distinct int) {
	seen := map[string]bool{}
	for _, f := range parquetFiles(t, filepath.Join(dataDir, "parquet", "datapoints")) {
		readParquet(t, f, func(rec arrow.RecordBatch, i int) {
			idx := rec.Schema().FieldIndices("position")
			pos := rec.Column(idx[0]).(*array.Int32).Value(i)
			seen[fmt.Sprintf("%s/%d", stringCol(t, rec, "record_id").Value(i), pos)] = true
			rows++
		})
	}
	return rows, len(seen)
}
