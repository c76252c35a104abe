package backfill

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cohortsync/cohortsync/schemas"
)

// Remote lands through a running server's POST /v1/workspaces/{ws}/backfill,
// one request per workspace of a batch, retrying 503s and transport errors:
// a retried request lands the same record ids, which the sinks deduplicate.
type Remote struct {
	base, token string
	hc          *http.Client
	retries     int
}

// NewRemote returns a destination on the server at baseURL.
func NewRemote(baseURL, token string, hc *http.Client) (*Remote, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("backfill: server URL %q must look like http://host:port", baseURL)
	}
	if token == "" {
		return nil, fmt.Errorf("backfill: a token is needed for --server (--token or COHORTSYNC_ADMIN_TOKEN)")
	}
	if hc == nil {
		hc = &http.Client{Timeout: landTimeout + 30*time.Second}
	}
	return &Remote{base: u.String(), token: token, hc: hc, retries: 5}, nil
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
	u := r.base + "/v1/workspaces/" + url.PathEscape(ws) + "/backfill"
	if dryRun {
		u += "?dry_run=true"
	}
	wait := 500 * time.Millisecond
	for attempt := 0; ; attempt++ {
		o, retry, err := r.once(ctx, u, body)
		if err == nil || !retry || attempt >= r.retries {
			return o, err
		}
		select {
		case <-ctx.Done():
			return o, fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

func (r *Remote) once(ctx context.Context, u string, body []byte) (Outcome, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return Outcome{}, false, fmt.Errorf("backfill: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+r.token)
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := r.hc.Do(req)
	if err != nil {
		return Outcome{}, ctx.Err() == nil, fmt.Errorf("backfill: POST %s: %w", u, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Outcome{}, true, fmt.Errorf("backfill: POST %s: read answer: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		var eb struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(raw))
		if json.Unmarshal(raw, &eb) == nil && eb.Error != "" {
			msg = eb.Error
		}
		retry := resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500
		return Outcome{}, retry, fmt.Errorf("backfill: POST %s: %s: %s", u, resp.Status, msg)
	}
	var o Outcome
	if err := json.Unmarshal(raw, &o); err != nil {
		return Outcome{}, false, fmt.Errorf("backfill: POST %s: answer: %w", u, err)
	}
	return o, false, nil
}
