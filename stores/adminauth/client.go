package adminauth

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// MintToken asks the server at baseURL for a token of workspace, with the
// global admin token adminToken. A nil httpClient means http.DefaultClient.
func MintToken(ctx context.Context, httpClient *http.Client, baseURL, adminToken, workspace string) (CreatedToken, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return CreatedToken{}, fmt.Errorf("adminauth: server URL %q must look like http://host:port", baseURL)
	}
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String()+"/v1/workspaces/"+url.PathEscape(workspace)+"/tokens", nil)
	if err != nil {
		return CreatedToken{}, fmt.Errorf("adminauth: mint token: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := httpClient.Do(req)
	if err != nil {
		return CreatedToken{}, fmt.Errorf("adminauth: mint token: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return CreatedToken{}, fmt.Errorf("adminauth: mint token: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusCreated {
		var eb struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(raw))
		if json.Unmarshal(raw, &eb) == nil && eb.Error != "" {
			msg = eb.Error
		}
		return CreatedToken{}, fmt.Errorf("adminauth: mint token: %d %s: %s", resp.StatusCode, http.StatusText(resp.StatusCode), truncate(msg))
	}
	var out CreatedToken
	if err := json.Unmarshal(raw, &out); err != nil {
		return CreatedToken{}, fmt.Errorf("adminauth: mint token: decode answer: %w", err)
	}
	return out, nil
}
