package service_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/constant"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cohortsync/cohortsync/service"
)

// The status check reads the source rather than probing the server: a
// probe only sees the answers it provokes, and most error paths (a store
// that times out, a name already taken, a record over the Kafka limit) are
// hard to provoke from outside. Instead, for every route the document
// describes, it finds the Handle call that registers it, follows every
// function and method of the module the handler can reach (including
// closures held in local variables and the handler passed to a wrapper
// such as keys' guard or segments' handle), and collects every
// net/http Status constant named on the way. The error helpers
// (httpjson.Error, writeError, WriteRefusal, the partner API's reply)
// receive their status as such a constant at the call site, so they are
// covered.
//
// What it cannot see, and so does not check:
//   - calls through an interface (the engine, the stores): implementations
//     answer errors, never HTTP statuses, in this module;
//   - a status written as a bare number or computed at run time (the code
//     uses the named constants; keep it that way);
//   - handlers of other modules, e.g. promhttp: externalStatuses lists
//     what they can answer, from their documentation;
//   - what net/http answers before a handler runs: 404 and 405 of the mux,
//     400 and 431 of the server for requests it cannot parse.
//
// It over-approximates: a status in a shared helper counts for every route
// that reaches the helper, even when one route cannot take that branch.
// unreachableStatuses lists such a status with the reason it cannot
// happen, rather than have the document promise it.

// externalStatuses are the statuses of handlers that live outside the
// module, so the walk cannot read them. None is registered directly now:
// /metrics goes through metricsHandler, whose promhttp handler
// (ContinueOnError) answers 500 only when not one metric was gathered,
// which the Go collector and the guard's counter, always registered,
// rule out.
var externalStatuses = map[string][]int{}

// unreachableStatuses are statuses the walk finds on a route that its
// handler cannot write, each with the reason; they are not required in the
// document. An entry the walk no longer finds fails the test, so the list
// only shrinks.
var unreachableStatuses = map[string]map[int]string{
	"POST /v1/workspaces/{workspace}/segments": {
		504: "engineError answers the filter check, which parses and never queries, so it never times out",
	},
}

// goPackage is the part of `go list -json` the check reads.
type goPackage struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	Export     string
	Standard   bool
	Module     *struct{ Path string }
}

// moduleSource is the type-checked source of the module's packages that
// the service links.
type moduleSource struct {
	fset  *token.FileSet
	funcs map[string]funcBody // by types.Func.FullName
	pkgs  []*checkedPackage
}

type checkedPackage struct {
	path  string
	files []*ast.File
	info  *types.Info
	// funcVars maps a local variable to the function literals assigned to
	// it, so that `health := func(...)...; Handle(p, health(...))` is followed.
	funcVars map[types.Object][]*ast.FuncLit
}

type funcBody struct {
	pkg  *checkedPackage
	body *ast.BlockStmt
}

// loadModuleSource type-checks from source every package of the module the
// service package depends on. Imports are read from the compiler's export
// data, which `go list -export` produces from the build cache.
func loadModuleSource(t *testing.T) *moduleSource {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to read the handlers' source: %v", err)
	}
	args := []string{"list", "-deps", "-export", "-json=ImportPath,Dir,GoFiles,Export,Standard,Module"}
	if raceEnabled {
		// The same build flags as this test binary, so the export data
		// comes from the cache instead of a second build.
		args = append(args, "-race")
	}
	args = append(args, "github.com/cohortsync/cohortsync/service")
	cmd := exec.CommandContext(t.Context(), goTool, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var all []goPackage
	exports := map[string]string{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p goPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		exports[p.ImportPath] = p.Export
		all = append(all, p)
	}
	src := &moduleSource{fset: token.NewFileSet(), funcs: map[string]funcBody{}}
	imp := importer.ForCompiler(src.fset, "gc", func(path string) (io.ReadCloser, error) {
		f, ok := exports[path]
		if !ok || f == "" {
			return nil, fmt.Errorf("no export data for %s", path)
		}
		return os.Open(f)
	})
	for _, p := range all {
		if p.Standard || p.Module == nil || p.Module.Path != modulePath {
			continue
		}
		cp := &checkedPackage{path: p.ImportPath, funcVars: map[types.Object][]*ast.FuncLit{}}
		for _, name := range p.GoFiles {
			f, err := parser.ParseFile(src.fset, filepath.Join(p.Dir, name), nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			cp.files = append(cp.files, f)
		}
		cp.info = &types.Info{
			Types: map[ast.Expr]types.TypeAndValue{},
			Defs:  map[*ast.Ident]types.Object{},
			Uses:  map[*ast.Ident]types.Object{},
		}
		conf := types.Config{Importer: imp}
		if _, err := conf.Check(p.ImportPath, src.fset, cp.files, cp.info); err != nil {
			t.Fatalf("type-check %s: %v", p.ImportPath, err)
		}
		for _, f := range cp.files {
			for _, d := range f.Decls {
				if fd, ok := d.(*ast.FuncDecl); ok && fd.Body != nil {
					fn := cp.info.Defs[fd.Name].(*types.Func)
					src.funcs[fn.FullName()] = funcBody{pkg: cp, body: fd.Body}
				}
			}
			ast.Inspect(f, func(n ast.Node) bool {
				if as, ok := n.(*ast.AssignStmt); ok && len(as.Lhs) == len(as.Rhs) {
					for i, rhs := range as.Rhs {
						lit, ok := rhs.(*ast.FuncLit)
						id, isID := as.Lhs[i].(*ast.Ident)
						if !ok || !isID {
							continue
						}
						obj := cp.info.Defs[id]
						if obj == nil {
							obj = cp.info.Uses[id]
						}
						if obj != nil {
							cp.funcVars[obj] = append(cp.funcVars[obj], lit)
						}
					}
				}
				return true
			})
		}
		src.pkgs = append(src.pkgs, cp)
	}
	return src
}

// registration is one Handle call with a known pattern, and what its
// handler is made of.
type registration struct {
	pattern string
	where   string
	// roots are the expressions the handler is built from: the handler
	// argument, or the wrapper's body and the arguments of its call.
	roots []root
	// external names the function of another module that builds the
	// handler, which the walk cannot read.
	external string
}

// root is a node and the package whose type information covers it.
type root struct {
	pkg  *checkedPackage
	node ast.Node
}

// isRouterMethod reports whether fn is Handle or HandleFunc of a router the
// service registers routes on.
func isRouterMethod(fn *types.Func) bool {
	if fn.Name() != "Handle" && fn.Name() != "HandleFunc" {
		return false
	}
	recv := fn.Signature().Recv()
	if recv == nil {
		return false
	}
	typ := recv.Type()
	if p, ok := typ.(*types.Pointer); ok {
		typ = p.Elem()
	}
	named, ok := typ.(*types.Named)
	if !ok || named.Obj().Pkg() == nil {
		return false
	}
	switch named.Obj().Pkg().Path() + "." + named.Obj().Name() {
	case "net/http.ServeMux", modulePath + "/internal/httproute.Recorder", modulePath + "/internal/httproute.Router":
		return true
	}
	return false
}

const modulePath = "github.com/cohortsync/cohortsync"

// calledFunc returns the function or method a call names, nil for a call
// of a function value or a conversion.
func calledFunc(info *types.Info, call *ast.CallExpr) *types.Func {
	var id *ast.Ident
	switch fun := ast.Unparen(call.Fun).(type) {
	case *ast.Ident:
		id = fun
	case *ast.SelectorExpr:
		id = fun.Sel
	default:
		return nil
	}
	fn, _ := info.Uses[id].(*types.Func)
	if fn == nil {
		return nil
	}
	return fn.Origin()
}

// externalBuilder names the function of another module that handler is
// the result of, or "".
func externalBuilder(info *types.Info, handler ast.Expr) string {
	call, ok := ast.Unparen(handler).(*ast.CallExpr)
	if !ok {
		return ""
	}
	fn := calledFunc(info, call)
	if fn == nil || fn.Pkg() == nil || fn.Pkg().Path() == modulePath || strings.HasPrefix(fn.Pkg().Path(), modulePath+"/") {
		return ""
	}
	return fn.FullName()
}

// registrations finds every Handle call whose pattern is a constant, or a
// parameter of a wrapper that is called with a constant there.
func (src *moduleSource) registrations(t *testing.T) []registration {
	t.Helper()
	type wrapper struct {
		param int // index of the pattern among the wrapper's arguments
		pkg   *checkedPackage
		body  *ast.BlockStmt
	}
	wrappers := map[string]wrapper{}
	var regs []registration
	for _, cp := range src.pkgs {
		for _, f := range cp.files {
			for _, d := range f.Decls {
				fd, ok := d.(*ast.FuncDecl)
				if !ok || fd.Body == nil {
					continue
				}
				decl := cp.info.Defs[fd.Name].(*types.Func)
				if isRouterMethod(decl) {
					// Recorder.HandleFunc forwarding to Handle: its callers
					// are registrations in their own right.
					continue
				}
				ast.Inspect(fd.Body, func(n ast.Node) bool {
					call, ok := n.(*ast.CallExpr)
					if !ok || len(call.Args) != 2 {
						return true
					}
					if fn := calledFunc(cp.info, call); fn == nil || !isRouterMethod(fn) {
						return true
					}
					where := src.fset.Position(call.Pos()).String()
					if tv := cp.info.Types[call.Args[0]]; tv.Value != nil && tv.Value.Kind() == constant.String {
						regs = append(regs, registration{
							pattern:  constant.StringVal(tv.Value),
							where:    where,
							roots:    []root{{cp, call.Args[1]}},
							external: externalBuilder(cp.info, call.Args[1]),
						})
						return true
					}
					if id, ok := ast.Unparen(call.Args[0]).(*ast.Ident); ok {
						params := decl.Signature().Params()
						for i := range params.Len() {
							if params.At(i) == cp.info.Uses[id] {
								wrappers[decl.FullName()] = wrapper{param: i, pkg: cp, body: fd.Body}
								return true
							}
						}
					}
					t.Errorf("%s: a route is registered with a pattern the check cannot read: make it a constant, or a parameter of the function that registers it", where)
					return true
				})
			}
		}
	}
	for _, cp := range src.pkgs {
		for _, f := range cp.files {
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				fn := calledFunc(cp.info, call)
				if fn == nil {
					return true
				}
				w, ok := wrappers[fn.FullName()]
				if !ok || w.param >= len(call.Args) {
					return true
				}
				where := src.fset.Position(call.Pos()).String()
				tv := cp.info.Types[call.Args[w.param]]
				if tv.Value == nil || tv.Value.Kind() != constant.String {
					t.Errorf("%s: %s is called with a pattern the check cannot read", where, fn.Name())
					return true
				}
				// The wrapper builds the handler around what its caller
				// passes (segments' handle wraps the route's method): both
				// are walked.
				r := registration{pattern: constant.StringVal(tv.Value), where: where, roots: []root{{w.pkg, w.body}}}
				for i, a := range call.Args {
					if i != w.param {
						r.roots = append(r.roots, root{cp, a})
					}
				}
				regs = append(regs, r)
				return true
			})
		}
	}
	return regs
}

// statuses walks everything reachable from roots and returns the net/http
// Status constants named there.
func (src *moduleSource) statuses(roots []root) []int {
	seen := map[ast.Node]bool{}
	found := map[int]bool{}
	queue := slices.Clone(roots)
	for len(queue) > 0 {
		r := queue[0]
		queue = queue[1:]
		if seen[r.node] {
			continue
		}
		seen[r.node] = true
		ast.Inspect(r.node, func(n ast.Node) bool {
			id, ok := n.(*ast.Ident)
			if !ok {
				return true
			}
			switch obj := r.pkg.info.Uses[id].(type) {
			case *types.Const:
				if obj.Pkg() != nil && obj.Pkg().Path() == "net/http" && strings.HasPrefix(obj.Name(), "Status") {
					if v, ok := constant.Int64Val(obj.Val()); ok {
						found[int(v)] = true
					}
				}
			case *types.Func:
				// Methods of interfaces have no body here and are not
				// followed; see the comment at the top.
				if fb, ok := src.funcs[obj.Origin().FullName()]; ok {
					queue = append(queue, root{fb.pkg, fb.body})
				}
			case *types.Var:
				for _, lit := range r.pkg.funcVars[obj] {
					queue = append(queue, root{r.pkg, lit})
				}
			}
			return true
		})
	}
	out := make([]int, 0, len(found))
	for s := range found {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// TestOpenAPIListsEveryStatus compares, for every operation of the
// document, the statuses its handler's code can write with the responses
// the document lists, in both directions.
func TestOpenAPIListsEveryStatus(t *testing.T) {
	t.Parallel()
	var doc openAPIDoc
	if err := json.Unmarshal([]byte(service.OpenAPIDocument()), &doc); err != nil {
		t.Fatal(err)
	}
	src := loadModuleSource(t)
	byRoute := map[string][]registration{}
	for _, r := range src.registrations(t) {
		method, path, ok := strings.Cut(normalizePattern(r.pattern), " ")
		if !ok {
			continue // TestOpenAPICoversEveryRoute reports it
		}
		byRoute[method+" "+path] = append(byRoute[method+" "+path], r)
	}
	checked := 0
	for _, route := range documentedRoutes(t, doc) {
		method, path, _ := strings.Cut(route, " ")
		var op openAPIOperation
		if err := json.Unmarshal(doc.Paths[path][strings.ToLower(method)], &op); err != nil {
			t.Fatalf("%s: %v", route, err)
		}
		var listed []int
		for code := range op.Responses {
			n, err := strconv.Atoi(code)
			if err != nil {
				t.Errorf("%s: response %q is not a status: list each status the handler writes", route, code)
				continue
			}
			listed = append(listed, n)
		}
		slices.Sort(listed)

		regs := byRoute[route]
		if len(regs) != 1 {
			t.Errorf("%s: found %d registrations of it in the source, want 1: the check cannot tell its handler", route, len(regs))
			continue
		}
		reg := regs[0]
		var written []int
		if reg.external != "" {
			ext, ok := externalStatuses[route]
			if !ok {
				t.Errorf("%s: its handler comes from %s, whose statuses the check cannot read: list them in externalStatuses", route, reg.external)
				continue
			}
			written = ext
		} else {
			written = src.statuses(reg.roots)
			// A handler that writes a body without WriteHeader answers 200;
			// with no success status in its code, that is how it succeeds.
			if !slices.ContainsFunc(written, func(s int) bool { return s >= 200 && s < 300 }) {
				written = append([]int{http.StatusOK}, written...)
			}
		}
		for s, why := range unreachableStatuses[route] {
			i := slices.Index(written, s)
			if i < 0 {
				t.Errorf("%s: %d is in unreachableStatuses (%s) but the walk no longer finds it: delete the entry", route, s, why)
				continue
			}
			written = slices.Delete(written, i, i+1)
		}
		checked++
		for _, s := range written {
			if !slices.Contains(listed, s) {
				t.Errorf("%s: the handler (registered at %s) can answer %d, which service/openapi.json does not list", route, reg.where, s)
			}
		}
		for _, s := range listed {
			if !slices.Contains(written, s) {
				t.Errorf("%s: service/openapi.json lists %d, which no code reachable from the handler (registered at %s) writes", route, s, reg.where)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no operation was checked: the source walk is broken")
	}
}
