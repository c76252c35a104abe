// Package httpjson holds what every JSON HTTP API of cohortsync does alike:
// strict decoding of one request object with messages fit for the caller,
// and JSON answers.
package httpjson

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// Decode reads one JSON object of at most maxBytes into v and returns a
// message for the caller when that fails, "" when it succeeds. Unknown
// fields are refused: in an admin API a misspelt field is a mistake worth
// reporting, not something to ignore.
func Decode(w http.ResponseWriter, r *http.Request, maxBytes int64, v any) string {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		var syntax *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &tooBig):
			return fmt.Sprintf("request body larger than %d bytes", tooBig.Limit)
		case errors.Is(err, io.EOF):
			return "request body must be a JSON object"
		case errors.Is(err, io.ErrUnexpectedEOF):
			return "malformed JSON: unexpected end of body"
		case errors.As(err, &syntax):
			return fmt.Sprintf("malformed JSON at byte %d", syntax.Offset)
		case errors.As(err, &typ) && typ.Field == "":
			return "request body must be a JSON object"
		case errors.As(err, &typ):
			return fmt.Sprintf("field %q must be a %s", typ.Field, typ.Type)
		default:
			// DisallowUnknownFields and other decoder complaints carry no
			// request data beyond a field name.
			return "invalid request body: " + Truncate(err.Error())
		}
	}
	if dec.More() {
		return "request body must contain a single JSON object"
	}
	return ""
}

// Write answers status with v as JSON.
func Write(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Error answers status with {"error": msg}.
func Error(w http.ResponseWriter, status int, msg string) {
	Write(w, status, struct {
		Error string `json:"error"`
	}{msg})
}

// Truncate shortens s for an error message that may echo caller input.
func Truncate(s string) string {
	const limit = 64
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "..."
}
