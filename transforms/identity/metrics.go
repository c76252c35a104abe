package identity

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
)

const (
	kindExternal = iota
	kindDevice
	kindAlias
	kindAll // a whole record refused before its ids were looked at
	numKinds
)

const (
	resultMatched = iota
	resultUnknown
	resultOfIdentified
	resultTooMany
	numResults
)

// tally counts one batch locally, so that the shared counters are touched
// once per batch rather than once per id.
type tally struct {
	counts [numKinds][numResults]int64
}

func (t *tally) rejected() int64 {
	var n int64
	for k := range t.counts {
		for r := resultUnknown; r < numResults; r++ {
			n += t.counts[k][r]
		}
	}
	return n
}

type metrics struct {
	ids *prometheus.CounterVec
	// byTally holds the series of every cell of a tally, resolved once.
	byTally [numKinds][numResults]prometheus.Counter

	reg        prometheus.Registerer
	registered bool
}

func newMetrics() *metrics {
	m := &metrics{
		ids: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "cohortsync", Subsystem: "identity", Name: "ids_total",
			Help: "Ids of membership changes looked up in the identity directory, by kind and result.",
		}, []string{"kind", "result"}),
	}
	kinds := [numKinds]string{schemas.IDKindExternalID, schemas.IDKindDeviceID, schemas.IDKindAlias, "any"}
	results := [numResults]string{"matched", pipeline.ReasonUnknownUser, pipeline.ReasonDeviceIDOfIdentifiedUser, ReasonTooManyIDs}
	// Only the combinations that can occur, so that every series shown means something.
	for _, c := range [][2]int{
		{kindExternal, resultMatched}, {kindExternal, resultUnknown},
		{kindDevice, resultMatched}, {kindDevice, resultUnknown}, {kindDevice, resultOfIdentified},
		{kindAlias, resultMatched}, {kindAlias, resultUnknown},
		{kindAll, resultTooMany},
	} {
		m.byTally[c[0]][c[1]] = m.ids.WithLabelValues(kinds[c[0]], results[c[1]])
	}
	return m
}

func (m *metrics) add(t *tally) {
	for k := range t.counts {
		for r, n := range t.counts[k] {
			if n > 0 && m.byTally[k][r] != nil {
				m.byTally[k][r].Add(float64(n))
			}
		}
	}
}

func (m *metrics) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	if err := reg.Register(m.ids); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			return fmt.Errorf("register metrics: another identity resolver is registered on the same registry: %w", err)
		}
		return fmt.Errorf("register metrics: %w", err)
	}
	m.reg, m.registered = reg, true
	return nil
}

func (m *metrics) unregister() {
	if m.registered {
		m.reg.Unregister(m.ids)
		m.registered = false
	}
}
