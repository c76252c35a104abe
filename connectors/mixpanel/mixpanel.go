// Package mixpanel pulls the full member list of a Mixpanel cohort from the
// Engage API (POST /api/query/engage with filter_by_cohort), for backfills
// that diff it against the current state.
//
// The Query API allows 60 queries per hour and 5 at once per project, so a
// Client waits rather than fails when its own quota is used up, and retries
// 429s (honouring Retry-After), 5xx answers and transport errors with
// exponential backoff and jitter. Use one Client per project in a process:
// the quota is the project's, and only a shared Client can keep to it.
package mixpanel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync/internal/retry"
)

// ErrUnauthorized is what an APIError for 401 or 403 unwraps to: the service
// account's username or secret is wrong, or it may not read the project.
var ErrUnauthorized = errors.New("mixpanel: service account refused")

// ErrMalformed is what an answer that does not have the documented shape
// unwraps to.
var ErrMalformed = errors.New("mixpanel: malformed answer")

// APIError is an answer other than 200 that was not (or no longer) retried.
type APIError struct {
	StatusCode int
	CohortID   string
	Page       int
	// Message is Mixpanel's error text, or the start of the body.
	Message string
	// Attempts is how many requests were made for the page.
	Attempts int
	// ProjectID is the project the request was for.
	ProjectID string
}

func (e *APIError) Error() string {
	msg := fmt.Sprintf("mixpanel: cohort %s page %d: %d %s", e.CohortID, e.Page, e.StatusCode, http.StatusText(e.StatusCode))
	if e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden {
		msg += fmt.Sprintf(": the service account was refused; check the username and secret, and that the account may read project %s", e.ProjectID)
	}
	if e.Attempts > 1 {
		msg += fmt.Sprintf(" (after %d attempts)", e.Attempts)
	}
	if e.Message != "" {
		msg += ": mixpanel says: " + e.Message
	}
	return msg
}

// Unwrap lets callers test errors.Is(err, ErrUnauthorized).
func (e *APIError) Unwrap() error {
	if e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden {
		return ErrUnauthorized
	}
	return nil
}

// Options are a Client's collaborators. The zero value is usable.
type Options struct {
	// HTTPClient sends the requests; nil means a client without a global
	// timeout (Config.Timeout bounds each request).
	HTTPClient *http.Client
	Logger     *slog.Logger
	// Registerer receives the cohortsync_mixpanel_* metrics; nil: none.
	Registerer prometheus.Registerer
	// Now and Sleep replace the clock in tests. Sleep must return once d
	// has passed on Now's clock, or with ctx's error.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
	// Jitter returns a random duration in [0, d]; nil: uniform.
	Jitter func(d time.Duration) time.Duration
}

// Client reads cohorts of one Mixpanel project.
type Client struct {
	cfg      Config
	endpoint string
	hc       *http.Client
	log      *slog.Logger
	m        *metrics
	lim      *limiter
	now      func() time.Time
	sleep    func(context.Context, time.Duration) error
	jitter   func(time.Duration) time.Duration
	props    string // output_properties, as sent
}

// New returns a client for cfg, which must be valid.
func New(cfg Config, opts Options) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("mixpanel: invalid config: %w", err)
	}
	cfg = cfg.withDefaults()
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg:      cfg,
		endpoint: cfg.baseURL() + "/api/query/engage?project_id=" + url.QueryEscape(cfg.ProjectID),
		hc:       opts.HTTPClient,
		log:      opts.Logger,
		m:        m,
		now:      opts.Now,
		sleep:    opts.Sleep,
		jitter:   opts.Jitter,
	}
	if c.hc == nil {
		c.hc = &http.Client{}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("component", "mixpanel", "project_id", cfg.ProjectID)
	if c.now == nil {
		c.now = time.Now
	}
	if c.sleep == nil {
		c.sleep = retry.Sleep
	}
	if c.jitter == nil {
		c.jitter = func(d time.Duration) time.Duration {
			if d <= 0 {
				return 0
			}
			return rand.N(d + 1)
		}
	}
	props, err := json.Marshal(outputProperties(cfg.IdentityProperty))
	if err != nil {
		return nil, fmt.Errorf("mixpanel: output_properties: %w", err)
	}
	c.props = string(props)
	c.lim = newLimiter(cfg.QueriesPerHour, cfg.MaxConcurrent, c.now, c.sleep)
	return c, nil
}

// Stats describe one CohortMembers call.
type Stats struct {
	// Pages answered and profiles passed to fn.
	Pages    int
	Profiles int64
	// WithoutIdentity counts profiles whose Identity was not ok.
	WithoutIdentity int64
	// Total is the member count Mixpanel reported on the first page; -1
	// when it did not report one.
	Total int64
	// Requests sent, of which Retries were repeats of a failed one.
	Requests int
	Retries  int
	// RateLimitWaits counts requests held back by the client's own limits,
	// and RateLimitWaited the planned length of the hourly-limit waits.
	RateLimitWaits  int
	RateLimitWaited time.Duration
}

// CohortMembers pages through the profiles of cohortID, calling fn for each
// in the order Mixpanel returns them, until a page comes back shorter than
// its page_size. An error from fn stops the run and is returned wrapped. The
// Stats say how far it got, also after an error.
func (c *Client) CohortMembers(ctx context.Context, cohortID string, fn func(Profile) error) (Stats, error) {
	st := Stats{Total: -1}
	cohortID = strings.TrimSpace(cohortID)
	if cohortID == "" {
		return st, errors.New("mixpanel: cohort id is empty")
	}
	filter, err := cohortFilter(cohortID)
	if err != nil {
		return st, err
	}
	log := c.log.With("cohort_id", cohortID)
	start := c.now()
	var session string
	for page := 0; ; page++ {
		form := url.Values{}
		form.Set("filter_by_cohort", filter)
		form.Set("output_properties", c.props)
		// The documented default, sent anyway: members without a profile
		// are members too, and a changed default must not shrink cohorts.
		form.Set("include_all_users", "true")
		form.Set("page", strconv.Itoa(page))
		if page > 0 {
			form.Set("session_id", session)
		}
		ans, err := c.fetchPage(ctx, cohortID, page, form, &st)
		if err != nil {
			return st, err
		}
		st.Pages++
		if page == 0 {
			session = ans.SessionID
			if ans.Total != nil {
				st.Total = *ans.Total
			}
		}
		for _, r := range *ans.Results {
			p := r.toProfile(c.cfg.IdentityProperty)
			if _, _, ok := p.Identity(); !ok {
				st.WithoutIdentity++
			}
			st.Profiles++
			c.m.profiles.Inc()
			if err := fn(p); err != nil {
				return st, fmt.Errorf("mixpanel: cohort %s page %d: %w", cohortID, page, err)
			}
		}
		size := ans.PageSize
		if size <= 0 {
			size = c.cfg.PageSize
		}
		if len(*ans.Results) < size {
			break
		}
		if session == "" {
			return st, fmt.Errorf("%w: cohort %s page %d: a full page without a session_id to ask for the next one", ErrMalformed, cohortID, page)
		}
		log.Debug("mixpanel page read", "page", page, "profiles", st.Profiles, "total", st.Total)
	}
	if st.Total >= 0 && st.Total != st.Profiles {
		// Membership moved while paging; the next run settles it.
		log.Warn("mixpanel cohort changed while it was read", "reported_total", st.Total, "profiles", st.Profiles)
	}
	log.Info("mixpanel cohort read", "profiles", st.Profiles, "pages", st.Pages, "requests", st.Requests,
		"retries", st.Retries, "without_identity", st.WithoutIdentity, "elapsed", c.now().Sub(start))
	return st, nil
}

// cohortFilter is the filter_by_cohort value. Mixpanel's cohort ids are
// numbers; anything else is sent as a JSON string and left to Mixpanel.
func cohortFilter(cohortID string) (string, error) {
	var id any = cohortID
	if n, err := strconv.ParseInt(cohortID, 10, 64); err == nil && n >= 0 {
		id = n
	}
	b, err := json.Marshal(map[string]any{"id": id})
	if err != nil {
		return "", fmt.Errorf("mixpanel: cohort filter: %w", err)
	}
	return string(b), nil
}

// engagePage is an answer of the Engage API.
type engagePage struct {
	Page      int           `json:"page"`
	PageSize  int           `json:"page_size"`
	SessionID string        `json:"session_id"`
	Status    string        `json:"status"`
	Total     *int64        `json:"total"`
	Results   *[]rawProfile `json:"results"`
	Error     string        `json:"error"`
}

// maxBodyBytes bounds an answer. A page holds at most 1,000 profiles with a
// handful of properties; far more means something is wrong.
const maxBodyBytes = 64 << 20

// Retry reasons, as in the metric label.
const (
	retryRateLimited = "rate_limited"
	retryServerError = "server_error"
	retryTransport   = "transport"
)

// maxRetryAfter caps how long one Retry-After may hold a run.
const maxRetryAfter = time.Hour

// fetchPage sends one page's request, retrying what may succeed later.
func (c *Client) fetchPage(ctx context.Context, cohortID string, page int, form url.Values, st *Stats) (engagePage, error) {
	body := form.Encode()
	for attempt := 1; ; attempt++ {
		res, err := c.attempt(ctx, body, st)
		if err != nil && ctx.Err() != nil {
			return engagePage{}, fmt.Errorf("mixpanel: cohort %s page %d: %w", cohortID, page, ctx.Err())
		}
		var reason string
		var retryAfter time.Duration
		switch {
		case err != nil:
			reason = retryTransport
		case res.status == http.StatusOK:
			return c.decode(res.body, cohortID, page)
		case res.status == http.StatusTooManyRequests:
			reason = retryRateLimited
			retryAfter = parseRetryAfter(res.retryAfter, c.now())
		case res.status >= 500:
			reason = retryServerError
			retryAfter = parseRetryAfter(res.retryAfter, c.now())
		default:
			return engagePage{}, &APIError{StatusCode: res.status, CohortID: cohortID, Page: page,
				Message: errorText(res.body), Attempts: attempt, ProjectID: c.cfg.ProjectID}
		}
		if c.cfg.MaxRetries < 0 || attempt > c.cfg.MaxRetries {
			if err != nil {
				return engagePage{}, fmt.Errorf("mixpanel: cohort %s page %d: giving up after %d attempts: %w", cohortID, page, attempt, err)
			}
			return engagePage{}, &APIError{StatusCode: res.status, CohortID: cohortID, Page: page,
				Message: errorText(res.body), Attempts: attempt, ProjectID: c.cfg.ProjectID}
		}
		delay := max(c.backoff(attempt), retryAfter)
		attrs := []any{"cohort_id", cohortID, "page", page, "attempt", attempt, "reason", reason, "retry_in", delay}
		if err != nil {
			attrs = append(attrs, "err", err)
		} else {
			attrs = append(attrs, "status", res.status)
		}
		c.log.Warn("mixpanel request failed, retrying", attrs...)
		c.m.retries.WithLabelValues(reason).Inc()
		st.Retries++
		if err := c.sleep(ctx, delay); err != nil {
			return engagePage{}, fmt.Errorf("mixpanel: cohort %s page %d: %w", cohortID, page, err)
		}
	}
}

// backoff is the wait before retry n (1-based): RetryBase doubled per retry
// up to RetryMax, of which a random half is taken off so that clients that
// failed together do not retry together.
func (c *Client) backoff(n int) time.Duration {
	d := retry.Backoff{Initial: c.cfg.RetryBase, Max: c.cfg.RetryMax}.Delay(n)
	return d/2 + c.jitter(d/2)
}

type result struct {
	status     int
	retryAfter string
	body       []byte
}

// attempt sends one request within the limits and reads its answer whole.
func (c *Client) attempt(ctx context.Context, body string, st *Stats) (result, error) {
	release, err := c.lim.acquire(ctx, func(kind string, d time.Duration) {
		st.RateLimitWaits++
		c.m.waits.WithLabelValues(kind).Inc()
		if kind == waitHourly {
			st.RateLimitWaited += d
			c.m.waitedSecs.WithLabelValues(kind).Add(d.Seconds())
			c.log.Info("mixpanel query limit reached, waiting", "limit", kind, "wait", d, "queries_per_hour", c.cfg.QueriesPerHour)
			return
		}
		c.log.Info("mixpanel concurrency limit reached, waiting", "limit", kind, "max_concurrent", c.cfg.MaxConcurrent)
	})
	if err != nil {
		return result{}, err
	}
	defer release()
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, strings.NewReader(body))
	if err != nil {
		return result{}, fmt.Errorf("build request: %w", err)
	}
	req.SetBasicAuth(c.cfg.Username, c.cfg.Secret)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	st.Requests++
	resp, err := c.hc.Do(req)
	if err != nil {
		c.m.requests.WithLabelValues("error").Inc()
		return result{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes+1))
	if err != nil {
		c.m.requests.WithLabelValues("error").Inc()
		return result{}, fmt.Errorf("read answer: %w", err)
	}
	c.m.requests.WithLabelValues(strconv.Itoa(resp.StatusCode)).Inc()
	return result{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), body: raw}, nil
}

// decode checks a 200 answer against the documented shape.
func (c *Client) decode(raw []byte, cohortID string, page int) (engagePage, error) {
	bad := func(format string, args ...any) (engagePage, error) {
		return engagePage{}, fmt.Errorf("%w: cohort %s page %d: %s", ErrMalformed, cohortID, page, fmt.Sprintf(format, args...))
	}
	if len(raw) > maxBodyBytes {
		return bad("answer larger than %d bytes", maxBodyBytes)
	}
	var ans engagePage
	if err := json.Unmarshal(raw, &ans); err != nil {
		return bad("not the documented JSON object: %v (body starts %q)", err, snippet(raw))
	}
	if ans.Status != "" && ans.Status != "ok" {
		return bad("status %q: %s", ans.Status, ans.Error)
	}
	if ans.Results == nil {
		return bad("no results array (body starts %q)", snippet(raw))
	}
	if ans.Page != page {
		return bad("answer is for page %d", ans.Page)
	}
	if ans.PageSize < 0 {
		return bad("negative page_size %d", ans.PageSize)
	}
	return ans, nil
}

// errorText is Mixpanel's {"error": ...} text, or the start of the body.
func errorText(raw []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(raw, &e) == nil && e.Error != "" {
		return snippet([]byte(e.Error))
	}
	return snippet(raw)
}

func snippet(raw []byte) string {
	const limit = 200
	s := strings.TrimSpace(string(raw))
	if len(s) > limit {
		s = s[:limit] + "..."
	}
	return s
}

// parseRetryAfter reads delay-seconds or an HTTP date; unknown values give 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		d = time.Duration(max(secs, 0)) * time.Second
		if secs > int64(maxRetryAfter/time.Second) {
			d = maxRetryAfter
		}
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}
