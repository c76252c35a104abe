package parquet

import (
	"cmp"
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
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

	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
)

// genSpec describes a synthetic batch: partitions[p] is the offset range of
// partition p, and every offset in it yields one record of idsPerRecord ids.
type genSpec struct {
	seed         uint64
	workspaces   []string
	partitions   map[int]pipeline.OffsetRange
	idsPerRecord int
	users        int
	// start and days spread event times over days UTC days from start.
	start time.Time
	days  int
}

func defaultSpec() genSpec {
	return genSpec{
		seed:         1,
		workspaces:   []string{"acme", "globex/eu=1"},
		partitions:   map[int]pipeline.OffsetRange{0: {First: 100, Last: 139}, 3: {First: 7, Last: 31}},
		idsPerRecord: 9,
		users:        50,
		start:        time.Date(2024, 2, 28, 22, 0, 0, 0, time.UTC),
		days:         3,
	}
}

// smallSpec writes few files (two workspaces, one day, two partitions),
// for tests that write many times.
func smallSpec() genSpec {
	s := defaultSpec()
	s.partitions = map[int]pipeline.OffsetRange{0: {First: 100, Last: 119}, 3: {First: 7, Last: 16}}
	s.idsPerRecord = 5
	s.start = time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	s.days = 1
	return s
}

// generate returns the changes of spec in batch order (partition, offset,
// position), as the identity transform would emit them.
func generate(spec genSpec) []schemas.ResolvedChange {
	r := rand.New(rand.NewPCG(spec.seed, 7))
	partners := []string{"mixpanel", "amplitude"}
	kinds := []string{schemas.IDKindExternalID, schemas.IDKindAlias, schemas.IDKindDeviceID}
	var out []schemas.ResolvedChange
	for _, p := range slices.Sorted(func(yield func(int) bool) {
		for p := range spec.partitions {
			if !yield(p) {
				return
			}
		}
	}) {
		rng := spec.partitions[p]
		for off := rng.First; off <= rng.Last; off++ {
			ws := spec.workspaces[r.IntN(len(spec.workspaces))]
			partner := partners[r.IntN(len(partners))]
			cohort := fmt.Sprintf("cohort-%02d", r.IntN(5))
			recordID := fmt.Sprintf("rec-%d-%d-%d", spec.seed, p, off)
			event := spec.start.Add(time.Duration(r.Int64N(int64(spec.days) * int64(24*time.Hour)))).Truncate(time.Microsecond)
			received := event.Add(time.Duration(r.IntN(1000)) * time.Millisecond)
			add := r.IntN(3) > 0
			for pos := range spec.idsPerRecord {
				user := fmt.Sprintf("user-%05d", r.IntN(spec.users))
				out = append(out, schemas.ResolvedChange{
					Workspace: ws, Partner: partner, CohortID: cohort, UserID: user,
					IDKind: kinds[pos%len(kinds)], IDValue: "id:" + user,
					IsMember: add, Version: schemas.Version(off, pos),
					RecordID: recordID, Position: uint32(pos),
					EventTime: event, ReceivedAt: received,
					Partition: int32(p), Offset: off,
				})
			}
		}
	}
	return out
}

func buildOutput(t testing.TB, changes []schemas.ResolvedChange, positions map[int]pipeline.OffsetRange) *pipeline.Output {
	t.Helper()
	b := schemas.NewChangesBuilder(memory.NewGoAllocator())
	defer b.Release()
	for _, c := range changes {
		b.Append(c)
	}
	rec := b.NewRecordBatch()
	t.Cleanup(rec.Release)
	return &pipeline.Output{Changes: rec, Rejections: pipeline.NewRejections(), Positions: positions}
}

func newTestSink(t testing.TB, root string, opts Options) *Sink {
	t.Helper()
	s, err := New(Config{Root: root}, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// listFiles returns every file of the trees under root (not the staging
// area, not the lock), relative to root, with its bytes.
func listFiles(t testing.TB, root string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == stagingDir {
			return filepath.SkipDir
		}
		if d.IsDir() || d.Name() == treeLockName {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		files[filepath.ToSlash(rel)] = b
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatalf("walk %s: %v", root, err)
	}
	return files
}

// expectedChanges is the test's own statement of the layout after one roll
// of every partition: which file each change belongs in, and in what order.
// spans[p] is the offset range the roll of partition p covered.
func expectedChanges(changes []schemas.ResolvedChange, spans map[int]pipeline.OffsetRange) map[string][]schemas.ResolvedChange {
	want := map[string][]schemas.ResolvedChange{}
	for _, c := range changes {
		rel := fileRel(c.Workspace, c.EventTime, spans[int(c.Partition)], c.Partition)
		want[rel] = append(want[rel], c)
	}
	for _, rows := range want {
		slices.SortStableFunc(rows, func(a, b schemas.ResolvedChange) int {
			return cmp.Or(cmp.Compare(a.Partner, b.Partner), cmp.Compare(a.CohortID, b.CohortID),
				cmp.Compare(a.UserID, b.UserID), cmp.Compare(a.Version, b.Version))
		})
	}
	return want
}

func fileRel(ws string, day time.Time, r pipeline.OffsetRange, partition int32) string {
	ws = strings.NewReplacer("/", "%2F", "=", "%3D").Replace(ws)
	return "workspace=" + ws + "/date=" + day.UTC().Format("2006-01-02") + "/" +
		fmt.Sprintf("part-p%04d-o%012d-%012d.parquet", partition, r.First, r.Last)
}

// expectedDataPoints is expectedChanges for datapoints/: partitioned by
// landing day and ordered by (partner, cohort_id, record_id, position).
func expectedDataPoints(changes []schemas.ResolvedChange, spans map[int]pipeline.OffsetRange) map[string][]dataPoint {
	want := map[string][]dataPoint{}
	for _, c := range changes {
		rel := fileRel(c.Workspace, c.ReceivedAt, spans[int(c.Partition)], c.Partition)
		want[rel] = append(want[rel], dataPointOfChange(c))
	}
	for _, rows := range want {
		slices.SortStableFunc(rows, func(a, b dataPoint) int {
			return cmp.Or(cmp.Compare(a.Partner, b.Partner), cmp.Compare(a.CohortID, b.CohortID),
				cmp.Compare(a.RecordID, b.RecordID), cmp.Compare(a.Position, b.Position))
		})
	}
	return want
}

// arrowFile is a file opened with Arrow's Parquet reader, which shares no
// code with parquet-go.
type arrowFile struct {
	rdr *file.Reader
	tbl arrow.Table
}

func openArrow(t testing.TB, path string) *arrowFile {
	t.Helper()
	rdr, err := file.OpenParquetFile(path, false)
	if err != nil {
		t.Fatalf("arrow open %s: %v", path, err)
	}
	t.Cleanup(func() { _ = rdr.Close() })
	fr, err := pqarrow.NewFileReader(rdr, pqarrow.ArrowReadProperties{BatchSize: 1 << 16}, memory.NewGoAllocator())
	if err != nil {
		t.Fatalf("arrow reader %s: %v", path, err)
	}
	tbl, err := fr.ReadTable(context.Background())
	if err != nil {
		t.Fatalf("arrow read %s: %v", path, err)
	}
	t.Cleanup(tbl.Release)
	return &arrowFile{rdr: rdr, tbl: tbl}
}

// column returns the named column as one array, failing if its Arrow type
// is not want.
func (f *arrowFile) column(t testing.TB, name string, want arrow.DataType) arrow.Array {
	t.Helper()
	idx := f.tbl.Schema().FieldIndices(name)
	if len(idx) != 1 {
		t.Fatalf("column %s: found %d times in %s", name, len(idx), f.tbl.Schema())
	}
	col := f.tbl.Column(idx[0])
	if !arrow.TypeEqual(col.DataType(), want) {
		t.Fatalf("column %s: arrow type %s, want %s", name, col.DataType(), want)
	}
	arr, err := array.Concatenate(col.Data().Chunks(), memory.NewGoAllocator())
	if err != nil {
		t.Fatalf("column %s: %v", name, err)
	}
	t.Cleanup(arr.Release)
	return arr
}

var tsUTC = &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}

// readChanges reads a changes file back, asserting the Arrow type of every column.
func readChanges(t testing.TB, f *arrowFile) []schemas.ResolvedChange {
	t.Helper()
	s := func(n string) *array.String { return f.column(t, n, arrow.BinaryTypes.String).(*array.String) }
	ws, partner, cohort, user := s("workspace"), s("partner"), s("cohort_id"), s("user_id")
	kind, value, rec := s("id_kind"), s("id_value"), s("record_id")
	member := f.column(t, "is_member", arrow.FixedWidthTypes.Boolean).(*array.Boolean)
	version := f.column(t, "version", arrow.PrimitiveTypes.Int64).(*array.Int64)
	pos := f.column(t, "position", arrow.PrimitiveTypes.Int32).(*array.Int32)
	event := f.column(t, "event_time", tsUTC).(*array.Timestamp)
	received := f.column(t, "received_at", tsUTC).(*array.Timestamp)
	part := f.column(t, "partition", arrow.PrimitiveTypes.Int32).(*array.Int32)
	off := f.column(t, "offset", arrow.PrimitiveTypes.Int64).(*array.Int64)
	if n := f.tbl.NumCols(); n != 14 {
		t.Fatalf("changes file has %d columns, want 14", n)
	}
	out := make([]schemas.ResolvedChange, f.tbl.NumRows())
	for i := range out {
		out[i] = schemas.ResolvedChange{
			Workspace: ws.Value(i), Partner: partner.Value(i), CohortID: cohort.Value(i), UserID: user.Value(i),
			IDKind: kind.Value(i), IDValue: value.Value(i), IsMember: member.Value(i),
			Version: uint64(version.Value(i)), RecordID: rec.Value(i), Position: uint32(pos.Value(i)),
			EventTime:  time.UnixMicro(int64(event.Value(i))).UTC(),
			ReceivedAt: time.UnixMicro(int64(received.Value(i))).UTC(),
			Partition:  part.Value(i), Offset: off.Value(i),
		}
	}
	return out
}

// dataPoint is a datapoints row as the test expects it.
type dataPoint struct {
	Workspace, Partner, CohortID string
	Day                          string
	RecordID                     string
	Position                     int32
	IsMember                     bool
	UserID                       string
	EventTime, ReceivedAt        time.Time
}

func dataPointOfChange(c schemas.ResolvedChange) dataPoint {
	return dataPoint{
		Workspace: c.Workspace, Partner: c.Partner, CohortID: c.CohortID,
		Day: c.ReceivedAt.UTC().Format("2006-01-02"), RecordID: c.RecordID, Position: int32(c.Position),
		IsMember: c.IsMember, UserID: c.UserID, EventTime: c.EventTime.UTC(), ReceivedAt: c.ReceivedAt.UTC(),
	}
}

func readDataPoints(t testing.TB, f *arrowFile) []dataPoint {
	t.Helper()
	s := func(n string) *array.String { return f.column(t, n, arrow.BinaryTypes.String).(*array.String) }
	ws, partner, cohort, rec, user := s("workspace"), s("partner"), s("cohort_id"), s("record_id"), s("user_id")
	day := f.column(t, "day", arrow.FixedWidthTypes.Date32).(*array.Date32)
	pos := f.column(t, "position", arrow.PrimitiveTypes.Int32).(*array.Int32)
	member := f.column(t, "is_member", arrow.FixedWidthTypes.Boolean).(*array.Boolean)
	event := f.column(t, "event_time", tsUTC).(*array.Timestamp)
	received := f.column(t, "received_at", tsUTC).(*array.Timestamp)
	if n := f.tbl.NumCols(); n != 10 {
		t.Fatalf("datapoints file has %d columns, want 10", n)
	}
	out := make([]dataPoint, f.tbl.NumRows())
	for i := range out {
		out[i] = dataPoint{
			Workspace: ws.Value(i), Partner: partner.Value(i), CohortID: cohort.Value(i),
			Day: day.Value(i).ToTime().Format("2006-01-02"), RecordID: rec.Value(i), Position: pos.Value(i),
			IsMember: member.Value(i), UserID: user.Value(i), EventTime: time.UnixMicro(int64(event.Value(i))).UTC(),
			ReceivedAt: time.UnixMicro(int64(received.Value(i))).UTC(),
		}
	}
	return out
}

func arrowTS(t time.Time) arrow.Timestamp { return arrow.Timestamp(t.UnixMicro()) }
