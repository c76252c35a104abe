package service_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/service"
)

// pendingRoutes are in the OpenAPI document but not yet registered by Run:
// routes the lead is wiring in this change. They are skipped only in the
// "document has no route the server lacks" direction; once one is
// registered the test asks for its removal, so the list only shrinks.
var pendingRoutes = []string{}

type openAPIDoc struct {
	OpenAPI string                                `json:"openapi"`
	Paths   map[string]map[string]json.RawMessage `json:"paths"`
}

type openAPIOperation struct {
	OperationID string                     `json:"operationId"`
	Parameters  []map[string]any           `json:"parameters"`
	Responses   map[string]json.RawMessage `json:"responses"`
}

var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// documentedRoutes lists "METHOD /path" for every operation of the document.
func documentedRoutes(t *testing.T, doc openAPIDoc) []string {
	t.Helper()
	var out []string
	for path, item := range doc.Paths {
		for method := range item {
			if !slices.Contains(httpMethods, method) {
				continue // parameters, summary...
			}
			out = append(out, strings.ToUpper(method)+" "+path)
		}
	}
	slices.Sort(out)
	return out
}

// normalizePattern turns a ServeMux pattern into the document's form:
// "{name...}" is "{name}" and a trailing "{$}" is dropped.
func normalizePattern(p string) string {
	p = strings.TrimSuffix(p, "{$}")
	return strings.ReplaceAll(p, "...}", "}")
}

// TestOpenAPICoversEveryRoute starts the service and compares the routes it
// registered with the document it serves, in both directions.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	t.Parallel()
	cfg := config.Default()
	cfg.Embedded.KafkaAddr = "127.0.0.1:0" // tests run in parallel: any free port
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.Kafka.Partitions = 3
	patterns := make(chan []string, 1)
	ready := make(chan string, 1)
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		done <- service.Run(ctx, cfg, slog.New(slog.DiscardHandler), service.Options{
			Ready:  func(a string) { ready <- a },
			Routes: func(p []string) { patterns <- p },
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("service did not stop")
		}
	})
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("service stopped: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("service not ready in time")
	}
	registered := <-patterns

	reqCtx, reqCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer reqCancel()
	req, _ := http.NewRequestWithContext(reqCtx, http.MethodGet, "http://"+addr+"/openapi.json", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /openapi.json: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if string(body) != service.OpenAPIDocument() {
		t.Fatal("GET /openapi.json does not serve the embedded document")
	}
	var doc openAPIDoc
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	documented := documentedRoutes(t, doc)

	var serverRoutes []string
	for _, p := range registered {
		method, path, ok := strings.Cut(normalizePattern(p), " ")
		if !ok {
			t.Errorf("route %q has no method: every route must name one so the document can describe it", p)
			continue
		}
		route := method + " " + path
		serverRoutes = append(serverRoutes, route)
		if !slices.Contains(documented, route) {
			t.Errorf("the server registers %s, which service/openapi.json does not describe", route)
		}
		if slices.Contains(pendingRoutes, route) {
			t.Errorf("%s is registered now: delete it from pendingRoutes in service/openapi_test.go", route)
		}
	}
	for _, route := range documented {
		if !slices.Contains(serverRoutes, route) && !slices.Contains(pendingRoutes, route) {
			t.Errorf("service/openapi.json describes %s, which the server does not register", route)
		}
	}
	for _, route := range pendingRoutes {
		if !slices.Contains(documented, route) {
			t.Errorf("pending route %s is not in the document", route)
		}
	}
}

var pathParamRE = regexp.MustCompile(`\{([^}]+)\}`)

// TestOpenAPIDocumentIsWellFormed checks what a generator or a client relies
// on: version 3.0, every $ref resolves, unique operation ids, each path
// parameter declared, every operation with responses.
func TestOpenAPIDocumentIsWellFormed(t *testing.T) {
	t.Parallel()
	raw := []byte(service.OpenAPIDocument())
	var tree map[string]any
	if err := json.Unmarshal(raw, &tree); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	var doc openAPIDoc
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.0.") {
		t.Errorf("openapi %q, want 3.0.x", doc.OpenAPI)
	}
	// Every $ref points at something that exists.
	var refs []string
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				if s, ok := c.(string); ok && k == "$ref" {
					refs = append(refs, s)
				}
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	walk(tree)
	if len(refs) == 0 {
		t.Fatal("no $ref found: the walk is broken")
	}
	resolve := func(ref string) (any, bool) {
		if !strings.HasPrefix(ref, "#/") {
			return nil, false
		}
		var cur any = tree
		for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			m, ok := cur.(map[string]any)
			if !ok {
				return nil, false
			}
			if cur, ok = m[part]; !ok {
				return nil, false
			}
		}
		return cur, true
	}
	for _, ref := range refs {
		if _, ok := resolve(ref); !ok {
			t.Errorf("$ref %s does not resolve", ref)
		}
	}

	ids := map[string]string{}
	for path, item := range doc.Paths {
		want := pathParamRE.FindAllStringSubmatch(path, -1)
		for method, rawOp := range item {
			if !slices.Contains(httpMethods, method) {
				continue
			}
			where := fmt.Sprintf("%s %s", strings.ToUpper(method), path)
			var op openAPIOperation
			if err := json.Unmarshal(rawOp, &op); err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			if op.OperationID == "" {
				t.Errorf("%s: no operationId", where)
			} else if other, dup := ids[op.OperationID]; dup {
				t.Errorf("%s: operationId %s also used by %s", where, op.OperationID, other)
			}
			ids[op.OperationID] = where
			if len(op.Responses) == 0 {
				t.Errorf("%s: no responses", where)
			}
			declared := map[string]bool{}
			for _, p := range op.Parameters {
				if ref, ok := p["$ref"].(string); ok {
					target, ok := resolve(ref)
					if !ok {
						continue // reported above
					}
					p = target.(map[string]any)
				}
				if p["in"] == "path" {
					declared[fmt.Sprint(p["name"])] = true
					if p["required"] != true {
						t.Errorf("%s: path parameter %v must be required", where, p["name"])
					}
				}
			}
			for _, m := range want {
				if !declared[m[1]] {
					t.Errorf("%s: path parameter {%s} is not declared", where, m[1])
				}
			}
			if len(declared) != len(want) {
				t.Errorf("%s: declares %d path parameters, the path has %d", where, len(declared), len(want))
			}
		}
	}
}
