package partnerapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync/connectors/partnerapi"
	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/schemas"
)

// Credentials of the test world. The secrets have the real shape
// (csk_<16 hex>_<43 base64url>) and distinctive bodies, so a test can look for
// any trace of them.
const (
	mixpanelKey  = "pak-mixpanel-PARTNERKEY-do-not-log"
	amplitudeKey = "pak-amplitude-PARTNERKEY-do-not-log"

	mixpanelKeyID   = "0a1b2c3d4e5f6a7b"
	amplitudeKeyID  = "1111222233334444"
	globexKeyID     = "5555666677778888"
	secretBody      = "SECRETBODYmixpanelAcme_never-in-any-log-xyz"
	secretMixpanel  = "csk_" + mixpanelKeyID + "_" + secretBody
	secretAmplitude = "csk_" + amplitudeKeyID + "_SECRETBODYamplitudeAcme_never-in-any-log-x"
	secretGlobex    = "csk_" + globexKeyID + "_SECRETBODYmixpanelGlobex_never-in-any-log-"
	secretRevoked   = "csk_9999999999999999_SECRETBODYrevoked_never-in-any-log-xyzabcd"

	jsonType  = "application/json"
	textPlain = "text/plain; charset=utf-8"
)

var allSecrets = []string{mixpanelKey, amplitudeKey, secretMixpanel, secretAmplitude, secretGlobex, secretRevoked, "SECRETBODY", "PARTNERKEY"}

type fakeVerifier map[string]partnerapi.Credential

func (v fakeVerifier) VerifySecret(secret string) (partnerapi.Credential, bool) {
	c, ok := v[secret]
	return c, ok
}

func testVerifier() fakeVerifier {
	return fakeVerifier{
		secretMixpanel:  {KeyID: mixpanelKeyID, Workspace: "acme", Partner: "mixpanel"},
		secretAmplitude: {KeyID: amplitudeKeyID, Workspace: "acme", Partner: "amplitude"},
		secretGlobex:    {KeyID: globexKeyID, Workspace: "globex", Partner: "mixpanel"},
		// secretRevoked is known to nobody any more.
	}
}

type landed struct {
	key, value []byte
	deadline   bool
}

// recordingLander records what was landed. fail, when set, decides per
// record whether landing fails; block makes Land wait for its context.
type recordingLander struct {
	mu      sync.Mutex
	records []landed
	fail    func(key []byte) error
	block   bool
}

func (l *recordingLander) Land(ctx context.Context, key, value []byte) error {
	_, hasDeadline := ctx.Deadline()
	if l.block {
		<-ctx.Done()
		return fmt.Errorf("land: %w", ctx.Err())
	}
	if l.fail != nil {
		if err := l.fail(key); err != nil {
			return err
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, landed{key: bytes.Clone(key), value: bytes.Clone(value), deadline: hasDeadline})
	return nil
}

func (l *recordingLander) landed() []landed {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slicesClone(l.records)
}

func slicesClone[T any](s []T) []T { return append([]T(nil), s...) }

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

var startTime = time.Date(2024, 11, 5, 9, 30, 0, 123456789, time.UTC)

type harness struct {
	srv    *httptest.Server
	lander *recordingLander
	reg    *prometheus.Registry
	logs   *testkit.SyncBuffer
	clock  *clock
}

func newHarness(t *testing.T, edit func(o *partnerapi.Options)) *harness {
	t.Helper()
	h := &harness{
		lander: &recordingLander{},
		reg:    prometheus.NewRegistry(),
		logs:   &testkit.SyncBuffer{},
		clock:  &clock{now: startTime},
	}
	opts := partnerapi.Options{
		Config:     partnerapi.DefaultConfig(),
		Partners:   map[string]string{"mixpanel": mixpanelKey, "amplitude": amplitudeKey},
		Verifier:   testVerifier(),
		Lander:     h.lander,
		Logger:     slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer: h.reg,
		Now:        h.clock.Now,
	}
	if edit != nil {
		edit(&opts)
	}
	api, err := partnerapi.New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	mux := http.NewServeMux()
	api.Register(mux)
	h.srv = httptest.NewServer(mux)
	t.Cleanup(h.srv.Close)
	return h
}

type response struct {
	status int
	header http.Header
	body   string
}

// post sends body (a map, marshalled, or raw []byte) over real HTTP.
func (h *harness) post(t *testing.T, path, contentType string, body any) response {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case []byte:
		r = bytes.NewReader(b)
	case io.Reader:
		r = b
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(data)
	}
	return h.do(t, http.MethodPost, path, contentType, r)
}

func (h *harness) do(t *testing.T, method, path, contentType string, body io.Reader) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, h.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := h.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	return response{status: res.StatusCode, header: res.Header, body: string(data)}
}

const (
	pathCohorts = "/partners/mixpanel/cohorts"
	pathUsers   = "/partners/mixpanel/cohorts/users"
)

type edit func(m map[string]any)

func set(k string, v any) edit { return func(m map[string]any) { m[k] = v } }
func del(k string) edit        { return func(m map[string]any) { delete(m, k) } }

func cohortReq(edits ...edit) map[string]any {
	m := map[string]any{
		"partner_api_key": mixpanelKey,
		"client_secret":   secretMixpanel,
		"cohort_id":       "c-1",
		"name":            "Churn risk",
		"created_at":      "2024-01-02T15:04:05Z",
	}
	for _, e := range edits {
		e(m)
	}
	return m
}

func changesReq(changes any, edits ...edit) map[string]any {
	m := map[string]any{
		"partner_api_key": mixpanelKey,
		"client_secret":   secretMixpanel,
		"cohort_id":       "c-1",
		"cohort_changes":  changes,
	}
	for _, e := range edits {
		e(m)
	}
	return m
}

func ids(prefix string, n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

func aliases(n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = map[string]any{"alias_name": fmt.Sprintf("a%d@example.com", i), "alias_label": "email"}
	}
	return out
}

func oneChange(k string, v any) []any { return []any{map[string]any{k: v}} }

// mixedChanges spreads n ids over user_ids, device_ids and aliases in
// separate entries, so the limit is seen to count all three together.
func mixedChanges(n int) []any {
	users, devices := 400, 300
	return []any{
		map[string]any{"user_ids": ids("u", users)},
		map[string]any{"device_ids": ids("d", devices), "should_remove": true},
		map[string]any{"aliases": aliases(n - users - devices)},
	}
}

// TestErrorTable pins every refusal: status, exact body, content type, and
// that nothing was landed.
func TestErrorTable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		path        string
		contentType string
		body        any
		status      int
		want        string
	}{
		// Content type comes first, before the body is even read.
		{"no content type", pathCohorts, "", cohortReq(), 400, "Content-Type must be application/json"},
		{"text/plain", pathCohorts, "text/plain", cohortReq(), 400, "Content-Type must be application/json"},
		{"form", pathUsers, "application/x-www-form-urlencoded", changesReq(oneChange("user_ids", ids("u", 1))), 400, "Content-Type must be application/json"},
		{"json-like type", pathCohorts, "application/jsonp", cohortReq(), 400, "Content-Type must be application/json"},
		{"wrong type on unknown partner", "/partners/nope/cohorts", "text/plain", cohortReq(), 400, "Content-Type must be application/json"},

		// The body must be a JSON object.
		{"malformed JSON", pathCohorts, jsonType, []byte(`{"cohort_id": "c-1",`), 400, "Request body must be a JSON object"},
		{"empty body", pathCohorts, jsonType, []byte(``), 400, "Request body must be a JSON object"},
		{"null body", pathUsers, jsonType, []byte(`null`), 400, "Request body must be a JSON object"},
		{"array body", pathUsers, jsonType, []byte(`[{"cohort_id":"c-1"}]`), 400, "Request body must be a JSON object"},
		{"string body", pathCohorts, jsonType, []byte(`"c-1"`), 400, "Request body must be a JSON object"},
		{"trailing garbage", pathCohorts, jsonType, []byte(`{} {}`), 400, "Request body must be a JSON object"},
		{"malformed on unknown partner", "/partners/nope/cohorts", jsonType, []byte(`{`), 400, "Request body must be a JSON object"},

		// Authentication, in order: partner, partner_api_key, client_secret, key's partner.
		{"unknown partner", "/partners/nope/cohorts", jsonType, cohortReq(), 401, "Unauthorized access"},
		{"unknown partner on users", "/partners/nope/cohorts/users", jsonType, changesReq(oneChange("user_ids", ids("u", 1))), 401, "Unauthorized access"},
		{"partner name is case sensitive", "/partners/Mixpanel/cohorts", jsonType, cohortReq(), 401, "Unauthorized access"},
		{"unknown partner wins over bad key", "/partners/nope/cohorts", jsonType, cohortReq(set("partner_api_key", "x"), set("client_secret", "y")), 401, "Unauthorized access"},
		{"partner_api_key missing", pathCohorts, jsonType, cohortReq(del("partner_api_key")), 401, "Invalid Partner API key"},
		{"partner_api_key wrong", pathCohorts, jsonType, cohortReq(set("partner_api_key", "guess")), 401, "Invalid Partner API key"},
		{"partner_api_key empty", pathCohorts, jsonType, cohortReq(set("partner_api_key", "")), 401, "Invalid Partner API key"},
		{"partner_api_key number", pathCohorts, jsonType, cohortReq(set("partner_api_key", 12345)), 401, "Invalid Partner API key"},
		{"partner_api_key null", pathCohorts, jsonType, cohortReq(set("partner_api_key", nil)), 401, "Invalid Partner API key"},
		{"partner_api_key array", pathUsers, jsonType, changesReq(oneChange("user_ids", ids("u", 1)), set("partner_api_key", []any{mixpanelKey})), 401, "Invalid Partner API key"},
		{"another partner's api key", pathCohorts, jsonType, cohortReq(set("partner_api_key", amplitudeKey)), 401, "Invalid Partner API key"},
		{"bad api key wins over bad secret", pathCohorts, jsonType, cohortReq(set("partner_api_key", "x"), set("client_secret", "y")), 401, "Invalid Partner API key"},
		{"client_secret missing", pathCohorts, jsonType, cohortReq(del("client_secret")), 401, "Invalid client secret"},
		{"client_secret empty", pathCohorts, jsonType, cohortReq(set("client_secret", "")), 401, "Invalid client secret"},
		{"client_secret unknown", pathCohorts, jsonType, cohortReq(set("client_secret", "csk_0a1b2c3d4e5f6a7b_wrong")), 401, "Invalid client secret"},
		{"client_secret revoked", pathUsers, jsonType, changesReq(oneChange("user_ids", ids("u", 1)), set("client_secret", secretRevoked)), 401, "Invalid client secret"},
		{"client_secret number", pathCohorts, jsonType, cohortReq(set("client_secret", 42)), 401, "Invalid client secret"},
		{"client_secret object", pathCohorts, jsonType, cohortReq(set("client_secret", map[string]any{"k": secretMixpanel})), 401, "Invalid client secret"},
		{"bad secret wins over bad fields", pathCohorts, jsonType, cohortReq(set("client_secret", "nope"), del("cohort_id")), 401, "Invalid client secret"},
		{"key of another partner", pathCohorts, jsonType, cohortReq(set("client_secret", secretAmplitude)), 401,
			"Partner not enabled for client with client secret: csk_" + amplitudeKeyID + "_****"},
		{"key of another partner on users", pathUsers, jsonType, changesReq(nil, set("client_secret", secretAmplitude)), 401,
			"Partner not enabled for client with client secret: csk_" + amplitudeKeyID + "_****"},
		{"mixpanel key on amplitude path", "/partners/amplitude/cohorts", jsonType, cohortReq(set("partner_api_key", amplitudeKey)), 401,
			"Partner not enabled for client with client secret: csk_" + mixpanelKeyID + "_****"},

		// Fields of POST .../cohorts.
		{"cohort_id missing", pathCohorts, jsonType, cohortReq(del("cohort_id")), 400, "cohort_id must be a valid string"},
		{"cohort_id number", pathCohorts, jsonType, cohortReq(set("cohort_id", 1234567)), 400, "cohort_id must be a valid string"},
		{"cohort_id empty", pathCohorts, jsonType, cohortReq(set("cohort_id", "")), 400, "cohort_id must be a valid string"},
		{"cohort_id blank", pathCohorts, jsonType, cohortReq(set("cohort_id", "  \t")), 400, "cohort_id must be a valid string"},
		{"cohort_id null", pathCohorts, jsonType, cohortReq(set("cohort_id", nil)), 400, "cohort_id must be a valid string"},
		{"cohort_id object", pathCohorts, jsonType, cohortReq(set("cohort_id", map[string]any{})), 400, "cohort_id must be a valid string"},
		{"cohort_id before name", pathCohorts, jsonType, cohortReq(del("cohort_id"), del("name"), del("created_at")), 400, "cohort_id must be a valid string"},
		{"name missing", pathCohorts, jsonType, cohortReq(del("name")), 400, "name must be a non-empty string"},
		{"name empty", pathCohorts, jsonType, cohortReq(set("name", "")), 400, "name must be a non-empty string"},
		{"name blank", pathCohorts, jsonType, cohortReq(set("name", " ")), 400, "name must be a non-empty string"},
		{"name number", pathCohorts, jsonType, cohortReq(set("name", 7)), 400, "name must be a non-empty string"},
		{"name array", pathCohorts, jsonType, cohortReq(set("name", []any{"a"})), 400, "name must be a non-empty string"},
		{"name before created_at", pathCohorts, jsonType, cohortReq(del("name"), del("created_at")), 400, "name must be a non-empty string"},
		{"created_at missing", pathCohorts, jsonType, cohortReq(del("created_at")), 400, "created_at must be a valid time as an ISO-8601 string"},
		{"created_at number", pathCohorts, jsonType, cohortReq(set("created_at", 1704207845)), 400, "created_at must be a valid time as an ISO-8601 string"},
		{"created_at words", pathCohorts, jsonType, cohortReq(set("created_at", "yesterday")), 400, "created_at must be a valid time as an ISO-8601 string"},
		{"created_at empty", pathCohorts, jsonType, cohortReq(set("created_at", "")), 400, "created_at must be a valid time as an ISO-8601 string"},
		{"created_at month 13", pathCohorts, jsonType, cohortReq(set("created_at", "2024-13-01")), 400, "created_at must be a valid time as an ISO-8601 string"},
		{"created_at hour 25", pathCohorts, jsonType, cohortReq(set("created_at", "2024-01-02T25:00:00Z")), 400, "created_at must be a valid time as an ISO-8601 string"},
		{"created_at US format", pathCohorts, jsonType, cohortReq(set("created_at", "01/02/2024")), 400, "created_at must be a valid time as an ISO-8601 string"},
		{"created_at before year 1", pathCohorts, jsonType, cohortReq(set("created_at", "0001-01-01T00:30:00+01:00")), 400, "created_at must be a valid time as an ISO-8601 string"},

		// Fields of POST .../cohorts/users.
		{"users: cohort_id missing", pathUsers, jsonType, changesReq(oneChange("user_ids", ids("u", 1)), del("cohort_id")), 400, "cohort_id must be a valid string"},
		{"users: cohort_id number", pathUsers, jsonType, changesReq(oneChange("user_ids", ids("u", 1)), set("cohort_id", 5)), 400, "cohort_id must be a valid string"},
		{"users: cohort_id before changes", pathUsers, jsonType, changesReq("x", set("cohort_id", false)), 400, "cohort_id must be a valid string"},
		{"cohort_changes missing", pathUsers, jsonType, changesReq(nil, del("cohort_changes")), 400, msgChanges},
		{"cohort_changes null", pathUsers, jsonType, changesReq(nil), 400, msgChanges},
		{"cohort_changes object", pathUsers, jsonType, changesReq(map[string]any{"user_ids": ids("u", 1)}), 400, msgChanges},
		{"cohort_changes string", pathUsers, jsonType, changesReq("u-1"), 400, msgChanges},
		{"cohort_changes of strings", pathUsers, jsonType, changesReq([]any{"u-1"}), 400, msgChanges},
		{"cohort_changes of null", pathUsers, jsonType, changesReq([]any{nil}), 400, msgChanges},
		{"change without ids", pathUsers, jsonType, changesReq([]any{map[string]any{}}), 400, msgChanges},
		{"change with only should_remove", pathUsers, jsonType, changesReq(oneChange("should_remove", true)), 400, msgChanges},
		{"change with only null lists", pathUsers, jsonType, changesReq([]any{map[string]any{"user_ids": nil, "device_ids": nil, "aliases": nil}}), 400, msgChanges},
		{"change with only unknown keys", pathUsers, jsonType, changesReq(oneChange("external_ids", ids("u", 1))), 400, msgChanges},
		{"user_ids string", pathUsers, jsonType, changesReq(oneChange("user_ids", "u-1")), 400, msgChanges},
		{"user_ids numbers", pathUsers, jsonType, changesReq(oneChange("user_ids", []any{1, 2})), 400, msgChanges},
		{"user_ids empty string", pathUsers, jsonType, changesReq(oneChange("user_ids", []any{"u-1", ""})), 400, msgChanges},
		{"user_ids null element", pathUsers, jsonType, changesReq(oneChange("user_ids", []any{"u-1", nil})), 400, msgChanges},
		{"user_ids nested array", pathUsers, jsonType, changesReq(oneChange("user_ids", []any{[]any{"u-1"}})), 400, msgChanges},
		{"device_ids object", pathUsers, jsonType, changesReq(oneChange("device_ids", map[string]any{"d": 1})), 400, msgChanges},
		{"good user_ids, bad device_ids", pathUsers, jsonType, changesReq([]any{map[string]any{"user_ids": ids("u", 2), "device_ids": 3}}), 400, msgChanges},
		{"aliases object", pathUsers, jsonType, changesReq(oneChange("aliases", map[string]any{"alias_name": "a", "alias_label": "b"})), 400, msgChanges},
		{"aliases of strings", pathUsers, jsonType, changesReq(oneChange("aliases", []any{"a"})), 400, msgChanges},
		{"alias without label", pathUsers, jsonType, changesReq(oneChange("aliases", []any{map[string]any{"alias_name": "a"}})), 400, msgChanges},
		{"alias with empty name", pathUsers, jsonType, changesReq(oneChange("aliases", []any{map[string]any{"alias_name": "", "alias_label": "b"}})), 400, msgChanges},
		{"alias name number", pathUsers, jsonType, changesReq(oneChange("aliases", []any{map[string]any{"alias_name": 1, "alias_label": "b"}})), 400, msgChanges},
		{"should_remove string", pathUsers, jsonType, changesReq([]any{map[string]any{"user_ids": ids("u", 1), "should_remove": "yes"}}), 400, msgChanges},
		{"should_remove number", pathUsers, jsonType, changesReq([]any{map[string]any{"user_ids": ids("u", 1), "should_remove": 1}}), 400, msgChanges},
		{"bad entry after good ones", pathUsers, jsonType, changesReq([]any{map[string]any{"user_ids": ids("u", 1)}, 7}), 400, msgChanges},

		// The id limit counts user_ids, device_ids and aliases together.
		{"1001 user_ids", pathUsers, jsonType, changesReq(oneChange("user_ids", ids("u", 1001))), 400, msgTooMany},
		{"1001 device_ids", pathUsers, jsonType, changesReq(oneChange("device_ids", ids("d", 1001))), 400, msgTooMany},
		{"1001 aliases", pathUsers, jsonType, changesReq(oneChange("aliases", aliases(1001))), 400, msgTooMany},
		{"1001 mixed over entries", pathUsers, jsonType, changesReq(mixedChanges(1001)), 400, msgTooMany},
		{"1001 in one entry", pathUsers, jsonType, changesReq([]any{map[string]any{"user_ids": ids("u", 500), "device_ids": ids("d", 500), "aliases": aliases(1)}}), 400, msgTooMany},
		{"shape is checked before the count", pathUsers, jsonType, changesReq([]any{map[string]any{"user_ids": ids("u", 1001)}, "bad"}), 400, msgChanges},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, nil)
			res := h.post(t, tc.path, tc.contentType, tc.body)
			if res.status != tc.status || res.body != tc.want {
				t.Fatalf("got %d %q\nwant %d %q", res.status, res.body, tc.status, tc.want)
			}
			if ct := res.header.Get("Content-Type"); ct != textPlain {
				t.Errorf("Content-Type = %q, want %q", ct, textPlain)
			}
			if n := len(h.lander.landed()); n != 0 {
				t.Errorf("%d records landed for a refused request", n)
			}
			assertNoSecrets(t, "response body", res.body)
		})
	}
}

const (
	msgChanges = "cohort_changes must be an array of objects each with key user_ids and/or device_ids mapping to an array of strings, or an aliases object"
	msgTooMany = "Only 1,000 user_ids, device_ids, and aliases are allowed per request"
)

// TestLands covers accepted requests: the 201 answer and the envelope that
// reached the lander.
func TestLands(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		path        string
		contentType string
		body        any
		wantKey     string
		want        schemas.Payload
	}{
		{"cohort", pathCohorts, jsonType, cohortReq(), "acme/mixpanel/c-1",
			schemas.CohortPayload{CohortID: "c-1", Name: "Churn risk", CreatedAt: time.Date(2024, 1, 2, 15, 4, 5, 0, time.UTC)}},
		{"charset parameter", pathCohorts, "application/json; charset=utf-8", cohortReq(), "acme/mixpanel/c-1",
			schemas.CohortPayload{CohortID: "c-1", Name: "Churn risk", CreatedAt: time.Date(2024, 1, 2, 15, 4, 5, 0, time.UTC)}},
		{"upper-case content type", pathCohorts, "Application/JSON;charset=UTF-8", cohortReq(), "acme/mixpanel/c-1",
			schemas.CohortPayload{CohortID: "c-1", Name: "Churn risk", CreatedAt: time.Date(2024, 1, 2, 15, 4, 5, 0, time.UTC)}},
		{"created_at with fraction and offset", pathCohorts, jsonType, cohortReq(set("created_at", "2024-01-02T16:04:05.250+01:00")), "acme/mixpanel/c-1",
			schemas.CohortPayload{CohortID: "c-1", Name: "Churn risk", CreatedAt: time.Date(2024, 1, 2, 15, 4, 5, 250e6, time.UTC)}},
		{"created_at offset without colon", pathCohorts, jsonType, cohortReq(set("created_at", "2024-01-02T16:04:05+0100")), "acme/mixpanel/c-1",
			schemas.CohortPayload{CohortID: "c-1", Name: "Churn risk", CreatedAt: time.Date(2024, 1, 2, 15, 4, 5, 0, time.UTC)}},
		{"created_at without zone", pathCohorts, jsonType, cohortReq(set("created_at", "2024-01-02T15:04:05")), "acme/mixpanel/c-1",
			schemas.CohortPayload{CohortID: "c-1", Name: "Churn risk", CreatedAt: time.Date(2024, 1, 2, 15, 4, 5, 0, time.UTC)}},
		{"created_at date only", pathCohorts, jsonType, cohortReq(set("created_at", "2024-01-02")), "acme/mixpanel/c-1",
			schemas.CohortPayload{CohortID: "c-1", Name: "Churn risk", CreatedAt: time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC)}},
		{"unknown fields on cohort", pathCohorts, jsonType, cohortReq(set("description", "x"), set("owner", map[string]any{"id": 1})), "acme/mixpanel/c-1",
			schemas.CohortPayload{CohortID: "c-1", Name: "Churn risk", CreatedAt: time.Date(2024, 1, 2, 15, 4, 5, 0, time.UTC)}},
		{"workspace comes from the key", pathCohorts, jsonType, cohortReq(set("client_secret", secretGlobex), set("workspace", "acme")), "globex/mixpanel/c-1",
			schemas.CohortPayload{CohortID: "c-1", Name: "Churn risk", CreatedAt: time.Date(2024, 1, 2, 15, 4, 5, 0, time.UTC)}},
		{"changes", pathUsers, jsonType, changesReq([]any{
			map[string]any{"user_ids": []any{"u-1", "u-2"}, "device_ids": []any{"d-1"}},
			map[string]any{"aliases": []any{map[string]any{"alias_name": "jane@example.com", "alias_label": "email"}}, "should_remove": true},
		}), "acme/mixpanel/c-1", schemas.CohortChangesPayload{CohortID: "c-1", Changes: []schemas.Change{
			{UserIDs: []string{"u-1", "u-2"}, DeviceIDs: []string{"d-1"}},
			{Aliases: []schemas.Alias{{Name: "jane@example.com", Label: "email"}}, ShouldRemove: true},
		}}},
		{"unknown fields on changes", pathUsers, jsonType, changesReq([]any{
			map[string]any{"user_ids": []any{"u-1"}, "external_ids": 5, "aliases": []any{map[string]any{"alias_name": "n", "alias_label": "l", "extra": true}}},
		}, set("sync_id", "abc"), set("page", 3)), "acme/mixpanel/c-1", schemas.CohortChangesPayload{CohortID: "c-1", Changes: []schemas.Change{
			{UserIDs: []string{"u-1"}, Aliases: []schemas.Alias{{Name: "n", Label: "l"}}},
		}}},
		{"null lists and null should_remove", pathUsers, jsonType, changesReq([]any{
			map[string]any{"user_ids": []any{"u-1"}, "device_ids": nil, "aliases": nil, "should_remove": nil},
		}), "acme/mixpanel/c-1", schemas.CohortChangesPayload{CohortID: "c-1", Changes: []schemas.Change{{UserIDs: []string{"u-1"}}}}},
		{"empty change list", pathUsers, jsonType, changesReq([]any{}), "acme/mixpanel/c-1",
			schemas.CohortChangesPayload{CohortID: "c-1", Changes: []schemas.Change{}}},
		{"empty id list next to others", pathUsers, jsonType, changesReq([]any{map[string]any{"user_ids": []any{}, "device_ids": []any{"d-1"}}}), "acme/mixpanel/c-1",
			schemas.CohortChangesPayload{CohortID: "c-1", Changes: []schemas.Change{{UserIDs: []string{}, DeviceIDs: []string{"d-1"}}}}},
		{"amplitude", "/partners/amplitude/cohorts/users", jsonType,
			changesReq(oneChange("device_ids", []any{"d-1"}), set("partner_api_key", amplitudeKey), set("client_secret", secretAmplitude)),
			"acme/amplitude/c-1", schemas.CohortChangesPayload{CohortID: "c-1", Changes: []schemas.Change{{DeviceIDs: []string{"d-1"}}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, nil)
			res := h.post(t, tc.path, tc.contentType, tc.body)
			env := assertLanded(t, h, res, tc.wantKey)
			got := env.Payload
			// An empty id list is not written (omitempty), so it reads back as nil.
			if p, ok := tc.want.(schemas.CohortChangesPayload); ok {
				for i := range p.Changes {
					if len(p.Changes[i].UserIDs) == 0 {
						p.Changes[i].UserIDs = nil
					}
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("payload:\n got %#v\nwant %#v", got, tc.want)
			}
		})
	}
}

// assertLanded checks a 201 answer against the one record the lander got
// and returns its decoded envelope.
func assertLanded(t *testing.T, h *harness, res response, wantKey string) schemas.Envelope {
	t.Helper()
	if res.status != http.StatusCreated {
		t.Fatalf("status %d %q, want 201", res.status, res.body)
	}
	if ct := res.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var ok struct {
		Message  string `json:"message"`
		RecordID string `json:"record_id"`
	}
	if err := json.Unmarshal([]byte(res.body), &ok); err != nil || ok.Message != "success" || ok.RecordID == "" {
		t.Fatalf("body %q is not a success answer (%v)", res.body, err)
	}
	records := h.lander.landed()
	if len(records) != 1 {
		t.Fatalf("%d records landed, want 1", len(records))
	}
	rec := records[0]
	if string(rec.key) != wantKey {
		t.Errorf("record key = %q, want %q", rec.key, wantKey)
	}
	if !rec.deadline {
		t.Error("Land was called without a deadline")
	}
	assertNoSecrets(t, "landed record", string(rec.key)+string(rec.value))
	env, err := schemas.Decode(rec.value)
	if err != nil {
		t.Fatalf("landed record does not decode: %v\n%s", err, rec.value)
	}
	if env.RecordID != ok.RecordID {
		t.Errorf("record_id: answered %q, landed %q", ok.RecordID, env.RecordID)
	}
	if string(env.PartitionKey()) != wantKey {
		t.Errorf("PartitionKey = %q, want %q", env.PartitionKey(), wantKey)
	}
	ws, partner, _ := strings.Cut(wantKey, "/")
	partner, _, _ = strings.Cut(partner, "/")
	wantKeyID := map[string]string{"acme/mixpanel": mixpanelKeyID, "acme/amplitude": amplitudeKeyID, "globex/mixpanel": globexKeyID}[ws+"/"+partner]
	if env.SchemaVersion != schemas.CurrentVersion || env.Workspace != ws || env.Partner != partner || env.KeyID != wantKeyID {
		t.Errorf("envelope header = v%d %s/%s key %s, want v%d %s/%s key %s",
			env.SchemaVersion, env.Workspace, env.Partner, env.KeyID, schemas.CurrentVersion, ws, partner, wantKeyID)
	}
	if !env.ReceivedAt.Equal(h.clock.Now()) || !env.EventTime.Equal(env.ReceivedAt) {
		t.Errorf("received_at %v, event_time %v, want both %v", env.ReceivedAt, env.EventTime, h.clock.Now())
	}
	return env
}

func assertNoSecrets(t *testing.T, what, s string) {
	t.Helper()
	for _, secret := range allSecrets {
		if strings.Contains(s, secret) {
			t.Errorf("%s contains secret material %q:\n%s", what, secret, s)
		}
	}
}

func TestIDLimit(t *testing.T) {
	t.Parallel()
	for _, n := range []int{999, 1000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, nil)
			res := h.post(t, pathUsers, jsonType, changesReq(mixedChanges(n)))
			env := assertLanded(t, h, res, "acme/mixpanel/c-1")
			p := env.Payload.(schemas.CohortChangesPayload)
			got := 0
			for _, c := range p.Changes {
				got += len(c.UserIDs) + len(c.DeviceIDs) + len(c.Aliases)
			}
			if got != n || !p.Changes[1].ShouldRemove || p.Changes[0].ShouldRemove {
				t.Errorf("landed %d ids (should_remove %v, %v), want %d", got, p.Changes[0].ShouldRemove, p.Changes[1].ShouldRemove, n)
			}
			if v := metricValue(t, h.reg, "cohortsync_partnerapi_ids_received_total", map[string]string{"partner": "mixpanel"}); v != float64(n) {
				t.Errorf("ids_received_total = %v, want %d", v, n)
			}
		})
	}
}

// unsizedReader hides its length so that the client sends the body chunked,
// and only the MaxBytesReader can catch an oversized one.
type unsizedReader struct{ r io.Reader }

func (u unsizedReader) Read(p []byte) (int, error) { return u.r.Read(p) }

func TestBodySize(t *testing.T) {
	t.Parallel()
	const limit = 2048
	padded := func(size int) []byte {
		b, _ := json.Marshal(cohortReq())
		pad := size - len(b)
		return append(append(b[:len(b)-1:len(b)-1], []byte(`,"pad":"`+strings.Repeat("x", pad-9)+`"`)...), '}')
	}
	if n := len(padded(limit)); n != limit {
		t.Fatalf("padded body is %d bytes, want %d", n, limit)
	}
	tests := []struct {
		name   string
		body   func() io.Reader
		path   string
		status int
		want   string
	}{
		{"at the limit", func() io.Reader { return bytes.NewReader(padded(limit)) }, pathCohorts, 201, ""},
		{"one byte over, declared", func() io.Reader { return bytes.NewReader(padded(limit + 1)) }, pathCohorts, 413, "Request body too large"},
		{"one byte over, chunked", func() io.Reader { return unsizedReader{bytes.NewReader(padded(limit + 1))} }, pathCohorts, 413, "Request body too large"},
		{"far over, chunked, on unknown partner", func() io.Reader { return unsizedReader{bytes.NewReader(padded(100 * limit))} }, "/partners/nope/cohorts", 413, "Request body too large"},
		{"at the limit, chunked", func() io.Reader { return unsizedReader{bytes.NewReader(padded(limit))} }, pathCohorts, 201, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(o *partnerapi.Options) { o.Config.MaxBodyBytes = limit })
			res := h.post(t, tc.path, jsonType, tc.body())
			if res.status != tc.status {
				t.Fatalf("status %d %q, want %d", res.status, res.body, tc.status)
			}
			if tc.status == 201 {
				assertLanded(t, h, res, "acme/mixpanel/c-1")
				return
			}
			if res.body != tc.want || res.header.Get("Content-Type") != textPlain {
				t.Errorf("body %q (%s), want %q", res.body, res.header.Get("Content-Type"), tc.want)
			}
			if n := len(h.lander.landed()); n != 0 {
				t.Errorf("%d records landed", n)
			}
		})
	}
}

// TestRecordTooLarge: a request that fits the body limit but whose record
// would not fit a Kafka message is the partner's to split, not to retry.
func TestRecordTooLarge(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(o *partnerapi.Options) { o.Config.MaxRecordBytes = 600 })
	res := h.post(t, pathUsers, jsonType, changesReq(oneChange("user_ids", ids("a-rather-long-user-identifier", 20))))
	if res.status != 413 || res.body != "Request body too large" {
		t.Fatalf("got %d %q, want 413", res.status, res.body)
	}
	if n := len(h.lander.landed()); n != 0 {
		t.Errorf("%d records landed", n)
	}
	res = h.post(t, pathUsers, jsonType, changesReq(oneChange("user_ids", ids("u", 2))))
	assertLanded(t, h, res, "acme/mixpanel/c-1")
}

func TestRateLimit(t *testing.T) {
	t.Parallel()

	t.Run("per workspace with refill", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, func(o *partnerapi.Options) {
			o.Config.RateLimitPerHour = 3600 // one per second
			o.Config.RateBurst = 2
		})
		// Refused authentication takes no tokens: the workspace is not known yet.
		for range 5 {
			if res := h.post(t, pathCohorts, jsonType, cohortReq(set("partner_api_key", "x"))); res.status != 401 {
				t.Fatalf("bad key: %d", res.status)
			}
		}
		for i := range 2 {
			if res := h.post(t, pathCohorts, jsonType, cohortReq()); res.status != 201 {
				t.Fatalf("request %d within burst: %d %q", i, res.status, res.body)
			}
		}
		// Validation comes after the rate limit, so an invalid request is refused for its rate.
		for _, body := range []map[string]any{cohortReq(), cohortReq(del("name"))} {
			res := h.post(t, pathCohorts, jsonType, body)
			if res.status != 429 || res.body != "Rate limit exceeded" || res.header.Get("Retry-After") != "1" {
				t.Fatalf("over burst: %d %q Retry-After %q, want 429 with Retry-After 1", res.status, res.body, res.header.Get("Retry-After"))
			}
			if ct := res.header.Get("Content-Type"); ct != textPlain {
				t.Errorf("Content-Type = %q", ct)
			}
		}
		// Both endpoints share the workspace's bucket.
		if res := h.post(t, pathUsers, jsonType, changesReq(oneChange("user_ids", ids("u", 1)))); res.status != 429 {
			t.Fatalf("users endpoint over burst: %d", res.status)
		}
		// Another workspace has its own bucket.
		if res := h.post(t, pathCohorts, jsonType, cohortReq(set("client_secret", secretGlobex))); res.status != 201 {
			t.Fatalf("other workspace: %d %q", res.status, res.body)
		}
		if n := len(h.lander.landed()); n != 3 {
			t.Errorf("%d records landed, want 3", n)
		}
		h.clock.advance(time.Second)
		if res := h.post(t, pathCohorts, jsonType, cohortReq()); res.status != 201 {
			t.Fatalf("after refill: %d %q", res.status, res.body)
		}
		if v := metricValue(t, h.reg, "cohortsync_partnerapi_requests_total", map[string]string{"endpoint": "cohorts", "code": "429"}); v != 2 {
			t.Errorf("requests_total{code=429} = %v, want 2", v)
		}
	})

	t.Run("quota headers", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, func(o *partnerapi.Options) {
			o.Config.RateLimitPerHour = 3600 // one per second
			o.Config.RateBurst = 3
		})
		// Before authentication the workspace, and so its bucket, is unknown.
		if res := h.post(t, pathCohorts, jsonType, cohortReq(set("partner_api_key", "x"))); res.header.Get("X-RateLimit-Limit") != "" {
			t.Errorf("401 carries X-RateLimit-Limit %q", res.header.Get("X-RateLimit-Limit"))
		}
		now := h.clock.Now()
		check := func(what string, res response, status int, remaining int, reset time.Time) {
			t.Helper()
			if res.status != status {
				t.Fatalf("%s: %d %q, want %d", what, res.status, res.body, status)
			}
			if got := res.header.Get("X-RateLimit-Limit"); got != "3600" {
				t.Errorf("%s: X-RateLimit-Limit %q, want 3600", what, got)
			}
			if got := res.header.Get("X-RateLimit-Remaining"); got != strconv.Itoa(remaining) {
				t.Errorf("%s: X-RateLimit-Remaining %q, want %d", what, got, remaining)
			}
			if got := res.header.Get("X-RateLimit-Reset"); got != strconv.FormatInt(reset.Unix(), 10) {
				t.Errorf("%s: X-RateLimit-Reset %q, want %d", what, got, reset.Unix())
			}
		}
		check("first", h.post(t, pathCohorts, jsonType, cohortReq()), 201, 2, now.Add(time.Second))
		check("invalid body", h.post(t, pathCohorts, jsonType, cohortReq(del("name"))), 400, 1, now.Add(2*time.Second))
		check("third", h.post(t, pathCohorts, jsonType, cohortReq()), 201, 0, now.Add(3*time.Second))
		check("over", h.post(t, pathCohorts, jsonType, cohortReq()), 429, 0, now.Add(3*time.Second))
	})

	t.Run("retry after rounds up", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, func(o *partnerapi.Options) {
			o.Config.RateLimitPerHour = 1
			o.Config.RateBurst = 1
		})
		if res := h.post(t, pathCohorts, jsonType, cohortReq()); res.status != 201 {
			t.Fatalf("first: %d", res.status)
		}
		h.clock.advance(1500 * time.Millisecond)
		res := h.post(t, pathCohorts, jsonType, cohortReq())
		if res.status != 429 || res.header.Get("Retry-After") != "3599" {
			t.Fatalf("second: %d Retry-After %q, want 429 and 3599", res.status, res.header.Get("Retry-After"))
		}
	})
}

func TestLandFailure(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(o *partnerapi.Options) {
		o.Lander.(*recordingLander).fail = func([]byte) error { return errors.New("kafka: not enough replicas") }
	})
	for _, req := range []struct {
		path string
		body map[string]any
	}{
		{pathCohorts, cohortReq()},
		{pathUsers, changesReq(oneChange("user_ids", ids("u", 3)))},
	} {
		res := h.post(t, req.path, jsonType, req.body)
		if res.status != 503 || res.body != "Service unavailable, retry later" || res.header.Get("Retry-After") != "1" {
			t.Fatalf("%s: %d %q Retry-After %q, want 503 with Retry-After 1", req.path, res.status, res.body, res.header.Get("Retry-After"))
		}
		if strings.Contains(res.body, "success") || strings.Contains(res.body, "record_id") {
			t.Errorf("failure reported like a success: %q", res.body)
		}
	}
	if v := metricValue(t, h.reg, "cohortsync_partnerapi_land_errors_total", nil); v != 2 {
		t.Errorf("land_errors_total = %v, want 2", v)
	}
	if v := metricValue(t, h.reg, "cohortsync_partnerapi_ids_received_total", map[string]string{"partner": "mixpanel"}); v != 0 {
		t.Errorf("ids_received_total = %v, want 0 for records that did not land", v)
	}
	if v := metricValue(t, h.reg, "cohortsync_partnerapi_requests_total", map[string]string{"endpoint": "cohorts_users", "code": "201"}); v != 0 {
		t.Errorf("requests_total{code=201} = %v", v)
	}
	if !strings.Contains(h.logs.String(), "not enough replicas") {
		t.Errorf("land error not logged:\n%s", h.logs.String())
	}
}

// TestLandTimeout: a lander that never returns must not hold the request
// forever; the deadline turns it into a 503.
func TestLandTimeout(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(o *partnerapi.Options) {
		o.Config.LandTimeout = 50 * time.Millisecond
		o.Lander.(*recordingLander).block = true
	})
	start := time.Now()
	res := h.post(t, pathCohorts, jsonType, cohortReq())
	if res.status != 503 || res.body != "Service unavailable, retry later" {
		t.Fatalf("got %d %q, want 503", res.status, res.body)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v despite a 50ms land timeout", d)
	}
}

// TestSecretsNeverLogged drives every path that handles a secret with debug
// logging on and checks that no secret material reaches the log.
func TestSecretsNeverLogged(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(o *partnerapi.Options) {
		o.Lander.(*recordingLander).fail = func(key []byte) error {
			if strings.HasSuffix(string(key), "/fail") {
				return errors.New("broker down")
			}
			return nil
		}
	})
	requests := []struct {
		path   string
		body   map[string]any
		status int
	}{
		{pathCohorts, cohortReq(), 201},
		{pathUsers, changesReq(oneChange("user_ids", ids("u", 2))), 201},
		{pathCohorts, cohortReq(set("cohort_id", "fail")), 503},
		{pathCohorts, cohortReq(set("client_secret", secretAmplitude)), 401},
		{pathCohorts, cohortReq(set("client_secret", secretRevoked)), 401},
		{pathCohorts, cohortReq(set("partner_api_key", amplitudeKey)), 401},
		{"/partners/nope/cohorts", cohortReq(), 401},
		{pathCohorts, cohortReq(del("name")), 400},
		{pathUsers, changesReq("bad"), 400},
	}
	for _, r := range requests {
		res := h.post(t, r.path, jsonType, r.body)
		if res.status != r.status {
			t.Fatalf("%s: %d %q, want %d", r.path, res.status, res.body, r.status)
		}
	}
	logs := h.logs.String()
	if !strings.Contains(logs, mixpanelKeyID) || !strings.Contains(logs, `"workspace":"acme"`) || !strings.Contains(logs, `"cohort_id":"c-1"`) {
		t.Errorf("debug log lacks key id, workspace or cohort id:\n%s", logs)
	}
	assertNoSecrets(t, "log", logs)
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.post(t, pathUsers, jsonType, changesReq([]any{map[string]any{"user_ids": ids("u", 2), "aliases": aliases(1)}}))
	h.post(t, pathUsers, jsonType, changesReq(nil))
	h.post(t, pathCohorts, jsonType, cohortReq(set("client_secret", "nope")))
	h.post(t, pathCohorts, jsonType, cohortReq())

	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"cohortsync_partnerapi_requests_total", map[string]string{"endpoint": "cohorts_users", "code": "201"}, 1},
		{"cohortsync_partnerapi_requests_total", map[string]string{"endpoint": "cohorts_users", "code": "400"}, 1},
		{"cohortsync_partnerapi_requests_total", map[string]string{"endpoint": "cohorts", "code": "401"}, 1},
		{"cohortsync_partnerapi_requests_total", map[string]string{"endpoint": "cohorts", "code": "201"}, 1},
		{"cohortsync_partnerapi_ids_received_total", map[string]string{"partner": "mixpanel"}, 3},
		{"cohortsync_partnerapi_ids_received_total", map[string]string{"partner": "amplitude"}, 0},
		{"cohortsync_partnerapi_request_duration_seconds", map[string]string{"endpoint": "cohorts"}, 2},
		{"cohortsync_partnerapi_land_errors_total", nil, 0},
	} {
		if got := metricValue(t, h.reg, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

// metricValue reads a counter's value, or a histogram's sample count, from reg.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			got := make(map[string]string)
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue metrics
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

func TestOtherMethods(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		res := h.do(t, m, pathUsers, jsonType, nil)
		if res.status != http.StatusMethodNotAllowed {
			t.Errorf("%s: %d, want 405", m, res.status)
		}
	}
	if res := h.post(t, "/partners/mixpanel/cohorts/users/extra", jsonType, cohortReq()); res.status != http.StatusNotFound {
		t.Errorf("unknown path: %d, want 404", res.status)
	}
}

func TestConcurrentRequests(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	const n = 50
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			res := h.post(t, pathUsers, jsonType, changesReq(oneChange("user_ids", ids("u", 3)), set("cohort_id", fmt.Sprintf("c-%d", i%5))))
			if res.status != 201 {
				t.Errorf("request %d: %d %q", i, res.status, res.body)
			}
		})
	}
	wg.Wait()
	records := h.lander.landed()
	seen := make(map[string]bool)
	for _, r := range records {
		env, err := schemas.Decode(r.value)
		if err != nil {
			t.Fatal(err)
		}
		if seen[env.RecordID] {
			t.Errorf("record id %s used twice", env.RecordID)
		}
		seen[env.RecordID] = true
	}
	if len(records) != n || len(seen) != n {
		t.Errorf("%d records, %d ids, want %d", len(records), len(seen), n)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	t.Parallel()
	_, err := partnerapi.New(partnerapi.Options{
		Config:   partnerapi.Config{MaxBodyBytes: -1, LandTimeout: -time.Second},
		Partners: map[string]string{"mixpanel": "", "a/b": "k"},
	})
	if err == nil {
		t.Fatal("New accepted bad options")
	}
	for _, want := range []string{"max_body_bytes", "rate_limit_per_hour", "rate_burst", "land_timeout", "partners.mixpanel", `"a/b"`, "verifier", "lander"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
	if _, err := partnerapi.New(partnerapi.Options{Config: partnerapi.DefaultConfig(), Verifier: testVerifier(), Lander: &recordingLander{}}); err == nil ||
		!strings.Contains(err.Error(), "partners") {
		t.Errorf("no partners: %v", err)
	}
}

func TestNewRegistersOnce(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	opts := partnerapi.Options{
		Config:     partnerapi.DefaultConfig(),
		Partners:   map[string]string{"mixpanel": mixpanelKey},
		Verifier:   testVerifier(),
		Lander:     &recordingLander{},
		Registerer: reg,
	}
	if _, err := partnerapi.New(opts); err != nil {
		t.Fatalf("first New: %v", err)
	}
	if _, err := partnerapi.New(opts); err == nil {
		t.Fatal("second New on the same registry succeeded; its metrics would be lost")
	}
	opts.Registerer = nil
	if _, err := partnerapi.New(opts); err != nil {
		t.Fatalf("New without a registerer: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	if err := partnerapi.DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig invalid: %v", err)
	}
	c := partnerapi.DefaultConfig()
	if c.MaxBodyBytes != 512<<10 || c.RateLimitPerHour != 250000 || c.RateBurst != 1000 {
		t.Errorf("DefaultConfig = %+v", c)
	}
	// The two fields beyond the documented three default when left zero.
	c.MaxRecordBytes, c.LandTimeout = 0, 0
	if err := c.Validate(); err != nil {
		t.Errorf("zero max_record_bytes and land_timeout: %v", err)
	}
	err := partnerapi.Config{MaxRecordBytes: -1}.Validate()
	for _, want := range []string{"max_body_bytes", "rate_limit_per_hour", "rate_burst", "max_record_bytes"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate of an empty config does not mention %s: %v", want, err)
		}
	}
}

// TestStaleKeyStoreRefusesToDecide: while the key store may have missed a
// revocation, a valid-looking secret gets 503, never 201 or 401, and nothing lands.
func TestStaleKeyStoreRefusesToDecide(t *testing.T) {
	t.Parallel()
	var stale atomic.Bool
	stale.Store(true)
	h := newHarness(t, func(o *partnerapi.Options) {
		o.KeysFresh = func() error {
			if stale.Load() {
				return errors.New("keys topic not read for 4s")
			}
			return nil
		}
	})
	res := h.post(t, pathUsers, jsonType, changesReq(oneChange("user_ids", ids("u", 2))))
	if res.status != 503 || res.header.Get("Retry-After") == "" {
		t.Fatalf("stale key store: %d %q, want 503 with Retry-After", res.status, res.body)
	}
	if n := len(h.lander.landed()); n != 0 {
		t.Fatalf("%d records landed while the key store was stale", n)
	}
	stale.Store(false)
	if res := h.post(t, pathUsers, jsonType, changesReq(oneChange("user_ids", ids("u", 2)))); res.status != 201 {
		t.Fatalf("fresh key store: %d %q", res.status, res.body)
	}
}

// TestBodyEncoding: a body that is not valid UTF-8, or whose escapes name
// half a surrogate pair, is refused with the documented 400 instead of
// having its ids silently replaced; a charset other than UTF-8 is refused;
// escapes that do spell a character are read as that character.
func TestBodyEncoding(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	base, err := json.Marshal(changesReq(oneChange("user_ids", []string{"PLACEHOLDER"})))
	if err != nil {
		t.Fatal(err)
	}
	with := func(id string) []byte { return bytes.Replace(base, []byte(`"PLACEHOLDER"`), []byte(id), 1) }
	for _, tc := range []struct {
		name, id string
	}{
		{"invalid byte", "\"u\xff1\""},
		{"truncated sequence", "\"u\xe2\x82\""},
		{"lone high surrogate", `"u\ud800x"`},
		{"lone low surrogate", `"u\udc00"`},
		{"high surrogate then a letter escape", `"\ud800\u0041"`},
	} {
		res := h.post(t, pathUsers, jsonType, with(tc.id))
		if res.status != 400 || res.body != "Request body must be valid UTF-8" {
			t.Errorf("%s: %d %q, want 400 Request body must be valid UTF-8", tc.name, res.status, res.body)
		}
	}
	if n := len(h.lander.landed()); n != 0 {
		t.Fatalf("%d refused bodies landed", n)
	}
	for _, ct := range []string{"application/json; charset=utf-16", "application/json; charset=latin1"} {
		if res := h.post(t, pathUsers, ct, base); res.status != 400 || res.body != "Content-Type charset must be utf-8" {
			t.Errorf("%s: %d %q, want 400 Content-Type charset must be utf-8", ct, res.status, res.body)
		}
	}
	assertLanded(t, h, h.post(t, pathUsers, "application/json; charset=UTF-8", base), "acme/mixpanel/c-1")
	for _, tc := range []struct{ name, id, want string }{
		{"surrogate pair", `"u\ud83d\ude00"`, "u\U0001F600"},
		{"escaped backslash before u", `"u\\ud800"`, `u\ud800`},
		{"literal replacement character", "\"u\uFFFD\"", "u\uFFFD"},
	} {
		h := newHarness(t, nil)
		env := assertLanded(t, h, h.post(t, pathUsers, jsonType, with(tc.id)), "acme/mixpanel/c-1")
		p, ok := env.Payload.(schemas.CohortChangesPayload)
		if !ok || len(p.Changes) != 1 || len(p.Changes[0].UserIDs) != 1 || p.Changes[0].UserIDs[0] != tc.want {
			t.Errorf("%s: landed %+v, want the id %q", tc.name, env.Payload, tc.want)
		}
	}
	// The backfill readers apply the same check.
	if _, err := partnerapi.ParseChangesBody(with("\"u\xff\"")); err == nil || err.Error() != "Request body must be valid UTF-8" {
		t.Errorf("ParseChangesBody: %v", err)
	}
}
