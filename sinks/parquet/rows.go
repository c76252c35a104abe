package parquet

import (
	"cmp"
	"fmt"
	"slices"
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

func arrowTimestamp(us int64) arrow.Timestamp { return arrow.Timestamp(us) }

// rankPairs numbers the distinct (partner, cohort_id) of n rows in sorted
// order, so that a sort compares one integer for the two leading columns.
func rankPairs(n int, pair func(i int) (string, string)) []uint32 {
	type pc struct{ partner, cohort string }
	ids := map[pc]uint32{}
	var order []pc
	row := make([]uint32, n)
	var last pc
	var lastID uint32
	for i := range n {
		p, c := pair(i)
		k := pc{p, c}
		if i == 0 || k != last {
			id, ok := ids[k]
			if !ok {
				id = uint32(len(order))
				ids[k] = id
				order = append(order, k)
			}
			last, lastID = k, id
		}
		row[i] = lastID
	}
	sorted := make([]uint32, len(order))
	for i := range sorted {
		sorted[i] = uint32(i)
	}
	slices.SortFunc(sorted, func(a, b uint32) int {
		return cmp.Or(strings.Compare(order[a].partner, order[b].partner), strings.Compare(order[a].cohort, order[b].cohort))
	})
	rank := make([]uint32, len(order))
	for r, id := range sorted {
		rank[id] = uint32(r)
	}
	for i := range row {
		row[i] = rank[row[i]]
	}
	return row
}

// sortKey is what the sort of a file compares, gathered once per row: the
// rows themselves are 200 bytes, too large to move at every swap.
type sortKey struct {
	pc  uint32
	row int32
	num int64  // version, or position
	str string // user_id, or record_id
}

func compareKeys(a, b sortKey) int {
	return cmp.Or(cmp.Compare(a.pc, b.pc), strings.Compare(a.str, b.str), cmp.Compare(a.num, b.num), cmp.Compare(a.row, b.row))
}

// sortChanges sorts rows in place into the order of a changes/ file:
// (partner, cohort_id, user_id, version), so that the row-group and page
// statistics of those columns prune well. Ties (equal versions of one user
// come only from a malformed batch) keep the input order, which is the
// staging order, so a rewrite is identical.
func sortChanges(rows []changeRow) {
	rank := rankPairs(len(rows), func(i int) (string, string) { return rows[i].Partner, rows[i].CohortID })
	keys := make([]sortKey, len(rows))
	for i := range rows {
		keys[i] = sortKey{pc: rank[i], row: int32(i), num: rows[i].Version, str: rows[i].UserID}
	}
	slices.SortFunc(keys, compareKeys)
	permute(rows, keys)
}

// sortDataPoints sorts rows in place into the order of a datapoints/ file:
// (partner, cohort_id, record_id, position), the key, and the columns the
// billing queries group by.
func sortDataPoints(rows []dataPointRow) {
	rank := rankPairs(len(rows), func(i int) (string, string) { return rows[i].Partner, rows[i].CohortID })
	keys := make([]sortKey, len(rows))
	for i := range rows {
		keys[i] = sortKey{pc: rank[i], row: int32(i), num: int64(rows[i].Position), str: rows[i].RecordID}
	}
	slices.SortFunc(keys, compareKeys)
	permute(rows, keys)
}

// permute reorders rows so that rows[i] becomes the old rows[keys[i].row],
// in place, following each cycle of the permutation once: a roll holds
// hundreds of megabytes of rows and must not copy them.
func permute[T any](rows []T, keys []sortKey) {
	done := make([]bool, len(rows))
	for start := range rows {
		if done[start] {
			continue
		}
		tmp := rows[start]
		i := start
		for {
			done[i] = true
			next := int(keys[i].row)
			if next == start {
				rows[i] = tmp
				break
			}
			rows[i] = rows[next]
			i = next
		}
	}
}
