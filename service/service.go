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
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/connectors/backfill"
	"github.com/cohortsync/cohortsync/connectors/partnerapi"
	"github.com/cohortsync/cohortsync/internal/httproute"
	"github.com/cohortsync/cohortsync/jobs/snapshot"
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
	// Ready, when set, is called with the HTTP address once requests are accepted.
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
	reg := prometheus.NewRegistry()
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

	st, err := startStream(ctx, cfg, core, log, reg, StreamOptions{})
	if err != nil {
		return err
	}
	mods.add(module{name: "stream", ready: func(context.Context) error { return st.Healthy() }, close: st.Stop})

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
		return errors.Join(fmt.Errorf("service: partner api: %w", err), lander.Close())
	}
	mods.add(module{name: "partner api", routes: api.Register, close: lander.Close})

	tokens, err := adminauth.OpenTokenStore(ctx, core.Kafka, adminauth.TokenStoreOptions{Logger: log, Registerer: reg})
	if err != nil {
		return fmt.Errorf("service: workspace tokens: %w", err)
	}
	mods.add(module{name: "workspace tokens", close: tokens.Close, ready: func(context.Context) error {
		if err := tokens.Healthy(); err != nil {
			return fmt.Errorf("workspace tokens: %w", err)
		}
		return nil
	}})
	// Local commands (a backfill on the same --data-dir) work through this
	// server with a token of this start's own, found in LocalServerFile.
	localToken, err := adminauth.GenerateToken()
	if err != nil {
		return fmt.Errorf("service: local token: %w", err)
	}
	localAdmin, err := adminauth.NewAdminToken(localToken)
	if err != nil {
		return fmt.Errorf("service: local token: %w", err)
	}
	auth, err := adminauth.NewScoped(creds.admin, tokens, localAdmin)
	if err != nil {
		return fmt.Errorf("service: authorizer: %w", err)
	}
	tokAPI, err := adminauth.NewTokenAPI(tokens, auth, log)
	if err != nil {
		return fmt.Errorf("service: token api: %w", err)
	}
	mods.add(module{name: "token api", routes: tokAPI.Register})
	admin, err := keys.NewAdminAPI(core.Keys, auth, func(name string) bool { _, ok := creds.partners[name]; return ok }, log)
	if err != nil {
		return fmt.Errorf("service: admin api: %w", err)
	}
	mods.add(module{name: "keys api", routes: admin.Register})
	idCfg := identities.DefaultConfig(cfg.DataDir)
	loader, err := identities.NewLoader(core.Kafka, idCfg, reg)
	if err != nil {
		return fmt.Errorf("service: identities loader: %w", err)
	}
	idAPI, err := identities.NewAdminAPI(loader, auth, idCfg, log)
	if err != nil {
		return fmt.Errorf("service: identities api: %w", err)
	}
	mods.add(module{name: "identities api", routes: idAPI.Register})
	snapAPI, err := snapshot.NewAPI(st.Snapshots(), auth, log)
	if err != nil {
		return fmt.Errorf("service: snapshot api: %w", err)
	}
	mods.add(module{name: "snapshot api", routes: snapAPI.Register})
	bfDest, err := BackfillDestination(cfg, st.Directory(), lander, log)
	if err != nil {
		return err
	}
	bfAPI, err := backfill.NewAPI(bfDest, auth, log)
	if err != nil {
		return fmt.Errorf("service: backfill api: %w", err)
	}
	mods.add(module{name: "backfill api", routes: bfAPI.Register})
	segAPI, err := openSegments(ctx, cfg, core, st, auth, log, reg)
	if err != nil {
		return err
	}
	mods.add(module{name: "segments", routes: segAPI.api.Register, close: segAPI.close, ready: func(context.Context) error {
		if err := segAPI.saved.Healthy(); err != nil {
			return fmt.Errorf("saved segments: %w", err)
		}
		return nil
	}})

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
	routes.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	routes.HandleFunc("GET /openapi.json", serveOpenAPI)
	if opts.Routes != nil {
		opts.Routes(routes.Patterns())
	}

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
	removeLocal, err := writeLocalServer(cfg.DataDir, LocalServer{
		PID: os.Getpid(), URL: localURL(addr), KafkaBrokers: core.kafkaBrokers(), Token: localToken,
	})
	if err != nil {
		_ = srv.Close()
		return err
	}
	defer func() {
		if err := removeLocal(); err != nil {
			log.Warn("remove the local server file", "err", err)
		}
	}()
	ready.Store(true)
	log.Info("cohortsync serving", "http_addr", addr, "workspace_of_first_key", FirstWorkspace)
	printServing(opts.Out, localURL(addr), core.kafkaBrokers(), core.Broker != nil, cfg.DataDir)
	printTryIt(opts.Out, localURL(addr), creds, firstKey)
	if opts.Ready != nil {
		opts.Ready(addr)
	}

	select {
	case err := <-serveErr:
		return fmt.Errorf("service: http server: %w", err)
	case <-ctx.Done():
	}
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
