package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/cohortsync/cohortsync/internal/httpjson"
	"github.com/cohortsync/cohortsync/segments"
	"github.com/cohortsync/cohortsync/segments/saved"
)

// CreateSegmentRequest is the body of POST .../segments.
type CreateSegmentRequest struct {
	Name   string          `json:"name"`
	Filter json.RawMessage `json:"filter"`
}

// Segment is a saved segment as answered. Count is set by GET of one
// segment; CountError says why it could not be computed (for example a
// cohort the filter names by name is not known yet).
type Segment struct {
	ID         string          `json:"id"`
	Name       string          `json:"name"`
	Filter     json.RawMessage `json:"filter"`
	CreatedAt  time.Time       `json:"created_at"`
	Count      *int64          `json:"count,omitempty"`
	CountError *ErrorBody      `json:"count_error,omitempty"`
}

// SegmentList is the answer of GET .../segments.
type SegmentList struct {
	Segments []Segment `json:"segments"`
}

// EvaluateRequest is the body of POST .../segments:evaluate.
type EvaluateRequest struct {
	Filter json.RawMessage `json:"filter"`
	Limit  *int            `json:"limit,omitempty"`
	Cursor string          `json:"cursor,omitempty"`
	AsOf   string          `json:"as_of,omitempty"`
}

// Page is one page of members; NextCursor is null on the last page.
type Page struct {
	Count      int64    `json:"count"`
	Members    []string `json:"members"`
	NextCursor *string  `json:"next_cursor"`
}

func pageOf(p segments.Page) Page {
	out := Page{Count: p.Count, Members: p.Members}
	if out.Members == nil {
		out.Members = []string{}
	}
	if p.NextCursor != "" {
		c := p.NextCursor
		out.NextCursor = &c
	}
	return out
}

func segmentOf(s saved.Segment) Segment {
	return Segment{ID: s.ID, Name: s.Name, Filter: s.Filter, CreatedAt: s.CreatedAt}
}

func (a *API) createSegment(w http.ResponseWriter, r *http.Request, ws string) {
	var req CreateSegmentRequest
	if msg := httpjson.Decode(w, r, maxBody, &req); msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	if len(bytes.TrimSpace(req.Filter)) == 0 || bytes.Equal(bytes.TrimSpace(req.Filter), []byte("null")) {
		writeError(w, http.StatusBadRequest, "filter is required")
		return
	}
	if err := a.validate(req.Filter); err != nil {
		a.engineError(w, r, "validate filter", err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.timeout)
	defer cancel()
	seg, err := a.saved.Create(ctx, ws, req.Name, req.Filter)
	switch {
	case errors.Is(err, saved.ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, saved.ErrNameTaken):
		writeError(w, http.StatusConflict, err.Error())
	case err != nil:
		a.log.ErrorContext(r.Context(), "saved-segment store unavailable", "workspace", ws, "error", err)
		writeError(w, http.StatusServiceUnavailable, "segment store unavailable, try again")
	default:
		writeJSON(w, http.StatusCreated, segmentOf(seg))
	}
}

func (a *API) listSegments(w http.ResponseWriter, _ *http.Request, ws string) {
	list := a.saved.List(ws)
	out := SegmentList{Segments: make([]Segment, 0, len(list))}
	for _, s := range list {
		out.Segments = append(out.Segments, segmentOf(s))
	}
	writeJSON(w, http.StatusOK, out)
}

// lookup finds the segment of the path or answers 404.
func (a *API) lookup(w http.ResponseWriter, r *http.Request, ws string) (saved.Segment, bool) {
	seg, ok := a.saved.Get(ws, r.PathValue("segment_id"))
	if !ok {
		writeError(w, http.StatusNotFound, "not found")
	}
	return seg, ok
}

func (a *API) getSegment(w http.ResponseWriter, r *http.Request, ws string) {
	seg, ok := a.lookup(w, r, ws)
	if !ok {
		return
	}
	out := segmentOf(seg)
	ctx, cancel := context.WithTimeout(r.Context(), a.timeout)
	defer cancel()
	page, err := a.engine.Evaluate(ctx, ws, segments.Query{Filter: seg.Filter})
	var fe *segments.FilterError
	switch {
	case errors.As(err, &fe):
		// The definition is still worth showing when it cannot be counted.
		out.CountError = &ErrorBody{Error: fe.Error(), Path: fe.Path}
	case err != nil:
		a.engineError(w, r, "count segment", err)
		return
	default:
		out.Count = &page.Count
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) deleteSegment(w http.ResponseWriter, r *http.Request, ws string) {
	ctx, cancel := context.WithTimeout(r.Context(), a.timeout)
	defer cancel()
	err := a.saved.Delete(ctx, ws, r.PathValue("segment_id"))
	switch {
	case errors.Is(err, saved.ErrNotFound):
		writeError(w, http.StatusNotFound, "not found")
	case err != nil:
		a.log.ErrorContext(r.Context(), "saved-segment store unavailable", "workspace", ws, "error", err)
		writeError(w, http.StatusServiceUnavailable, "segment store unavailable, try again")
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func (a *API) evaluate(w http.ResponseWriter, r *http.Request, ws string) {
	var req EvaluateRequest
	if msg := httpjson.Decode(w, r, maxBody, &req); msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	if len(bytes.TrimSpace(req.Filter)) == 0 || bytes.Equal(bytes.TrimSpace(req.Filter), []byte("null")) {
		writeError(w, http.StatusBadRequest, "filter is required")
		return
	}
	limit := DefaultLimit
	if req.Limit != nil {
		if limit = *req.Limit; limit < 1 || limit > MaxLimit {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit %d must be from 1 to %d", limit, MaxLimit))
			return
		}
	}
	asOf, msg := parseAsOf(req.AsOf)
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	a.page(w, r, ws, segments.Query{Filter: req.Filter, Limit: limit, Cursor: req.Cursor, AsOf: asOf})
}

func (a *API) page(w http.ResponseWriter, r *http.Request, ws string, q segments.Query) {
	ctx, cancel := context.WithTimeout(r.Context(), a.timeout)
	defer cancel()
	p, err := a.engine.Evaluate(ctx, ws, q)
	if err != nil {
		a.engineError(w, r, "evaluate", err)
		return
	}
	writeJSON(w, http.StatusOK, pageOf(p))
}

func (a *API) members(w http.ResponseWriter, r *http.Request, ws string) {
	seg, ok := a.lookup(w, r, ws)
	if !ok {
		return
	}
	qs := r.URL.Query()
	asOf, msg := parseAsOf(qs.Get("as_of"))
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	format := qs.Get("format")
	switch format {
	case "", "json":
		limit, msg := parseLimit(qs.Get("limit"))
		if msg != "" {
			writeError(w, http.StatusBadRequest, msg)
			return
		}
		a.page(w, r, ws, segments.Query{Filter: seg.Filter, Limit: limit, Cursor: qs.Get("cursor"), AsOf: asOf})
	case "csv", "ndjson", "parquet":
		if qs.Has("cursor") || qs.Has("limit") {
			writeError(w, http.StatusBadRequest, "cursor and limit page format=json; format="+format+" exports every member")
			return
		}
		a.exportMembers(w, r, ws, seg, format, asOf)
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("format %q must be json, csv, ndjson or parquet", httpjson.Truncate(format)))
	}
}

func (a *API) explain(w http.ResponseWriter, r *http.Request, ws string) {
	seg, ok := a.lookup(w, r, ws)
	if !ok {
		return
	}
	asOf, msg := parseAsOf(r.URL.Query().Get("as_of"))
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.timeout)
	defer cancel()
	ans, err := a.engine.Explain(ctx, ws, seg.Filter, r.PathValue("user_id"), asOf)
	if err != nil {
		a.engineError(w, r, "explain", err)
		return
	}
	if ans.Reasons == nil {
		ans.Reasons = []segments.Reason{}
	}
	writeJSON(w, http.StatusOK, ans)
}
