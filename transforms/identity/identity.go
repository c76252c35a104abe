// Package identity resolves every id of a membership change to a user of the
// identity directory (docs/ARCHITECTURE.md, Import rules) and emits the resolved changes as one Arrow
// batch with the columns of schemas.ChangesSchema.
//
// Rules, per id of a change, against the directory of the record's workspace:
//
//   - an entry of user_ids matches the user with that external_id;
//   - an alias matches the user with that (alias_name, alias_label);
//   - a device id matches only a user without an external_id. A user created
//     anonymous and later identified keeps its device ids in the directory,
//     but a change naming one is refused (pipeline.ReasonDeviceIDOfIdentifiedUser);
//   - anything else is refused as pipeline.ReasonUnknownUser. Users are never
//     created here.
//
// ResolveID is that rule for one id; backfills call it too, so that they
// decide exactly as the stream does.
//
// Refused ids are counted per workspace, partner, cohort, record and reason.
// Cohort metadata records carry no ids and produce no rows.
//
// # Ordering
//
// A later change for the same (workspace, partner, cohort, user) wins, and a
// replay of a landed record yields the same rows. Both follow from the
// version of a row, schemas.Version(offset, position): the partner API lands
// every record of a cohort with the Kafka key workspace/partner/cohort_id, so
// all of a cohort's records are on one partition, in the order they were
// accepted, and offsets within a partition only grow. The position counts
// every id of the record in order — for each change entry in turn, its
// user_ids, then its device_ids, then its aliases — refused ids included, so
// it depends only on the record's bytes. A later record of the cohort, or a
// later id within a record, therefore has a higher version, and a redelivered
// record computes exactly the versions it had. The guarantee holds per
// cohort only: versions of different cohorts (on different partitions) are
// not comparable, and nothing needs them to be.
//
// Resolution reads the directory as it is when the batch is resolved. A change
// that arrives before the identity record of its user is refused as unknown,
// and stays refused on replay only if the directory still lacks the user.
package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/stores/identities"
)

// ReasonTooManyIDs refuses every id of a record with more ids than a version
// can number (1<<schemas.PositionBits). The partner API accepts at most 1,000
// ids per request, so only a foreign producer can land such a record.
const ReasonTooManyIDs = "too_many_ids"

// MaxIDsPerRecord is the most ids one record may carry.
const MaxIDsPerRecord = 1 << schemas.PositionBits

// Lookups is the identity directory as the resolver reads it:
// *identities.Directory, or an *identities.Index on its own.
type Lookups interface {
	View(fn func(identities.Lookup) error) error
}

// Options configure a Resolver.
type Options struct {
	// Directory is where ids are looked up. Required.
	Directory Lookups
	// Allocator backs the output batches; nil means the Go allocator.
	Allocator memory.Allocator
	// Registerer receives the resolver's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Logger receives batch summaries at debug level, never identifiers. Nil discards.
	Logger *slog.Logger
}

// Resolver is the identity stage: it implements pipeline.Resolver.
type Resolver struct {
	dir Lookups
	mem memory.Allocator
	log *slog.Logger
	m   *metrics
}

// New returns a Resolver over opts.Directory.
func New(opts Options) (*Resolver, error) {
	if opts.Directory == nil {
		return nil, errors.New("identity: no directory")
	}
	r := &Resolver{dir: opts.Directory, mem: opts.Allocator, log: opts.Logger, m: newMetrics()}
	if r.mem == nil {
		r.mem = memory.NewGoAllocator()
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.log = r.log.With("component", "identity")
	if err := r.m.register(opts.Registerer); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	return r, nil
}

// Name is the stage name used in metrics and logs.
func (*Resolver) Name() string { return "identity" }

// Close unregisters the metrics, so that a resolver can be rebuilt on the
// same registry.
func (r *Resolver) Close() error {
	r.m.unregister()
	return nil
}

// Resolve returns one row per id of recs that matched a user, in record
// order, and counts every other id in rej. The caller releases the batch. An
// error means the directory could not be read (or ctx ended): nothing was
// decided about recs, and rej holds no counts for them.
func (r *Resolver) Resolve(ctx context.Context, recs []pipeline.Record, rej *pipeline.Rejections) (arrow.RecordBatch, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if rej == nil {
		return nil, errors.New("identity: Resolve needs a Rejections collector")
	}
	b := schemas.NewChangesBuilder(r.mem)
	defer b.Release()
	b.Reserve(sizeOf(recs))
	// Counts go to rej only once the whole batch is resolved, so that a
	// failed Resolve leaves rej as it was and a retry does not count twice.
	var pending []pendingRejection
	var tally tally
	err := r.dir.View(func(l identities.Lookup) error {
		for i := range recs {
			if i%64 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if p, ok := changesOf(recs[i].Envelope.Payload); ok {
				pending = resolveRecord(l, &recs[i], p, b, pending, &tally)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("identity: resolve %d records: %w", len(recs), err)
	}
	for _, p := range pending {
		if p.record {
			rej.AddRecord(p.key)
		}
		rej.AddIDs(p.key, p.ids)
	}
	r.m.add(&tally)
	out := b.NewRecordBatch()
	r.log.Debug("resolved batch", "records", len(recs), "rows", out.NumRows(), "rejected_ids", tally.rejected())
	return out, nil
}

// sizeOf estimates the rows of recs as if every id matched, with user ids
// as long as the ids that name them.
func sizeOf(recs []pipeline.Record) schemas.ChangesSize {
	var sz schemas.ChangesSize
	for i := range recs {
		p, ok := changesOf(recs[i].Envelope.Payload)
		if !ok {
			continue
		}
		e := &recs[i].Envelope
		n, idBytes := 0, 0
		for _, c := range p.Changes {
			n += len(c.UserIDs) + len(c.DeviceIDs) + len(c.Aliases)
			for _, id := range c.UserIDs {
				idBytes += len(id)
			}
			for _, id := range c.DeviceIDs {
				idBytes += len(id)
			}
			for _, a := range c.Aliases {
				idBytes += len(a.Name) + len(a.Label) + 1
			}
		}
		sz.Rows += n
		sz.Workspace += n * len(e.Workspace)
		sz.Partner += n * len(e.Partner)
		sz.CohortID += n * len(p.CohortID)
		sz.RecordID += n * len(e.RecordID)
		sz.IDKind += n * len(schemas.IDKindExternalID)
		sz.IDValue += idBytes
		sz.UserID += idBytes
	}
	return sz
}

type pendingRejection struct {
	key    pipeline.RejectionKey
	ids    int64
	record bool
}

// changesOf returns the changes of a payload; cohort metadata has none.
func changesOf(p schemas.Payload) (schemas.CohortChangesPayload, bool) {
	switch v := p.(type) {
	case schemas.CohortChangesPayload:
		return v, true
	case *schemas.CohortChangesPayload:
		if v != nil {
			return *v, true
		}
	}
	return schemas.CohortChangesPayload{}, false
}

// resolveRecord appends the rows of one record and returns pending with its
// rejections added.
func resolveRecord(l identities.Lookup, rec *pipeline.Record, p schemas.CohortChangesPayload, b *schemas.ChangesBuilder, pending []pendingRejection, t *tally) []pendingRejection {
	e := &rec.Envelope
	key := func(reason string) pipeline.RejectionKey {
		return pipeline.RejectionKey{Workspace: e.Workspace, Partner: e.Partner, CohortID: p.CohortID, RecordID: e.RecordID, Reason: reason}
	}
	var total int
	for _, c := range p.Changes {
		total += len(c.UserIDs) + len(c.DeviceIDs) + len(c.Aliases)
	}
	if total > MaxIDsPerRecord {
		t.counts[kindAll][resultTooMany] += int64(total)
		return append(pending, pendingRejection{key: key(ReasonTooManyIDs), ids: int64(total), record: true})
	}

	row := schemas.ResolvedChange{
		Workspace: e.Workspace, Partner: e.Partner, CohortID: p.CohortID,
		RecordID: e.RecordID, EventTime: e.EventTime, ReceivedAt: e.ReceivedAt,
		Partition: int32(rec.Partition), Offset: rec.Offset,
	}
	var unknown, ofIdentified int64
	pos := 0
	// one applies ResolveID, the rule every path shares, to the id at pos.
	one := func(kind int, id ID) {
		user, reason := ResolveID(l, e.Workspace, id)
		switch reason {
		case "":
			value := id.Value
			if kind == kindAlias {
				value = AliasValue(id.Alias)
			}
			row.UserID, row.IDKind, row.IDValue = user, id.Kind, value
			row.Version = schemas.Version(rec.Offset, pos)
			row.Position = uint32(pos)
			b.Append(row)
			t.counts[kind][resultMatched]++
		case pipeline.ReasonDeviceIDOfIdentifiedUser:
			ofIdentified++
			t.counts[kind][resultOfIdentified]++
		default:
			unknown++
			t.counts[kind][resultUnknown]++
		}
		pos++
	}
	for _, c := range p.Changes {
		row.IsMember = !c.ShouldRemove
		for _, id := range c.UserIDs {
			one(kindExternal, ExternalID(id))
		}
		for _, id := range c.DeviceIDs {
			one(kindDevice, DeviceID(id))
		}
		for _, a := range c.Aliases {
			one(kindAlias, AliasID(a))
		}
	}
	if unknown > 0 {
		pending = append(pending, pendingRejection{key: key(pipeline.ReasonUnknownUser), ids: unknown})
	}
	if ofIdentified > 0 {
		pending = append(pending, pendingRejection{key: key(pipeline.ReasonDeviceIDOfIdentifiedUser), ids: ofIdentified})
	}
	return pending
}

// AliasValue is the id_value of a row matched by alias: "alias_label:alias_name".
// It is for people reading the changes; the columns user_id and version are
// what sinks act on.
func AliasValue(a schemas.Alias) string { return a.Label + ":" + a.Name }
