package schemas_test

import (
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/schemas"
)

func TestChangesBuilderRoundTrip(t *testing.T) {
	t.Parallel()
	want := []schemas.ResolvedChange{
		{Workspace: "w", Partner: "mixpanel", CohortID: "c1", UserID: "u1", IDKind: schemas.IDKindExternalID, IDValue: "e1",
			IsMember: true, Version: schemas.Version(41, 3), RecordID: "r1", Position: 3,
			EventTime: time.Date(2024, 1, 2, 3, 4, 5, 123456000, time.UTC), ReceivedAt: time.Date(2024, 1, 2, 3, 4, 6, 0, time.UTC),
			Partition: 2, Offset: 41},
		{Workspace: "w", Partner: "mixpanel", CohortID: "c1", UserID: "u2", IDKind: schemas.IDKindDeviceID, IDValue: "d9",
			IsMember: false, Version: schemas.Version(42, 0), RecordID: "r2", Position: 0,
			EventTime: time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC), ReceivedAt: time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC),
			Partition: 2, Offset: 42},
	}
	// Sizing the builders, too little, too much or not at all, changes
	// nothing in the batch.
	for _, sz := range []*schemas.ChangesSize{nil, {Rows: 1, UserID: 1}, {Rows: 1000, Workspace: 1 << 16, UserID: 1 << 16, RecordID: 7}} {
		b := schemas.NewChangesBuilder(nil)
		defer b.Release()
		if sz != nil {
			b.Reserve(*sz)
		}
		for _, c := range want {
			b.Append(c)
		}
		if b.Len() != len(want) {
			t.Fatalf("Len %d, want %d", b.Len(), len(want))
		}
		rec := b.NewRecordBatch()
		defer rec.Release()
		if int(rec.NumRows()) != len(want) || !rec.Schema().Equal(schemas.ChangesSchema) {
			t.Fatalf("batch has %d rows, schema %v", rec.NumRows(), rec.Schema())
		}
		for i, w := range want {
			if got := schemas.ChangeAt(rec, i); got != w {
				t.Errorf("reserved %+v, row %d:\n got %+v\nwant %+v", sz, i, got, w)
			}
		}
	}
	if schemas.Version(42, 0) <= schemas.Version(41, 999) {
		t.Fatal("a later record must have a higher version than every id of an earlier one")
	}
}
