package partnerapi_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/connectors/partnerapi"
	"github.com/cohortsync/cohortsync/schemas"
)

func TestParseCohortBody(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body string
		want       schemas.CohortPayload
		msg        string
	}{
		{
			name: "valid, credentials ignored",
			body: `{"partner_api_key":"k","client_secret":"` + secretMixpanel + `","cohort_id":"c1","name":"Churn risk","created_at":"2024-05-01T10:00:00+02:00"}`,
			want: schemas.CohortPayload{CohortID: "c1", Name: "Churn risk", CreatedAt: time.Date(2024, 5, 1, 8, 0, 0, 0, time.UTC)},
		},
		{name: "not an object", body: `[1]`, msg: "Request body must be a JSON object"},
		{name: "null", body: `null`, msg: "Request body must be a JSON object"},
		{name: "blank cohort id", body: `{"cohort_id":"  ","name":"n","created_at":"2024-01-01"}`, msg: "cohort_id must be a valid string"},
		{name: "numeric cohort id", body: `{"cohort_id":7,"name":"n","created_at":"2024-01-01"}`, msg: "cohort_id must be a valid string"},
		{name: "no name", body: `{"cohort_id":"c","created_at":"2024-01-01"}`, msg: "name must be a non-empty string"},
		{name: "bad created_at", body: `{"cohort_id":"c","name":"n","created_at":"yesterday"}`, msg: "created_at must be a valid time as an ISO-8601 string"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := partnerapi.ParseCohortBody([]byte(tc.body))
			checkBodyError(t, err, tc.msg)
			if tc.msg == "" && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("payload = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseChangesBody(t *testing.T) {
	t.Parallel()
	const msgChanges = "cohort_changes must be an array of objects each with key user_ids and/or device_ids mapping to an array of strings, or an aliases object"
	many := `"u0"` + strings.Repeat(`,"u"`, partnerapi.MaxIDsPerRequest)
	tests := []struct {
		name, body string
		want       schemas.CohortChangesPayload
		msg        string
	}{
		{
			name: "valid",
			body: `{"client_secret":"` + secretMixpanel + `","cohort_id":"c1","cohort_changes":[{"user_ids":["a","b"],"device_ids":null},{"aliases":[{"alias_name":"n","alias_label":"l"}],"should_remove":true}]}`,
			want: schemas.CohortChangesPayload{CohortID: "c1", Changes: []schemas.Change{
				{UserIDs: []string{"a", "b"}},
				{Aliases: []schemas.Alias{{Name: "n", Label: "l"}}, ShouldRemove: true},
			}},
		},
		{name: "not an object", body: `"x"`, msg: "Request body must be a JSON object"},
		{name: "no cohort id", body: `{"cohort_changes":[]}`, msg: "cohort_id must be a valid string"},
		{name: "changes not an array", body: `{"cohort_id":"c","cohort_changes":{}}`, msg: msgChanges},
		{name: "empty id", body: `{"cohort_id":"c","cohort_changes":[{"user_ids":[""]}]}`, msg: msgChanges},
		{name: "entry without ids", body: `{"cohort_id":"c","cohort_changes":[{"should_remove":true}]}`, msg: msgChanges},
		{name: "too many ids", body: `{"cohort_id":"c","cohort_changes":[{"user_ids":[` + many + `]}]}`, msg: "Only 1,000 user_ids, device_ids, and aliases are allowed per request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := partnerapi.ParseChangesBody([]byte(tc.body))
			checkBodyError(t, err, tc.msg)
			if tc.msg == "" && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("payload = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// checkBodyError asserts err is a *BodyError with the exact API text, and
// that no error ever carries the secret the bodies hold.
func checkBodyError(t *testing.T, err error, msg string) {
	t.Helper()
	if msg == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	be, ok := errors.AsType[*partnerapi.BodyError](err)
	if !ok {
		t.Fatalf("error %v (%T), want a *BodyError", err, err)
	}
	if be.Message != msg || err.Error() != msg {
		t.Errorf("message = %q, want %q", be.Message, msg)
	}
	if strings.Contains(err.Error(), secretBody) {
		t.Errorf("error echoes the client secret: %q", err.Error())
	}
}
