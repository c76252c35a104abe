// Package adminclient is the one HTTP client of cohortsync's own admin API,
// used by every subcommand that works through a running server (keys,
// identities, tokens, segments, backfill --server): the URL check, the bearer
// token, bounded answers and one error type that carries the server's
// message.
package adminclient

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

// DefaultMaxAnswerBytes bounds an answer read whole: the admin API answers
// small JSON documents, and a wrong server must not exhaust memory.
const DefaultMaxAnswerBytes = 4 << 20

// Error is a non-success answer of the server.
type Error struct {
	// Component names the caller in the message, e.g. "keys api".
	Component  string
	StatusCode int
	// Message is the server's JSON "error" text, or the start of the raw
	// body (what a proxy or the mux's own 404 sends).
	Message string
	// Path is the JSON pointer of the offending part, for an invalid filter.
	Path string
	// cause is what the caller's Classify mapped the status to.
	cause error
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("%d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Message)
	if e.Path != "" && !strings.Contains(e.Message, e.Path) {
		msg += " (at " + e.Path + ")"
	}
	if e.Component != "" {
		msg = e.Component + ": " + msg
	}
	return msg
}

// Unwrap returns the package error the status stands for (ErrNotFound for a
// 404, say), so callers test errors.Is instead of status codes.
func (e *Error) Unwrap() error { return e.cause }

// Options tune a Client. The zero value is usable.
type Options struct {
	// HTTPClient makes the requests; nil means http.DefaultClient.
	HTTPClient *http.Client
	// Component names the caller in errors ("keys client", "keys api").
	// Errors of the request itself say Component + " client"; answers say
	// Component + " api".
	Component string
	// Classify maps a status code to the error an Error unwraps to; nil or
	// a nil answer means none.
	Classify func(status int) error
	// MaxAnswerBytes bounds an answer read whole; zero means
	// DefaultMaxAnswerBytes.
	MaxAnswerBytes int64
	// TokenKind names the token in the error for an empty one ("admin
	// token" where only the admin token will do); empty means "token".
	TokenKind string
}

// Client calls one server with one bearer token.
type Client struct {
	base  string
	token string
	opts  Options
}

// New returns a client of the server at baseURL (http://host:port).
func New(baseURL, token string, opts Options) (*Client, error) {
	if opts.Component == "" {
		opts.Component = "admin"
	}
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%s client: server URL %q must look like http://host:port", opts.Component, baseURL)
	}
	if token == "" {
		kind := opts.TokenKind
		if kind == "" {
			kind = "token"
		}
		return nil, fmt.Errorf("%s client: %s is empty", opts.Component, kind)
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = http.DefaultClient
	}
	if opts.MaxAnswerBytes <= 0 {
		opts.MaxAnswerBytes = DefaultMaxAnswerBytes
	}
	return &Client{base: u.String(), token: token, opts: opts}, nil
}

// Send makes one request. path is already escaped segment by segment and is
// appended to the base URL as it is (url.URL.Path would escape it again).
// An empty contentType sends no body header. The caller closes the body.
func (c *Client) Send(ctx context.Context, method, path, contentType string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("%s client: %s %s: %w", c.opts.Component, method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s client: %s %s: %w", c.opts.Component, method, path, err)
	}
	return resp, nil
}

// JSON sends in (nil for no body) as JSON and decodes an answer of status
// want into out (nil to ignore it). Any other status is an *Error.
func (c *Client) JSON(ctx context.Context, method, path string, in any, want int, out any) error {
	var body io.Reader
	ct := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s client: encode request: %w", c.opts.Component, err)
		}
		body, ct = bytes.NewReader(b), "application/json"
	}
	return c.Do(ctx, method, path, ct, body, want, out)
}

// Do is JSON for a body of any type: it sends body with contentType and
// decodes the answer of status want into out.
func (c *Client) Do(ctx context.Context, method, path, contentType string, body io.Reader, want int, out any) error {
	resp, err := c.Send(ctx, method, path, contentType, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		return c.ReadError(resp)
	}
	if out == nil {
		return nil
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, c.opts.MaxAnswerBytes))
	if err != nil {
		return fmt.Errorf("%s client: %s %s: read answer: %w", c.opts.Component, method, path, err)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s client: %s %s: decode answer: %w", c.opts.Component, method, path, err)
	}
	return nil
}

// ReadError turns a non-success answer into an *Error, reading at most 64 KiB
// of its body.
func (c *Client) ReadError(resp *http.Response) error {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &Error{Component: c.opts.Component + " api", StatusCode: resp.StatusCode}
	var eb struct {
		Error string `json:"error"`
		Path  string `json:"path"`
	}
	if json.Unmarshal(raw, &eb) == nil && eb.Error != "" {
		e.Message, e.Path = eb.Error, eb.Path
	} else {
		msg := strings.TrimSpace(string(raw))
		if len(msg) > 200 {
			msg = msg[:200] + "..."
		}
		if msg == "" {
			msg = "(no message)"
		}
		e.Message = msg
	}
	if c.opts.Classify != nil {
		e.cause = c.opts.Classify(resp.StatusCode)
	}
	return e
}

// ErrUnauthorized is what the packages' clients map a 401 to; it is one
// value so that errors.Is works whichever client answered.
var ErrUnauthorized = errors.New("unauthorized")
