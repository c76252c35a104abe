package files_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cohortsync/cohortsync/connectors/files"
	"github.com/cohortsync/cohortsync/schemas"
)

const csvFixture = "\ufeff" + files.CSVHeader + "\r\n" +
	/* 2 */ "acme,mixpanel,c1,external_id,u1,add,2024-03-01T00:00:00Z\n" +
	/* 3 */ "acme,mixpanel,c1,device_id,d1,add,2024-03-01T00:00:00Z\n" +
	/* 4 */ "acme,mixpanel,c1,bogus,x,add,2024-03-01T00:00:00Z\n" +
	/* 5 */ "acme,mixpanel,c1,external_id,u2,add,2024-03-01T01:00:00+01:00\n" +
	/* 6 */ `acme,mixpanel,c1,alias,"email:a,b@x.com",add,2024-03-01T00:00:00Z` + "\r\n" +
	/* 7 */ "acme,mixpanel,c1,external_id,u3,remove,2024-03-01T00:00:00Z\n" +
	/* 8 */ "\n" +
	/* 9 */ ",,c2,external_id,u4,add,2024-03-02T00:00:00Z\n" +
	/* 10 */ "acme,mixpanel,c2,external_id,u5,add,2024-03-02T00:00:00Z\n" +
	/* 11 */ "acme,mixpanel,c2,external_id,u6,add,not-a-time\n" +
	/* 12 */ `acme,mixpanel,c2,external_id,"u""7",add,2024-03-02T00:00:00Z` + "\n" +
	/* 13 */ `acme,mixpanel,c2,external_id,"u8,add,2024-03-02T00:00:00Z` + "\n" +
	/* 14 */ "acme,mixpanel,c2,alias,nolabel,add,2024-03-02T00:00:00Z\n" +
	/* 15 */ "acme,mixpanel,c2,device_id,d2,add\n" +
	/* 16 */ "acme,mixpanel,c2,device_id,d3,add,2024-03-02T00:00:00Z"

func TestCSV(t *testing.T) {
	t.Parallel()
	opts := files.Options{Workspace: "acme", Partner: "mixpanel"}
	day1 := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	day2 := day1.AddDate(0, 0, 1)
	env := func(at time.Time, cohort string, changes ...schemas.Change) schemas.Envelope {
		return schemas.Envelope{
			SchemaVersion: schemas.CurrentVersion, Workspace: "acme", Partner: "mixpanel",
			ReceivedAt: at, EventTime: at,
			Payload: schemas.CohortChangesPayload{CohortID: cohort, Changes: changes},
		}
	}
	want := []result{
		{badLine: 4, badMsg: `id_kind "bogus"`},
		{item: files.Item{Line: 2, Envelope: env(day1, "c1",
			// u2 comes after a device id: a new change keeps row order.
			schemas.Change{UserIDs: []string{"u1"}, DeviceIDs: []string{"d1"}},
			schemas.Change{UserIDs: []string{"u2"}, Aliases: []schemas.Alias{{Name: "a,b@x.com", Label: "email"}}},
		)}},
		{item: files.Item{Line: 7, Envelope: env(day1, "c1", schemas.Change{UserIDs: []string{"u3"}, ShouldRemove: true})}},
		{badLine: 11, badMsg: `event_time "not-a-time" is not an RFC 3339 time`},
		{badLine: 13, badMsg: "quoted field not closed"},
		{badLine: 14, badMsg: "alias id must be alias_label:alias_name"},
		{badLine: 15, badMsg: "6 fields, want 7"},
		{item: files.Item{Line: 9, Envelope: env(day2, "c2",
			schemas.Change{UserIDs: []string{"u4", "u5", `u"7`}, DeviceIDs: []string{"d3"}})}},
	}
	var first []result
	for _, c := range compressions {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, t.TempDir(), "export.csv"+c.suffix, c.name, []byte(csvFixture))
			got := readAll(t, path, opts)
			if len(got) != len(want) {
				t.Fatalf("%d results, want %d: %+v", len(got), len(want), got)
			}
			ids := map[string]bool{}
			for i, g := range got {
				w := want[i]
				if w.badLine != 0 {
					if g.badLine != w.badLine || !strings.Contains(g.badMsg, w.badMsg) {
						t.Errorf("result %d: bad line %d %q, want line %d containing %q", i, g.badLine, g.badMsg, w.badLine, w.badMsg)
					}
					continue
				}
				id := g.item.Envelope.RecordID
				if u, err := uuid.Parse(id); err != nil || u.Version() != 8 || ids[id] {
					t.Errorf("result %d: record id %q not a fresh UUIDv8 (%v)", i, id, err)
				}
				ids[id] = true
				g.item.Envelope.RecordID = ""
				if !reflect.DeepEqual(g.item, w.item) {
					t.Errorf("result %d:\n got %+v\nwant %+v", i, g.item, w.item)
				}
			}
			if c.name == "plain" {
				first = got
			}
		})
	}
	t.Cleanup(func() {
		again := readAll(t, writeFile(t, t.TempDir(), "again.csv.gz", "gzip", []byte(csvFixture)), opts)
		// Messages name the path, which differs; the rest must not.
		if first == nil || !reflect.DeepEqual(itemsOf(again), itemsOf(first)) || len(again) != len(first) {
			t.Error("a second read gave other envelopes or ids")
		}
	})
}

func TestCSVGroupSize(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString(files.CSVHeader + "\n")
	for i := range 5 {
		b.WriteString("w,p,c,external_id,u" + string(rune('0'+i)) + ",add,2024-01-01T00:00:00Z\n")
	}
	b.WriteString("w,p,c,external_id,late,add,2024-01-01T00:00:01Z\n")
	path := writeFile(t, t.TempDir(), "g.csv", "plain", []byte(b.String()))
	items := itemsOf(readAll(t, path, files.Options{MaxIDsPerRecord: 2}))
	var lines []int64
	var sizes []int
	for _, it := range items {
		lines = append(lines, it.Line)
		p := it.Envelope.Payload.(schemas.CohortChangesPayload)
		sizes = append(sizes, len(p.Changes[0].UserIDs))
	}
	if !reflect.DeepEqual(lines, []int64{2, 4, 6, 7}) || !reflect.DeepEqual(sizes, []int{2, 2, 1, 1}) {
		t.Errorf("groups at lines %v of sizes %v, want [2 4 6 7] of [2 2 1 1]", lines, sizes)
	}
}

func TestCSVRowsNeedAWorkspace(t *testing.T) {
	t.Parallel()
	data := files.CSVHeader + "\n,p,c,external_id,u,add,2024-01-01T00:00:00Z\nw,,c,external_id,u,add,2024-01-01T00:00:00Z\n"
	rs := readAll(t, writeFile(t, t.TempDir(), "n.csv", "plain", []byte(data)), files.Options{})
	if len(rs) != 2 || !strings.Contains(rs[0].badMsg, "no default workspace") || !strings.Contains(rs[1].badMsg, "no default partner") {
		t.Errorf("results %+v", rs)
	}
}
