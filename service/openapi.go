package service

import (
	_ "embed"
	"io"
	"net/http"
)

// openAPIDocument describes every route Run registers. openapi_test.go
// fails when a registered route is missing from it or it names one the
// server lacks; openapi_statuses_test.go when it leaves out a status a
// handler can write or lists one none writes.
//
//go:embed openapi.json
var openAPIDocument string

// OpenAPIDocument returns the OpenAPI 3.0 document served at GET /openapi.json.
func OpenAPIDocument() string { return openAPIDocument }

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	// The document changes only with the binary.
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = io.WriteString(w, openAPIDocument)
}
