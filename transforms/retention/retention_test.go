package retention_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/transforms/retention"
)

func changes(id string, event time.Time, perChange ...int) pipeline.Record {
	p := schemas.CohortChangesPayload{CohortID: "c-" + id}
	for _, n := range perChange {
		// Spread n ids over the three kinds so every kind is counted.
		var c schemas.Change
		for i := range n {
			switch i % 3 {
			case 0:
				c.UserIDs = append(c.UserIDs, fmt.Sprintf("u%d", i))
			case 1:
				c.DeviceIDs = append(c.DeviceIDs, fmt.Sprintf("d%d", i))
			default:
				c.Aliases = append(c.Aliases, schemas.Alias{Name: fmt.Sprintf("a%d", i), Label: "email"})
			}
		}
		p.Changes = append(p.Changes, c)
	}
	return pipeline.Record{Partition: 0, Offset: int64(len(id)), Envelope: schemas.Envelope{
		SchemaVersion: 1, RecordID: "r-" + id, Workspace: "acme", Partner: "mixpanel",
		ReceivedAt: time.Now().UTC(), EventTime: event, Payload: p,
	}}
}

func cohort(id string, event time.Time) pipeline.Record {
	return pipeline.Record{Envelope: schemas.Envelope{
		SchemaVersion: 1, RecordID: "r-" + id, Workspace: "acme", Partner: "mixpanel",
		ReceivedAt: event, EventTime: event,
		Payload: schemas.CohortPayload{CohortID: "c-" + id, Name: "n", CreatedAt: event},
	}}
}

func key(id string) pipeline.RejectionKey {
	return pipeline.RejectionKey{Workspace: "acme", Partner: "mixpanel", CohortID: "c-" + id, RecordID: "r-" + id, Reason: pipeline.ReasonRetention}
}

func recordIDs(recs []pipeline.Record) []string {
	out := []string{}
	for _, r := range recs {
		out = append(out, r.Envelope.RecordID)
	}
	return out
}

func TestApply(t *testing.T) {
	t.Parallel()
	justBefore := time.Date(2009, 12, 31, 23, 59, 59, 0, time.UTC)
	cutoff := retention.DefaultCutoff
	// The same instant in another zone is still before the cutoff.
	beforeInParis := time.Date(2010, 1, 1, 0, 59, 59, 999999999, time.FixedZone("CET", 3600))
	custom := time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)

	cases := []struct {
		name     string
		cutoff   time.Time
		recs     []pipeline.Record
		kept     []string
		rejected []pipeline.Rejection
	}{
		{
			name:   "boundary",
			cutoff: cutoff,
			recs:   []pipeline.Record{changes("old", justBefore, 4, 3), changes("edge", cutoff, 2)},
			kept:   []string{"r-edge"},
			rejected: []pipeline.Rejection{
				{RejectionKey: key("old"), IDs: 7, Records: 1},
			},
		},
		{
			name:     "one nanosecond before, other zone",
			cutoff:   cutoff,
			recs:     []pipeline.Record{changes("tz", beforeInParis, 1000)},
			kept:     []string{},
			rejected: []pipeline.Rejection{{RejectionKey: key("tz"), IDs: 1000, Records: 1}},
		},
		{
			name:   "cohort metadata counts as a record with no ids",
			cutoff: cutoff,
			recs:   []pipeline.Record{cohort("meta", justBefore), changes("new", cutoff.Add(time.Hour), 5), changes("empty", justBefore)},
			kept:   []string{"r-new"},
			rejected: []pipeline.Rejection{
				{RejectionKey: key("empty"), Records: 1},
				{RejectionKey: key("meta"), Records: 1},
			},
		},
		{
			name:   "custom cutoff keeps order of the survivors",
			cutoff: custom,
			recs: []pipeline.Record{
				changes("a", custom, 1), changes("b", custom.Add(-time.Second), 2),
				changes("c", custom.Add(time.Hour), 3), changes("d", cutoff, 4), changes("e", custom, 5),
			},
			kept: []string{"r-a", "r-c", "r-e"},
			rejected: []pipeline.Rejection{
				{RejectionKey: key("b"), IDs: 2, Records: 1},
				{RejectionKey: key("d"), IDs: 4, Records: 1},
			},
		},
		{
			name:   "nothing dropped",
			cutoff: cutoff,
			recs:   []pipeline.Record{changes("x", cutoff, 1), changes("y", custom, 1)},
			kept:   []string{"r-x", "r-y"},
		},
		{name: "empty batch", cutoff: cutoff, recs: nil, kept: []string{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			f, err := retention.New(retention.Config{Cutoff: c.cutoff})
			if err != nil {
				t.Fatal(err)
			}
			input := append([]pipeline.Record(nil), c.recs...)
			rej := pipeline.NewRejections()
			got, err := f.Apply(ctx, input, rej)
			if err != nil {
				t.Fatal(err)
			}
			if g := strings.Join(recordIDs(got), ","); g != strings.Join(c.kept, ",") {
				t.Errorf("kept %s, want %s", g, strings.Join(c.kept, ","))
			}
			if g := strings.Join(recordIDs(input), ","); g != strings.Join(recordIDs(c.recs), ",") {
				t.Errorf("Apply modified its input: %s", g)
			}
			rows := rej.Rows()
			if fmt.Sprint(rows) != fmt.Sprint(c.rejected) {
				t.Errorf("rejections:\n got %+v\nwant %+v", rows, c.rejected)
			}
			var ids int64
			for _, r := range c.recs {
				ids += retention.IDCount(r.Envelope)
			}
			var keptIDs int64
			for _, r := range got {
				keptIDs += retention.IDCount(r.Envelope)
			}
			if keptIDs+rej.TotalIDs() != ids {
				t.Errorf("kept %d + rejected %d ids != %d sent", keptIDs, rej.TotalIDs(), ids)
			}
		})
	}
}

func TestApplyRefusesCanceledContextAndNilRejections(t *testing.T) {
	t.Parallel()
	f, err := retention.New(retention.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.Apply(ctx, nil, pipeline.NewRejections()); err == nil {
		t.Error("Apply on a canceled context succeeded")
	}
	if _, err := f.Apply(context.Background(), nil, nil); err == nil {
		t.Error("Apply without a Rejections succeeded")
	}
	if f.Name() != "retention" || !f.Cutoff().Equal(retention.DefaultCutoff) {
		t.Errorf("Name, Cutoff = %q, %s", f.Name(), f.Cutoff())
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	var cfg retention.Config
	if err := yaml.Unmarshal([]byte("cutoff: 2012-03-04T05:06:07Z\n"), &cfg); err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2012, 3, 4, 5, 6, 7, 0, time.UTC); !cfg.Cutoff.Equal(want) {
		t.Errorf("yaml cutoff = %s, want %s", cfg.Cutoff, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
	if err := retention.DefaultConfig().Validate(); err != nil {
		t.Errorf("default config: %v", err)
	}
	for name, c := range map[string]retention.Config{
		"zero":   {},
		"future": {Cutoff: time.Now().Add(time.Hour)},
	} {
		err := c.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), "cutoff: ") {
			t.Errorf("%s: Validate = %v, want a cutoff: error", name, err)
		}
		if _, err := retention.New(c); err == nil {
			t.Errorf("%s: New accepted an invalid config", name)
		}
	}
}

// BenchmarkApply filters batches of 1,000-id records, a tenth of them older
// than the cutoff, 10M ids per operation. The records share one id list:
// retention only counts ids, and 10M distinct strings would cost the shared
// machine gigabytes without changing what is measured.
func BenchmarkApply(b *testing.B) {
	const idsPerRecord, records, batch = 1000, 10_000, 500
	ids := make([]string, idsPerRecord)
	for i := range ids {
		ids[i] = fmt.Sprintf("%08x-4e2b-4c1a-9d3f-%012x", i*2654435761, i)
	}
	event := time.Date(2024, 11, 5, 9, 30, 0, 0, time.UTC)
	recs := make([]pipeline.Record, records)
	var wire int64
	for i := range recs {
		t := event
		if i%10 == 3 {
			t = time.Date(2009, 6, 1, 0, 0, 0, 0, time.UTC)
		}
		recs[i] = pipeline.Record{Partition: i % 12, Offset: int64(i), Envelope: schemas.Envelope{
			SchemaVersion: 1, RecordID: fmt.Sprintf("0193a6f0-8a4e-7c1d-9b2a-%012d", i), Workspace: "acme", Partner: "mixpanel",
			ReceivedAt: event, EventTime: t,
			Payload: schemas.CohortChangesPayload{CohortID: fmt.Sprintf("c%d", i%200), Changes: []schemas.Change{{UserIDs: ids}}},
		}}
		if i == 0 {
			data, err := schemas.Encode(recs[i].Envelope)
			if err != nil {
				b.Fatal(err)
			}
			wire = int64(len(data))
		}
	}
	f, err := retention.New(retention.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.SetBytes(wire * records)
	b.ReportAllocs()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for b.Loop() {
		for start := 0; start < records; start += batch {
			rej := pipeline.NewRejections()
			if _, err := f.Apply(ctx, recs[start:start+batch], rej); err != nil {
				b.Fatal(err)
			}
		}
	}
	runtime.ReadMemStats(&after)
	total := float64(b.N) * idsPerRecord * records
	b.ReportMetric(total/b.Elapsed().Seconds(), "ids/s")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/total, "allocs/id")
}
