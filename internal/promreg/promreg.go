// Package promreg registers a component's collectors together and takes them
// back together, so the component can be reopened on the same registry after
// Close.
package promreg

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Registration remembers what it registered and where. The zero value is ready.
type Registration struct {
	reg        prometheus.Registerer
	registered []prometheus.Collector
}

// Register adds cs to reg; a nil reg registers nothing. On a failure it takes
// back what it added. what names the component in the error when another one
// of its kind already holds the names (empty: a plain error).
func (r *Registration) Register(reg prometheus.Registerer, what string, cs ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	r.reg = reg
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			r.Unregister()
			var are prometheus.AlreadyRegisteredError
			if what != "" && errors.As(err, &are) {
				return fmt.Errorf("register metrics: another %s is registered on the same registry: %w", what, err)
			}
			return fmt.Errorf("register metrics: %w", err)
		}
		r.registered = append(r.registered, c)
	}
	return nil
}

// Unregister takes back everything Register added.
func (r *Registration) Unregister() {
	for _, c := range r.registered {
		r.reg.Unregister(c)
	}
	r.registered = nil
}
