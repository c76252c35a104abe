package api

import (
	"context"
	"fmt"
	"github.com/cohortsync/cohortsync/internal/httpjson"
	"net/http"
	"time"

	"github.com/cohortsync/cohortsync/segments"
)

// DefaultDataPointDays is the span reported when from is not given.
const DefaultDataPointDays = 30

const dateLayout = "2006-01-02"

// DataPoints is the answer of GET .../datapoints.
type DataPoints struct {
	Rows []segments.DataPointRow `json:"rows"`
}

// CohortList is the answer of GET .../cohorts.
type CohortList struct {
	Cohorts []segments.CohortInfo `json:"cohorts"`
}

func (a *API) dataPoints(w http.ResponseWriter, r *http.Request, ws string) {
	qs := r.URL.Query()
	to := a.now().UTC().Truncate(24 * time.Hour)
	if s := qs.Get("to"); s != "" {
		d, err := time.Parse(dateLayout, s)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("to %q must be a date YYYY-MM-DD", httpjson.Truncate(s)))
			return
		}
		to = d
	}
	from := to.AddDate(0, 0, -(DefaultDataPointDays - 1))
	if s := qs.Get("from"); s != "" {
		d, err := time.Parse(dateLayout, s)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("from %q must be a date YYYY-MM-DD", httpjson.Truncate(s)))
			return
		}
		from = d
	}
	if from.After(to) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("from %s is after to %s", from.Format(dateLayout), to.Format(dateLayout)))
		return
	}
	groupBy := segments.GroupBy(qs.Get("group_by"))
	switch groupBy {
	case "":
		groupBy = segments.GroupByDay
	case segments.GroupByDay, segments.GroupByPartner, segments.GroupByCohort:
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("group_by %q must be day, partner or cohort", httpjson.Truncate(string(groupBy))))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.timeout)
	defer cancel()
	rows, err := a.engine.DataPoints(ctx, ws, from, to, groupBy)
	if err != nil {
		a.engineError(w, r, "data points", err)
		return
	}
	if rows == nil {
		rows = []segments.DataPointRow{}
	}
	writeJSON(w, http.StatusOK, DataPoints{Rows: rows})
}

func (a *API) cohorts(w http.ResponseWriter, r *http.Request, ws string) {
	ctx, cancel := context.WithTimeout(r.Context(), a.timeout)
	defer cancel()
	list, err := a.engine.Cohorts(ctx, ws, a.now())
	if err != nil {
		a.engineError(w, r, "cohorts", err)
		return
	}
	if list == nil {
		list = []segments.CohortInfo{}
	}
	writeJSON(w, http.StatusOK, CohortList{Cohorts: list})
}
