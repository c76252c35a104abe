package parquet

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
)

// changeRow is one row of a changes/ file: every column of
// schemas.ChangesSchema. The struct tags are the file schema; parquet-go maps
// a slice of them to columns without per-row reflection.
type changeRow struct {
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

// dataPointRow is one row of a datapoints/ file: one accepted assignment,
// which is one billable data point (docs/ARCHITECTURE.md, Import rules). (record_id, position) is
// its identity across replays.
type dataPointRow struct {
	Workspace string `parquet:"workspace,dict"`
	Partner   string `parquet:"partner,dict"`
	CohortID  string `parquet:"cohort_id,dict"`
	Day       int32  `parquet:"day,date"`
	RecordID  string `parquet:"record_id,dict"`
	Position  uint32 `parquet:"position"`
	IsMember  uint8  `parquet:"is_member"`
	UserID    string `parquet:"user_id,dict"`
	EventTime int64  `parquet:"event_time,timestamp(microsecond:utc)"`
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

// fileKey says which file a row goes to. Partition is -1 for a named batch,
// whose file covers every partition.
type fileKey struct {
	workspace string
	day       int32
	partition int32
}

func (k fileKey) compare(o fileKey) int {
	return cmp.Or(cmp.Compare(k.workspace, o.workspace), cmp.Compare(k.day, o.day), cmp.Compare(k.partition, o.partition))
}

// fileGroup is the rows of one file, as indexes into the batch, in file order.
type fileGroup struct {
	key  fileKey
	rows []int32
}

// groupRows splits the batch into files and sorts each file's rows by
// (partner, cohort_id, user_id, version), so that the row-group and page
// statistics of those columns prune well. With positions (named == false)
// every row must lie in the batch's range of its partition: a row outside
// would end up in a file whose name claims other offsets.
func groupRows(c changeCols, n int, positions map[int]pipeline.OffsetRange, named bool) ([]fileGroup, error) {
	if n > math.MaxInt32 {
		return nil, fmt.Errorf("batch of %d rows: at most %d", n, math.MaxInt32)
	}
	idx := map[fileKey]int{}
	var groups []fileGroup
	var last fileKey
	cur := 0
	for i := range n {
		k := fileKey{workspace: c.workspace.Value(i), day: dayOf(c.eventTime[i]), partition: -1}
		if !named {
			p, off := c.partition[i], c.offset[i]
			r, ok := positions[int(p)]
			if !ok {
				return nil, fmt.Errorf("row %d: partition %d is not in the batch positions", i, p)
			}
			if off < r.First || off > r.Last {
				return nil, fmt.Errorf("row %d: offset %d of partition %d is outside the batch range %d..%d", i, off, p, r.First, r.Last)
			}
			k.partition = p
		}
		// Neighbouring rows mostly share a file: skip the map for them.
		if i == 0 || k != last {
			g, ok := idx[k]
			if !ok {
				g = len(groups)
				idx[k] = g
				groups = append(groups, fileGroup{key: k})
			}
			cur, last = g, k
		}
		groups[cur].rows = append(groups[cur].rows, int32(i))
	}
	slices.SortFunc(groups, func(a, b fileGroup) int { return a.key.compare(b.key) })
	for _, g := range groups {
		sortRows(c, g.rows)
	}
	return groups, nil
}

// sortKey is a row's sort key, gathered once so that the sort's comparisons
// read one slice instead of four Arrow columns at random places.
type sortKey struct {
	// pc ranks the row's (partner, cohort_id) among those of the file:
	// one integer comparison for the two leading columns.
	pc      uint32
	row     int32
	version uint64
	user    string
}

// sortRows orders rows by (partner, cohort_id, user_id, version).
func sortRows(c changeCols, rows []int32) {
	type pair struct{ partner, cohort string }
	ranks := map[pair]uint32{}
	var last pair
	var lastRank uint32
	keys := make([]sortKey, len(rows))
	for k, r := range rows {
		i := int(r)
		p := pair{c.partner.Value(i), c.cohortID.Value(i)}
		if k == 0 || p != last {
			rank, ok := ranks[p]
			if !ok {
				rank = uint32(len(ranks))
				ranks[p] = rank
			}
			last, lastRank = p, rank
		}
		keys[k] = sortKey{pc: lastRank, row: r, version: c.version[i], user: c.userID.Value(i)}
	}
	// Ranks were handed out in order of appearance; renumber them in
	// (partner, cohort_id) order.
	pairs := make([]pair, len(ranks))
	for p, rank := range ranks {
		pairs[rank] = p
	}
	order := make([]uint32, len(pairs))
	for i := range order {
		order[i] = uint32(i)
	}
	slices.SortFunc(order, func(a, b uint32) int {
		if d := strings.Compare(pairs[a].partner, pairs[b].partner); d != 0 {
			return d
		}
		return strings.Compare(pairs[a].cohort, pairs[b].cohort)
	})
	renumber := make([]uint32, len(pairs))
	for sorted, old := range order {
		renumber[old] = uint32(sorted)
	}
	for k := range keys {
		keys[k].pc = renumber[keys[k].pc]
	}
	slices.SortFunc(keys, func(a, b sortKey) int {
		if a.pc != b.pc {
			return cmp.Compare(a.pc, b.pc)
		}
		if d := strings.Compare(a.user, b.user); d != 0 {
			return d
		}
		if d := cmp.Compare(a.version, b.version); d != 0 {
			return d
		}
		// Equal versions only come from a malformed batch; the original
		// order keeps the file the same on a replay.
		return cmp.Compare(a.row, b.row)
	})
	for k := range keys {
		rows[k] = keys[k].row
	}
}

// changeRows fills dst with the rows of g, reusing its capacity. The strings
// point into the Arrow buffers, which outlive the write.
func changeRows(dst []changeRow, c changeCols, rows []int32) []changeRow {
	dst = slices.Grow(dst[:0], len(rows))[:len(rows)]
	for k, r := range rows {
		i := int(r)
		dst[k] = changeRow{
			Workspace:  c.workspace.Value(i),
			Partner:    c.partner.Value(i),
			CohortID:   c.cohortID.Value(i),
			UserID:     c.userID.Value(i),
			IDKind:     c.idKind.Value(i),
			IDValue:    c.idValue.Value(i),
			IsMember:   c.isMember[i],
			Version:    c.version[i],
			RecordID:   c.recordID.Value(i),
			Position:   c.position[i],
			EventTime:  int64(c.eventTime[i]),
			ReceivedAt: int64(c.receivedAt[i]),
			Partition:  c.partition[i],
			Offset:     c.offset[i],
		}
	}
	return dst
}

// dataPointRows fills dst with the data points of g, reusing its capacity.
func dataPointRows(dst []dataPointRow, c changeCols, rows []int32) []dataPointRow {
	dst = slices.Grow(dst[:0], len(rows))[:len(rows)]
	for k, r := range rows {
		i := int(r)
		dst[k] = dataPointRow{
			Workspace: c.workspace.Value(i),
			Partner:   c.partner.Value(i),
			CohortID:  c.cohortID.Value(i),
			Day:       dayOf(c.eventTime[i]),
			RecordID:  c.recordID.Value(i),
			Position:  c.position[i],
			IsMember:  c.isMember[i],
			UserID:    c.userID.Value(i),
			EventTime: int64(c.eventTime[i]),
		}
	}
	return dst
}
