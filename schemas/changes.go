package schemas

import (
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Identifier kinds of a resolved change: which id in the partner's request
// matched the user.
const (
	IDKindExternalID = "external_id"
	IDKindAlias      = "alias"
	IDKindDeviceID   = "device_id"
)

// PositionBits is how many low bits of a version hold the id's position in
// its record; the high bits hold the record's offset + 1. A cohort's records
// all land on one partition (the Kafka key), so within a cohort a later
// record, and within a record a later id, always has a higher version, and a
// replay of the same record computes the same version.
const PositionBits = 16

// Version orders the changes of one (workspace, partner, cohort, user).
func Version(offset int64, position int) uint64 {
	return uint64(offset+1)<<PositionBits | uint64(position)
}

// ChangesSchema is the columnar contract between the identity transform and the
// sinks: one row per resolved id of a membership change.
var ChangesSchema = arrow.NewSchema([]arrow.Field{
	{Name: "workspace", Type: arrow.BinaryTypes.String},
	{Name: "partner", Type: arrow.BinaryTypes.String},
	{Name: "cohort_id", Type: arrow.BinaryTypes.String},
	{Name: "user_id", Type: arrow.BinaryTypes.String},
	{Name: "id_kind", Type: arrow.BinaryTypes.String},
	{Name: "id_value", Type: arrow.BinaryTypes.String},
	// is_member: 1 for an add, 0 for a remove.
	{Name: "is_member", Type: arrow.PrimitiveTypes.Uint8},
	{Name: "version", Type: arrow.PrimitiveTypes.Uint64},
	{Name: "record_id", Type: arrow.BinaryTypes.String},
	// position of the id within its record, counting every id of every change.
	{Name: "position", Type: arrow.PrimitiveTypes.Uint32},
	{Name: "event_time", Type: &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}},
	{Name: "received_at", Type: &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}},
	{Name: "partition", Type: arrow.PrimitiveTypes.Int32},
	{Name: "offset", Type: arrow.PrimitiveTypes.Int64},
}, nil)

// Column indexes of ChangesSchema.
const (
	ColWorkspace = iota
	ColPartner
	ColCohortID
	ColUserID
	ColIDKind
	ColIDValue
	ColIsMember
	ColVersion
	ColRecordID
	ColPosition
	ColEventTime
	ColReceivedAt
	ColPartition
	ColOffset
)

// ResolvedChange is one row of ChangesSchema in row form, for builders and tests.
type ResolvedChange struct {
	Workspace, Partner, CohortID, UserID string
	IDKind, IDValue                      string
	IsMember                             bool
	Version                              uint64
	RecordID                             string
	Position                             uint32
	EventTime, ReceivedAt                time.Time
	Partition                            int32
	Offset                               int64
}

// ChangesBuilder appends resolved changes column by column.
type ChangesBuilder struct {
	b *array.RecordBuilder
}

// NewChangesBuilder returns a builder using mem (nil means the Go allocator).
func NewChangesBuilder(mem memory.Allocator) *ChangesBuilder {
	if mem == nil {
		mem = memory.NewGoAllocator()
	}
	return &ChangesBuilder{b: array.NewRecordBuilder(mem, ChangesSchema)}
}

// Append adds one row.
func (cb *ChangesBuilder) Append(c ResolvedChange) {
	f := cb.b.Fields()
	f[ColWorkspace].(*array.StringBuilder).Append(c.Workspace)
	f[ColPartner].(*array.StringBuilder).Append(c.Partner)
	f[ColCohortID].(*array.StringBuilder).Append(c.CohortID)
	f[ColUserID].(*array.StringBuilder).Append(c.UserID)
	f[ColIDKind].(*array.StringBuilder).Append(c.IDKind)
	f[ColIDValue].(*array.StringBuilder).Append(c.IDValue)
	var m uint8
	if c.IsMember {
		m = 1
	}
	f[ColIsMember].(*array.Uint8Builder).Append(m)
	f[ColVersion].(*array.Uint64Builder).Append(c.Version)
	f[ColRecordID].(*array.StringBuilder).Append(c.RecordID)
	f[ColPosition].(*array.Uint32Builder).Append(c.Position)
	f[ColEventTime].(*array.TimestampBuilder).Append(arrow.Timestamp(c.EventTime.UnixMicro()))
	f[ColReceivedAt].(*array.TimestampBuilder).Append(arrow.Timestamp(c.ReceivedAt.UnixMicro()))
	f[ColPartition].(*array.Int32Builder).Append(c.Partition)
	f[ColOffset].(*array.Int64Builder).Append(c.Offset)
}

// ChangesSize is what a batch is expected to hold: rows, and the bytes of
// each string column in all. Estimates may be high or low; they only size
// the builders.
type ChangesSize struct {
	Rows                                                            int
	Workspace, Partner, CohortID, UserID, IDKind, IDValue, RecordID int
}

// Reserve sizes the builders for what is about to be appended. Grown by
// appends instead, the columns of a batch of 50k rows were reallocated and
// copied until reallocation was near half of Append's time.
func (cb *ChangesBuilder) Reserve(sz ChangesSize) {
	f := cb.b.Fields()
	for _, b := range f {
		b.Reserve(sz.Rows)
	}
	for _, c := range [...]struct{ col, bytes int }{
		{ColWorkspace, sz.Workspace}, {ColPartner, sz.Partner}, {ColCohortID, sz.CohortID}, {ColUserID, sz.UserID},
		{ColIDKind, sz.IDKind}, {ColIDValue, sz.IDValue}, {ColRecordID, sz.RecordID},
	} {
		f[c.col].(*array.StringBuilder).ReserveData(c.bytes)
	}
}

// Len is the number of rows appended since the last NewRecordBatch.
func (cb *ChangesBuilder) Len() int { return cb.b.Field(0).Len() }

// NewRecordBatch returns the rows appended so far and resets the builder. The
// caller releases the batch.
func (cb *ChangesBuilder) NewRecordBatch() arrow.RecordBatch { return cb.b.NewRecordBatch() }

// Release frees the builder.
func (cb *ChangesBuilder) Release() { cb.b.Release() }

// ChangeAt reads row i of a ChangesSchema batch back into row form.
func ChangeAt(rec arrow.RecordBatch, i int) ResolvedChange {
	str := func(c int) string { return rec.Column(c).(*array.String).Value(i) }
	return ResolvedChange{
		Workspace:  str(ColWorkspace),
		Partner:    str(ColPartner),
		CohortID:   str(ColCohortID),
		UserID:     str(ColUserID),
		IDKind:     str(ColIDKind),
		IDValue:    str(ColIDValue),
		IsMember:   rec.Column(ColIsMember).(*array.Uint8).Value(i) == 1,
		Version:    rec.Column(ColVersion).(*array.Uint64).Value(i),
		RecordID:   str(ColRecordID),
		Position:   rec.Column(ColPosition).(*array.Uint32).Value(i),
		EventTime:  time.UnixMicro(int64(rec.Column(ColEventTime).(*array.Timestamp).Value(i))).UTC(),
		ReceivedAt: time.UnixMicro(int64(rec.Column(ColReceivedAt).(*array.Timestamp).Value(i))).UTC(),
		Partition:  rec.Column(ColPartition).(*array.Int32).Value(i),
		Offset:     rec.Column(ColOffset).(*array.Int64).Value(i),
	}
}
