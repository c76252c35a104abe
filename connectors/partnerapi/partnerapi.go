// Package partnerapi is the Braze-compatible cohort import API that
// product-analytics tools push cohorts to:
//
//	POST /partners/{partner}/cohorts        create or rename a cohort
//	POST /partners/{partner}/cohorts/users  membership changes
//
// A request is checked in a fixed order (content type, size, JSON, partner,
// partner_api_key, client_secret, the key's partner, the workspace's rate,
// fields), turned into a schemas.Envelope and landed. The API answers 201 only
// after the Lander reports the record durable, so a partner that sees 201 can
// forget the request, and one that sees anything else sends it again, which
// the pipeline downstream absorbs because applying changes is idempotent.
//
// Secrets (client_secret, partner_api_key) never reach a log, a metric, an
// error body (beyond a masked form) or the landed record.
package partnerapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync/internal/httproute"
	"github.com/cohortsync/cohortsync/schemas"
)

// Credential is what a verified client secret stands for.
type Credential struct {
	KeyID     string
	Workspace string
	Partner   string
}

// SecretVerifier checks a client_secret (a data import key).
type SecretVerifier interface {
	// VerifySecret returns the key's credential, or false when the secret is
	// unknown or revoked. It must compare in constant time.
	VerifySecret(secret string) (Credential, bool)
}

// Lander writes one record to the landing log.
type Lander interface {
	// Land returns nil only once the record is durable (Kafka acks=all).
	Land(ctx context.Context, key, value []byte) error
}

// Options are the dependencies of an API.
type Options struct {
	Config Config
	// Partners maps each enabled partner, by the name used in the path, to
	// its partner_api_key.
	Partners map[string]string
	Verifier SecretVerifier
	// KeysFresh, when set, reports whether the verifier's view of revocations
	// is current; while it returns an error requests get 503, not a decision.
	KeysFresh func() error
	Lander    Lander
	// Logger receives request logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the API's metrics; nil leaves them unregistered.
	Registerer prometheus.Registerer
	// Now is the clock for record timestamps and rate limiting; nil means time.Now.
	Now func() time.Time
}

// API serves the partner endpoints. It is safe for concurrent use.
type API struct {
	cfg Config
	// partnerKeys holds SHA-256 digests of the partner_api_keys: comparing
	// fixed-size digests in constant time does not leak a key's length.
	partnerKeys map[string][sha256.Size]byte
	verifier    SecretVerifier
	keysFresh   func() error
	lander      Lander
	log         *slog.Logger
	now         func() time.Time
	limiter     *workspaceLimiter
	metrics     *metrics
}

// endpoint is one route: its metrics label and the kind of record it lands.
type endpoint struct {
	name string
	kind schemas.Kind
}

// New checks opts and returns an API. It reports every problem at once.
func New(opts Options) (*API, error) {
	var errs []error
	if err := opts.Config.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(opts.Partners) == 0 {
		errs = append(errs, errors.New("partners: at least one partner must be enabled"))
	}
	names := make([]string, 0, len(opts.Partners))
	for name := range opts.Partners {
		names = append(names, name)
	}
	slices.Sort(names)
	keys := make(map[string][sha256.Size]byte, len(opts.Partners))
	for _, name := range names {
		if name == "" || strings.Contains(name, "/") {
			errs = append(errs, fmt.Errorf("partners: %q is not a usable path segment", name))
			continue
		}
		key := opts.Partners[name]
		if key == "" {
			// An empty key would match a request that sends an empty one.
			errs = append(errs, fmt.Errorf("partners.%s: partner_api_key is empty", name))
			continue
		}
		keys[name] = sha256.Sum256([]byte(key))
	}
	if opts.Verifier == nil {
		errs = append(errs, errors.New("verifier: is required"))
	}
	if opts.Lander == nil {
		errs = append(errs, errors.New("lander: is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("partnerapi: invalid options: %w", err)
	}

	m, err := newMetrics(opts.Registerer, names)
	if err != nil {
		return nil, fmt.Errorf("partnerapi: %w", err)
	}
	cfg := opts.Config.withDefaults()
	a := &API{
		cfg:         cfg,
		partnerKeys: keys,
		verifier:    opts.Verifier,
		keysFresh:   opts.KeysFresh,
		lander:      opts.Lander,
		log:         opts.Logger,
		now:         opts.Now,
		limiter:     newWorkspaceLimiter(cfg.RateLimitPerHour, cfg.RateBurst),
		metrics:     m,
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.now == nil {
		a.now = time.Now
	}
	return a, nil
}

// Register adds the two endpoints to mux (any httproute.Router). Other methods on these paths get
// the mux's 405. Like any ServeMux registration it panics if the patterns
// are already taken, which is a wiring bug, not a runtime condition.
func (a *API) Register(mux httproute.Router) {
	mux.Handle("POST /partners/{partner}/cohorts", a.handler(endpoint{"cohorts", schemas.KindCohort}))
	mux.Handle("POST /partners/{partner}/cohorts/users", a.handler(endpoint{"cohorts_users", schemas.KindCohortChanges}))
}

// reply is a response decided by process and written by handler, which keeps
// every path through process accounted for in the metrics.
type reply struct {
	status     int
	body       string
	json       bool
	retryAfter int64 // seconds; 0 means no header
}

func textReply(status int, body string) reply { return reply{status: status, body: body} }

func (a *API) handler(ep endpoint) http.Handler {
	requests := a.metrics.requests.MustCurryWith(prometheus.Labels{"endpoint": ep.name})
	duration := a.metrics.duration.WithLabelValues(ep.name)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		var q *quota
		rep := a.process(ep, w, r, &q)
		h := w.Header()
		if q != nil {
			// Known once the request is authenticated: the bucket is
			// the workspace's.
			h.Set("X-RateLimit-Limit", strconv.Itoa(q.limit))
			h.Set("X-RateLimit-Remaining", strconv.Itoa(q.remaining))
			h.Set("X-RateLimit-Reset", strconv.FormatInt(q.reset.Unix(), 10))
		}
		if rep.json {
			h.Set("Content-Type", "application/json")
		} else {
			h.Set("Content-Type", "text/plain; charset=utf-8")
		}
		h.Set("X-Content-Type-Options", "nosniff")
		if rep.retryAfter > 0 {
			h.Set("Retry-After", strconv.FormatInt(rep.retryAfter, 10))
		}
		h.Set("Content-Length", strconv.Itoa(len(rep.body)))
		w.WriteHeader(rep.status)
		// A failed write means the client went away; there is no one left to tell.
		_, _ = io.WriteString(w, rep.body)
		requests.WithLabelValues(strconv.Itoa(rep.status)).Inc()
		duration.Observe(time.Since(start).Seconds())
	})
}

// process runs the checks in the documented order and lands the request.
// Once the request is authenticated it sets *q to the workspace's quota.
func (a *API) process(ep endpoint, w http.ResponseWriter, r *http.Request, q **quota) reply {
	partner := r.PathValue("partner")
	log := a.log.With(slog.String("endpoint", ep.name), slog.String("partner", clip(partner)))

	if msg := contentTypeProblem(r.Header.Get("Content-Type")); msg != "" {
		log.Debug("request refused", slog.String("reason", "content type"))
		return textReply(http.StatusBadRequest, msg)
	}
	body, rep, ok := a.readBody(w, r)
	if !ok {
		log.Debug("request refused", slog.String("reason", "body"), slog.Int("status", rep.status))
		return rep
	}
	// A changes body in the usual compact form is read in one pass; every
	// other body, and every one that is refused, is decoded field by field.
	var (
		f       fields
		msg     string
		parsed  changesBody
		scanned bool
	)
	if ep.kind != schemas.KindCohort {
		parsed, scanned = scanChanges(body)
	}
	if !scanned {
		if f, msg = decodeObject(body); msg != "" {
			log.Debug("request refused", slog.String("reason", msg))
			return textReply(http.StatusBadRequest, msg)
		}
		parsed.apiKey, _ = stringField(f, "partner_api_key")
		parsed.secret, parsed.hasSecret = stringField(f, "client_secret")
	}

	// Authentication. Nothing about a secret is logged, not even its
	// length: the key id, once known, is what identifies the caller.
	wantKey, known := a.partnerKeys[partner]
	if !known {
		log.Debug("request refused", slog.String("reason", "partner not enabled"))
		return textReply(http.StatusUnauthorized, msgUnauthorized)
	}
	gotKey := sha256.Sum256([]byte(parsed.apiKey))
	if subtle.ConstantTimeCompare(gotKey[:], wantKey[:]) != 1 {
		log.Debug("request refused", slog.String("reason", "partner_api_key"))
		return textReply(http.StatusUnauthorized, msgPartnerAPIKey)
	}
	secret := parsed.secret
	if !parsed.hasSecret || secret == "" {
		log.Debug("request refused", slog.String("reason", "client_secret missing"))
		return textReply(http.StatusUnauthorized, msgClientSecret)
	}
	if a.keysFresh != nil {
		// A key store that lost its feed could miss a revocation made on
		// another instance: refuse to decide rather than accept a revoked key.
		if err := a.keysFresh(); err != nil {
			log.Warn("key store not current, refusing to authenticate", slog.String("err", err.Error()))
			return reply{status: http.StatusServiceUnavailable, body: msgUnavailable, retryAfter: 1}
		}
	}
	cred, ok := a.verifier.VerifySecret(secret)
	if !ok {
		log.Debug("request refused", slog.String("reason", "client_secret unknown or revoked"))
		return textReply(http.StatusUnauthorized, msgClientSecret)
	}
	log = log.With(slog.String("key_id", cred.KeyID), slog.String("workspace", cred.Workspace))
	if cred.Partner != partner {
		log.Debug("request refused", slog.String("reason", "key belongs to another partner"), slog.String("key_partner", cred.Partner))
		return textReply(http.StatusUnauthorized, msgPartnerNotEnabled+maskSecret(secret, cred.KeyID))
	}

	now := a.now()
	allowed, wait := a.limiter.allow(cred.Workspace, now)
	quota := a.limiter.quotaAt(cred.Workspace, now, a.cfg.RateLimitPerHour)
	*q = &quota
	if !allowed {
		log.Debug("request refused", slog.String("reason", "rate limit"), slog.Duration("retry_after", wait))
		return reply{status: http.StatusTooManyRequests, body: msgRateLimited, retryAfter: retryAfterSeconds(wait)}
	}

	var payload schemas.Payload
	ids := 0

	switch {
	case ep.kind == schemas.KindCohort:
		payload, msg = parseCohort(f)
	case scanned:
		payload, ids = parsed.payload, parsed.ids
	default:
		payload, ids, msg = parseChanges(f)
	}
	if msg != "" {
		log.Debug("request refused", slog.String("reason", "invalid field"), slog.String("message", msg))
		return textReply(http.StatusBadRequest, msg)
	}
	return a.land(r.Context(), log, partner, cred, now, payload, ids)
}

// readBody reads the whole body within MaxBodyBytes. On failure it returns
// the reply to send and false.
func (a *API) readBody(w http.ResponseWriter, r *http.Request) ([]byte, reply, bool) {
	limit := int64(a.cfg.MaxBodyBytes)
	// A declared length over the limit is refused before reading a byte.
	if r.ContentLength > limit {
		return nil, textReply(http.StatusRequestEntityTooLarge, msgTooLarge), false
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit)); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, textReply(http.StatusRequestEntityTooLarge, msgTooLarge), false
		}
		// The client broke off the upload or sent a broken chunked body.
		return nil, textReply(http.StatusBadRequest, msgNotObject), false
	}
	return buf.Bytes(), reply{}, true
}

// land builds the envelope, lands it and answers 201 only once it is durable.
func (a *API) land(ctx context.Context, log *slog.Logger, partner string, cred Credential, now time.Time, payload schemas.Payload, ids int) reply {
	recordID, err := schemas.NewRecordID()
	if err != nil {
		log.Error("cannot create a record id", slog.Any("error", err))
		return textReply(http.StatusInternalServerError, msgInternal)
	}
	now = now.UTC()
	env := schemas.Envelope{
		SchemaVersion: schemas.CurrentVersion,
		RecordID:      recordID,
		Workspace:     cred.Workspace,
		Partner:       partner,
		ReceivedAt:    now,
		EventTime:     now,
		KeyID:         cred.KeyID,
		Payload:       payload,
	}
	log = log.With(slog.String("cohort_id", clip(env.CohortID())), slog.String("record_id", recordID))
	value, err := schemas.Encode(env)
	if err != nil {
		// The request passed validation, so this is a verifier returning an
		// incomplete credential or a validation gap: our bug, not the partner's.
		log.Error("cannot encode the record", slog.Any("error", err))
		return textReply(http.StatusInternalServerError, msgInternal)
	}
	if len(value) > a.cfg.MaxRecordBytes {
		log.Debug("request refused", slog.String("reason", "record too large"), slog.Int("record_bytes", len(value)))
		return textReply(http.StatusRequestEntityTooLarge, msgTooLarge)
	}

	ctx, cancel := context.WithTimeout(ctx, a.cfg.LandTimeout)
	defer cancel()
	if err := a.lander.Land(ctx, env.PartitionKey(), value); err != nil {
		a.metrics.landErrors.Inc()
		log.Error("cannot land the record", slog.Any("error", err))
		// One second: landing failures are usually a leader election or a
		// broker restart, over within seconds; partners back off further on their own.
		return reply{status: http.StatusServiceUnavailable, body: msgUnavailable, retryAfter: 1}
	}

	if ids > 0 {
		a.metrics.ids.WithLabelValues(partner).Add(float64(ids))
	}
	log.Debug("request landed", slog.String("kind", string(env.Kind())), slog.Int("ids", ids))
	body, err := json.Marshal(struct {
		Message  string `json:"message"`
		RecordID string `json:"record_id"`
	}{"success", recordID})
	if err != nil {
		// Cannot happen for two strings, but the record is landed: say so.
		return reply{status: http.StatusCreated, body: `{"message":"success"}`, json: true}
	}
	return reply{status: http.StatusCreated, body: string(body), json: true}
}

// clip keeps client-chosen strings short in logs.
func clip(s string) string {
	const max = 128
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
