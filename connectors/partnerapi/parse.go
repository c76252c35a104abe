package partnerapi

import "github.com/cohortsync/cohortsync/schemas"

// MaxIDsPerRequest is the documented limit of user_ids, device_ids and
// aliases combined in one /cohorts/users request (README, The partner API).
const MaxIDsPerRequest = maxIDsPerRequest

// BodyError is a request body refused by the rules of the HTTP API. Its
// Error text is exactly the body of the 400 the API would send, so a file
// backfill reports a bad line in the words partners already know. It never
// holds a credential: the body checks run on payload fields only.
type BodyError struct {
	Message string
}

func (e *BodyError) Error() string { return e.Message }

// ParseCohortBody applies the checks of POST /partners/{p}/cohorts to a
// body. Credentials (partner_api_key, client_secret) are not looked at:
// callers outside the HTTP path have authenticated the input another way.
func ParseCohortBody(body []byte) (schemas.CohortPayload, error) {
	f, msg := decodeObject(body)
	if msg != "" {
		return schemas.CohortPayload{}, &BodyError{Message: msg}
	}
	p, msg := parseCohort(f)
	if msg != "" {
		return schemas.CohortPayload{}, &BodyError{Message: msg}
	}
	return p, nil
}

// ParseChangesBody applies the checks of POST /partners/{p}/cohorts/users
// to a body, the 1,000-id limit included. Credentials are not looked at.
func ParseChangesBody(body []byte) (schemas.CohortChangesPayload, error) {
	if b, ok := scanChanges(body); ok {
		return b.payload, nil
	}
	f, msg := decodeObject(body)
	if msg != "" {
		return schemas.CohortChangesPayload{}, &BodyError{Message: msg}
	}
	p, _, msg := parseChanges(f)
	if msg != "" {
		return schemas.CohortChangesPayload{}, &BodyError{Message: msg}
	}
	return p, nil
}
