package promreg_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync/internal/promreg"
)

func counter(name string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: name})
}

func TestRegisterTakesBackOnFailureAndUnregisters(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	var first promreg.Registration
	if err := first.Register(reg, "widget", counter("a"), counter("b")); err != nil {
		t.Fatal(err)
	}
	var second promreg.Registration
	err := second.Register(reg, "widget", counter("c"), counter("a"))
	if err == nil || !strings.Contains(err.Error(), "another widget is registered") {
		t.Fatalf("second registration: %v", err)
	}
	// "c" was taken back: registering it again works.
	if err := reg.Register(counter("c")); err != nil {
		t.Fatalf("c was left registered: %v", err)
	}
	first.Unregister()
	var third promreg.Registration
	if err := third.Register(reg, "", counter("a"), counter("b")); err != nil {
		t.Fatalf("after Unregister: %v", err)
	}
	var none promreg.Registration
	if err := none.Register(nil, "widget", counter("a")); err != nil {
		t.Fatalf("nil registry: %v", err)
	}
	none.Unregister()
}
