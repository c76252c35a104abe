package snapshot_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
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

	"github.com/cohortsync/cohortsync/internal/chtest"
	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/jobs/snapshot"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	chsink "github.com/cohortsync/cohortsync/sinks/clickhouse"
	"github.com/cohortsync/cohortsync/sinks/parquet"
	"github.com/cohortsync/cohortsync/sinks/state"
)

// backend is one state of record with the snapshot Source that reads it.
type backend struct {
	sink pipeline.Sink
	src  snapshot.Source
}

func stateBackend(t *testing.T) backend {
	st, err := state.Open(state.DefaultConfig(t.TempDir()), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return backend{st, snapshot.FromState(st)}
}

func clickhouseBackend(t *testing.T) backend {
	addr, db := chtest.NewDatabase(t)
	cfg := chsink.DefaultConfig()
	cfg.Addr, cfg.Database = addr, db
	ch, err := chsink.New(cfg, chsink.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ch.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := ch.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return backend{ch, snapshot.FromClickHouse(ch)}
}

// history generates batches of adds and removes over three cohorts, as the
// runner would hand them to sinks: one partition, rising offsets.
type history struct {
	rng    *rand.Rand
	offset int64
	start  time.Time
}

func (h *history) batch(t *testing.T, cohorts []string, records int) *pipeline.Output {
	b := schemas.NewChangesBuilder(nil)
	defer b.Release()
	first := h.offset
	for range records {
		c := cohorts[h.rng.IntN(len(cohorts))]
		add := h.rng.IntN(3) > 0
		at := h.start.Add(time.Duration(h.offset) * time.Minute)
		for pos := range 1 + h.rng.IntN(20) {
			user := fmt.Sprintf("u%03d", h.rng.IntN(150))
			b.Append(schemas.ResolvedChange{
				Workspace: "acme", Partner: "mixpanel", CohortID: c, UserID: user,
				IDKind: schemas.IDKindExternalID, IDValue: "x-" + user, IsMember: add,
				Version: schemas.Version(h.offset, pos), RecordID: fmt.Sprintf("r%d", h.offset), Position: uint32(pos),
				EventTime: at, ReceivedAt: at, Partition: 0, Offset: h.offset,
			})
		}
		h.offset++
	}
	out := &pipeline.Output{
		Changes:    b.NewRecordBatch(),
		Rejections: pipeline.NewRejections(),
		Positions:  map[int]pipeline.OffsetRange{0: {First: first, Last: h.offset - 1}},
	}
	t.Cleanup(out.Changes.Release)
	return out
}

func write(t *testing.T, out *pipeline.Output, sinks ...pipeline.Sink) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, s := range sinks {
		if err := s.Write(ctx, out); err != nil {
			t.Fatalf("%s: %v", s.Name(), err)
		}
		// The history is read from the trees: roll the staged rows in.
		if f, ok := s.(interface{ Flush(context.Context) error }); ok {
			if err := f.Flush(ctx); err != nil {
				t.Fatalf("%s: flush: %v", s.Name(), err)
			}
		}
	}
}

// readTable reads every row of the Parquet files matched by pattern with
// Arrow's reader, an implementation independent of the one that wrote them.
func readTable(t *testing.T, paths []string, fn func(rec arrow.RecordBatch, i int)) {
	t.Helper()
	for _, p := range paths {
		rdr, err := file.OpenParquetFile(p, false)
		if err != nil {
			t.Fatalf("open %s: %v", p, err)
		}
		fr, err := pqarrow.NewFileReader(rdr, pqarrow.ArrowReadProperties{BatchSize: 4096}, memory.NewGoAllocator())
		if err != nil {
			t.Fatal(err)
		}
		rr, err := fr.GetRecordReader(context.Background(), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		for rr.Next() {
			rec := rr.RecordBatch()
			for i := range int(rec.NumRows()) {
				fn(rec, i)
			}
		}
		rr.Release()
		_ = rdr.Close()
	}
}

func col[T arrow.Array](t *testing.T, rec arrow.RecordBatch, name string) T {
	idx := rec.Schema().FieldIndices(name)
	if len(idx) != 1 {
		t.Fatalf("column %s not in %s", name, rec.Schema())
	}
	a, ok := rec.Column(idx[0]).(T)
	if !ok {
		t.Fatalf("column %s is %s", name, rec.Column(idx[0]).DataType())
	}
	return a
}

func glob(t *testing.T, root, suffix string) []string {
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, suffix) {
			out = append(out, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// membersFromHistory replays the changes/ files: per user, the change with
// the highest version decides.
func membersFromHistory(t *testing.T, root string) map[string][]string {
	type last struct {
		version uint64
		member  bool
	}
	state := map[[2]string]last{}
	readTable(t, glob(t, filepath.Join(root, "changes"), ".parquet"), func(rec arrow.RecordBatch, i int) {
		k := [2]string{col[*array.String](t, rec, "cohort_id").Value(i), col[*array.String](t, rec, "user_id").Value(i)}
		v := uint64(col[*array.Int64](t, rec, "version").Value(i))
		if cur, ok := state[k]; !ok || v > cur.version {
			state[k] = last{v, col[*array.Boolean](t, rec, "is_member").Value(i)}
		}
	})
	out := map[string][]string{}
	for k, l := range state {
		if l.member {
			out[k[0]] = append(out[k[0]], k[1])
		}
	}
	for _, m := range out {
		slices.Sort(m)
	}
	return out
}

func readSnapshot(t *testing.T, path string) (users []string, version uint64) {
	readTable(t, []string{path}, func(rec arrow.RecordBatch, i int) {
		users = append(users, col[*array.String](t, rec, "user_id").Value(i))
		version = uint64(col[*array.Int64](t, rec, "version").Value(i))
	})
	return users, version
}

func TestSnapshotEqualsHistory(t *testing.T) {
	t.Parallel()
	for name, open := range map[string]func(*testing.T) backend{"state": stateBackend, "clickhouse": clickhouseBackend} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			be := open(t)
			cfg := parquet.DefaultConfig()
			cfg.Root, cfg.SnapshotsKept = t.TempDir(), 2
			pq, err := parquet.New(cfg, parquet.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = pq.Close() })
			snap, err := snapshot.New(snapshot.DefaultConfig(), be.src, pq, snapshot.Options{})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()

			h := &history{rng: rand.New(rand.NewPCG(7, 9)), start: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
			all := []string{"a", "b", "c"}
			for i := range 5 {
				out := h.batch(t, all, 40)
				write(t, out, be.sink, pq)
				if i == 2 {
					write(t, out, be.sink, pq) // a redelivery changes nothing
				}
			}
			check := func(round string, wantWritten map[string]bool) {
				t.Helper()
				res, err := snap.Snapshot(ctx, snapshot.Selection{})
				if err != nil {
					t.Fatalf("%s: %v", round, err)
				}
				want := membersFromHistory(t, cfg.Root)
				if len(res) != len(all) {
					t.Fatalf("%s: %d results, want one per cohort: %+v", round, len(res), res)
				}
				for _, r := range res {
					if r.Written != wantWritten[r.Cohort.CohortID] {
						t.Errorf("%s: cohort %s written=%v, want %v", round, r.Cohort.CohortID, r.Written, wantWritten[r.Cohort.CohortID])
					}
					if filepath.IsAbs(r.Path) {
						t.Errorf("%s: result path %s is absolute, want relative to the Parquet root", round, r.Path)
					}
					got, v := readSnapshot(t, filepath.Join(cfg.Root, r.Path))
					if !slices.Equal(got, want[r.Cohort.CohortID]) {
						t.Errorf("%s: snapshot of %s has %d members, history says %d:\n got %v\nwant %v",
							round, r.Cohort.CohortID, len(got), len(want[r.Cohort.CohortID]), got, want[r.Cohort.CohortID])
					}
					if len(got) > 0 && v != r.Version {
						t.Errorf("%s: %s rows carry version %d, file says %d", round, r.Path, v, r.Version)
					}
				}
			}
			check("first round", map[string]bool{"a": true, "b": true, "c": true})
			check("nothing changed", map[string]bool{})
			for range 2 {
				write(t, h.batch(t, []string{"b"}, 10), be.sink, pq)
				check("b changed", map[string]bool{"b": true})
			}
			// Two snapshots are kept per cohort: b has had three.
			if got := glob(t, pq.SnapshotDir(parquet.CohortKey{Workspace: "acme", Partner: "mixpanel", CohortID: "b"}), ".parquet"); len(got) != 2 {
				t.Errorf("cohort b keeps %d snapshots, want 2: %v", len(got), got)
			}

			// A new Snapshotter (a restart) reads what is on disk and
			// writes nothing new.
			again, err := snapshot.New(snapshot.DefaultConfig(), be.src, pq, snapshot.Options{})
			if err != nil {
				t.Fatal(err)
			}
			one := parquet.CohortKey{Workspace: "acme", Partner: "mixpanel", CohortID: "a"}
			res, err := again.Snapshot(ctx, snapshot.Selection{Cohort: &one})
			if err != nil || len(res) != 1 || res[0].Written {
				t.Fatalf("after restart: %+v, %v; want cohort a reported, not rewritten", res, err)
			}
			missing := parquet.CohortKey{Workspace: "acme", Partner: "mixpanel", CohortID: "nope"}
			if _, err := again.Snapshot(ctx, snapshot.Selection{Cohort: &missing}); err == nil {
				t.Error("a snapshot of an unknown cohort succeeded")
			}
		})
	}
}

// listSource is a state of record of fixed cohorts; members of the cohort
// named failing cannot be read.
type listSource struct {
	cohorts []snapshot.Cohort
	members []string
	failing string
}

func (s listSource) Cohorts(context.Context) ([]snapshot.Cohort, error) { return s.cohorts, nil }

func (s listSource) Members(_ context.Context, k parquet.CohortKey, fn func(string) error) (uint64, error) {
	if k.CohortID == s.failing {
		return 0, errors.New("read failed at /srv/secret/path")
	}
	for _, m := range s.members {
		if err := fn(m); err != nil {
			return 0, err
		}
	}
	for _, c := range s.cohorts {
		if c.Key == k {
			return c.Version, nil
		}
	}
	return 0, nil
}

// TestAnyCohortIDAndOneFailure: a cohort id of any length or bytes gets a
// snapshot (the path is cut and hashed, never too long), and a cohort that
// fails fails alone: the round writes the others, ends, and says which one
// failed without a server path.
func TestAnyCohortIDAndOneFailure(t *testing.T) {
	t.Parallel()
	ctx := testkit.DetachedContext(t, 30*time.Second)
	long := strings.Repeat("a", 249)
	odd := strings.Repeat("é/%~=", 80)
	key := func(id string) parquet.CohortKey {
		return parquet.CohortKey{Workspace: "acme", Partner: "mixpanel", CohortID: id}
	}
	src := listSource{
		cohorts: []snapshot.Cohort{{Key: key(long), Version: 3}, {Key: key(odd), Version: 4}, {Key: key(long + "b"), Version: 5}, {Key: key("broken"), Version: 6}},
		members: []string{"u1", "u2"},
		failing: "broken",
	}
	root := t.TempDir()
	pq, err := parquet.New(parquet.Config{Root: root}, parquet.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pq.Close() })
	reg := prometheus.NewRegistry()
	snap, err := snapshot.New(snapshot.Config{Interval: -1}, src, pq, snapshot.Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	res, err := snap.Snapshot(ctx, snapshot.Selection{})
	if err != nil {
		t.Fatalf("round: %v, want nil (only one cohort failed)", err)
	}
	paths := map[string]bool{}
	for _, r := range res {
		if r.Cohort.CohortID == "broken" {
			if r.Error == "" || strings.Contains(r.Error, "/srv") {
				t.Errorf("failed cohort: error %q, want a reason without paths", r.Error)
			}
			continue
		}
		if r.Error != "" || !r.Written {
			t.Errorf("cohort %.20s...: %+v, want written", r.Cohort.CohortID, r)
		}
		for _, part := range strings.Split(r.Path, "/") {
			if len(part) > 255 {
				t.Errorf("path element of %d bytes: %s", len(part), part)
			}
		}
		users, v := readSnapshot(t, filepath.Join(root, r.Path))
		if !slices.Equal(users, src.members) || v != r.Version {
			t.Errorf("%s: members %v version %d", r.Path, users, v)
		}
		paths[r.Path] = true
	}
	if len(paths) != 3 {
		t.Errorf("%d distinct snapshot paths for 3 cohorts: %v", len(paths), paths)
	}
	if got := counterValue(t, reg, "cohortsync_snapshot_failures_total"); got != 1 {
		t.Errorf("failures_total = %v, want 1", got)
	}
	// A later round knows what is written: only the broken cohort is tried.
	res, err = snap.Snapshot(ctx, snapshot.Selection{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Written {
			t.Errorf("second round rewrote %.20s", r.Cohort.CohortID)
		}
	}
	// Only failing cohorts: the round reports the error.
	only := key("broken")
	if _, err := snap.Snapshot(ctx, snapshot.Selection{Workspace: "acme", Cohort: &only}); !errors.Is(err, snapshot.ErrCohortsFailed) {
		t.Errorf("round of the broken cohort alone: %v, want ErrCohortsFailed", err)
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
