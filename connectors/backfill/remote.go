package backfill

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/cohortsync/cohortsync/internal/adminclient"
	"github.com/cohortsync/cohortsync/internal/retry"
	"github.com/cohortsync/cohortsync/schemas"
)

// Remote lands through a running server's POST /v1/workspaces/{ws}/backfill,
// one request per workspace of a batch, retrying 503s and transport errors:
// a retried request lands the same record ids, which the sinks deduplicate.
type Remote struct {
	c       *adminclient.Client
	retries int
}

// remoteBackoff spaces the retries of one request to a busy server.
var remoteBackoff = retry.Backoff{Initial: 500 * time.Millisecond, Max: 30 * time.Second}

// NewRemote returns a destination on the server at baseURL.
func NewRemote(baseURL, token string, hc *http.Client) (*Remote, error) {
	if token == "" {
		return nil, fmt.Errorf("backfill: a token is needed for --server (--token or COHORTSYNC_ADMIN_TOKEN)")
	}
	if hc == nil {
		hc = &http.Client{Timeout: landTimeout + 30*time.Second}
	}
	c, err := adminclient.New(baseURL, token, adminclient.Options{HTTPClient: hc, Component: "backfill", MaxAnswerBytes: 1 << 20})
	if err != nil {
		return nil, err
	}
	return &Remote{c: c, retries: 5}, nil
}

// Land implements Destination.
func (r *Remote) Land(ctx context.Context, envs []schemas.Envelope, dryRun bool) (Outcome, error) {
	out := Outcome{Dropped: map[string]int64{}, DroppedRecords: map[string]int64{}}
	var order []string
	byWS := map[string][]schemas.Envelope{}
	for _, e := range envs {
		if _, ok := byWS[e.Workspace]; !ok {
			order = append(order, e.Workspace)
		}
		byWS[e.Workspace] = append(byWS[e.Workspace], e)
	}
	for _, ws := range order {
		var body bytes.Buffer
		for _, e := range byWS[ws] {
			raw, err := schemas.Encode(e)
			if err != nil {
				return out, fmt.Errorf("encode record %s: %w", e.RecordID, err)
			}
			body.Write(raw)
			body.WriteByte('\n')
		}
		o, err := r.post(ctx, ws, body.Bytes(), dryRun)
		if err != nil {
			return out, err
		}
		out.add(o)
	}
	return out, nil
}

func (r *Remote) post(ctx context.Context, ws string, body []byte, dryRun bool) (Outcome, error) {
	u := "/v1/workspaces/" + url.PathEscape(ws) + "/backfill"
	if dryRun {
		u += "?dry_run=true"
	}
	wait := remoteBackoff.Initial
	for attempt := 0; ; attempt++ {
		o, again, err := r.once(ctx, u, body)
		if err == nil || !again || attempt >= r.retries {
			return o, err
		}
		if serr := retry.Sleep(ctx, wait); serr != nil {
			return o, fmt.Errorf("%w (last error: %w)", serr, err)
		}
		wait = remoteBackoff.Next(wait)
	}
}

// once posts body once. It reports whether a failure is worth retrying:
// the server busy or failing (503, 429, 5xx) or the connection lost, since a
// retried request lands the same record ids.
func (r *Remote) once(ctx context.Context, path string, body []byte) (Outcome, bool, error) {
	var o Outcome
	err := r.c.Do(ctx, http.MethodPost, path, "application/x-ndjson", bytes.NewReader(body), http.StatusOK, &o)
	if err == nil {
		return o, false, nil
	}
	var apiErr *adminclient.Error
	if errors.As(err, &apiErr) {
		s := apiErr.StatusCode
		return Outcome{}, s == http.StatusServiceUnavailable || s == http.StatusTooManyRequests || s >= 500, err
	}
	return Outcome{}, ctx.Err() == nil, err
}
