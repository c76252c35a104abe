package adminauth

import (
	"errors"
	"net/http"
	"slices"
)

// TokenVerifier finds the record of a presented workspace token.
type TokenVerifier interface {
	Verify(token string) (Token, bool)
}

// Scoped is the Authorizer of a server with workspace tokens: the global
// admin token reaches every workspace, a workspace token only its own.
type Scoped struct {
	admin  *AdminToken
	tokens TokenVerifier
	// also are further global tokens: the one a server hands to local
	// commands for the length of one start.
	also []*AdminToken
}

// NewScoped returns the Authorizer for the global token admin, any further
// global tokens also, and the workspace tokens tokens verifies.
func NewScoped(admin *AdminToken, tokens TokenVerifier, also ...*AdminToken) (*Scoped, error) {
	var errs []error
	if admin == nil {
		errs = append(errs, errors.New("nil admin token"))
	}
	if tokens == nil {
		errs = append(errs, errors.New("nil token verifier"))
	}
	if slices.Contains(also, nil) {
		errs = append(errs, errors.New("nil further admin token"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, errors.Join(errors.New("adminauth: scoped authorizer"), err)
	}
	return &Scoped{admin: admin, tokens: tokens, also: also}, nil
}

// Authorize reports whether Check allows the request.
func (s *Scoped) Authorize(r *http.Request, workspace string) bool {
	return s.Check(r, workspace).Allowed()
}

// Check decides on the bearer token of r for workspace.
func (s *Scoped) Check(r *http.Request, workspace string) Decision {
	if r == nil {
		return Unauthenticated
	}
	tok, ok := BearerToken(r)
	switch {
	case !ok:
		return Unauthenticated
	case s.admin.matches(tok):
		return AllowedGlobal
	}
	for _, a := range s.also {
		if a.matches(tok) {
			return AllowedGlobal
		}
	}
	t, ok := s.tokens.Verify(tok)
	switch {
	case !ok:
		return Unauthenticated
	case t.Workspace == workspace:
		return AllowedWorkspace
	default:
		return OtherWorkspace
	}
}
