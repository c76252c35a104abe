package embedded_test

import (
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/segments/embedded"
	"github.com/cohortsync/cohortsync/segments/segmentstest"
	"github.com/cohortsync/cohortsync/sinks/state"
)

func openStore(t testing.TB) *state.Store {
	t.Helper()
	s, err := state.Open(state.DefaultConfig(t.TempDir()), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func newEngine(t testing.TB, s *state.Store) *embedded.Engine {
	t.Helper()
	e, err := embedded.New(s, embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestCorpus(t *testing.T) {
	t.Parallel()
	c := segmentstest.New()
	s := openStore(t)
	if err := c.Write(testkit.DetachedContext(t, 30*time.Second), s); err != nil {
		t.Fatal(err)
	}
	segmentstest.Run(t, newEngine(t, s), c)
}
