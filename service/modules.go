package service

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"

	"github.com/cohortsync/cohortsync/internal/httproute"
)

// module is one part of serve as Run sees it: the routes it answers, the
// check it adds to /readyz and what must be closed when serve stops. Run
// builds the parts in order as a list of modules; routes, readiness and
// shutdown all walk that one list, so adding a part is one entry.
type module struct {
	// name labels the module in logs.
	name string
	// routes registers the module's handlers; nil for none.
	routes func(httproute.Router)
	// ready reports why the module is not healthy; nil when it has no
	// check. The error is logged, never sent: it may name addresses and
	// paths, and the health endpoints answer without authentication.
	ready func(context.Context) error
	// ingest marks the modules partner requests need (Kafka and the key
	// store): only they decide /readyz, the readiness probe, so that an
	// outage of a sink (ClickHouse, a full disk) does not take the pods out
	// of the Service while ingest still works. The others report on
	// /health/pipeline.
	ingest bool
	// close releases the module; nil for nothing.
	close func() error
}

// modules is the list Run builds, in start order. The modules over the
// stream's state are added while the server already answers health checks,
// so the list is guarded.
type modules struct {
	mu   sync.Mutex
	list []module
	log  *slog.Logger
}

func (m *modules) add(mod module) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.list = append(m.list, mod)
}

// snapshot is the list as it is now; checks and closes run outside the lock.
func (m *modules) snapshot() []module {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.list)
}

// register hands every module's routes to r, in start order.
func (m *modules) register(r httproute.Router) {
	for _, mod := range m.snapshot() {
		if mod.routes != nil {
			mod.routes(r)
		}
	}
}

// failing returns the names of the modules whose check fails, in start
// order, among the ingest modules or the others; each failure is logged at
// debug level with its reason.
func (m *modules) failing(ctx context.Context, ingest bool) []string {
	var out []string
	for _, mod := range m.snapshot() {
		if mod.ready == nil || mod.ingest != ingest {
			continue
		}
		if err := mod.ready(ctx); err != nil {
			m.log.DebugContext(ctx, "health check failing", "module", mod.name, "err", err)
			out = append(out, mod.name)
		}
	}
	return out
}

// close closes the modules in reverse start order, so each closes before
// what it depends on (the segments API before the stream, the stream before
// Kafka), logging and returning every failure.
func (m *modules) close() error {
	var errs []error
	for _, mod := range slices.Backward(m.snapshot()) {
		if mod.close == nil {
			continue
		}
		if err := mod.close(); err != nil {
			m.log.Error("close", "module", mod.name, "err", err)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
