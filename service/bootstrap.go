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
}

// credentials is what the service runs with after bootstrap.
type credentials struct {
	admin    *adminauth.AdminToken
	partners map[string]string // enabled partner → partner_api_key
	// firstStart is true when no bootstrap state existed: the caller then
	// creates and prints a first data import key.
	firstStart bool
	// shown lists what was generated in this start and must be printed once.
	generatedAdminToken string
	generatedPartners   map[string]string
}

// bootstrap resolves the admin token and partner keys: configured values win,
// then values generated at an earlier start, then new ones, which are stored.
func bootstrap(dataDir string, cfg config.Config) (credentials, error) {
	path := filepath.Join(dataDir, bootstrapFile)
	var st bootstrapState
	creds := credentials{partners: map[string]string{}, generatedPartners: map[string]string{}}
	raw, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		creds.firstStart = true
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
	changed := creds.firstStart

	switch {
	case cfg.AdminToken != "":
		creds.admin, err = adminauth.NewAdminToken(cfg.AdminToken)
	case st.AdminTokenSHA256 != "":
		creds.admin, err = adminauth.NewAdminTokenFromHash(st.AdminTokenSHA256)
	default:
		var token string
		token, err = adminauth.GenerateToken()
		if err == nil {
			creds.generatedAdminToken = token
			creds.admin, err = adminauth.NewAdminToken(token)
			st.AdminTokenSHA256 = creds.admin.Hash()
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
		default:
			key, err := randomToken("cpk_")
			if err != nil {
				return creds, fmt.Errorf("service: partner api key: %w", err)
			}
			st.PartnerAPIKeys[name] = key
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
	return creds, nil
}

func randomToken(prefix string) (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return prefix + base64.RawURLEncoding.EncodeToString(b), nil
}
