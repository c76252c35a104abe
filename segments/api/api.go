// Package api serves segments, data points and cohorts over HTTP: saved
// segments, ad-hoc evaluation, paged and exported members, per-user answers,
// the data-point report and the cohort list of a workspace. It depends on
// segments.Engine for answers, on a saved-segment store for definitions and
// on adminauth for who may ask.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/cohortsync/cohortsync/internal/httpjson"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync/internal/httproute"
	"github.com/cohortsync/cohortsync/segments"
	"github.com/cohortsync/cohortsync/segments/saved"
	"github.com/cohortsync/cohortsync/stores/adminauth"
)

// Limits of a members page.
const (
	DefaultLimit = 100
	MaxLimit     = 10000
)

// Defaults of Options.
const (
	DefaultQueryTimeout  = 30 * time.Second
	DefaultExportTimeout = 30 * time.Minute
)

const maxBody = 128 << 10

// SavedStore keeps segment definitions; *saved.Store is one.
type SavedStore interface {
	Create(ctx context.Context, workspace, name string, filter json.RawMessage) (saved.Segment, error)
	Get(workspace, id string) (saved.Segment, bool)
	List(workspace string) []saved.Segment
	Delete(ctx context.Context, workspace, id string) error
}

// Options configure an API.
type Options struct {
	Engine segments.Engine
	Saved  SavedStore
	Auth   adminauth.Authorizer
	// ValidateFilter checks a filter's syntax before a segment is saved,
	// returning *segments.FilterError for a filter the caller must fix.
	ValidateFilter func(raw json.RawMessage) error
	Logger         *slog.Logger
	Registerer     prometheus.Registerer
	// QueryTimeout bounds one engine call; 0 means DefaultQueryTimeout.
	QueryTimeout time.Duration
	// ExportTimeout bounds one streamed export and lifts the server's write
	// deadline for it; 0 means DefaultExportTimeout.
	ExportTimeout time.Duration
	// Now is the clock of the cohort list; nil means time.Now.
	Now func() time.Time
}

// API serves the routes of Register.
type API struct {
	engine   segments.Engine
	saved    SavedStore
	auth     adminauth.Authorizer
	validate func(json.RawMessage) error
	log      *slog.Logger
	timeout  time.Duration
	export   time.Duration
	now      func() time.Time
	metrics  *metrics
}

// New returns the API for opts.
func New(opts Options) (*API, error) {
	var errs []error
	if opts.Engine == nil {
		errs = append(errs, errors.New("nil engine"))
	}
	if opts.Saved == nil {
		errs = append(errs, errors.New("nil saved-segment store"))
	}
	if opts.Auth == nil {
		errs = append(errs, errors.New("nil authorizer"))
	}
	if opts.ValidateFilter == nil {
		errs = append(errs, errors.New("nil filter validator"))
	}
	if opts.QueryTimeout < 0 || opts.ExportTimeout < 0 {
		errs = append(errs, errors.New("negative timeout"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("segments api: %w", err)
	}
	a := &API{
		engine: opts.Engine, saved: opts.Saved, auth: opts.Auth, validate: opts.ValidateFilter,
		log: opts.Logger, timeout: opts.QueryTimeout, export: opts.ExportTimeout, now: opts.Now,
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.log = a.log.With("component", "segments-api")
	if a.timeout == 0 {
		a.timeout = DefaultQueryTimeout
	}
	if a.export == 0 {
		a.export = DefaultExportTimeout
	}
	if a.now == nil {
		a.now = time.Now
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("segments api: %w", err)
	}
	a.metrics = m
	return a, nil
}

// Register adds the routes to r.
func (a *API) Register(r httproute.Router) {
	const ws = "/v1/workspaces/{workspace}"
	a.handle(r, "POST "+ws+"/segments", "segments_create", a.createSegment)
	a.handle(r, "GET "+ws+"/segments", "segments_list", a.listSegments)
	a.handle(r, "GET "+ws+"/segments/{segment_id}", "segments_get", a.getSegment)
	a.handle(r, "DELETE "+ws+"/segments/{segment_id}", "segments_delete", a.deleteSegment)
	a.handle(r, "POST "+ws+"/segments:evaluate", "segments_evaluate", a.evaluate)
	a.handle(r, "GET "+ws+"/segments/{segment_id}/members", "segments_members", a.members)
	a.handle(r, "GET "+ws+"/segments/{segment_id}/members/{user_id}", "segments_explain", a.explain)
	a.handle(r, "GET "+ws+"/datapoints", "datapoints", a.dataPoints)
	a.handle(r, "GET "+ws+"/cohorts", "cohorts", a.cohorts)
}

// handle wraps h with the token check and the request metrics. The token
// comes first, so a caller without one learns nothing, not even whether a
// workspace name is valid; a token of another workspace gets the 404 a
// missing resource gets.
func (a *API) handle(r httproute.Router, pattern, route string, h func(http.ResponseWriter, *http.Request, string)) {
	r.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		started := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() { a.metrics.observe(route, sw.status, time.Since(started)) }()
		ws := req.PathValue("workspace")
		if d := a.auth.Check(req, ws); !d.Allowed() {
			a.log.WarnContext(req.Context(), "request refused", "method", req.Method, "path", req.URL.Path, "remote", req.RemoteAddr, "decision", d.String())
			adminauth.WriteRefusal(sw, d)
			return
		}
		if !adminauth.ValidWorkspace(ws) {
			writeError(sw, http.StatusBadRequest, adminauth.WorkspaceProblem(ws))
			return
		}
		h(sw, req, ws)
	}))
}

// statusWriter remembers the status for the metrics; Unwrap lets
// http.ResponseController reach Flush and the write deadline.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ErrorBody is every error answer; Path points into the filter for an
// invalid filter.
type ErrorBody struct {
	Error string `json:"error"`
	Path  string `json:"path,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, ErrorBody{Error: msg})
}

// engineError answers an error of the engine or of filter validation.
func (a *API) engineError(w http.ResponseWriter, r *http.Request, op string, err error) {
	var fe *segments.FilterError
	switch {
	case errors.As(err, &fe):
		writeJSON(w, http.StatusBadRequest, ErrorBody{Error: fe.Error(), Path: fe.Path})
	case errors.Is(err, segments.ErrBadCursor):
		writeError(w, http.StatusBadRequest, "invalid cursor: pass next_cursor of the previous page unchanged, with the same filter and as_of")
	case errors.Is(err, context.DeadlineExceeded):
		a.log.WarnContext(r.Context(), "segment query timed out", "op", op, "workspace", r.PathValue("workspace"), "error", err)
		writeError(w, http.StatusGatewayTimeout, "query timed out")
	case r.Context().Err() != nil:
		// The caller left; nobody reads an answer.
	default:
		a.log.ErrorContext(r.Context(), "segment query failed", "op", op, "workspace", r.PathValue("workspace"), "error", err)
		writeError(w, http.StatusServiceUnavailable, "query failed, try again")
	}
}

// parseLimit reads a page size: absent means DefaultLimit.
func parseLimit(s string) (int, string) {
	if s == "" {
		return DefaultLimit, ""
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > MaxLimit {
		return 0, fmt.Sprintf("limit %q must be an integer from 1 to %d", httpjson.Truncate(s), MaxLimit)
	}
	return n, ""
}

// parseAsOf reads an RFC 3339 instant: absent means now (the zero time).
func parseAsOf(s string) (time.Time, string) {
	if s == "" {
		return time.Time{}, ""
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Sprintf("as_of %q must be an RFC 3339 timestamp such as 2026-11-05T14:00:00Z", httpjson.Truncate(s))
	}
	return t.UTC(), ""
}
