package adminauth

import (
	"encoding/json"
	"net/http"
)

// Decision is the outcome of checking a request against a workspace.
type Decision int

// The decisions. The zero value refuses.
const (
	// Unauthenticated: no token, or one nobody issued (or revoked): 401.
	Unauthenticated Decision = iota
	// AllowedGlobal: the global admin token, valid for every workspace.
	AllowedGlobal
	// AllowedWorkspace: a token of exactly the requested workspace.
	AllowedWorkspace
	// OtherWorkspace: a valid token of another workspace: 404, the answer
	// a missing resource gets.
	OtherWorkspace
)

// Allowed reports whether the request may proceed.
func (d Decision) Allowed() bool { return d == AllowedGlobal || d == AllowedWorkspace }

func (d Decision) String() string {
	switch d {
	case AllowedGlobal:
		return "allowed_global"
	case AllowedWorkspace:
		return "allowed_workspace"
	case OtherWorkspace:
		return "other_workspace"
	default:
		return "unauthenticated"
	}
}

// Messages of the refusals, shared by every API so that a refusal looks the
// same wherever it happens.
const (
	UnauthenticatedMessage = "missing or invalid admin token"
	NotFoundMessage        = "not found"
)

// WriteRefusal answers a request Check did not allow: 401 with a
// WWW-Authenticate challenge, or 404 with the body of a missing resource.
// It must only be called for a refused decision.
func WriteRefusal(w http.ResponseWriter, d Decision) {
	status, msg := http.StatusUnauthorized, UnauthenticatedMessage
	if d == OtherWorkspace {
		status, msg = http.StatusNotFound, NotFoundMessage
	} else {
		w.Header().Set("WWW-Authenticate", `Bearer realm="cohortsync"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Error string `json:"error"`
	}{msg})
}
