package files_test

import (
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/google/uuid"
	pq "github.com/parquet-go/parquet-go"

	"github.com/cohortsync/cohortsync/connectors/files"
	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	sinkpq "github.com/cohortsync/cohortsync/sinks/parquet"
)

// landedRecord is a record of the log and what identity resolution refused.
type landedRecord struct {
	env       schemas.Envelope
	partition int32
	offset    int64
	refused   map[int]bool // positions without a row
}

// resolve plays the identity transform's part: one row per id that it
// matched, positions counting every id in payload order.
func resolve(rec landedRecord) []schemas.ResolvedChange {
	p := rec.env.Payload.(schemas.CohortChangesPayload)
	var out []schemas.ResolvedChange
	pos := 0
	add := func(member bool, kind, value string) {
		if !rec.refused[pos] {
			out = append(out, schemas.ResolvedChange{
				Workspace: rec.env.Workspace, Partner: rec.env.Partner, CohortID: p.CohortID,
				UserID: "user-" + value, IDKind: kind, IDValue: value, IsMember: member,
				Version: schemas.Version(rec.offset, pos), RecordID: rec.env.RecordID, Position: uint32(pos),
				EventTime: rec.env.EventTime, ReceivedAt: rec.env.ReceivedAt,
				Partition: rec.partition, Offset: rec.offset,
			})
		}
		pos++
	}
	for _, c := range p.Changes {
		for _, id := range c.UserIDs {
			add(!c.ShouldRemove, schemas.IDKindExternalID, id)
		}
		for _, id := range c.DeviceIDs {
			add(!c.ShouldRemove, schemas.IDKindDeviceID, id)
		}
		for _, a := range c.Aliases {
			add(!c.ShouldRemove, schemas.IDKindAlias, a.Label+":"+a.Name)
		}
	}
	return out
}

func changesEnvelope(id, ws, partner, cohort string, at time.Time, changes ...schemas.Change) schemas.Envelope {
	return schemas.Envelope{
		SchemaVersion: schemas.CurrentVersion, RecordID: id, Workspace: ws, Partner: partner,
		EventTime: at, ReceivedAt: at.Add(1500 * time.Millisecond),
		Payload: schemas.CohortChangesPayload{CohortID: cohort, Changes: changes},
	}
}

// sinkFixture writes records through the real Parquet sink and returns the
// changes/ files it wrote.
func sinkFixture(t *testing.T, cfg sinkpq.Config) ([]landedRecord, []string) {
	t.Helper()
	at := time.Date(2024, 3, 1, 10, 0, 0, 123456000, time.UTC)
	recs := []landedRecord{
		{env: changesEnvelope("rec-a", "acme", "mixpanel", "c1", at,
			schemas.Change{UserIDs: []string{"u1", "u2"}, DeviceIDs: []string{"d1"}, Aliases: []schemas.Alias{{Name: "a:b@x.com", Label: "email"}}},
			schemas.Change{UserIDs: []string{"u3"}, ShouldRemove: true},
			schemas.Change{UserIDs: []string{"u4"}},
		), partition: 0, offset: 10},
		{env: changesEnvelope("rec-b", "acme", "amplitude", "c2", at,
			schemas.Change{DeviceIDs: []string{"d2", "d3"}, ShouldRemove: true},
		), partition: 1, offset: 5},
		// Position 1 was refused: the rebuilt record cannot keep its id.
		{env: changesEnvelope("rec-c", "acme", "mixpanel", "c1", at.Add(time.Minute),
			schemas.Change{UserIDs: []string{"u5", "ux", "u6"}},
		), partition: 0, offset: 11, refused: map[int]bool{1: true}},
		{env: changesEnvelope("rec-d", "globex", "mixpanel", "c3", at.AddDate(0, 0, 1),
			schemas.Change{UserIDs: []string{"z0", "z1"}},
		), partition: 0, offset: 12, refused: map[int]bool{0: true}},
		// Nothing resolved: no rows, nothing to rebuild.
		{env: changesEnvelope("rec-e", "acme", "mixpanel", "c1", at,
			schemas.Change{UserIDs: []string{"gone"}},
		), partition: 0, offset: 13, refused: map[int]bool{0: true}},
	}
	b := schemas.NewChangesBuilder(memory.NewGoAllocator())
	defer b.Release()
	for _, r := range recs {
		for _, c := range resolve(r) {
			b.Append(c)
		}
	}
	batch := b.NewRecordBatch()
	defer batch.Release()
	root := t.TempDir()
	cfg.Root = root
	sink, err := sinkpq.New(cfg, sinkpq.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	out := &pipeline.Output{
		Changes: batch, Rejections: pipeline.NewRejections(),
		Positions: map[int]pipeline.OffsetRange{0: {First: 10, Last: 13}, 1: {First: 5, Last: 5}},
	}
	if err := sink.Write(testkit.DetachedContext(t, 60*time.Second), out); err != nil {
		t.Fatalf("sink write: %v", err)
	}
	if err := sink.Flush(testkit.DetachedContext(t, 60*time.Second)); err != nil {
		t.Fatalf("sink flush: %v", err)
	}
	var paths []string
	err = filepath.WalkDir(filepath.Join(root, "changes"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".parquet") {
			paths = append(paths, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(paths)
	return recs, paths
}

func TestParquetFromSink(t *testing.T) {
	t.Parallel()
	t.Run("defaults", func(t *testing.T) {
		t.Parallel()
		testParquetFromSink(t, sinkpq.Config{})
	})
	// Plain-encoded strings on many small pages: byte arrays that live in
	// the pages, which are released as reading moves on.
	t.Run("plain pages", func(t *testing.T) {
		t.Parallel()
		testParquetFromSink(t, sinkpq.Config{DictionaryMaxBytes: 1, PageBufferBytes: 1})
	})
}

func testParquetFromSink(t *testing.T, cfg sinkpq.Config) {
	recs, paths := sinkFixture(t, cfg)
	if len(paths) != 3 {
		t.Fatalf("sink wrote %d changes files, want 3: %v", len(paths), paths)
	}
	got := map[string]files.Item{}
	var order []string
	for _, path := range paths {
		rs := readAll(t, path, files.Options{})
		for _, r := range rs {
			if r.badLine != 0 {
				t.Fatalf("bad record: %s", r.badMsg)
			}
			got[r.item.Envelope.RecordID] = r.item
			order = append(order, r.item.Envelope.RecordID)
		}
		if again := readAll(t, path, files.Options{}); !reflect.DeepEqual(again, rs) {
			t.Errorf("%s: a second read differs", path)
		}
	}
	if len(got) != 4 {
		t.Fatalf("got %d records, want 4 (rec-e has no rows): %v", len(got), order)
	}
	// Contiguous positions: the original record comes back, id and all.
	for _, r := range recs[:2] {
		it, ok := got[r.env.RecordID]
		if !ok {
			t.Fatalf("record %s not rebuilt under its own id", r.env.RecordID)
		}
		if !reflect.DeepEqual(it.Envelope, r.env) {
			t.Errorf("record %s:\n got %+v\nwant %+v", r.env.RecordID, it.Envelope, r.env)
		}
	}
	// Gaps: same content without the refused ids, under a derived id.
	for _, tc := range []struct {
		rec  landedRecord
		want []string
	}{{recs[2], []string{"u5", "u6"}}, {recs[3], []string{"z1"}}} {
		var found *files.Item
		for id, it := range got {
			if id != "rec-a" && id != "rec-b" && it.Envelope.CohortID() == tc.rec.env.CohortID() && it.Envelope.EventTime.Equal(tc.rec.env.EventTime) {
				found = &it
			}
		}
		if found == nil {
			t.Fatalf("record %s not rebuilt", tc.rec.env.RecordID)
		}
		if u, err := uuid.Parse(found.Envelope.RecordID); err != nil || u.Version() != 8 {
			t.Errorf("record %s: derived id %q is not a UUIDv8", tc.rec.env.RecordID, found.Envelope.RecordID)
		}
		want := tc.rec.env
		want.RecordID = found.Envelope.RecordID
		want.Payload = schemas.CohortChangesPayload{CohortID: tc.rec.env.CohortID(), Changes: []schemas.Change{{UserIDs: tc.want}}}
		if !reflect.DeepEqual(found.Envelope, want) {
			t.Errorf("record %s:\n got %+v\nwant %+v", tc.rec.env.RecordID, found.Envelope, want)
		}
	}
	// Within a file, records come in log order: rec-a (offset 10) before rec-c (11).
	ia, ic := slices.Index(order, "rec-a"), slices.IndexFunc(order, func(id string) bool {
		return got[id].Envelope.EventTime.Equal(recs[2].env.EventTime)
	})
	if ia < 0 || ic < 0 || ia > ic {
		t.Errorf("order %v: rec-a should come before the rebuilt rec-c", order)
	}

	// The same file compressed reads the same; the name need not say .gz.
	plain, err := os.ReadFile(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	want := readAll(t, paths[0], files.Options{})
	dir := t.TempDir()
	for _, c := range compressions[1:] {
		for _, name := range []string{"x.parquet" + c.suffix, "y-" + c.name + ".parquet"} {
			path := writeFile(t, dir, name, c.name, plain)
			if got := readAll(t, path, files.Options{TempDir: dir}); !reflect.DeepEqual(itemsOf(got), itemsOf(want)) {
				t.Errorf("%s: items differ from the plain file's", name)
			}
		}
	}
	// Close removed the decompressed copies.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".cohortsync-backfill-") {
			t.Errorf("temporary copy %s left behind", e.Name())
		}
	}
}

// fileRow is a changes/ row written by the test itself, to control row
// groups and order.
type fileRow struct {
	Workspace  string `parquet:"workspace,dict"`
	Partner    string `parquet:"partner,dict"`
	CohortID   string `parquet:"cohort_id,dict"`
	UserID     string `parquet:"user_id,dict"`
	IDKind     string `parquet:"id_kind,dict"`
	IDValue    string `parquet:"id_value,dict"`
	IsMember   uint8  `parquet:"is_member"`
	Version    uint64 `parquet:"version"`
	RecordID   string `parquet:"record_id,dict"`
	Position   uint32 `parquet:"position"`
	EventTime  int64  `parquet:"event_time,timestamp(microsecond:utc)"`
	ReceivedAt int64  `parquet:"received_at,timestamp(microsecond:utc)"`
	Partition  int32  `parquet:"partition"`
	Offset     int64  `parquet:"offset"`
}

func rowOf(c schemas.ResolvedChange) fileRow {
	var m uint8
	if c.IsMember {
		m = 1
	}
	return fileRow{
		Workspace: c.Workspace, Partner: c.Partner, CohortID: c.CohortID, UserID: c.UserID,
		IDKind: c.IDKind, IDValue: c.IDValue, IsMember: m, Version: c.Version, RecordID: c.RecordID,
		Position: c.Position, EventTime: c.EventTime.UnixMicro(), ReceivedAt: c.ReceivedAt.UnixMicro(),
		Partition: c.Partition, Offset: c.Offset,
	}
}

func writeRows(t testing.TB, path string, rows []fileRow, rowGroup int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := pq.NewGenericWriter[fileRow](f, pq.MaxRowsPerRowGroup(rowGroup))
	if _, err := w.Write(rows); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestParquetShuffledRowGroupsAndBadRecords(t *testing.T) {
	t.Parallel()
	at := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
	var recs []landedRecord
	for i := range 20 {
		var users []string
		for j := range 1 + i%7 {
			users = append(users, "u"+string(rune('a'+i))+string(rune('a'+j)))
		}
		recs = append(recs, landedRecord{
			env: changesEnvelope("rec-"+string(rune('a'+i)), "w", "p", "c", at.Add(time.Duration(i)*time.Second),
				schemas.Change{UserIDs: users, ShouldRemove: i%3 == 0}),
			partition: int32(i % 2), offset: int64(100 - i),
		})
	}
	var rows []fileRow
	for _, r := range recs {
		for _, c := range resolve(r) {
			rows = append(rows, rowOf(c))
		}
	}
	// Two broken records: one with an is_member of 2, one whose rows
	// disagree on the cohort.
	bad := landedRecord{env: changesEnvelope("bad-member", "w", "p", "c", at, schemas.Change{UserIDs: []string{"x", "y"}}), offset: 1}
	for _, c := range resolve(bad) {
		r := rowOf(c)
		if c.Position == 1 {
			r.IsMember = 2
		}
		rows = append(rows, r)
	}
	split := landedRecord{env: changesEnvelope("bad-cohort", "w", "p", "c", at, schemas.Change{UserIDs: []string{"x", "y"}}), offset: 2}
	for _, c := range resolve(split) {
		r := rowOf(c)
		if c.Position == 1 {
			r.CohortID = "other"
		}
		rows = append(rows, r)
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(rows), func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })
	path := filepath.Join(t.TempDir(), "shuffled.parquet")
	writeRows(t, path, rows, 5)

	rs := readAll(t, path, files.Options{})
	firstRow := map[string]int64{}
	for i := len(rows) - 1; i >= 0; i-- {
		firstRow[rows[i].RecordID] = int64(i + 1)
	}
	var badLines []int64
	var gotIDs []string
	for _, r := range rs {
		if r.badLine != 0 {
			badLines = append(badLines, r.badLine)
			continue
		}
		gotIDs = append(gotIDs, r.item.Envelope.RecordID)
		if r.item.Line != firstRow[r.item.Envelope.RecordID] {
			t.Errorf("record %s: line %d, want its first row %d", r.item.Envelope.RecordID, r.item.Line, firstRow[r.item.Envelope.RecordID])
		}
	}
	// Bad records come first: offsets 1 and 2 of partition 0.
	if want := []int64{firstRow["bad-member"], firstRow["bad-cohort"]}; !reflect.DeepEqual(badLines, want) {
		t.Errorf("bad lines %v, want %v", badLines, want)
	}
	if !strings.Contains(rs[0].badMsg, "is_member 2") || !strings.Contains(rs[1].badMsg, "disagree") {
		t.Errorf("messages %q, %q", rs[0].badMsg, rs[1].badMsg)
	}
	// The good ones in (partition, offset) order, each complete and as landed.
	want := slices.Clone(recs)
	slices.SortFunc(want, func(a, b landedRecord) int {
		if a.partition != b.partition {
			return int(a.partition - b.partition)
		}
		return int(a.offset - b.offset)
	})
	var wantIDs []string
	for _, r := range want {
		wantIDs = append(wantIDs, r.env.RecordID)
	}
	if !reflect.DeepEqual(gotIDs, wantIDs) {
		t.Fatalf("records %v, want %v", gotIDs, wantIDs)
	}
	for i, it := range itemsOf(rs) {
		if !reflect.DeepEqual(it.Envelope, want[i].env) {
			t.Errorf("record %s:\n got %+v\nwant %+v", wantIDs[i], it.Envelope, want[i].env)
		}
	}
}

func TestParquetWrongColumns(t *testing.T) {
	t.Parallel()
	type other struct {
		RecordID string `parquet:"record_id"`
		Position string `parquet:"position"`
	}
	path := filepath.Join(t.TempDir(), "other.parquet")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := pq.NewGenericWriter[other](f)
	if _, err := w.Write([]other{{"r", "1"}}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	r, err := files.Open(path, files.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, err = r.Next(testkit.DetachedContext(t, 60*time.Second))
	if err == nil || files.IsLineError(err) || !strings.Contains(err.Error(), "column workspace is missing") ||
		!strings.Contains(err.Error(), "column position is BYTE_ARRAY, want INT32") {
		t.Errorf("Next = %v, want a fatal schema error", err)
	}
}
