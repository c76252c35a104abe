package adminauth

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"github.com/cohortsync/cohortsync/internal/adminclient"
)

// MintToken asks the server at baseURL for a token of workspace, with the
// global admin token adminToken. A nil httpClient means http.DefaultClient.
func MintToken(ctx context.Context, httpClient *http.Client, baseURL, adminToken, workspace string) (CreatedToken, error) {
	c, err := adminclient.New(baseURL, adminToken, adminclient.Options{HTTPClient: httpClient, Component: "adminauth", MaxAnswerBytes: 1 << 20})
	if err != nil {
		return CreatedToken{}, err
	}
	var out CreatedToken
	if err := c.JSON(ctx, http.MethodPost, "/v1/workspaces/"+url.PathEscape(workspace)+"/tokens", nil, http.StatusCreated, &out); err != nil {
		return CreatedToken{}, fmt.Errorf("mint token: %w", err)
	}
	return out, nil
}
