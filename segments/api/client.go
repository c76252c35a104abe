package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/cohortsync/cohortsync/internal/adminclient"
	"github.com/cohortsync/cohortsync/segments"
)

// APIError is a non-success answer of the server, with its message and,
// for an invalid filter, the path of the offending part.
type APIError = adminclient.Error

// Client calls the segments API of a running server for one workspace.
type Client struct {
	c    *adminclient.Client
	base string // the workspace's path, below which every route lies
}

// NewClient returns a client for the server at baseURL. A nil httpClient
// means http.DefaultClient.
func NewClient(baseURL, token, workspace string, httpClient *http.Client) (*Client, error) {
	if workspace == "" {
		return nil, errors.New("segments client: workspace is empty")
	}
	// A page holds at most MaxLimit user ids; the bound keeps a wrong
	// server from exhausting memory.
	c, err := adminclient.New(baseURL, token, adminclient.Options{HTTPClient: httpClient, Component: "segments", MaxAnswerBytes: 64 << 20})
	if err != nil {
		return nil, err
	}
	return &Client{c: c, base: "/v1/workspaces/" + url.PathEscape(workspace)}, nil
}

func (c *Client) do(ctx context.Context, method, path string, in any, want int, out any) error {
	return c.c.JSON(ctx, method, c.base+path, in, want, out)
}

// Evaluate asks for one page of a filter's members.
func (c *Client) Evaluate(ctx context.Context, req EvaluateRequest) (Page, error) {
	var out Page
	err := c.do(ctx, http.MethodPost, "/segments:evaluate", req, http.StatusOK, &out)
	return out, err
}

// CreateSegment saves a segment.
func (c *Client) CreateSegment(ctx context.Context, name string, filter json.RawMessage) (Segment, error) {
	var out Segment
	err := c.do(ctx, http.MethodPost, "/segments", CreateSegmentRequest{Name: name, Filter: filter}, http.StatusCreated, &out)
	return out, err
}

// ListSegments returns the saved segments.
func (c *Client) ListSegments(ctx context.Context) ([]Segment, error) {
	var out SegmentList
	err := c.do(ctx, http.MethodGet, "/segments", nil, http.StatusOK, &out)
	return out.Segments, err
}

// GetSegment returns a saved segment with its count.
func (c *Client) GetSegment(ctx context.Context, id string) (Segment, error) {
	var out Segment
	err := c.do(ctx, http.MethodGet, "/segments/"+url.PathEscape(id), nil, http.StatusOK, &out)
	return out, err
}

// DeleteSegment deletes a saved segment.
func (c *Client) DeleteSegment(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/segments/"+url.PathEscape(id), nil, http.StatusNoContent, nil)
}

// MembersPage returns one page of a saved segment's members.
func (c *Client) MembersPage(ctx context.Context, id, cursor string, limit int, asOf time.Time) (Page, error) {
	q := url.Values{}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	setAsOf(q, asOf)
	var out Page
	err := c.do(ctx, http.MethodGet, "/segments/"+url.PathEscape(id)+"/members?"+q.Encode(), nil, http.StatusOK, &out)
	return out, err
}

// ExportMembers copies the export of a saved segment's members in format
// (csv, ndjson or parquet) to w, and returns the bytes copied.
func (c *Client) ExportMembers(ctx context.Context, id, format string, asOf time.Time, w io.Writer) (int64, error) {
	q := url.Values{"format": {format}}
	setAsOf(q, asOf)
	resp, err := c.c.Send(ctx, http.MethodGet, c.base+"/segments/"+url.PathEscape(id)+"/members?"+q.Encode(), "", nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, c.c.ReadError(resp)
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		// The server cuts the connection when an export fails midway.
		return n, fmt.Errorf("segments client: export interrupted after %d bytes: %w", n, err)
	}
	return n, nil
}

// Explain returns the per-user answer of a saved segment.
func (c *Client) Explain(ctx context.Context, id, userID string, asOf time.Time) (segments.Answer, error) {
	q := url.Values{}
	setAsOf(q, asOf)
	var out segments.Answer
	err := c.do(ctx, http.MethodGet, "/segments/"+url.PathEscape(id)+"/members/"+url.PathEscape(userID)+"?"+q.Encode(), nil, http.StatusOK, &out)
	return out, err
}

// DataPoints returns the data-point report; empty from or to take the
// server's defaults.
func (c *Client) DataPoints(ctx context.Context, from, to string, groupBy segments.GroupBy) ([]segments.DataPointRow, error) {
	q := url.Values{}
	for k, v := range map[string]string{"from": from, "to": to, "group_by": string(groupBy)} {
		if v != "" {
			q.Set(k, v)
		}
	}
	var out DataPoints
	err := c.do(ctx, http.MethodGet, "/datapoints?"+q.Encode(), nil, http.StatusOK, &out)
	return out.Rows, err
}

// Cohorts returns the cohorts of the workspace.
func (c *Client) Cohorts(ctx context.Context) ([]segments.CohortInfo, error) {
	var out CohortList
	err := c.do(ctx, http.MethodGet, "/cohorts", nil, http.StatusOK, &out)
	return out.Cohorts, err
}

func setAsOf(q url.Values, asOf time.Time) {
	if !asOf.IsZero() {
		q.Set("as_of", asOf.UTC().Format(time.RFC3339Nano))
	}
}
