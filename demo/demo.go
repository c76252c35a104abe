// Package demo drives a running cohortsync the way a Mixpanel deployment
// would: it loads a few thousand identities (anonymous users, users
// identified after starting anonymous, users with aliases), creates a data
// import key and a few cohorts, and runs dynamic syncs of them — adds,
// removes, ids the rules refuse, and one sync that fails midway and is
// re-sent from the top. It prints what it sent and what the outcome must be,
// computed from the import rules independently of the service, and, when
// the server's /metrics is reachable, checks the outcome against it.
//
// Everything it sends follows from Config.Seed: the same seed sends the same
// data and expects the same outcome.
package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/cohortsync/cohortsync/internal/retry"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/stores/identities"
	"github.com/cohortsync/cohortsync/stores/keys"
)

// Config is one demo run.
type Config struct {
	// Server is the base URL of the running cohortsync.
	Server string `yaml:"server"`
	// Token is the admin token (identities and keys admin APIs).
	Token string `yaml:"token"`
	// PartnerAPIKey is the partner_api_key of Partner on that server.
	PartnerAPIKey string `yaml:"partner_api_key"`
	Partner       string `yaml:"partner"`
	Workspace     string `yaml:"workspace"`
	// Users, Cohorts and Rounds size the demo.
	Users   int `yaml:"users"`
	Cohorts int `yaml:"cohorts"`
	Rounds  int `yaml:"rounds"`
	// Interval is the pause between sync rounds (Mixpanel: 15 minutes).
	Interval time.Duration `yaml:"interval"`
	Seed     uint64        `yaml:"seed"`
	// Prefix starts every id the demo makes up, so that runs with different
	// prefixes do not touch each other's users and cohorts.
	Prefix string `yaml:"prefix"`
	// BatchSize is the most ids per request (the API allows 1,000).
	BatchSize int `yaml:"batch_size"`
	// Wait bounds the wait for the stream to process everything before the
	// outcome is checked on /metrics; zero skips the check.
	Wait time.Duration `yaml:"wait"`
}

// DefaultConfig returns a demo of 3,000 users, 3 cohorts and 3 rounds 2 s
// apart; Server, Token and PartnerAPIKey are left to the caller.
func DefaultConfig() Config {
	return Config{
		Partner: "mixpanel", Workspace: "default",
		Users: 3000, Cohorts: 3, Rounds: 3, Interval: 2 * time.Second,
		Seed: 1, Prefix: "demo", BatchSize: 1000, Wait: 60 * time.Second,
	}
}

var prefixPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,19}$`)

// Validate reports every problem at once, each naming its field.
func (c Config) Validate() error {
	var errs []error
	if u, err := url.Parse(c.Server); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("server: must look like http://host:port, got %q", c.Server))
	}
	if c.Token == "" {
		errs = append(errs, errors.New("token: the admin token is required"))
	}
	if c.PartnerAPIKey == "" {
		errs = append(errs, errors.New("partner_api_key: the partner's partner_api_key is required"))
	}
	if c.Partner == "" {
		errs = append(errs, errors.New("partner: is required"))
	}
	if !keys.ValidWorkspace(c.Workspace) {
		errs = append(errs, fmt.Errorf("workspace: %q is not a valid workspace name", c.Workspace))
	}
	if c.Users < 10 || c.Users > 1_000_000 {
		errs = append(errs, fmt.Errorf("users: must be between 10 and 1000000, got %d", c.Users))
	}
	if c.Cohorts < 1 || c.Cohorts > 50 {
		errs = append(errs, fmt.Errorf("cohorts: must be between 1 and 50, got %d", c.Cohorts))
	}
	if c.Rounds < 1 || c.Rounds > 100 {
		errs = append(errs, fmt.Errorf("rounds: must be between 1 and 100, got %d", c.Rounds))
	}
	if c.Interval < 0 {
		errs = append(errs, fmt.Errorf("interval: must not be negative, got %s", c.Interval))
	}
	if !prefixPattern.MatchString(c.Prefix) {
		errs = append(errs, fmt.Errorf("prefix: must be 1-20 lowercase letters, digits or '-', got %q", c.Prefix))
	}
	if c.BatchSize < 1 || c.BatchSize > 1000 {
		errs = append(errs, fmt.Errorf("batch_size: must be between 1 and 1000, got %d", c.BatchSize))
	}
	if c.Wait < 0 {
		errs = append(errs, fmt.Errorf("wait: must not be negative, got %s", c.Wait))
	}
	return errors.Join(errs...)
}

// Options are a run's collaborators. The zero value is usable.
type Options struct {
	// HTTPClient sends every request; nil: a client with a 30 s timeout.
	HTTPClient *http.Client
	// Out receives the account of the run; nil discards it.
	Out io.Writer
	// Now stamps created_at of the cohorts; nil: time.Now.
	Now func() time.Time
	// BeforeRound, when set, runs before each sync round (0-based) is sent,
	// so a caller can look at the state between rounds; an error stops the run.
	BeforeRound func(ctx context.Context, round int) error
}

// ErrMismatch is what Run returns, wrapped, when the server's metrics do not
// show the expected outcome.
var ErrMismatch = errors.New("demo: the server's metrics differ from the expected outcome")

// Report is what a run did and found.
type Report struct {
	Identities int
	// IdentitiesByKind counts the identities by Kind* constant.
	IdentitiesByKind map[string]int
	KeyID            string
	// Created counts 201s of POST /partners/{p}/cohorts; Pushed those of
	// /cohorts/users, of which Resent were sent a second time.
	Created, Pushed, Resent int
	Expected                Expected
	// Observed is nil when the outcome was not checked.
	Observed *Observed
}

// Observed is the outcome as the server's metrics show it, as increases
// over the run.
type Observed struct {
	// CaughtUp is whether the stream processed everything within Config.Wait.
	CaughtUp bool
	// IDs counts looked-up ids by result (cohortsync_identity_ids_total):
	// "matched", or a rejection reason.
	IDs map[string]int64
	// DataPoints is cohortsync_state_data_points_total{result="new"}; it
	// exists only on the embedded state store (HasDataPoints).
	DataPoints    int64
	HasDataPoints bool
}

// Mismatches lists how o differs from e; empty when it matches.
func (o Observed) Mismatches(e Expected) []string {
	var out []string
	if !o.CaughtUp {
		out = append(out, "the stream did not process every change in time")
	}
	check := func(what string, got, want int64) {
		if got != want {
			out = append(out, fmt.Sprintf("%s: %d, expected %d", what, got, want))
		}
	}
	check("accepted ids", o.IDs["matched"], e.Billable)
	for _, r := range []string{pipeline.ReasonUnknownUser, pipeline.ReasonDeviceIDOfIdentifiedUser} {
		check("ids refused as "+r, o.IDs[r], e.Rejected[r])
	}
	if o.HasDataPoints {
		check("billable data points", o.DataPoints, e.Billable)
	}
	return out
}

// Metric names the run reads.
const (
	metricIdentityIDs     = "cohortsync_identity_ids_total"
	metricDataPoints      = "cohortsync_state_data_points_total"
	metricAppliedIdentity = "cohortsync_identities_applied_records_total"
	metricConsumerLag     = "cohortsync_consumer_lag"
)

type runner struct {
	cfg  Config
	base string
	hc   *http.Client
	out  io.Writer
	now  func() time.Time

	beforeRound func(ctx context.Context, round int) error
	// secret is the data import key made for the run.
	secret string
}

// Run carries out the demo against the server of cfg.
func Run(ctx context.Context, cfg Config, opts Options) (Report, error) {
	var rep Report
	if err := cfg.Validate(); err != nil {
		return rep, fmt.Errorf("demo: invalid config: %w", err)
	}
	r := &runner{cfg: cfg, base: strings.TrimRight(cfg.Server, "/"), hc: opts.HTTPClient, out: opts.Out, now: opts.Now, beforeRound: opts.BeforeRound}
	if r.hc == nil {
		r.hc = &http.Client{Timeout: 30 * time.Second}
	}
	if r.out == nil {
		r.out = io.Discard
	}
	if r.now == nil {
		r.now = time.Now
	}
	plan := NewPlan(cfg)
	rep.Expected = plan.Expect()
	r.printf("cohortsync demo against %s: workspace %s, partner %s, seed %d, prefix %q\n", r.base, cfg.Workspace, cfg.Partner, cfg.Seed, cfg.Prefix)

	before, err := scrape(ctx, r.hc, r.base)
	if err != nil {
		r.printf("  (%v: the outcome will not be checked)\n", err)
		before = nil
	}

	if err := r.loadIdentities(ctx, plan, &rep); err != nil {
		return rep, err
	}
	if err := r.createKey(ctx, &rep); err != nil {
		return rep, err
	}
	r.waitIdentities(ctx, before, len(plan.Identities))
	for _, co := range plan.Cohorts {
		if err := r.createCohort(ctx, co); err != nil {
			return rep, err
		}
		rep.Created++
	}
	r.printf("cohorts: created %d\n", len(plan.Cohorts))
	for _, co := range plan.Cohorts {
		r.printf("  %-22s %s\n", co.ID, co.Name)
	}
	if err := r.sync(ctx, plan, &rep); err != nil {
		return rep, err
	}
	r.printExpected(plan, rep.Expected)

	if before == nil || cfg.Wait == 0 {
		return rep, nil
	}
	obs, err := r.observe(ctx, before, rep.Expected)
	if err != nil {
		return rep, err
	}
	rep.Observed = &obs
	r.printObserved(obs, rep.Expected)
	if m := obs.Mismatches(rep.Expected); len(m) > 0 {
		return rep, fmt.Errorf("%w: %s", ErrMismatch, strings.Join(m, "; "))
	}
	return rep, nil
}

func (r *runner) printf(format string, args ...any) { fmt.Fprintf(r.out, format, args...) }

func (r *runner) loadIdentities(ctx context.Context, plan Plan, rep *Report) error {
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	rep.IdentitiesByKind = map[string]int{}
	for i, rec := range plan.Identities {
		if err := enc.Encode(rec); err != nil {
			return fmt.Errorf("demo: encode identity: %w", err)
		}
		rep.IdentitiesByKind[plan.Kinds[i]]++
	}
	client, err := identities.NewClient(r.base, r.cfg.Token, identities.ClientOptions{HTTPClient: r.hc})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	var rejected []string
	st, err := client.Load(ctx, r.cfg.Workspace, &body, func(le identities.LineError) {
		rejected = append(rejected, fmt.Sprintf("line %d: %s", le.Line, le.Error))
	})
	if err != nil {
		return fmt.Errorf("demo: load identities: %w", err)
	}
	if len(rejected) > 0 {
		return fmt.Errorf("demo: %d identities rejected: %s", len(rejected), strings.Join(rejected[:min(3, len(rejected))], "; "))
	}
	rep.Identities = int(st.Accepted)
	k := rep.IdentitiesByKind
	r.printf("identities: loaded %d users into workspace %s\n", st.Accepted, r.cfg.Workspace)
	r.printf("  %5d anonymous (device ids only; synced by device id)\n", k[KindAnonymous])
	r.printf("  %5d identified after starting anonymous (external id + old device ids; synced by external id)\n", k[KindIdentifiedLater])
	r.printf("  %5d identified with an email alias (synced by alias)\n", k[KindAliased])
	r.printf("  %5d identified (external id only; synced by external id)\n", k[KindIdentified])
	return nil
}

func (r *runner) createKey(ctx context.Context, rep *Report) error {
	client, err := keys.NewClient(r.base, r.cfg.Token, r.hc)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	k, err := client.Create(ctx, r.cfg.Workspace, r.cfg.Partner, fmt.Sprintf("cohortsync demo, seed %d", r.cfg.Seed))
	if err != nil {
		return fmt.Errorf("demo: create data import key: %w", err)
	}
	r.secret, rep.KeyID = k.ClientSecret, k.KeyID
	r.printf("data import key: created %s for partner %s (revoke: cohortsync keys revoke --server %s --token \"$COHORTSYNC_ADMIN_TOKEN\" --workspace %s %s)\n",
		k.KeyID, r.cfg.Partner, r.base, r.cfg.Workspace, k.KeyID)
	return nil
}

// waitIdentities gives the identity directory time to apply the load: a
// change that arrives before its user's record counts as unknown_user.
func (r *runner) waitIdentities(ctx context.Context, before samples, n int) {
	if before != nil {
		base, _ := before.sum(metricAppliedIdentity, nil)
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			s, err := scrape(ctx, r.hc, r.base)
			if err != nil {
				break
			}
			if v, ok := s.sum(metricAppliedIdentity, nil); ok && v-base >= float64(n) {
				return
			}
			_ = retry.Sleep(ctx, 100*time.Millisecond)
		}
	}
	// Without metrics there is nothing to watch: the directory applies a
	// load within well under a second on a quiet server.
	_ = retry.Sleep(ctx, 2*time.Second)
}

func (r *runner) createCohort(ctx context.Context, co Cohort) error {
	return r.post(ctx, "/cohorts", map[string]any{
		"partner_api_key": r.cfg.PartnerAPIKey,
		"client_secret":   r.secret,
		"cohort_id":       co.ID,
		"name":            co.Name,
		"created_at":      r.now().UTC().Format(time.RFC3339),
	})
}

func (r *runner) sync(ctx context.Context, plan Plan, rep *Report) error {
	names := map[string]string{}
	for _, co := range plan.Cohorts {
		names[co.ID] = co.Name
	}
	for i, round := range plan.Rounds {
		if i > 0 && r.cfg.Interval > 0 {
			_ = retry.Sleep(ctx, r.cfg.Interval)
		}
		if r.beforeRound != nil {
			if err := r.beforeRound(ctx, i); err != nil {
				return fmt.Errorf("demo: before round %d: %w", i+1, err)
			}
		}
		r.printf("sync round %d of %d\n", i+1, len(plan.Rounds))
		for _, s := range round {
			r.printf("  %-20s +%d -%d, %d ids the rules refuse, %s\n", names[s.CohortID], s.Adds, s.Removes, s.Noise, plural(len(s.Requests), "request"))
			for n, req := range s.Sent() {
				if s.RestartAfter >= 0 && n == s.RestartAfter {
					r.printf("    sync failed after %d of %d requests: restarted from the top, re-sending %d\n", s.RestartAfter, len(s.Requests), s.RestartAfter)
				}
				if err := r.post(ctx, "/cohorts/users", map[string]any{
					"partner_api_key": r.cfg.PartnerAPIKey,
					"client_secret":   r.secret,
					"cohort_id":       req.CohortID,
					"cohort_changes":  req.Changes,
				}); err != nil {
					return fmt.Errorf("demo: round %d cohort %s: %w", i+1, req.CohortID, err)
				}
				rep.Pushed++
				if s.RestartAfter >= 0 && n >= s.RestartAfter && n-s.RestartAfter < s.RestartAfter {
					rep.Resent++
				}
			}
		}
	}
	return nil
}

// post sends one partner API request, retrying what the API asks to retry.
func (r *runner) post(ctx context.Context, path string, body map[string]any) error {
	raw, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	endpoint := r.base + "/partners/" + url.PathEscape(r.cfg.Partner) + path
	for attempt := 1; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(raw))
		if err != nil {
			return fmt.Errorf("POST %s: %w", endpoint, err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := r.hc.Do(req)
		if err != nil {
			return fmt.Errorf("POST %s: %w", endpoint, err)
		}
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusCreated:
			return nil
		case (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) && attempt < 5:
			wait := time.Second
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
				wait = time.Duration(min(s, 60)) * time.Second
			}
			r.printf("    %s answered %d, retrying in %s\n", path, resp.StatusCode, wait)
			if err := retry.Sleep(ctx, wait); err != nil {
				return err
			}
		default:
			return fmt.Errorf("POST %s: %d %s", endpoint, resp.StatusCode, strings.TrimSpace(string(msg)))
		}
	}
}

func (r *runner) printExpected(plan Plan, e Expected) {
	r.printf("sent %d ids in %d requests\n", e.IDsSent, totalRequests(e))
	r.printf("expected outcome (the import rules applied to what was sent, on a workspace without these cohorts):\n")
	r.printf("  %-22s %-20s %8s %9s %12s\n", "COHORT", "NAME", "MEMBERS", "BILLABLE", "TRANSITIONS")
	for _, c := range e.Cohorts {
		r.printf("  %-22s %-20s %8d %9d %12d\n", c.ID, c.Name, c.Members, c.Billable, c.Transitions)
	}
	r.printf("  data points: %d billable (every accepted add and remove, re-sent ones included), %d membership transitions, all on today's landing day (UTC)\n", e.Billable, e.Transitions)
	r.printf("  refused ids: %d %s, %d %s\n", e.Rejected[pipeline.ReasonUnknownUser], pipeline.ReasonUnknownUser,
		e.Rejected[pipeline.ReasonDeviceIDOfIdentifiedUser], pipeline.ReasonDeviceIDOfIdentifiedUser)
	if e.MembersANotB >= 0 {
		a, b := plan.Cohorts[0], plan.Cohorts[1]
		r.printf("  segment \"in %s and not in %s\": %d members\n", a.Name, b.Name, e.MembersANotB)
		r.printf("    filter: {\"and\":[{\"cohort\":{\"partner\":%q,\"id\":%q}},{\"not\":{\"cohort\":{\"partner\":%q,\"id\":%q}}}]}\n",
			r.cfg.Partner, a.ID, r.cfg.Partner, b.ID)
	}
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

func totalRequests(e Expected) int {
	n := 0
	for _, c := range e.Cohorts {
		n += c.Requests
	}
	return n
}

// observe waits until the stream has looked up every id sent and committed
// everything, then reads what the metrics gained over the run.
func (r *runner) observe(ctx context.Context, before samples, e Expected) (Observed, error) {
	r.printf("waiting up to %s for the stream to process the changes...\n", r.cfg.Wait)
	baseIDs, _ := before.sum(metricIdentityIDs, nil)
	deadline := time.Now().Add(r.cfg.Wait)
	var last samples
	caughtUp := false
	settled := 0
	for time.Now().Before(deadline) {
		s, err := scrape(ctx, r.hc, r.base)
		if err != nil {
			return Observed{}, fmt.Errorf("demo: %w", err)
		}
		last = s
		ids, _ := s.sum(metricIdentityIDs, nil)
		idle := s.all(metricConsumerLag, func(v float64) bool { return v == 0 })
		// The lag gauge moves on fetches and commits: three quiet readings
		// in a row after every id was looked up mean the sinks have it.
		if ids-baseIDs >= float64(e.IDsSent) && idle {
			settled++
			if settled >= 3 {
				caughtUp = true
				break
			}
		} else {
			settled = 0
		}
		if err := retry.Sleep(ctx, 200*time.Millisecond); err != nil {
			return Observed{}, err
		}
	}
	delta := func(name string, match map[string]string) (int64, bool) {
		now, ok := last.sum(name, match)
		was, _ := before.sum(name, match)
		return int64(now - was), ok
	}
	o := Observed{CaughtUp: caughtUp, IDs: map[string]int64{}}
	for _, res := range []string{"matched", pipeline.ReasonUnknownUser, pipeline.ReasonDeviceIDOfIdentifiedUser} {
		o.IDs[res], _ = delta(metricIdentityIDs, map[string]string{"result": res})
	}
	o.DataPoints, o.HasDataPoints = delta(metricDataPoints, map[string]string{"result": "new"})
	return o, nil
}

func (r *runner) printObserved(o Observed, e Expected) {
	r.printf("observed on %s/metrics over the run:\n", r.base)
	mark := func(got, want int64) string {
		if got == want {
			return "ok"
		}
		return fmt.Sprintf("MISMATCH, expected %d", want)
	}
	line := func(what string, got, want int64) {
		r.printf("  %-45s %7d  %s\n", what+":", got, mark(got, want))
	}
	line("accepted ids", o.IDs["matched"], e.Billable)
	for _, res := range []string{pipeline.ReasonUnknownUser, pipeline.ReasonDeviceIDOfIdentifiedUser} {
		line("refused as "+res, o.IDs[res], e.Rejected[res])
	}
	if o.HasDataPoints {
		line("billable data points (state store)", o.DataPoints, e.Billable)
	}
	if !o.CaughtUp {
		r.printf("  the stream had not caught up after %s\n", r.cfg.Wait)
	}
}
