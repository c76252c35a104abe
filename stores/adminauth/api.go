package adminauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/cohortsync/cohortsync/internal/httpjson"
	"github.com/cohortsync/cohortsync/internal/httproute"
)

// mintTimeout bounds a mint, so that a stalled Kafka answers 503 instead of
// holding the request open.
const mintTimeout = 15 * time.Second

// OnlyAdminMintsMessage is the 403 a workspace token gets when it tries to
// mint a token for its own workspace.
const OnlyAdminMintsMessage = "only the admin token can mint tokens"

// CreatedToken is the answer to a mint: the only time the token is shown.
type CreatedToken struct {
	Token     string    `json:"token"`
	Workspace string    `json:"workspace"`
	ID        string    `json:"id"`
	CreatedAt time.Time `json:"created_at"`
}

// Minter mints workspace tokens; *TokenStore is one.
type Minter interface {
	Create(ctx context.Context, workspace string) (Token, string, error)
}

// TokenAPI serves POST /v1/workspaces/{workspace}/tokens.
type TokenAPI struct {
	minter Minter
	auth   Authorizer
	log    *slog.Logger
}

// NewTokenAPI returns the token endpoint. auth must answer AllowedGlobal for
// the global admin token: nothing else may mint.
func NewTokenAPI(minter Minter, auth Authorizer, logger *slog.Logger) (*TokenAPI, error) {
	var errs []error
	if minter == nil {
		errs = append(errs, errors.New("nil minter"))
	}
	if auth == nil {
		errs = append(errs, errors.New("nil authorizer"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("adminauth: token api: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &TokenAPI{minter: minter, auth: auth, log: logger.With("component", "tokens-admin")}, nil
}

// Register adds the route to r.
func (a *TokenAPI) Register(r httproute.Router) {
	r.Handle("POST /v1/workspaces/{workspace}/tokens", http.HandlerFunc(a.mint))
}

func (a *TokenAPI) mint(w http.ResponseWriter, r *http.Request) {
	ws := r.PathValue("workspace")
	switch d := a.auth.Check(r, ws); d {
	case AllowedGlobal:
	case AllowedWorkspace:
		// A workspace token must not be able to make more of itself, or a
		// leaked one could never be contained by revoking it.
		httpjson.Error(w, http.StatusForbidden, OnlyAdminMintsMessage)
		return
	default:
		a.log.WarnContext(r.Context(), "admin request refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "decision", d.String())
		WriteRefusal(w, d)
		return
	}
	if msg := WorkspaceProblem(ws); msg != "" {
		httpjson.Error(w, http.StatusBadRequest, msg)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), mintTimeout)
	defer cancel()
	t, token, err := a.minter.Create(ctx, ws)
	if err != nil {
		a.log.ErrorContext(r.Context(), "token store unavailable", "workspace", ws, "error", err)
		httpjson.Error(w, http.StatusServiceUnavailable, "token store unavailable, try again")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(CreatedToken{Token: token, Workspace: t.Workspace, ID: t.ID, CreatedAt: t.CreatedAt})
}
