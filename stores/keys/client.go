package keys

import (
	"context"
	"net/http"
	"net/url"

	"github.com/cohortsync/cohortsync/internal/adminclient"
)

// ErrUnauthorized is what an APIError with status 401 unwraps to.
var ErrUnauthorized = adminclient.ErrUnauthorized

// APIError is a non-success answer of the admin API, with the server's
// message; it unwraps to ErrNotFound, ErrUnauthorized or ErrInvalid.
type APIError = adminclient.Error

func classify(status int) error {
	switch status {
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusUnauthorized:
		return ErrUnauthorized
	case http.StatusBadRequest:
		return ErrInvalid
	}
	return nil
}

// Client calls the admin API of a running server.
type Client struct {
	c *adminclient.Client
}

// NewClient returns a client for the server at baseURL (e.g.
// http://127.0.0.1:8080). A nil httpClient means http.DefaultClient.
func NewClient(baseURL, token string, httpClient *http.Client) (*Client, error) {
	c, err := adminclient.New(baseURL, token, adminclient.Options{HTTPClient: httpClient, Component: "keys", TokenKind: "admin token", Classify: classify})
	if err != nil {
		return nil, err
	}
	return &Client{c: c}, nil
}

// Create asks the server for a new key and returns it with its secret.
func (c *Client) Create(ctx context.Context, workspace, partner, label string) (CreatedKey, error) {
	var out CreatedKey
	err := c.c.JSON(ctx, http.MethodPost, keysPath(workspace), CreateRequest{Partner: partner, Label: label}, http.StatusCreated, &out)
	return out, err
}

// List returns the keys of workspace.
func (c *Client) List(ctx context.Context, workspace string) ([]KeyInfo, error) {
	var out KeyList
	if err := c.c.JSON(ctx, http.MethodGet, keysPath(workspace), nil, http.StatusOK, &out); err != nil {
		return nil, err
	}
	return out.Keys, nil
}

// Revoke invalidates a key; an unknown key is an error matching ErrNotFound.
func (c *Client) Revoke(ctx context.Context, workspace, keyID string) error {
	return c.c.JSON(ctx, http.MethodDelete, keysPath(workspace)+"/"+url.PathEscape(keyID), nil, http.StatusNoContent, nil)
}

func keysPath(workspace string) string {
	return "/v1/workspaces/" + url.PathEscape(workspace) + "/keys"
}
