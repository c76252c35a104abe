package service

import (
	"context"
	"errors"
	"log/slog"
	"slices"

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
	// ready reports why the instance cannot take requests, with the text
	// /readyz answers; nil when the module never blocks readiness.
	ready func(context.Context) error
	// close releases the module; nil for nothing.
	close func() error
}

// modules is the list Run builds, in start order.
type modules struct {
	list []module
	log  *slog.Logger
}

func (m *modules) add(mod module) { m.list = append(m.list, mod) }

// register hands every module's routes to r, in start order.
func (m *modules) register(r httproute.Router) {
	for _, mod := range m.list {
		if mod.routes != nil {
			mod.routes(r)
		}
	}
}

// ready returns the first module's reason not to take requests, in start
// order: Kafka and the key store before the stream and the stores above it.
func (m *modules) ready(ctx context.Context) error {
	for _, mod := range m.list {
		if mod.ready == nil {
			continue
		}
		if err := mod.ready(ctx); err != nil {
			return err
		}
	}
	return nil
}

// close closes the modules in reverse start order, so each closes before
// what it depends on (the segments API before the stream, the stream before
// Kafka), logging and returning every failure.
func (m *modules) close() error {
	var errs []error
	for _, mod := range slices.Backward(m.list) {
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
