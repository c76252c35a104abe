package service

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/internal/atomicfile"
	"github.com/cohortsync/cohortsync/stores/adminauth"
)

// bootstrapFile keeps the credentials the service generated itself, so that a
// restart keeps them. It lives in the data directory with mode 0600.
const bootstrapFile = "bootstrap.json"

type bootstrapState struct {
	// AdminTokenSHA256 is set when the admin token was generated here; the token
	// itself is only printed once.
	AdminTokenSHA256 string `json:"admin_token_sha256,omitempty"`
	// PartnerAPIKeys are partner_api_keys generated here for partners whose key
	// was not configured. Partners must be told them, so they are kept as is.
	PartnerAPIKeys map[string]string `json:"partner_api_keys"`

	// What was generated but not shown yet: a start that fails before it
	// prints the credentials (ClickHouse unreachable, say) must not lock
	// the user out, so they are kept here, in this 0600 file, until a start
	// has printed them, and then dropped.
	PendingAdminToken string   `json:"pending_admin_token,omitempty"`
	UnshownPartners   []string `json:"unshown_partners,omitempty"`
	// FirstKey is "todo" until the first data import key has been created
	// and shown; PendingFirstKey holds its secret in between. Files of
	// earlier versions have neither: their first start showed the key.
	FirstKey        string `json:"first_key,omitempty"`
	PendingFirstKey string `json:"pending_first_key,omitempty"`
}

const firstKeyTodo = "todo"

// credentials is what the service runs with after bootstrap.
type credentials struct {
	admin    *adminauth.AdminToken
	partners map[string]string // enabled partner → partner_api_key
	// generatedAdminToken and generatedPartners are what was generated
	// and not shown yet (in this start or a failed earlier one): the
	// caller prints them, then calls markShown.
	generatedAdminToken string
	generatedPartners   map[string]string

	path  string
	state bootstrapState
}

// firstKeyTodo says the first data import key is still to be created (or
// shown: pendingFirstKey).
func (c *credentials) firstKeyTodo() bool { return c.state.FirstKey == firstKeyTodo }

// pendingFirstKey is the first key's secret, created by an earlier start
// that did not get to show it.
func (c *credentials) pendingFirstKey() string { return c.state.PendingFirstKey }

// markShown records that the credentials were printed: the admin token and
// the partner keys are not shown again.
func (c *credentials) markShown() error {
	c.state.PendingAdminToken, c.state.UnshownPartners = "", nil
	return atomicfile.WriteJSON(c.path, c.state)
}

// keepFirstKey stores the first key's secret until it is shown.
func (c *credentials) keepFirstKey(secret string) error {
	c.state.PendingFirstKey = secret
	return atomicfile.WriteJSON(c.path, c.state)
}

// firstKeyShown records that the first key was shown (or that another
// instance made the workspace's keys): no start creates or shows one again.
func (c *credentials) firstKeyShown() error {
	c.state.FirstKey, c.state.PendingFirstKey = "", ""
	return atomicfile.WriteJSON(c.path, c.state)
}

// bootstrap resolves the admin token and partner keys: configured values win,
// then values generated at an earlier start, then new ones, which are stored.
func bootstrap(dataDir string, cfg config.Config) (credentials, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return credentials{}, fmt.Errorf("service: data directory: %w", err)
	}
	path := filepath.Join(dataDir, bootstrapFile)
	var st bootstrapState
	creds := credentials{partners: map[string]string{}, generatedPartners: map[string]string{}, path: path}
	raw, err := os.ReadFile(path)
	firstStart := false
	switch {
	case errors.Is(err, fs.ErrNotExist):
		firstStart = true
		st.FirstKey = firstKeyTodo
	case err != nil:
		return creds, fmt.Errorf("service: read %s: %w", path, err)
	default:
		if err := json.Unmarshal(raw, &st); err != nil {
			return creds, fmt.Errorf("service: %s is corrupt: %w", path, err)
		}
	}
	if st.PartnerAPIKeys == nil {
		st.PartnerAPIKeys = map[string]string{}
	}
	changed := firstStart

	switch {
	case cfg.AdminToken != "":
		creds.admin, err = adminauth.NewAdminToken(cfg.AdminToken)
	case st.AdminTokenSHA256 != "":
		creds.admin, err = adminauth.NewAdminTokenFromHash(st.AdminTokenSHA256)
		if err == nil && st.PendingAdminToken != "" {
			creds.generatedAdminToken = st.PendingAdminToken // not shown yet
		}
	default:
		var token string
		token, err = adminauth.GenerateToken()
		if err == nil {
			creds.generatedAdminToken = token
			creds.admin, err = adminauth.NewAdminToken(token)
			st.AdminTokenSHA256 = creds.admin.Hash()
			st.PendingAdminToken = token
			changed = true
		}
	}
	if err != nil {
		return creds, fmt.Errorf("service: admin token: %w", err)
	}

	names := make([]string, 0, len(cfg.Partners))
	for name := range cfg.Partners {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		p := cfg.Partners[name]
		if !p.Enabled {
			continue
		}
		switch {
		case p.APIKey != "":
			creds.partners[name] = p.APIKey
		case st.PartnerAPIKeys[name] != "":
			creds.partners[name] = st.PartnerAPIKeys[name]
			if slices.Contains(st.UnshownPartners, name) {
				creds.generatedPartners[name] = st.PartnerAPIKeys[name]
			}
		default:
			key, err := randomToken("cpk_")
			if err != nil {
				return creds, fmt.Errorf("service: partner api key: %w", err)
			}
			st.PartnerAPIKeys[name] = key
			st.UnshownPartners = append(st.UnshownPartners, name)
			creds.partners[name] = key
			creds.generatedPartners[name] = key
			changed = true
		}
	}
	if changed {
		if err := atomicfile.WriteJSON(path, st); err != nil {
			return creds, err
		}
	}
	creds.state = st
	return creds, nil
}

func randomToken(prefix string) (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return prefix + base64.RawURLEncoding.EncodeToString(b), nil
}
