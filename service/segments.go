package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/segments"
	"github.com/cohortsync/cohortsync/segments/api"
	"github.com/cohortsync/cohortsync/segments/filter"
	"github.com/cohortsync/cohortsync/segments/saved"
	"github.com/cohortsync/cohortsync/service/stateofrecord"
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

// freshnessInterval is how often the cohort freshness gauges are refreshed;
// cohorts go stale over periods of many minutes, so this is fresh enough.
const freshnessInterval = 15 * time.Second

// firstFreshnessTimeout bounds the refresh made at start-up.
const firstFreshnessTimeout = 5 * time.Second

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

	record := st.Record()
	e, closeEngine, err := record.Engine(stateofrecord.EngineOptions{Logger: log, Registerer: reg})
	if err != nil {
		return fail(fmt.Errorf("service: %w", err))
	}
	closers = append(closers, closeEngine)
	s.engine = e
	// Backfilled workspaces may have data but no key; the embedded store
	// can list them, ClickHouse answers none.
	workspaces := func() []string {
		ws := core.Keys.Workspaces()
		if more, err := record.Workspaces(); err == nil {
			ws = append(ws, more...)
		} else {
			log.Warn("list workspaces of the state of record", "err", err)
		}
		slices.Sort(ws)
		return slices.Compact(ws)
	}
	fresh := segments.NewFreshnessCollector(s.engine, workspaces, nil, log)
	if err := reg.Register(fresh); err != nil {
		return fail(fmt.Errorf("service: cohort freshness metrics: %w", err))
	}
	// The gauges are refreshed here, never on a scrape: /metrics must answer
	// at once whatever the size of the tables or the state of ClickHouse.
	// The first refresh is made here, bounded, so the gauges are there from
	// the first scrape; a store that does not answer in time only delays
	// them to the next round.
	firstCtx, cancelFirst := context.WithTimeout(ctx, firstFreshnessTimeout)
	if err := fresh.Refresh(firstCtx); err != nil {
		log.Warn("cohort freshness: first refresh failed; retrying in the background", "err", err)
	}
	cancelFirst()
	freshCtx, stopFresh := context.WithCancel(context.WithoutCancel(ctx))
	freshDone := make(chan struct{})
	go func() {
		defer close(freshDone)
		fresh.Run(freshCtx, freshnessInterval)
	}()
	closers = append(closers, func() error {
		stopFresh()
		<-freshDone
		reg.Unregister(fresh)
		return nil
	})

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
