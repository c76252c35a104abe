package identities

import (
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
	"github.com/cohortsync/cohortsync/stores/adminauth"
)

// LoadResponse is the answer to POST /v1/workspaces/{workspace}/identities.
type LoadResponse struct {
	Accepted int64       `json:"accepted"`
	Rejected []LineError `json:"rejected"`
}

// ErrorBody is every error answer of the endpoint.
type ErrorBody struct {
	Error string `json:"error"`
}

// AdminAPI serves POST /v1/workspaces/{workspace}/identities.
type AdminAPI struct {
	loader  *Loader
	auth    adminauth.Authorizer
	maxBody int64
	timeout time.Duration
	log     *slog.Logger
}

// NewAdminAPI returns the identities endpoint over loader, guarded by the
// admin token.
func NewAdminAPI(loader *Loader, authorizer adminauth.Authorizer, cfg Config, logger *slog.Logger) (*AdminAPI, error) {
	var errs []error
	if loader == nil {
		errs = append(errs, errors.New("nil loader"))
	}
	if authorizer == nil {
		errs = append(errs, errors.New("nil authorizer"))
	}
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("identities: admin api: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &AdminAPI{
		loader: loader, auth: authorizer, maxBody: cfg.MaxBodyBytes, timeout: cfg.LandTimeout,
		log: logger.With("component", "identities-admin"),
	}, nil
}

// Register adds the route to r.
func (a *AdminAPI) Register(r httproute.Router) {
	r.Handle("POST /v1/workspaces/{workspace}/identities", http.HandlerFunc(a.load))
}

// load answers only once every accepted line has landed with acks=all. The
// body is read whole before anything lands, so a body over the limit is
// refused with nothing landed rather than half landed.
func (a *AdminAPI) load(w http.ResponseWriter, r *http.Request) {
	ws := r.PathValue("workspace")
	// The token comes first, so that unauthenticated callers learn nothing,
	// not even whether a workspace name is valid.
	// A token of another workspace gets the 404 of a missing resource.
	if d := a.auth.Check(r, ws); !d.Allowed() {
		a.log.WarnContext(r.Context(), "admin request refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "decision", d.String())
		adminauth.WriteRefusal(w, d)
		return
	}
	if msg := adminauth.WorkspaceProblem(ws); msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	tooLarge := fmt.Sprintf("request body larger than %d bytes: split the records over several requests (cohortsync identities load does)", a.maxBody)
	if r.ContentLength > a.maxBody {
		writeError(w, http.StatusRequestEntityTooLarge, tooLarge)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.maxBody))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, tooLarge)
		return
	case err != nil:
		writeError(w, http.StatusBadRequest, "could not read the request body")
		return
	case len(bytes.TrimSpace(body)) == 0:
		writeError(w, http.StatusBadRequest, "request body is empty: send NDJSON, one identity record {user_id, external_id?, device_ids?, aliases?} per line")
		return
	}

	started := time.Now()
	ctx, cancel := context.WithTimeout(r.Context(), a.timeout)
	defer cancel()
	resp := LoadResponse{Rejected: []LineError{}}
	st, err := a.loader.Load(ctx, ws, bytes.NewReader(body), func(le LineError) {
		resp.Rejected = append(resp.Rejected, le)
	})
	if err != nil {
		a.log.ErrorContext(r.Context(), "identities load failed", "workspace", ws, "landed", st.Accepted, "error", err)
		writeError(w, http.StatusServiceUnavailable, "identities could not be landed, try again: records replace earlier records of the same user_id, so sending the request again is safe")
		return
	}
	resp.Accepted = st.Accepted
	a.log.InfoContext(r.Context(), "identities loaded", "workspace", ws, "lines", st.Lines,
		"accepted", st.Accepted, "rejected", st.Rejected, "duration", time.Since(started).Round(time.Millisecond))
	httpjson.Write(w, http.StatusOK, resp)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	httpjson.Error(w, status, msg)
}
