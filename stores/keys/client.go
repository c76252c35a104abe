package keys

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// ErrUnauthorized is what an APIError with status 401 unwraps to.
var ErrUnauthorized = errors.New("unauthorized")

// APIError is a non-success answer of the admin API, with the server's message.
type APIError struct {
	StatusCode int
	Message    string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("keys api: %d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

// Unwrap lets callers test errors.Is(err, ErrNotFound) or ErrUnauthorized
// without looking at status codes.
func (e *APIError) Unwrap() error {
	switch e.StatusCode {
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
	base  *url.URL
	token string
	hc    *http.Client
}

// NewClient returns a client for the server at baseURL (e.g.
// http://127.0.0.1:8080). A nil httpClient means http.DefaultClient.
func NewClient(baseURL, token string, httpClient *http.Client) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("keys client: server URL %q: %w", baseURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("keys client: server URL %q must look like http://host:port", baseURL)
	}
	if token == "" {
		return nil, errors.New("keys client: admin token is empty")
	}
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	return &Client{base: u, token: token, hc: httpClient}, nil
}

// Create asks the server for a new key and returns it with its secret.
func (c *Client) Create(ctx context.Context, workspace, partner, label string) (CreatedKey, error) {
	var out CreatedKey
	err := c.do(ctx, http.MethodPost, c.keysPath(workspace), CreateRequest{Partner: partner, Label: label}, http.StatusCreated, &out)
	return out, err
}

// List returns the keys of workspace.
func (c *Client) List(ctx context.Context, workspace string) ([]KeyInfo, error) {
	var out KeyList
	if err := c.do(ctx, http.MethodGet, c.keysPath(workspace), nil, http.StatusOK, &out); err != nil {
		return nil, err
	}
	return out.Keys, nil
}

// Revoke invalidates a key; an unknown key is an error matching ErrNotFound.
func (c *Client) Revoke(ctx context.Context, workspace, keyID string) error {
	return c.do(ctx, http.MethodDelete, c.keysPath(workspace)+"/"+url.PathEscape(keyID), nil, http.StatusNoContent, nil)
}

func (c *Client) keysPath(workspace string) string {
	return "/v1/workspaces/" + url.PathEscape(workspace) + "/keys"
}

func (c *Client) do(ctx context.Context, method, path string, in any, want int, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("keys client: encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	// path is already escaped segment by segment, so it is appended to the
	// string form rather than to URL.Path (which would escape it again).
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, body)
	if err != nil {
		return fmt.Errorf("keys client: %s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("keys client: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	// Bounded: the answers are small, and a wrong server must not exhaust memory.
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("keys client: %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode != want {
		return &APIError{StatusCode: resp.StatusCode, Message: errorMessage(raw)}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("keys client: %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// errorMessage prefers the server's JSON error text and falls back to the
// raw body, which is what a proxy or a 405 from the mux sends.
func errorMessage(raw []byte) string {
	var eb ErrorBody
	if json.Unmarshal(raw, &eb) == nil && eb.Error != "" {
		return eb.Error
	}
	msg := strings.TrimSpace(string(raw))
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	if msg == "" {
		msg = "(no message)"
	}
	return msg
}
