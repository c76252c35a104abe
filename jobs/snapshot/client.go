package snapshot

import (
	"context"
	"net/http"
	"net/url"

	"github.com/cohortsync/cohortsync/internal/adminclient"
)

// Request asks the server at baseURL to snapshot the cohorts of workspace
// that changed (or only cohort, as PARTNER/COHORT_ID), through
// POST /v1/workspaces/{ws}/snapshots, and returns what it wrote.
func Request(ctx context.Context, httpClient *http.Client, baseURL, token, workspace, cohort string) ([]SnapshotInfo, error) {
	c, err := adminclient.New(baseURL, token, adminclient.Options{HTTPClient: httpClient, Component: "snapshot", TokenKind: "admin token", MaxAnswerBytes: 16 << 20})
	if err != nil {
		return nil, err
	}
	path := "/v1/workspaces/" + url.PathEscape(workspace) + "/snapshots"
	if cohort != "" {
		path += "?" + url.Values{"cohort": {cohort}}.Encode()
	}
	var out Response
	if err := c.JSON(ctx, http.MethodPost, path, nil, http.StatusOK, &out); err != nil {
		return nil, err
	}
	return out.Snapshots, nil
}
