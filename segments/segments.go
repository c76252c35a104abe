// Package segments answers what marketers and analysts ask of cohort
// membership: which users a segment (a filter over cohorts) holds, why one
// user is in it or not, and how many data points were imported.
//
// Engine is implemented twice, over ClickHouse and over the embedded store,
// and both must give identical answers to the same questions.
package segments

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Query is one evaluation of a filter.
type Query struct {
	// Filter is the filter document as sent by the caller (see the filter
	// language in the package filter).
	Filter json.RawMessage
	// Limit is the page size; 0 asks for the count only.
	Limit int
	// Cursor continues a previous page; "" starts at the first member.
	Cursor string
	// AsOf asks for membership at that instant, answered from the change
	// history; the zero time means now.
	AsOf time.Time
}

// Page is the answer to a Query: the total count and one page of members in
// a stable order (ascending user id).
type Page struct {
	Count   int64    `json:"count"`
	Members []string `json:"members"`
	// NextCursor is "" on the last page.
	NextCursor string `json:"next_cursor,omitempty"`
}

// Reason tells how one cohort named by the filter decided a user's answer.
type Reason struct {
	Partner    string `json:"partner"`
	CohortID   string `json:"cohort_id"`
	CohortName string `json:"cohort_name,omitempty"`
	// InCohort is whether the user was in the cohort at the evaluated instant.
	InCohort bool `json:"in_cohort"`
	// LastChange is the change that decided InCohort; nil when the user was
	// never in the cohort's history.
	LastChange *Change `json:"last_change,omitempty"`
}

// Change identifies one applied membership change.
type Change struct {
	IsMember   bool      `json:"is_member"`
	Version    uint64    `json:"version"`
	RecordID   string    `json:"record_id"`
	EventTime  time.Time `json:"event_time"`
	ReceivedAt time.Time `json:"received_at"`
}

// Answer is the per-user answer of a segment.
type Answer struct {
	UserID  string   `json:"user_id"`
	Member  bool     `json:"member"`
	Reasons []Reason `json:"reasons"`
}

// GroupBy is the grouping of data-point rows.
type GroupBy string

// The groupings the data-point query supports.
const (
	GroupByDay     GroupBy = "day"
	GroupByPartner GroupBy = "partner"
	GroupByCohort  GroupBy = "cohort"
)

// DataPointRow is one row of the data-point report. Only the fields of the
// grouping are set.
type DataPointRow struct {
	Day      string `json:"day,omitempty"` // YYYY-MM-DD, UTC landing day
	Partner  string `json:"partner,omitempty"`
	CohortID string `json:"cohort_id,omitempty"`
	// Billable counts every accepted add and remove, each landed record once.
	Billable int64 `json:"billable"`
	// Transitions counts the assignments that changed membership; never
	// more than Billable.
	Transitions int64 `json:"transitions"`
}

// SyncMode is how a cohort's syncs arrive, inferred from their timing.
type SyncMode string

// The inferred sync modes.
const (
	SyncDynamic SyncMode = "dynamic"
	SyncOneTime SyncMode = "one_time"
)

// CohortInfo describes one cohort of a workspace.
type CohortInfo struct {
	Partner     string    `json:"partner"`
	CohortID    string    `json:"cohort_id"`
	Name        string    `json:"name"`
	MemberCount int64     `json:"member_count"`
	LastSync    time.Time `json:"last_sync"`
	SyncMode    SyncMode  `json:"sync_mode"`
	// Period is the inferred interval between syncs of a dynamic cohort.
	PeriodSeconds int64 `json:"period_seconds,omitempty"`
	// Stale is true for a dynamic cohort with no sync for twice its period.
	Stale bool `json:"stale"`
	// AgeSeconds is the time since the last sync.
	AgeSeconds int64 `json:"age_seconds"`
}

// Engine evaluates segments and reports data points for one state of record.
type Engine interface {
	Evaluate(ctx context.Context, workspace string, q Query) (Page, error)
	Explain(ctx context.Context, workspace string, filter json.RawMessage, userID string, asOf time.Time) (Answer, error)
	// Export calls fn for every member, in the order of Evaluate's pages.
	Export(ctx context.Context, workspace string, filter json.RawMessage, asOf time.Time, fn func(userID string) error) error
	// DataPoints reports the landing days in [from, to] (both inclusive, UTC dates).
	DataPoints(ctx context.Context, workspace string, from, to time.Time, groupBy GroupBy) ([]DataPointRow, error)
	Cohorts(ctx context.Context, workspace string, now time.Time) ([]CohortInfo, error)
}

// FilterError is a filter the caller must fix. Path is a JSON pointer to the
// offending part (for example "/and/1/cohort/id").
type FilterError struct {
	Path string
	Msg  string
}

func (e *FilterError) Error() string {
	if e.Path == "" {
		return "filter: " + e.Msg
	}
	return fmt.Sprintf("filter at %s: %s", e.Path, e.Msg)
}

// ErrBadCursor is returned for a cursor this engine did not hand out.
var ErrBadCursor = errors.New("segments: invalid cursor")
