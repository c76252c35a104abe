package parquet

import (
	"cmp"
	"fmt"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/cohortsync/cohortsync/schemas"
)

// changeRow is one row of a changes/ file (and of a staged batch): every
// column of schemas.ChangesSchema. The struct tags are the file schema;
// parquet-go maps a slice of them to columns without per-row reflection.
// The types are the ones every reader maps without a cast (Spark and Athena
// have no unsigned integers): BOOLEAN, INT32, INT64, TIMESTAMP(MICROS, UTC).
type changeRow struct {
	Workspace  string `parquet:"workspace,dict"`
	Partner    string `parquet:"partner,dict"`
	CohortID   string `parquet:"cohort_id,dict"`
	UserID     string `parquet:"user_id,dict"`
	IDKind     string `parquet:"id_kind,dict"`
	IDValue    string `parquet:"id_value,dict"`
	IsMember   bool   `parquet:"is_member"`
	Version    int64  `parquet:"version"`
	RecordID   string `parquet:"record_id,dict"`
	Position   int32  `parquet:"position"`
	EventTime  int64  `parquet:"event_time,timestamp(microsecond:utc)"`
	ReceivedAt int64  `parquet:"received_at,timestamp(microsecond:utc)"`
	Partition  int32  `parquet:"partition"`
	Offset     int64  `parquet:"offset"`
}

// dataPointRow is one row of a datapoints/ file: one accepted assignment,
// which is one billable data point (docs/ARCHITECTURE.md, Import rules).
// (record_id, position) is its identity across replays; day is the UTC
// landing day (received_at), the billing day the API counts by.
type dataPointRow struct {
	Workspace  string `parquet:"workspace,dict"`
	Partner    string `parquet:"partner,dict"`
	CohortID   string `parquet:"cohort_id,dict"`
	Day        int32  `parquet:"day,date"`
	RecordID   string `parquet:"record_id,dict"`
	Position   int32  `parquet:"position"`
	IsMember   bool   `parquet:"is_member"`
	UserID     string `parquet:"user_id,dict"`
	EventTime  int64  `parquet:"event_time,timestamp(microsecond:utc)"`
	ReceivedAt int64  `parquet:"received_at,timestamp(microsecond:utc)"`
}

// dataPointOf is the data point a change counts as.
func dataPointOf(c *changeRow) dataPointRow {
	return dataPointRow{
		Workspace: c.Workspace, Partner: c.Partner, CohortID: c.CohortID,
		Day: dayOf(arrow.Timestamp(c.ReceivedAt)), RecordID: c.RecordID, Position: c.Position,
		IsMember: c.IsMember, UserID: c.UserID, EventTime: c.EventTime, ReceivedAt: c.ReceivedAt,
	}
}

// changeCols are the typed columns of a ChangesSchema batch.
type changeCols struct {
	workspace, partner, cohortID, userID *array.String
	idKind, idValue, recordID            *array.String
	isMember                             []uint8
	version                              []uint64
	position                             []uint32
	eventTime, receivedAt                []arrow.Timestamp
	partition                            []int32
	offset                               []int64
}

// columnsOf checks that rec is a ChangesSchema batch without nulls and
// returns its typed columns. A batch that is not is refused with an error
// rather than read: the columns are required in the files.
func columnsOf(rec arrow.RecordBatch) (changeCols, error) {
	if !rec.Schema().Equal(schemas.ChangesSchema) {
		return changeCols{}, fmt.Errorf("changes batch has schema %s, want schemas.ChangesSchema", rec.Schema())
	}
	for i, f := range rec.Schema().Fields() {
		if n := rec.Column(i).NullN(); n > 0 {
			return changeCols{}, fmt.Errorf("changes batch column %s has %d nulls", f.Name, n)
		}
	}
	// The type assertions cannot fail once the schema is equal.
	str := func(i int) *array.String { return rec.Column(i).(*array.String) }
	return changeCols{
		workspace:  str(schemas.ColWorkspace),
		partner:    str(schemas.ColPartner),
		cohortID:   str(schemas.ColCohortID),
		userID:     str(schemas.ColUserID),
		idKind:     str(schemas.ColIDKind),
		idValue:    str(schemas.ColIDValue),
		recordID:   str(schemas.ColRecordID),
		isMember:   rec.Column(schemas.ColIsMember).(*array.Uint8).Values(),
		version:    rec.Column(schemas.ColVersion).(*array.Uint64).Values(),
		position:   rec.Column(schemas.ColPosition).(*array.Uint32).Values(),
		eventTime:  rec.Column(schemas.ColEventTime).(*array.Timestamp).Values(),
		receivedAt: rec.Column(schemas.ColReceivedAt).(*array.Timestamp).Values(),
		partition:  rec.Column(schemas.ColPartition).(*array.Int32).Values(),
		offset:     rec.Column(schemas.ColOffset).(*array.Int64).Values(),
	}, nil
}

const microsPerDay = int64(24 * time.Hour / time.Microsecond)

// dayOf is the UTC day of a microsecond timestamp, in days since the epoch
// (the DATE encoding); floor division keeps times before 1970 on their day.
func dayOf(ts arrow.Timestamp) int32 {
	us := int64(ts)
	d := us / microsPerDay
	if us%microsPerDay < 0 {
		d--
	}
	return int32(d)
}

// dateString formats a DATE value as the date= partition value.
func dateString(day int32) string {
	return time.Unix(int64(day)*86400, 0).UTC().Format(time.DateOnly)
}

// rowOf is row i of the batch as a changes/ row. The strings point into the
// Arrow buffers: copy what must outlive the batch.
func rowOf(c *changeCols, i int) changeRow {
	return changeRow{
		Workspace:  c.workspace.Value(i),
		Partner:    c.partner.Value(i),
		CohortID:   c.cohortID.Value(i),
		UserID:     c.userID.Value(i),
		IDKind:     c.idKind.Value(i),
		IDValue:    c.idValue.Value(i),
		IsMember:   c.isMember[i] != 0,
		Version:    int64(c.version[i]),
		RecordID:   c.recordID.Value(i),
		Position:   int32(c.position[i]),
		EventTime:  int64(c.eventTime[i]),
		ReceivedAt: int64(c.receivedAt[i]),
		Partition:  c.partition[i],
		Offset:     c.offset[i],
	}
}

// compareChanges is the order of the rows of a changes/ file: (partner,
// cohort_id, user_id, version), so that the row-group and page statistics of
// those columns prune well; ties (only a malformed batch has them) fall back
// to the landing position, which keeps a rewrite byte-identical.
func compareChanges(a, b *changeRow) int {
	return cmp.Or(strings.Compare(a.Partner, b.Partner), strings.Compare(a.CohortID, b.CohortID),
		strings.Compare(a.UserID, b.UserID), cmp.Compare(a.Version, b.Version),
		cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset), cmp.Compare(a.Position, b.Position))
}

// compareDataPoints orders a datapoints/ file by (partner, cohort_id,
// record_id, position): the key, and the columns the billing queries group by.
func compareDataPoints(a, b *dataPointRow) int {
	return cmp.Or(strings.Compare(a.Partner, b.Partner), strings.Compare(a.CohortID, b.CohortID),
		strings.Compare(a.RecordID, b.RecordID), cmp.Compare(a.Position, b.Position))
}

func arrowTimestamp(us int64) arrow.Timestamp { return arrow.Timestamp(us) }
