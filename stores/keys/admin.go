package keys

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/cohortsync/cohortsync/internal/httpjson"
	"github.com/cohortsync/cohortsync/internal/httproute"
	"github.com/cohortsync/cohortsync/stores/adminauth"
)

const (
	maxAdminBody = 16 << 10
	// adminWriteTimeout bounds a create or revoke, so that a stalled Kafka
	// answers 503 instead of holding the request open.
	adminWriteTimeout = 15 * time.Second
)

// CreateRequest is the body of POST /v1/workspaces/{workspace}/keys.
type CreateRequest struct {
	Partner string `json:"partner"`
	Label   string `json:"label,omitempty"`
}

// CreatedKey is the answer to a create: the only time the secret is shown.
type CreatedKey struct {
	KeyID        string    `json:"key_id"`
	ClientSecret string    `json:"client_secret"`
	Workspace    string    `json:"workspace"`
	Partner      string    `json:"partner"`
	Label        string    `json:"label"`
	CreatedAt    time.Time `json:"created_at"`
}

// KeyInfo is a key as listed: never with its secret or its hash.
type KeyInfo struct {
	KeyID     string     `json:"key_id"`
	Partner   string     `json:"partner"`
	Label     string     `json:"label"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	Status    string     `json:"status"`
}

// KeyList is the answer to a list.
type KeyList struct {
	Keys []KeyInfo `json:"keys"`
}

// ErrorBody is every error answer of the admin API.
type ErrorBody struct {
	Error string `json:"error"`
}

// Info returns the listable view of k.
func (k Key) Info() KeyInfo {
	k = k.clone()
	return KeyInfo{KeyID: k.ID, Partner: k.Partner, Label: k.Label, CreatedAt: k.CreatedAt, RevokedAt: k.RevokedAt, Status: k.Status()}
}

// AdminAPI serves /v1/workspaces/{workspace}/keys.
type AdminAPI struct {
	store    *Store
	auth     adminauth.Authorizer
	partners func(name string) bool
	log      *slog.Logger
}

// NewAdminAPI returns the admin API over store. partners reports whether a
// partner is enabled; keys can only be created for enabled partners.
func NewAdminAPI(store *Store, authorizer adminauth.Authorizer, partners func(name string) bool, logger *slog.Logger) (*AdminAPI, error) {
	var errs []error
	if store == nil {
		errs = append(errs, errors.New("nil store"))
	}
	if authorizer == nil {
		errs = append(errs, errors.New("nil authorizer"))
	}
	if partners == nil {
		errs = append(errs, errors.New("nil partners function"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("keys: admin api: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &AdminAPI{store: store, auth: authorizer, partners: partners, log: logger.With("component", "keys-admin")}, nil
}

// Register adds the admin routes to r.
func (a *AdminAPI) Register(r httproute.Router) {
	r.Handle("POST /v1/workspaces/{workspace}/keys", a.guard(a.create))
	r.Handle("GET /v1/workspaces/{workspace}/keys", a.guard(a.list))
	r.Handle("DELETE /v1/workspaces/{workspace}/keys/{key_id}", a.guard(a.revoke))
}

// guard checks the token before anything else, so that unauthenticated
// callers learn nothing, not even whether a workspace name is valid.
func (a *AdminAPI) guard(h func(http.ResponseWriter, *http.Request, string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ws := r.PathValue("workspace")
		if d := a.auth.Check(r, ws); !d.Allowed() {
			// Logged for auditing; the presented token itself never is. A
			// token of another workspace gets the 404 of a missing resource.
			a.log.WarnContext(r.Context(), "admin request refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "decision", d.String())
			adminauth.WriteRefusal(w, d)
			return
		}
		if !ValidWorkspace(ws) {
			httpjson.Error(w, http.StatusBadRequest, adminauth.WorkspaceProblem(ws))
			return
		}
		h(w, r, ws)
	}
}

func (a *AdminAPI) create(w http.ResponseWriter, r *http.Request, ws string) {
	var req CreateRequest
	if msg := httpjson.Decode(w, r, maxAdminBody, &req); msg != "" {
		httpjson.Error(w, http.StatusBadRequest, msg)
		return
	}
	if req.Partner == "" {
		httpjson.Error(w, http.StatusBadRequest, "partner is required")
		return
	}
	if !ValidPartner(req.Partner) || !a.partners(req.Partner) {
		httpjson.Error(w, http.StatusBadRequest, fmt.Sprintf("partner %q is unknown or not enabled", httpjson.Truncate(req.Partner)))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), adminWriteTimeout)
	defer cancel()
	k, secret, err := a.store.Create(ctx, ws, req.Partner, req.Label)
	if err != nil {
		a.storeError(w, r, "create key", err)
		return
	}
	// The secret is in this body and nowhere else: keep it out of caches.
	w.Header().Set("Cache-Control", "no-store")
	httpjson.Write(w, http.StatusCreated, NewCreatedKey(k, secret))
}

// NewCreatedKey is the one-time answer to a create: the key and its secret.
func NewCreatedKey(k Key, secret string) CreatedKey {
	return CreatedKey{
		KeyID: k.ID, ClientSecret: secret, Workspace: k.Workspace,
		Partner: k.Partner, Label: k.Label, CreatedAt: k.CreatedAt,
	}
}

func (a *AdminAPI) list(w http.ResponseWriter, _ *http.Request, ws string) {
	keys := a.store.List(ws)
	out := KeyList{Keys: make([]KeyInfo, 0, len(keys))}
	for _, k := range keys {
		out.Keys = append(out.Keys, k.Info())
	}
	httpjson.Write(w, http.StatusOK, out)
}

func (a *AdminAPI) revoke(w http.ResponseWriter, r *http.Request, ws string) {
	id := r.PathValue("key_id")
	ctx, cancel := context.WithTimeout(r.Context(), adminWriteTimeout)
	defer cancel()
	if err := a.store.Revoke(ctx, ws, id); err != nil {
		a.storeError(w, r, "revoke key", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *AdminAPI) storeError(w http.ResponseWriter, r *http.Request, op string, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		httpjson.Error(w, http.StatusNotFound, "key not found")
	case errors.Is(err, ErrInvalid):
		httpjson.Error(w, http.StatusBadRequest, err.Error())
	default:
		a.log.ErrorContext(r.Context(), "key store unavailable", "op", op, "workspace", r.PathValue("workspace"), "error", err)
		httpjson.Error(w, http.StatusServiceUnavailable, "key store unavailable, try again")
	}
}
