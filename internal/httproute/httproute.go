// Package httproute lets HTTP APIs register routes on a router that can also
// tell which patterns were registered, so the OpenAPI document can be checked
// against the server's real route table.
package httproute

import (
	"net/http"
	"slices"
	"sync"
)

// Router is what an API's Register method needs. *http.ServeMux satisfies it.
type Router interface {
	Handle(pattern string, handler http.Handler)
}

// Recorder is a Router that registers on Mux and remembers every pattern.
type Recorder struct {
	Mux *http.ServeMux

	mu       sync.Mutex
	patterns []string
}

// NewRecorder returns a Recorder over a new ServeMux.
func NewRecorder() *Recorder { return &Recorder{Mux: http.NewServeMux()} }

// Handle registers handler on the mux and records pattern.
func (r *Recorder) Handle(pattern string, handler http.Handler) {
	r.Mux.Handle(pattern, handler)
	r.mu.Lock()
	r.patterns = append(r.patterns, pattern)
	r.mu.Unlock()
}

// HandleFunc is Handle for a function.
func (r *Recorder) HandleFunc(pattern string, f func(http.ResponseWriter, *http.Request)) {
	r.Handle(pattern, http.HandlerFunc(f))
}

// Patterns returns the registered patterns, sorted.
func (r *Recorder) Patterns() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Clone(r.patterns)
	slices.Sort(out)
	return out
}
