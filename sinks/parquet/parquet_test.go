package parquet

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	pqa "github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/schema"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
)

type colType struct {
	physical pqa.Type
	logical  schema.LogicalType
}

var (
	strCol  = colType{pqa.Types.ByteArray, schema.StringLogicalType{}}
	tsCol   = colType{pqa.Types.Int64, schema.NewTimestampLogicalType(true, schema.TimeUnitMicros)}
	boolCol = colType{pqa.Types.Boolean, schema.NoLogicalType{}}
	i32Col  = colType{pqa.Types.Int32, schema.NewIntLogicalType(32, true)}
	i64Col  = colType{pqa.Types.Int64, schema.NewIntLogicalType(64, true)}
	dateCol = colType{pqa.Types.Int32, schema.DateLogicalType{}}

	changesTypes = map[string]colType{
		"workspace": strCol, "partner": strCol, "cohort_id": strCol, "user_id": strCol,
		"id_kind": strCol, "id_value": strCol, "is_member": boolCol, "version": i64Col,
		"record_id": strCol, "position": i32Col, "event_time": tsCol, "received_at": tsCol,
		"partition": i32Col, "offset": i64Col,
	}
	dataPointTypes = map[string]colType{
		"workspace": strCol, "partner": strCol, "cohort_id": strCol, "day": dateCol,
		"record_id": strCol, "position": i32Col, "is_member": boolCol, "user_id": strCol,
		"event_time": tsCol, "received_at": tsCol,
	}
)

// checkFileMeta asserts the physical and logical type of every column, zstd
// on every chunk, dictionary pages on string columns, the sorting columns and
// the fixed created_by.
func checkFileMeta(t *testing.T, f *arrowFile, want map[string]colType, sorting []string) {
	t.Helper()
	md := f.rdr.MetaData()
	if md.Schema.NumColumns() != len(want) {
		t.Fatalf("%d columns, want %d", md.Schema.NumColumns(), len(want))
	}
	for i := range md.Schema.NumColumns() {
		col := md.Schema.Column(i)
		w, ok := want[col.Name()]
		if !ok {
			t.Fatalf("unexpected column %s", col.Name())
		}
		if col.PhysicalType() != w.physical || !col.LogicalType().Equals(w.logical) {
			t.Errorf("column %s: %s %s, want %s %s", col.Name(), col.PhysicalType(), col.LogicalType(), w.physical, w.logical)
		}
		if col.MaxDefinitionLevel() != 0 {
			t.Errorf("column %s: optional, want required", col.Name())
		}
	}
	if md.NumRowGroups() == 0 {
		t.Fatal("no row groups")
	}
	for g := range md.NumRowGroups() {
		rg := md.RowGroup(g)
		var gotSort []string
		for _, sc := range rg.SortingColumns() {
			if sc.Descending {
				t.Errorf("row group %d: descending sorting column", g)
			}
			gotSort = append(gotSort, md.Schema.Column(int(sc.ColumnIdx)).Name())
		}
		if !slices.Equal(gotSort, sorting) {
			t.Errorf("row group %d: sorting columns %v, want %v", g, gotSort, sorting)
		}
		for i := range rg.NumColumns() {
			cc, err := rg.ColumnChunk(i)
			if err != nil {
				t.Fatal(err)
			}
			name := md.Schema.Column(i).Name()
			if cc.Compression() != compress.Codecs.Zstd {
				t.Errorf("column %s: codec %s, want ZSTD", name, cc.Compression())
			}
			if want[name] == strCol {
				if !cc.HasDictionaryPage() {
					t.Errorf("column %s: no dictionary page", name)
				}
				if !slices.Contains(cc.Encodings(), pqa.Encodings.RLEDict) && !slices.Contains(cc.Encodings(), pqa.Encodings.PlainDict) {
					t.Errorf("column %s: encodings %v, want a dictionary encoding", name, cc.Encodings())
				}
			}
		}
	}
	if got := md.GetCreatedBy(); !strings.HasPrefix(got, "cohortsync version "+FormatVersion) {
		t.Errorf("created_by %q", got)
	}
	if v := md.KeyValueMetadata().FindValue("cohortsync.format_version"); v == nil || *v != FormatVersion {
		t.Errorf("cohortsync.format_version = %v, want %s", v, FormatVersion)
	}
}

func TestWriteReadBackWithArrow(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		spec func() genSpec
	}{
		{"two partitions, workspaces and midnight", defaultSpec},
		{"one partition, one row", func() genSpec {
			s := defaultSpec()
			s.partitions = map[int]pipeline.OffsetRange{12: {First: 5, Last: 5}}
			s.idsPerRecord = 1
			return s
		}},
		{"before 1970", func() genSpec {
			s := defaultSpec()
			s.start = time.Date(1969, 12, 31, 12, 0, 0, 0, time.UTC)
			return s
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := testkit.DetachedContext(t, 30*time.Second)
			spec := tc.spec()
			changes := generate(spec)
			out := buildOutput(t, changes, spec.partitions)
			root := t.TempDir()
			reg := prometheus.NewRegistry()
			s := newTestSink(t, root, Options{Registerer: reg})
			if err := s.Write(ctx, out); err != nil {
				t.Fatalf("Write: %v", err)
			}
			if err := s.Healthy(); err != nil {
				t.Errorf("Healthy after a good write: %v", err)
			}
			if files := listFiles(t, root); len(files) != 0 {
				t.Fatalf("the trees show staged rows before a roll: %v", slices.Sorted(maps.Keys(files)))
			}
			if got := testutil.ToFloat64(s.m.staged); got != float64(len(changes)) {
				t.Errorf("staged_rows = %v, want %d", got, len(changes))
			}
			if err := s.Flush(ctx); err != nil {
				t.Fatalf("Flush: %v", err)
			}
			if got := testutil.ToFloat64(s.m.staged); got != 0 {
				t.Errorf("staged_rows after Flush = %v, want 0", got)
			}

			want := expectedChanges(changes, spec.partitions)
			wantDP := expectedDataPoints(changes, spec.partitions)
			var wantFiles []string
			for rel := range want {
				wantFiles = append(wantFiles, "changes/"+rel)
			}
			for rel := range wantDP {
				wantFiles = append(wantFiles, "datapoints/"+rel)
			}
			slices.Sort(wantFiles)
			if got := slices.Sorted(maps.Keys(listFiles(t, root))); !slices.Equal(got, wantFiles) {
				t.Fatalf("files:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantFiles, "\n"))
			}

			for rel, rows := range want {
				cf := openArrow(t, filepath.Join(root, "changes", rel))
				checkFileMeta(t, cf, changesTypes, []string{"partner", "cohort_id", "user_id", "version"})
				if got := readChanges(t, cf); !reflect.DeepEqual(got, rows) {
					t.Errorf("changes/%s: read back %d rows differing from the %d written", rel, len(got), len(rows))
					for i := range min(len(got), len(rows)) {
						if got[i] != rows[i] {
							t.Fatalf("first difference at row %d:\n got %+v\nwant %+v", i, got[i], rows[i])
						}
					}
				}
			}
			for rel, rows := range wantDP {
				df := openArrow(t, filepath.Join(root, "datapoints", rel))
				checkFileMeta(t, df, dataPointTypes, []string{"partner", "cohort_id", "record_id", "position"})
				if got := readDataPoints(t, df); !reflect.DeepEqual(got, rows) {
					t.Errorf("datapoints/%s: read back differs:\n got %+v\nwant %+v", rel, got, rows)
				}
			}

			if got := testutil.ToFloat64(s.m.rows.WithLabelValues(tableDataPoints)); got != float64(len(changes)) {
				t.Errorf("rows_written_total{datapoints} = %v, want %d", got, len(changes))
			}
			if got := testutil.ToFloat64(s.m.files.WithLabelValues(tableChanges)); got != float64(len(want)) {
				t.Errorf("files_written_total{changes} = %v, want %d", got, len(want))
			}
		})
	}
}

func sameFiles(a, b map[string][]byte) bool {
	return len(a) == len(b) && diffFiles(a, b) == ""
}

func diffFiles(a, b map[string][]byte) string {
	var d []string
	for k, v := range a {
		w, ok := b[k]
		switch {
		case !ok:
			d = append(d, "only in first: "+k)
		case !bytes.Equal(v, w):
			d = append(d, "differs: "+k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			d = append(d, "only in second: "+k)
		}
	}
	slices.Sort(d)
	return strings.Join(d, "; ")
}

func TestBatchWithoutPositionsRefused(t *testing.T) {
	t.Parallel()
	ctx := testkit.DetachedContext(t, 30*time.Second)
	spec := defaultSpec()
	root := t.TempDir()
	s := newTestSink(t, root, Options{})
	err := s.Write(ctx, buildOutput(t, generate(spec), nil))
	if !errors.Is(err, ErrInvalidBatch) || !strings.Contains(err.Error(), "no source positions") {
		t.Fatalf("Write without positions: %v, want ErrInvalidBatch", err)
	}
	if err := s.Healthy(); err != nil {
		t.Errorf("Healthy after a refused batch: %v, want nil (the disk is fine)", err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if files := listFiles(t, root); len(files) != 0 {
		t.Fatalf("a refused batch wrote %d files", len(files))
	}
}

func TestEmptyBatchWritesNothing(t *testing.T) {
	t.Parallel()
	ctx := testkit.DetachedContext(t, 30*time.Second)
	root := t.TempDir()
	s := newTestSink(t, root, Options{})
	for _, out := range []*pipeline.Output{
		{},
		buildOutput(t, nil, map[int]pipeline.OffsetRange{0: {First: 1, Last: 2}}),
		buildOutput(t, nil, nil),
	} {
		if err := s.Write(ctx, out); err != nil {
			t.Fatalf("Write: %v", err)
		}
	}
	if files := listFiles(t, root); len(files) != 0 {
		t.Fatalf("empty batches wrote %v", files)
	}
}

func TestRefusedBatches(t *testing.T) {
	t.Parallel()
	base := schemas.ResolvedChange{
		Workspace: "w", Partner: "p", CohortID: "c", UserID: "u", IDKind: schemas.IDKindExternalID, IDValue: "u",
		IsMember: true, Version: schemas.Version(5, 0), RecordID: "r", EventTime: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
		Partition: 1, Offset: 5,
	}
	tests := []struct {
		name      string
		positions map[int]pipeline.OffsetRange
		want      string
	}{
		{"partition not in positions", map[int]pipeline.OffsetRange{2: {First: 0, Last: 10}}, "partition 1 is not in the batch positions"},
		{"offset before range", map[int]pipeline.OffsetRange{1: {First: 6, Last: 10}}, "outside the batch range 6..10"},
		{"offset after range", map[int]pipeline.OffsetRange{1: {First: 0, Last: 4}}, "outside the batch range 0..4"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := testkit.DetachedContext(t, 30*time.Second)
			root := t.TempDir()
			reg := prometheus.NewRegistry()
			s := newTestSink(t, root, Options{Registerer: reg})
			err := s.Write(ctx, buildOutput(t, []schemas.ResolvedChange{base}, tc.positions))
			if !errors.Is(err, ErrInvalidBatch) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Write: %v, want ErrInvalidBatch containing %q", err, tc.want)
			}
			if files := listFiles(t, root); len(files) != 0 {
				t.Fatalf("a refused batch wrote %v", files)
			}
			if got := testutil.ToFloat64(s.m.errors.WithLabelValues(reasonInput)); got != 1 {
				t.Errorf("write_errors_total{input} = %v, want 1", got)
			}
		})
	}
}

func TestCancelledWrite(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(testkit.DetachedContext(t, 30*time.Second))
	cancel()
	root := t.TempDir()
	s := newTestSink(t, root, Options{})
	spec := smallSpec()
	if err := s.Write(ctx, buildOutput(t, generate(spec), spec.partitions)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Write: %v, want context.Canceled", err)
	}
	if files := listFiles(t, root); len(files) != 0 {
		t.Fatalf("a cancelled write left %v", files)
	}
	if got := testutil.ToFloat64(s.m.errors.WithLabelValues(reasonCanceled)); got != 1 {
		t.Errorf("write_errors_total{canceled} = %v, want 1", got)
	}
}

func TestClosedSinkRefusesWrites(t *testing.T) {
	t.Parallel()
	ctx := testkit.DetachedContext(t, 30*time.Second)
	reg := prometheus.NewRegistry()
	s, err := New(Config{Root: t.TempDir()}, Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	spec := defaultSpec()
	if err := s.Write(ctx, buildOutput(t, generate(spec), spec.partitions)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write after Close: %v, want ErrClosed", err)
	}
	// Close unregistered the metrics, so a new sink can use the registry.
	s2, err := New(Config{Root: t.TempDir()}, Options{Registerer: reg})
	if err != nil {
		t.Fatalf("New on the registry of a closed sink: %v", err)
	}
	_ = s2.Close()
}

func TestEscapePartitionValue(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"acme":         "acme",
		"globex/eu=1":  "globex%2Feu%3D1",
		"..":           "..",
		"50%":          "50%25",
		"a:b?c#d":      "a%3Ab%3Fc%23d",
		"tab\there":    "tab%09here",
		"":             "__HIVE_DEFAULT_PARTITION__",
		"ünïcode-ok_1": "ünïcode-ok_1",
		"a~b":          "a%7Eb",
	} {
		if got := escapePartitionValue(in); got != want {
			t.Errorf("escapePartitionValue(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDayOf(t *testing.T) {
	t.Parallel()
	for _, tm := range []time.Time{
		time.Date(2024, 2, 29, 23, 59, 59, 999999000, time.UTC),
		time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC),
		time.Date(1969, 12, 31, 23, 59, 59, 0, time.UTC),
		time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(1900, 6, 1, 12, 0, 0, 0, time.UTC),
	} {
		d := dayOf(arrowTS(tm))
		if got, want := dateString(d), tm.Format(time.DateOnly); got != want {
			t.Errorf("%s: day %d formats as %s, want %s", tm, d, got, want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	err := Config{Root: " ", DictionaryMaxBytes: -1, MaxRowsPerRowGroup: -1, RollRows: -1, RollInterval: -1}.Validate()
	if err == nil {
		t.Fatal("Validate accepted a bad configuration")
	}
	for _, field := range []string{"root:", "dictionary_max_bytes:", "max_rows_per_row_group:", "roll_rows:", "roll_interval:"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("Validate error %q does not name %s", err, field)
		}
	}
	if err := (Config{Root: "/x"}).WithDefaults().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	if _, err := New(Config{}, Options{}); err == nil {
		t.Error("New accepted an empty root")
	}
}

// TestDictionaryCap: past DictionaryMaxBytes a string column falls back to
// PLAIN, and the values still read back.
func TestDictionaryCap(t *testing.T) {
	t.Parallel()
	ctx := testkit.DetachedContext(t, 30*time.Second)
	spec := defaultSpec()
	spec.partitions = map[int]pipeline.OffsetRange{0: {First: 0, Last: 199}}
	spec.workspaces = []string{"acme"}
	spec.days = 1
	spec.users = 5000
	spec.start = time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
	changes := generate(spec)
	root := t.TempDir()
	s, err := New(Config{Root: root, DictionaryMaxBytes: 1024, PageBufferBytes: 2048}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.Write(ctx, buildOutput(t, changes, spec.partitions)); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	want := expectedChanges(changes, spec.partitions)
	if len(want) != 1 {
		t.Fatalf("%d files expected, want 1", len(want))
	}
	for rel, rows := range want {
		f := openArrow(t, filepath.Join(root, "changes", rel))
		md := f.rdr.MetaData()
		idx := md.Schema.ColumnIndexByName("user_id")
		cc, err := md.RowGroup(0).ColumnChunk(idx)
		if err != nil {
			t.Fatal(err)
		}
		var dictPages, plainPages int
		for _, st := range cc.EncodingStats() {
			// PageType's package is internal to arrow-go; its name is not.
			if pt := st.PageType.String(); pt == "DATA_PAGE" || pt == "DATA_PAGE_V2" {
				switch st.Encoding {
				case pqa.Encodings.RLEDict, pqa.Encodings.PlainDict:
					dictPages++
				case pqa.Encodings.Plain:
					plainPages++
				}
			}
		}
		if dictPages == 0 || plainPages == 0 {
			t.Errorf("user_id pages: %d dictionary-encoded, %d PLAIN, want both past the 1 KiB dictionary cap (%+v)", dictPages, plainPages, cc.EncodingStats())
		}
		if got := readChanges(t, f); !reflect.DeepEqual(got, rows) {
			t.Errorf("changes/%s: read back differs from what was written", rel)
		}
	}
	if got := (Config{Root: "x"}).WithDefaults().DictionaryMaxBytes; got != 1<<20 {
		t.Errorf("default dictionary cap %d, want 1 MiB", got)
	}
}
