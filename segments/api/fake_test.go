package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cohortsync/cohortsync/segments"
)

// fakeEngine answers from fixed cohort member lists. Its filter language is
// just {"cohort":{"partner":P,"id":ID}}, enough for the HTTP layer; the real
// engines are tested against real stores in their own packages.
type fakeEngine struct {
	cohorts map[string][]string // id → members, sorted
	// asOf holds the members at any past instant, to tell as_of apart.
	asOf map[string][]string
	// failAfter makes Export fail after this many members of cohort "broken".
	failAfter int

	mu      sync.Mutex
	queries []segments.Query
	dpCalls []string
}

func newFakeEngine() *fakeEngine {
	many := make([]string, 0, 300_000)
	for i := range 300_000 {
		many = append(many, fmt.Sprintf("m%06d", i))
	}
	return &fakeEngine{
		cohorts: map[string][]string{
			"c1":     {"u1", "u2", "u3", "u4", "u5"},
			"empty":  {},
			"many":   many,
			"broken": many,
			"quoted": {`a,"b"`, "line\nbreak"},
		},
		asOf:      map[string][]string{"c1": {"u1", "u9"}},
		failAfter: 200_000,
	}
}

func (f *fakeEngine) resolve(filter json.RawMessage, asOf time.Time) (string, []string, error) {
	var doc struct {
		Cohort *struct{ Partner, ID string } `json:"cohort"`
	}
	if err := json.Unmarshal(filter, &doc); err != nil || doc.Cohort == nil {
		return "", nil, &segments.FilterError{Path: "", Msg: "want {\"cohort\": ...}"}
	}
	if !asOf.IsZero() {
		if m, ok := f.asOf[doc.Cohort.ID]; ok {
			return doc.Cohort.ID, m, nil
		}
	}
	m, ok := f.cohorts[doc.Cohort.ID]
	if !ok {
		return "", nil, &segments.FilterError{Path: "/cohort/id", Msg: "unknown cohort " + doc.Cohort.ID}
	}
	return doc.Cohort.ID, m, nil
}

func (f *fakeEngine) Evaluate(_ context.Context, _ string, q segments.Query) (segments.Page, error) {
	f.mu.Lock()
	f.queries = append(f.queries, q)
	f.mu.Unlock()
	_, members, err := f.resolve(q.Filter, q.AsOf)
	if err != nil {
		return segments.Page{}, err
	}
	start := 0
	if q.Cursor != "" {
		last, ok := strings.CutPrefix(q.Cursor, "after:")
		if !ok {
			return segments.Page{}, segments.ErrBadCursor
		}
		start, _ = slices.BinarySearch(members, last)
		if start < len(members) && members[start] == last {
			start++
		}
	}
	p := segments.Page{Count: int64(len(members))}
	end := min(start+q.Limit, len(members))
	p.Members = slices.Clone(members[start:end])
	if end < len(members) && q.Limit > 0 {
		p.NextCursor = "after:" + members[end-1]
	}
	return p, nil
}

func (f *fakeEngine) Explain(_ context.Context, _ string, filter json.RawMessage, userID string, asOf time.Time) (segments.Answer, error) {
	id, members, err := f.resolve(filter, asOf)
	if err != nil {
		return segments.Answer{}, err
	}
	in := slices.Contains(members, userID)
	r := segments.Reason{Partner: "mixpanel", CohortID: id, InCohort: in}
	if in {
		r.LastChange = &segments.Change{IsMember: true, Version: 7, RecordID: "rec-1"}
	}
	return segments.Answer{UserID: userID, Member: in, Reasons: []segments.Reason{r}}, nil
}

var errExportBroke = errors.New("store went away")

func (f *fakeEngine) Export(ctx context.Context, _ string, filter json.RawMessage, asOf time.Time, fn func(string) error) error {
	id, members, err := f.resolve(filter, asOf)
	if err != nil {
		return err
	}
	for i, m := range members {
		if id == "broken" && i == f.failAfter {
			return errExportBroke
		}
		if err := fn(m); err != nil {
			return err
		}
		if i%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

func (f *fakeEngine) DataPoints(_ context.Context, _ string, from, to time.Time, groupBy segments.GroupBy) ([]segments.DataPointRow, error) {
	f.mu.Lock()
	f.dpCalls = append(f.dpCalls, from.Format("2006-01-02")+".."+to.Format("2006-01-02")+"/"+string(groupBy))
	f.mu.Unlock()
	var rows []segments.DataPointRow
	for d := from; !d.After(to); d = d.AddDate(0, 0, 1) {
		row := segments.DataPointRow{Billable: int64(d.Day()) * 2, Transitions: int64(d.Day())}
		switch groupBy {
		case segments.GroupByDay:
			row.Day = d.Format("2006-01-02")
		case segments.GroupByPartner:
			row.Partner = "mixpanel"
		case segments.GroupByCohort:
			row.Partner, row.CohortID = "mixpanel", "c1"
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func (f *fakeEngine) Cohorts(_ context.Context, _ string, now time.Time) ([]segments.CohortInfo, error) {
	return []segments.CohortInfo{{
		Partner: "mixpanel", CohortID: "c1", Name: "Churn risk", MemberCount: 5,
		LastSync: now.Add(-time.Hour), SyncMode: segments.SyncDynamic, PeriodSeconds: 900,
		Stale: true, AgeSeconds: 3600,
	}}, nil
}

func (f *fakeEngine) lastQuery() segments.Query {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.queries[len(f.queries)-1]
}

// validateFilter stands in for filter.Parse: the filter must be an object
// with a cohort.
func validateFilter(raw json.RawMessage) error {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(raw, &doc); err != nil {
		return &segments.FilterError{Msg: "filter must be a JSON object"}
	}
	if _, ok := doc["cohort"]; !ok {
		return &segments.FilterError{Path: "/cohort", Msg: "missing"}
	}
	return nil
}
