package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/segments"
	"github.com/cohortsync/cohortsync/segments/api"
	segch "github.com/cohortsync/cohortsync/segments/clickhouse"
	"github.com/cohortsync/cohortsync/segments/embedded"
	"github.com/cohortsync/cohortsync/segments/filter"
	"github.com/cohortsync/cohortsync/segments/saved"
	"github.com/cohortsync/cohortsync/stores/adminauth"
)

// segmentsAPI is the query side: the engine over whichever store holds the
// state of record, the saved segments and their HTTP API.
type segmentsAPI struct {
	api    *api.API
	saved  *saved.Store
	engine segments.Engine
	close  func() error
}

// openSegments picks the engine that reads the state of record: ClickHouse
// when configured, else the embedded store the stream writes.
func openSegments(ctx context.Context, cfg config.Config, core *Core, st *Stream, auth adminauth.Authorizer, log *slog.Logger, reg prometheus.Registerer) (*segmentsAPI, error) {
	s := &segmentsAPI{}
	var closers []func() error
	s.close = func() error {
		var errs []error
		for _, c := range slices.Backward(closers) {
			errs = append(errs, c())
		}
		return errors.Join(errs...)
	}
	fail := func(err error) (*segmentsAPI, error) { return nil, errors.Join(err, s.close()) }

	workspaces := core.Keys.Workspaces
	if st.ClickHouse() != nil {
		e, err := segch.New(cfg.ClickHouse.SinkConfig(), segch.Options{Logger: log, Registerer: reg})
		if err != nil {
			return fail(fmt.Errorf("service: clickhouse segments engine: %w", err))
		}
		closers = append(closers, e.Close)
		s.engine = e
	} else {
		e, err := embedded.New(st.State(), embedded.Options{Logger: log, Registerer: reg})
		if err != nil {
			return fail(fmt.Errorf("service: embedded segments engine: %w", err))
		}
		s.engine = e
		// Backfilled workspaces may have data but no key.
		workspaces = func() []string {
			ws := core.Keys.Workspaces()
			if more, err := st.State().Workspaces(); err == nil {
				ws = append(ws, more...)
			} else {
				log.Warn("list workspaces of the state store", "err", err)
			}
			slices.Sort(ws)
			return slices.Compact(ws)
		}
	}
	if err := reg.Register(segments.NewFreshnessCollector(s.engine, workspaces, nil)); err != nil {
		return fail(fmt.Errorf("service: cohort freshness metrics: %w", err))
	}

	store, err := saved.Open(ctx, core.Kafka, saved.Options{Logger: log, Registerer: reg})
	if err != nil {
		return fail(fmt.Errorf("service: saved segments: %w", err))
	}
	closers = append(closers, store.Close)
	s.saved = store
	a, err := api.New(api.Options{
		Engine: s.engine,
		Saved:  store,
		Auth:   auth,
		ValidateFilter: func(raw json.RawMessage) error {
			_, err := filter.Parse(raw)
			return err
		},
		Logger:     log,
		Registerer: reg,
	})
	if err != nil {
		return fail(fmt.Errorf("service: segments api: %w", err))
	}
	s.api = a
	return s, nil
}
