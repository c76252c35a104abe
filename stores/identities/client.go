package identities

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/cohortsync/cohortsync/internal/adminclient"
)

// ErrUnauthorized is what an APIError with status 401 unwraps to.
var ErrUnauthorized = adminclient.ErrUnauthorized

// APIError is a non-success answer of the endpoint, with the server's message.
type APIError = adminclient.Error

// ClientOptions tune a Client. The zero value is usable.
type ClientOptions struct {
	// HTTPClient makes the requests; nil means http.DefaultClient.
	HTTPClient *http.Client
	// ChunkBytes is the most one request carries; it must stay under the
	// server's max_body_bytes. Zero means 4 MiB.
	ChunkBytes int
	// MaxLineBytes is the longest line sent; longer lines are rejected
	// locally, as the server would. Zero means the default configuration's.
	MaxLineBytes int
}

// Client lands identity files through the endpoint of a running server.
type Client struct {
	c       *adminclient.Client
	chunk   int
	maxLine int
}

// NewClient returns a client for the server at baseURL (e.g. http://127.0.0.1:8080).
func NewClient(baseURL, token string, opts ClientOptions) (*Client, error) {
	if opts.ChunkBytes == 0 {
		opts.ChunkBytes = 4 << 20
	}
	// The answer lists at most one rejection per line of the chunk.
	ac, err := adminclient.New(baseURL, token, adminclient.Options{
		HTTPClient: opts.HTTPClient, Component: "identities", TokenKind: "admin token",
		Classify: func(status int) error {
			if status == http.StatusUnauthorized {
				return ErrUnauthorized
			}
			return nil
		},
		MaxAnswerBytes: int64(opts.ChunkBytes)*4 + (1 << 20),
	})
	if err != nil {
		return nil, err
	}
	c := &Client{c: ac, chunk: opts.ChunkBytes, maxLine: opts.MaxLineBytes}
	if c.chunk == 0 {
		c.chunk = 4 << 20
	}
	if c.maxLine == 0 {
		c.maxLine = DefaultConfig("").MaxLineBytes
	}
	if c.chunk < c.maxLine+2 {
		return nil, fmt.Errorf("identities client: chunk of %d bytes cannot hold a line of %d bytes", c.chunk, c.maxLine)
	}
	return c, nil
}

// Load sends the NDJSON records of r to workspace in requests of at most
// ChunkBytes, reading r as a stream. Rejected lines are passed to onReject
// (which may be nil) with their line numbers in r. It stops at the first
// request that fails; what earlier requests landed stays landed, and sending
// the same input again is safe.
func (c *Client) Load(ctx context.Context, workspace string, r io.Reader, onReject func(LineError)) (LoadStats, error) {
	var st LoadStats
	var buf bytes.Buffer
	// first is the number, in r, of the chunk's first line.
	first := int64(1)
	send := func() error {
		if len(bytes.TrimSpace(buf.Bytes())) == 0 {
			return nil // the server refuses an empty body
		}
		resp, err := c.post(ctx, workspace, buf.Bytes())
		if err != nil {
			return err
		}
		st.Accepted += resp.Accepted
		for _, le := range resp.Rejected {
			st.Rejected++
			if onReject != nil {
				onReject(LineError{Line: le.Line + first - 1, Error: le.Error})
			}
		}
		return nil
	}
	lr := newLineReader(r, c.maxLine)
	for {
		line, tooLong, err := lr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return st, fmt.Errorf("identities client: read line %d: %w", lr.line+1, err)
		}
		if !tooLong && len(bytes.TrimSpace(line)) == 0 {
			line = nil
		} else {
			st.Lines++
		}
		if tooLong {
			st.Rejected++
			if onReject != nil {
				onReject(LineError{Line: lr.line, Error: fmt.Sprintf("line longer than %d bytes", c.maxLine)})
			}
			// An empty line in its place keeps the server's line numbers
			// aligned with ours.
			line = nil
		}
		if buf.Len() > 0 && buf.Len()+len(line)+1 > c.chunk {
			if err := send(); err != nil {
				return st, err
			}
			buf.Reset()
			first = lr.line
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	if err := send(); err != nil {
		return st, err
	}
	return st, nil
}

func (c *Client) post(ctx context.Context, workspace string, body []byte) (LoadResponse, error) {
	path := "/v1/workspaces/" + url.PathEscape(workspace) + "/identities"
	var out LoadResponse
	err := c.c.Do(ctx, http.MethodPost, path, "application/x-ndjson", bytes.NewReader(body), http.StatusOK, &out)
	return out, err
}
