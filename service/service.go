// Package service wires the parts of `cohortsync serve` together: the embedded
// or external Kafka, the key store, the HTTP APIs, health and metrics.
package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/connectors/backfill"
	"github.com/cohortsync/cohortsync/connectors/partnerapi"
	"github.com/cohortsync/cohortsync/internal/httpjson"
	"github.com/cohortsync/cohortsync/internal/httproute"
	"github.com/cohortsync/cohortsync/internal/promguard"
	"github.com/cohortsync/cohortsync/jobs/snapshot"
	"github.com/cohortsync/cohortsync/kafka"
	"github.com/cohortsync/cohortsync/stores/adminauth"
	"github.com/cohortsync/cohortsync/stores/identities"
	"github.com/cohortsync/cohortsync/stores/keys"
)

// FirstWorkspace is the workspace of the data import key created at first start.
const FirstWorkspace = "default"

// Options are the parts of a run that tests and the CLI choose.
type Options struct {
	// Out receives the one-time first-start banner (secrets), never the logs.
	Out io.Writer
	// Ingesting, when set, is called with the HTTP address once partner
	// requests are taken, before the stream starts; the stream waits for it
	// to return.
	Ingesting func(addr string)
	// Ready, when set, is called with the HTTP address once every API
	// answers: the stream has caught up with the identity directory.
	Ready func(addr string)
	// DebugReady, when set, is called with the bound address of the
	// profiles listener (debug_addr), before the API listens.
	DebugReady func(addr string)
	// Routes, when set, is called with every registered route pattern
	// before the server listens; the OpenAPI test compares them with the document.
	Routes func(patterns []string)
}

// Run serves until ctx is cancelled, then drains and returns.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, opts Options) error {
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	registry := prometheus.NewRegistry()
	// Every component registers through the guard: a collector that hangs,
	// panics or sends an invalid metric is left out of the scrape and
	// counted, so /metrics keeps answering during the outages its alerts
	// are about.
	guard := promguard.New(collectorBudget, log)
	registry.MustRegister(guard)
	reg := guard.Registerer(registry)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	mods := &modules{log: log}
	defer func() { _ = mods.close() }()

	// Credentials first: whatever fails later in this start (Kafka,
	// ClickHouse), the user has the admin token by then. What was not shown
	// (a start that failed before this point) is shown now.
	creds, err := bootstrap(cfg.DataDir, cfg)
	if err != nil {
		return err
	}
	if printCredentials(opts.Out, creds) {
		if err := creds.markShown(); err != nil {
			return fmt.Errorf("service: record that the credentials were shown: %w", err)
		}
	}

	core, err := OpenCore(ctx, cfg, log, reg)
	if err != nil {
		return err
	}
	mods.add(module{name: "kafka and keys", ingest: true, ready: func(ctx context.Context) error { return readiness(ctx, core) }, close: core.Close})
	if cfg.DebugAddr != "" {
		debugAddr, stopDebug, err := startDebug(cfg.DebugAddr, log)
		if err != nil {
			return err
		}
		mods.add(module{name: "debug", close: stopDebug})
		if opts.DebugReady != nil {
			opts.DebugReady(debugAddr)
		}
	}

	firstKey, err := ensureFirstKey(ctx, core, &creds, opts.Out)
	if err != nil {
		return err
	}

	// Ingest first: the partner API needs Kafka and the keys only, so it
	// listens before the stream has caught up with the identity directory,
	// which takes minutes for millions of users. The stream module stands
	// in its place from here, "starting" until the stream runs.
	var stream atomic.Pointer[Stream]
	mods.add(module{
		name: "stream",
		ready: func(context.Context) error {
			if st := stream.Load(); st != nil {
				return st.Healthy()
			}
			return errors.New("starting: catching up with the identity directory")
		},
		close: func() error {
			if st := stream.Load(); st != nil {
				return st.Stop()
			}
			return nil
		},
	})
	in, err := startIngest(ctx, cfg, core, creds, mods, log, reg)
	if err != nil {
		return err
	}

	routes := httproute.NewRecorder()
	mux := routes.Mux
	mods.register(routes)
	var ready atomic.Bool
	routes.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	// Readiness means "can take partner requests": Kafka and the key store.
	// The stream, its sinks and the stores above them answer apart, on
	// /health/pipeline: what an operator alerts on. The bodies name
	// modules, never addresses or paths (no authentication here); the
	// reasons are in the log.
	health := func(ingest bool, prefix, suffix string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if !ready.Load() {
				http.Error(w, "starting", http.StatusServiceUnavailable)
				return
			}
			if failing := mods.failing(r.Context(), ingest); len(failing) > 0 {
				http.Error(w, prefix+strings.Join(failing, ", ")+suffix, http.StatusServiceUnavailable)
				return
			}
			_, _ = io.WriteString(w, "ok")
		}
	}
	routes.HandleFunc("GET /readyz", health(true, "not ready: ", ""))
	routes.HandleFunc("GET /health/pipeline", health(false, "failing: ", " (the log and /metrics say why)"))
	routes.Handle("GET /metrics", metricsHandler(registry, log))
	routes.HandleFunc("GET /openapi.json", serveOpenAPI)
	// The APIs over the stream's state register on a mux of their own once
	// the stream runs; until then every other /v1/ path answers 503.
	var later atomic.Pointer[http.ServeMux]
	routes.Handle("/v1/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if m := later.Load(); m != nil {
			m.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Retry-After", "5")
		httpjson.Error(w, http.StatusServiceUnavailable, "starting: the stream is catching up with the identity directory; partner requests are taken meanwhile")
	}))

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("service: listen on %s: %w", cfg.HTTPAddr, err)
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	addr := ln.Addr().String()
	shutdown := func() error {
		// Stop taking requests first; in-flight ones finish landing before Kafka closes.
		ready.Store(false)
		log.Info("shutting down", "deadline", cfg.ShutdownTimeout)
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("service: shutdown: %w", err)
		}
		return nil
	}
	removeLocal, err := writeLocalServer(cfg.DataDir, LocalServer{
		PID: os.Getpid(), URL: localURL(addr), KafkaBrokers: core.kafkaBrokers(), Token: in.local,
	})
	if err != nil {
		return errors.Join(err, shutdown())
	}
	defer func() {
		if err := removeLocal(); err != nil {
			log.Warn("remove the local server file", "err", err)
		}
	}()
	ready.Store(true)
	log.Info("cohortsync serving: partner requests are taken; the stream starts", "http_addr", addr, "workspace_of_first_key", FirstWorkspace)
	printServing(opts.Out, localURL(addr), core.kafkaBrokers(), core.Broker != nil, cfg.DataDir)
	printTryIt(opts.Out, localURL(addr), creds, firstKey)
	if opts.Ingesting != nil {
		opts.Ingesting(addr)
	}

	st, err := startStream(ctx, cfg, core, log, reg, StreamOptions{})
	if err != nil {
		if ctx.Err() != nil {
			// Stopped while the stream was catching up: a normal stop.
			return shutdown()
		}
		return errors.Join(err, shutdown())
	}
	stream.Store(st)
	laterRoutes := httproute.NewRecorder()
	if err := startStreamAPIs(ctx, cfg, core, st, in, mods, laterRoutes, log, reg); err != nil {
		return errors.Join(err, shutdown())
	}
	later.Store(laterRoutes.Mux)
	log.Info("stream running: every API answers")
	if opts.Routes != nil {
		patterns := slices.DeleteFunc(routes.Patterns(), func(p string) bool { return p == "/v1/" })
		opts.Routes(append(patterns, laterRoutes.Patterns()...))
	}
	if opts.Ready != nil {
		opts.Ready(addr)
	}

	select {
	case err := <-serveErr:
		return fmt.Errorf("service: http server: %w", err)
	case <-ctx.Done():
	}
	return shutdown()
}

// ingest is what the ingest modules hand on: the authorizer of the admin
// routes, the token of this start that local commands find in
// LocalServerFile, and the lander of the landing topic.
type ingest struct {
	scoped *adminauth.Scoped
	local  string
	lander *kafka.Lander
}

// startIngest adds the modules partner requests and the admin API of keys,
// tokens and identities need: none of them reads the stream's state.
func startIngest(ctx context.Context, cfg config.Config, core *Core, creds credentials, mods *modules, log *slog.Logger, reg prometheus.Registerer) (ingest, error) {
	lander := core.Kafka.NewLander(core.Kafka.Config().Topics.Exports)
	api, err := partnerapi.New(partnerapi.Options{
		Config:     partnerAPIConfig(cfg),
		Partners:   creds.partners,
		Verifier:   secretVerifier{core.Keys},
		KeysFresh:  core.Keys.Healthy,
		Lander:     lander,
		Logger:     log,
		Registerer: reg,
	})
	if err != nil {
		return ingest{}, errors.Join(fmt.Errorf("service: partner api: %w", err), lander.Close())
	}
	mods.add(module{name: "partner api", routes: api.Register, close: lander.Close})

	tokens, err := adminauth.OpenTokenStore(ctx, core.Kafka, adminauth.TokenStoreOptions{Logger: log, Registerer: reg})
	if err != nil {
		return ingest{}, fmt.Errorf("service: workspace tokens: %w", err)
	}
	mods.add(module{name: "workspace tokens", close: tokens.Close, ready: func(context.Context) error {
		if err := tokens.Healthy(); err != nil {
			return fmt.Errorf("workspace tokens: %w", err)
		}
		return nil
	}})
	// Local commands (a backfill on the same --data-dir) work through this
	// server with a token of this start's own, found in LocalServerFile.
	local, err := adminauth.GenerateToken()
	if err != nil {
		return ingest{}, fmt.Errorf("service: local token: %w", err)
	}
	localAdmin, err := adminauth.NewAdminToken(local)
	if err != nil {
		return ingest{}, fmt.Errorf("service: local token: %w", err)
	}
	auth, err := adminauth.NewScoped(creds.admin, tokens, localAdmin)
	if err != nil {
		return ingest{}, fmt.Errorf("service: authorizer: %w", err)
	}
	tokAPI, err := adminauth.NewTokenAPI(tokens, auth, log)
	if err != nil {
		return ingest{}, fmt.Errorf("service: token api: %w", err)
	}
	mods.add(module{name: "token api", routes: tokAPI.Register})
	admin, err := keys.NewAdminAPI(core.Keys, auth, func(name string) bool { _, ok := creds.partners[name]; return ok }, log)
	if err != nil {
		return ingest{}, fmt.Errorf("service: admin api: %w", err)
	}
	mods.add(module{name: "keys api", routes: admin.Register})
	idCfg := identities.DefaultConfig(cfg.DataDir)
	loader, err := identities.NewLoader(core.Kafka, idCfg, reg)
	if err != nil {
		return ingest{}, fmt.Errorf("service: identities loader: %w", err)
	}
	idAPI, err := identities.NewAdminAPI(loader, auth, idCfg, log)
	if err != nil {
		return ingest{}, fmt.Errorf("service: identities api: %w", err)
	}
	mods.add(module{name: "identities api", routes: idAPI.Register})
	return ingest{scoped: auth, local: local, lander: lander}, nil
}

// startStreamAPIs adds the modules over the stream's state (snapshots,
// backfill, segments and data points) and registers their routes on r.
func startStreamAPIs(ctx context.Context, cfg config.Config, core *Core, st *Stream, in ingest, mods *modules, r *httproute.Recorder, log *slog.Logger, reg prometheus.Registerer) error {
	auth := in.scoped
	var added []module
	add := func(m module) { added = append(added, m); mods.add(m) }
	snapAPI, err := snapshot.NewAPI(st.Snapshots(), auth, log)
	if err != nil {
		return fmt.Errorf("service: snapshot api: %w", err)
	}
	add(module{name: "snapshot api", routes: snapAPI.Register})
	bfDest, err := BackfillDestination(cfg, st.Directory(), in.lander, log)
	if err != nil {
		return err
	}
	// Requests arrive over time, with identity loads between them: each
	// batch is counted once the directory has applied every identity landed
	// before it, so a dry run right after `identities load` does not call
	// the new users unknown. A local backfill waits once, at its start.
	bfDest.CaughtUp = st.Directory().WaitApplied
	bfAPI, err := backfill.NewAPI(bfDest, auth, log)
	if err != nil {
		return fmt.Errorf("service: backfill api: %w", err)
	}
	add(module{name: "backfill api", routes: bfAPI.Register})
	segAPI, err := openSegments(ctx, cfg, core, st, auth, log, reg)
	if err != nil {
		return err
	}
	add(module{name: "segments", routes: segAPI.api.Register, close: segAPI.close, ready: func(context.Context) error {
		if err := segAPI.saved.Healthy(); err != nil {
			return fmt.Errorf("saved segments: %w", err)
		}
		return nil
	}})
	for _, m := range added {
		if m.routes != nil {
			m.routes(r)
		}
	}
	return nil
}

// collectorBudget is how long a scrape waits for one collector. Collectors
// read memory and answer in microseconds, so only one that hangs ever meets
// it, and then in one scrape only: the next ones skip it while it still
// runs. It is far above what a loaded machine takes to schedule a
// goroutine, so that no gauge is dropped for slowness, and far below
// Prometheus's 10 s scrape timeout.
const collectorBudget = time.Second

// metricsHandler serves /metrics from reg. An error of the registry itself
// (two collectors reporting the same series, say) leaves out what it
// concerns instead of answering 500: the scrape is what tells an operator
// that something is wrong, so it must not fail with it. Such errors are
// logged and counted in promhttp_metric_handler_errors_total{cause="gathering"}.
func metricsHandler(reg *prometheus.Registry, log *slog.Logger) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry:      reg,
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      promErrorLog{log},
	})
}

// promErrorLog hands promhttp's errors to the service's log.
type promErrorLog struct{ log *slog.Logger }

func (l promErrorLog) Println(v ...any) {
	l.log.Warn("metrics scrape: some metrics left out", "err", strings.TrimSpace(fmt.Sprintln(v...)))
}

// readiness is false while the key store lags behind its topic or Kafka is unreachable.
func readiness(ctx context.Context, core *Core) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := core.Kafka.PartitionEnds(ctx, core.Kafka.Config().Topics.Exports); err != nil {
		return fmt.Errorf("kafka unreachable: %w", err)
	}
	if err := core.Keys.Healthy(); err != nil {
		return fmt.Errorf("key store: %w", err)
	}
	return nil
}

// partnerAPIConfig derives the partner API limits from the ingest settings; a
// landed record must fit one Kafka message, with room for the batch framing.
func partnerAPIConfig(cfg config.Config) partnerapi.Config {
	pc := partnerapi.DefaultConfig()
	pc.MaxBodyBytes = cfg.Ingest.MaxBodyBytes
	pc.RateLimitPerHour = cfg.Ingest.RateLimitPerHour
	pc.RateBurst = cfg.Ingest.RateBurst
	pc.MaxRecordBytes = cfg.Kafka.MaxMessageBytes - 4096
	pc.LandTimeout = cfg.Kafka.WriteTimeout
	return pc
}

// secretVerifier adapts the key store to what the partner API needs.
type secretVerifier struct{ store *keys.Store }

func (v secretVerifier) VerifySecret(secret string) (partnerapi.Credential, bool) {
	k, ok := v.store.VerifySecret(secret)
	if !ok {
		return partnerapi.Credential{}, false
	}
	return partnerapi.Credential{KeyID: k.ID, Workspace: k.Workspace, Partner: k.Partner}, true
}

// ensureFirstKey creates the first data import key of a fresh install and
// shows it at once, before the rest of the start can fail. The secret is
// kept in the bootstrap file between its creation and its showing, so a
// crash in between shows it at the next start. It returns the key when it
// was shown in this start.
func ensureFirstKey(ctx context.Context, core *Core, creds *credentials, out io.Writer) (string, error) {
	if !creds.firstKeyTodo() {
		return "", nil
	}
	key := creds.pendingFirstKey()
	if key == "" {
		// A fresh data directory on a shared Kafka (a new pod of a
		// scaled-out deployment) finds the keys the first instance made:
		// it makes none.
		if len(core.Keys.List(FirstWorkspace)) > 0 {
			return "", creds.firstKeyShown()
		}
		setupCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
		_, secret, err := core.Keys.Create(setupCtx, FirstWorkspace, "mixpanel", "created at first start")
		cancel()
		if err != nil {
			return "", fmt.Errorf("service: first data import key: %w", err)
		}
		if err := creds.keepFirstKey(secret); err != nil {
			return "", fmt.Errorf("service: keep the first data import key until it is shown: %w", err)
		}
		key = secret
	}
	printFirstKey(out, key)
	if err := creds.firstKeyShown(); err != nil {
		return "", fmt.Errorf("service: record that the first data import key was shown: %w", err)
	}
	return key, nil
}
