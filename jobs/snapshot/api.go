package snapshot

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/cohortsync/cohortsync/internal/httpjson"
	"github.com/cohortsync/cohortsync/internal/httproute"
	"github.com/cohortsync/cohortsync/sinks/parquet"
	"github.com/cohortsync/cohortsync/stores/adminauth"
)

// API serves on-demand snapshots: POST /v1/workspaces/{workspace}/snapshots
// with an optional ?cohort=PARTNER/COHORT_ID.
type API struct {
	snap *Snapshotter
	auth adminauth.Authorizer
	log  *slog.Logger
}

// NewAPI returns the snapshot API; requests need a token that auth accepts
// for the workspace.
func NewAPI(snap *Snapshotter, auth adminauth.Authorizer, log *slog.Logger) (*API, error) {
	if snap == nil || auth == nil {
		return nil, errors.New("snapshot api: a snapshotter and an authorizer are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &API{snap: snap, auth: auth, log: log}, nil
}

// Register adds the route to r.
func (a *API) Register(r httproute.Router) {
	r.Handle("POST /v1/workspaces/{workspace}/snapshots", http.HandlerFunc(a.snapshot))
}

// SnapshotInfo is one cohort's line in the API's answer.
type SnapshotInfo struct {
	Partner  string `json:"partner"`
	CohortID string `json:"cohort_id"`
	Result
}

// Response is the API's answer.
type Response struct {
	Snapshots []SnapshotInfo `json:"snapshots"`
}

func (a *API) snapshot(w http.ResponseWriter, r *http.Request) {
	ws := r.PathValue("workspace")
	if d := a.auth.Check(r, ws); !d.Allowed() {
		adminauth.WriteRefusal(w, d)
		return
	}
	if msg := adminauth.WorkspaceProblem(ws); msg != "" {
		httpjson.Error(w, http.StatusBadRequest, msg)
		return
	}
	sel := Selection{Workspace: ws}
	if c := r.URL.Query().Get("cohort"); c != "" {
		partner, id, ok := strings.Cut(c, "/")
		if !ok || partner == "" || id == "" {
			httpjson.Error(w, http.StatusBadRequest, "cohort must be PARTNER/COHORT_ID")
			return
		}
		sel.Cohort = &parquet.CohortKey{Workspace: ws, Partner: partner, CohortID: id}
	}
	res, err := a.snap.Snapshot(r.Context(), sel)
	if errors.Is(err, ErrNoSuchCohort) {
		httpjson.Error(w, http.StatusNotFound, "no such cohort")
		return
	}
	if err != nil {
		a.log.Error("on-demand snapshot failed", "workspace", ws, "error", err)
		// The full error, with file paths and addresses, is in the log only.
		msg := "snapshot failed: " + publicError(err)
		if errors.Is(err, ErrCohortsFailed) {
			msg = "snapshot failed: every selected cohort failed (" + publicError(err) + ")"
		}
		httpjson.Error(w, http.StatusServiceUnavailable, msg)
		return
	}
	out := Response{Snapshots: make([]SnapshotInfo, len(res))}
	for i, x := range res {
		out.Snapshots[i] = SnapshotInfo{Partner: x.Cohort.Partner, CohortID: x.Cohort.CohortID, Result: x}
	}
	httpjson.Write(w, http.StatusOK, out)
}
