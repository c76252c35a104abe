package clickhouse

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/cohortsync/cohortsync/internal/retry"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
)

var _ pipeline.Sink = (*Sink)(nil)

// insert is one batch insert into one table: a slice of values per column of
// the table, in the table's column order, all of the same length.
type insert struct {
	table   table
	rows    int
	columns []any
}

// Write implements pipeline.Sink. It inserts the batch into every table and
// returns nil only once the server has acknowledged all of them. When the
// server is down or refuses an insert, Write retries it with capped
// exponential backoff until it succeeds or ctx ends; then the error wraps
// ctx's, nothing is acknowledged, and the redelivered batch replaces whatever
// part of it had already been written.
func (s *Sink) Write(ctx context.Context, out *pipeline.Output) error {
	if s.closed.Load() {
		return fmt.Errorf("clickhouse: %w", pipeline.ErrSinkClosed)
	}
	if out == nil {
		return nil
	}
	inserts, err := s.inserts(out)
	if err != nil {
		return fmt.Errorf("clickhouse: %w", err)
	}
	for _, in := range inserts {
		if err := s.insert(ctx, in); err != nil {
			return err
		}
	}
	return nil
}

// inserts turns one output into the inserts of every table it touches.
func (s *Sink) inserts(out *pipeline.Output) ([]insert, error) {
	var ins []insert
	if out.Changes != nil && out.Changes.NumRows() > 0 {
		c, err := changeColumnsOf(out.Changes)
		if err != nil {
			return nil, err
		}
		// One row per change: the views of schema step 2 derive the
		// membership and data_points rows from it inside the server.
		ins = append(ins, insert{table: membershipChangesTable, rows: c.n, columns: []any{
			c.workspace, c.partner, c.cohortID, c.userID, c.idKind, c.idValue,
			c.isMember, c.version, c.recordID, c.position, c.eventTime, c.receivedAt,
			c.partition, c.offset,
		}})
	}
	if in, ok := cohortsInsert(out.Cohorts); ok {
		ins = append(ins, in)
	}
	if out.Rejections != nil {
		if in, ok := rejectionsInsert(out.Rejections.Rows(), time.Now()); ok {
			ins = append(ins, in)
		}
	}
	return ins, nil
}

// insert runs in until the server accepts it or ctx ends.
func (s *Sink) insert(ctx context.Context, in insert) error {
	wait := s.cfg.Retry.Initial
	for attempt := 1; ; attempt++ {
		start := time.Now()
		err := s.insertOnce(ctx, in)
		if err == nil {
			s.m.duration.WithLabelValues(in.table.name).Observe(time.Since(start).Seconds())
			s.m.inserts.WithLabelValues(in.table.name).Inc()
			s.m.rows.WithLabelValues(in.table.name).Add(float64(in.rows))
			s.observe(fromInsert, nil)
			if attempt > 1 {
				s.log.Info("insert succeeded after retries", "table", in.table.name, "rows", in.rows, "attempts", attempt)
			}
			return nil
		}
		s.m.failures.WithLabelValues(in.table.name).Inc()
		if ctx.Err() != nil {
			return fmt.Errorf("clickhouse: insert of %d rows into %s abandoned after %d attempts: %w (last error: %w)",
				in.rows, in.table.name, attempt, ctx.Err(), err)
		}
		s.observe(fromInsert, err)
		d := jitter(wait)
		s.log.Warn("insert failed; retrying", "table", in.table.name, "rows", in.rows,
			"attempt", attempt, "retry_in", d.Round(time.Millisecond).String(), "err", err)
		if serr := retry.Sleep(ctx, d); serr != nil {
			return fmt.Errorf("clickhouse: insert of %d rows into %s abandoned after %d attempts: %w (last error: %w)",
				in.rows, in.table.name, attempt, serr, err)
		}
		wait = s.cfg.Retry.Next(wait)
	}
}

// jitter spreads d over [0.8d, 1.2d) so that many sinks do not retry in step.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d - d/5 + rand.N(2*d/5+1)
}

// insertOnce is one attempt: a columnar batch with an explicit column list,
// under the query timeout.
func (s *Sink) insertOnce(ctx context.Context, in insert) (err error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	batch, err := s.conn.PrepareBatch(s.queryContext(ctx), s.layout.insertQuery(in.table))
	if err != nil {
		return fmt.Errorf("insert into %s: prepare: %w", in.table.name, err)
	}
	defer func() {
		if err != nil {
			_ = batch.Abort()
		}
	}()
	for i, values := range in.columns {
		if err := batch.Column(i).Append(values); err != nil {
			return fmt.Errorf("insert into %s: column %s: %w", in.table.name, in.table.columns[i].name, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert into %s: send: %w", in.table.name, err)
	}
	return nil
}

// changeColumns is a ChangesSchema batch as the slices the insert appends.
type changeColumns struct {
	n                                    int
	workspace, partner, cohortID, userID []string
	idKind, idValue, recordID            []string
	isMember                             []uint8
	version                              []uint64
	position                             []uint32
	eventTime, receivedAt                []int64 // unix seconds, for DateTime
	partition                            []int32
	offset                               []int64
}

// changeColumnsOf reads rec column by column. Strings are views into the
// Arrow buffers, copied only into the insert's own block.
func changeColumnsOf(rec arrow.RecordBatch) (c changeColumns, err error) {
	if !rec.Schema().Equal(schemas.ChangesSchema) {
		return c, fmt.Errorf("changes batch has schema %s, want schemas.ChangesSchema", rec.Schema())
	}
	for i, col := range rec.Columns() {
		if col.NullN() > 0 {
			return c, fmt.Errorf("changes batch: column %s has %d nulls", rec.ColumnName(i), col.NullN())
		}
	}
	n := int(rec.NumRows())
	strs := func(i int) []string {
		a := rec.Column(i).(*array.String)
		out := make([]string, n)
		for j := range out {
			out[j] = a.Value(j)
		}
		return out
	}
	secs := func(i int) []int64 {
		vals := rec.Column(i).(*array.Timestamp).TimestampValues()
		out := make([]int64, n)
		for j, v := range vals {
			out[j] = dateTimeSeconds(int64(v))
		}
		return out
	}
	c = changeColumns{
		n:          n,
		workspace:  strs(schemas.ColWorkspace),
		partner:    strs(schemas.ColPartner),
		cohortID:   strs(schemas.ColCohortID),
		userID:     strs(schemas.ColUserID),
		idKind:     strs(schemas.ColIDKind),
		idValue:    strs(schemas.ColIDValue),
		recordID:   strs(schemas.ColRecordID),
		isMember:   rec.Column(schemas.ColIsMember).(*array.Uint8).Uint8Values(),
		version:    rec.Column(schemas.ColVersion).(*array.Uint64).Uint64Values(),
		position:   rec.Column(schemas.ColPosition).(*array.Uint32).Uint32Values(),
		eventTime:  secs(schemas.ColEventTime),
		receivedAt: secs(schemas.ColReceivedAt),
		partition:  rec.Column(schemas.ColPartition).(*array.Int32).Int32Values(),
		offset:     rec.Column(schemas.ColOffset).(*array.Int64).Int64Values(),
	}
	return c, nil
}

// dateTimeSeconds turns Arrow microseconds into seconds within DateTime's
// range (UInt32 seconds since 1970), instead of letting them wrap around.
func dateTimeSeconds(micros int64) int64 {
	s := micros / 1e6
	if micros%1e6 < 0 {
		s--
	}
	return min(max(s, 0), math.MaxUint32)
}

// cohortsInsert collects the cohort records of a batch. A record's version
// is its position in the log, so the latest rename of a cohort wins.
func cohortsInsert(recs []pipeline.Record) (insert, bool) {
	var (
		workspace, partner, cohortID, name, recordID []string
		createdAt, updatedAt                         []int64
		version                                      []uint64
	)
	for _, r := range recs {
		p, ok := r.Envelope.Payload.(schemas.CohortPayload)
		if !ok {
			continue
		}
		workspace = append(workspace, r.Envelope.Workspace)
		partner = append(partner, r.Envelope.Partner)
		cohortID = append(cohortID, p.CohortID)
		name = append(name, p.Name)
		createdAt = append(createdAt, dateTimeSeconds(p.CreatedAt.UnixMicro()))
		updatedAt = append(updatedAt, dateTimeSeconds(r.Envelope.ReceivedAt.UnixMicro()))
		version = append(version, schemas.Version(r.Offset, 0))
		recordID = append(recordID, r.Envelope.RecordID)
	}
	if len(workspace) == 0 {
		return insert{}, false
	}
	return insert{table: cohortsTable, rows: len(workspace), columns: []any{
		workspace, partner, cohortID, name, createdAt, updatedAt, version, recordID,
	}}, true
}

// rejectionsInsert collects the rejection counts of a batch; now stamps them.
func rejectionsInsert(rows []pipeline.Rejection, now time.Time) (insert, bool) {
	if len(rows) == 0 {
		return insert{}, false
	}
	n := len(rows)
	var (
		workspace, partner, cohortID = make([]string, n), make([]string, n), make([]string, n)
		recordID, reason             = make([]string, n), make([]string, n)
		ids, records                 = make([]uint64, n), make([]uint64, n)
		updatedAt                    = make([]int64, n)
	)
	for i, r := range rows {
		workspace[i], partner[i], cohortID[i] = r.Workspace, r.Partner, r.CohortID
		recordID[i], reason[i] = r.RecordID, r.Reason
		ids[i], records[i] = uint64(max(r.IDs, 0)), uint64(max(r.Records, 0))
		updatedAt[i] = now.Unix()
	}
	return insert{table: importRejectionsTable, rows: n, columns: []any{
		workspace, partner, cohortID, recordID, reason, ids, records, updatedAt,
	}}, true
}
