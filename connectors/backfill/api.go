package backfill

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/cohortsync/cohortsync/internal/httpjson"
	"github.com/cohortsync/cohortsync/internal/httproute"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/stores/adminauth"
)

// Limits of one POST /v1/workspaces/{workspace}/backfill request.
const (
	MaxRequestBytes   = 64 << 20
	MaxRequestRecords = 10_000
	landTimeout       = 2 * time.Minute
)

// API lets `cohortsync backfill --server` land envelopes through a running
// server, which holds the data directory and the identity directory: the
// records keep their deterministic ids, and the server counts them with its
// own stages.
type API struct {
	dest Destination
	auth adminauth.Authorizer
	log  *slog.Logger
}

// NewAPI serves dest behind auth.
func NewAPI(dest Destination, auth adminauth.Authorizer, log *slog.Logger) (*API, error) {
	if dest == nil || auth == nil {
		return nil, errors.New("backfill api: nil destination or authorizer")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &API{dest: dest, auth: auth, log: log.With("component", "backfill-api")}, nil
}

// Register adds the route to r.
func (a *API) Register(r httproute.Router) {
	r.Handle("POST /v1/workspaces/{workspace}/backfill", http.HandlerFunc(a.land))
}

// land takes NDJSON envelopes of the path's workspace; ?dry_run=true counts
// without landing.
func (a *API) land(w http.ResponseWriter, r *http.Request) {
	ws := r.PathValue("workspace")
	if d := a.auth.Check(r, ws); !d.Allowed() {
		adminauth.WriteRefusal(w, d)
		return
	}
	if msg := adminauth.WorkspaceProblem(ws); msg != "" {
		httpjson.Error(w, http.StatusBadRequest, msg)
		return
	}
	dryRun := r.URL.Query().Get("dry_run") == "true"
	envs, msg := readEnvelopes(http.MaxBytesReader(w, r.Body, MaxRequestBytes), ws)
	if msg != "" {
		httpjson.Error(w, http.StatusBadRequest, msg)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), landTimeout)
	defer cancel()
	out, err := a.dest.Land(ctx, envs, dryRun)
	if err != nil {
		a.log.ErrorContext(r.Context(), "backfill batch not landed", "workspace", ws, "records", len(envs), "err", err)
		httpjson.Error(w, http.StatusServiceUnavailable, "not landed, retry: "+err.Error())
		return
	}
	a.log.InfoContext(r.Context(), "backfill batch", "workspace", ws, "records", len(envs), "landed", out.Landed, "data_points", out.DataPoints, "dry_run", dryRun)
	httpjson.Write(w, http.StatusOK, out)
}

// readEnvelopes decodes one envelope per line, all of workspace ws.
func readEnvelopes(body io.Reader, ws string) ([]schemas.Envelope, string) {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), MaxRequestBytes)
	var envs []schemas.Envelope
	line := 0
	for sc.Scan() {
		line++
		raw := bytes.TrimSpace(sc.Bytes())
		if len(raw) == 0 {
			continue
		}
		if len(envs) == MaxRequestRecords {
			return nil, fmt.Sprintf("more than %d records in one request", MaxRequestRecords)
		}
		e, err := schemas.Decode(raw)
		if err != nil {
			return nil, fmt.Sprintf("line %d: %v", line, err)
		}
		if err := e.Validate(); err != nil {
			return nil, fmt.Sprintf("line %d: %v", line, err)
		}
		if e.Workspace != ws {
			return nil, fmt.Sprintf("line %d: record of workspace %q sent to workspace %q", line, httpjson.Truncate(e.Workspace), httpjson.Truncate(ws))
		}
		envs = append(envs, e)
	}
	if err := sc.Err(); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, fmt.Sprintf("request body larger than %d bytes", MaxRequestBytes)
		}
		return nil, fmt.Sprintf("read body: %v", err)
	}
	if len(envs) == 0 {
		return nil, "no records in the body (one landing envelope per line)"
	}
	return envs, ""
}
