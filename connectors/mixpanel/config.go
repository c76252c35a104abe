package mixpanel

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Regions and the API hosts that serve them (Mixpanel data residency).
var regionBaseURLs = map[string]string{
	"us": "https://mixpanel.com",
	"eu": "https://eu.mixpanel.com",
	"in": "https://in.mixpanel.com",
}

// Limits of the Query API (docs.mixpanel.com/reference/engage-query): at most
// 60 queries per hour and 5 at once per project; the Engage endpoint answers
// pages of at most 1,000 profiles.
const (
	MaxPageSize           = 1000
	DefaultQueriesPerHour = 60
	DefaultMaxConcurrent  = 5
)

const (
	defaultRegion     = "us"
	defaultTimeout    = 2 * time.Minute
	defaultMaxRetries = 5
	defaultRetryBase  = time.Second
	defaultRetryMax   = 2 * time.Minute
)

// Config is how to reach one Mixpanel project. Zero numbers and durations
// mean the defaults of DefaultConfig.
type Config struct {
	// Region is "us" (https://mixpanel.com, the default), "eu"
	// (https://eu.mixpanel.com) or "in" (https://in.mixpanel.com).
	Region string `yaml:"region"`
	// BaseURL overrides Region, e.g. a local server in tests.
	BaseURL string `yaml:"base_url"`
	// Username and Secret are a service account's, sent as HTTP Basic auth.
	Username string `yaml:"username"`
	Secret   string `yaml:"secret"`
	// ProjectID is the numeric Mixpanel project id.
	ProjectID string `yaml:"project_id"`
	// PageSize is the page size assumed when an answer does not state its
	// own page_size. Mixpanel fixes it at 1,000 and takes no request
	// parameter for it; a page shorter than it ends the paging.
	PageSize int `yaml:"page_size"`
	// QueriesPerHour caps requests in any rolling hour, retries included.
	QueriesPerHour int `yaml:"queries_per_hour"`
	// MaxConcurrent caps requests in flight at once.
	MaxConcurrent int `yaml:"max_concurrent"`
	// IdentityProperty names a profile property that holds the external id,
	// tried before $braze_external_id and $user_id. Empty: none.
	IdentityProperty string `yaml:"identity_property"`
	// Timeout bounds one request, its answer's body included.
	Timeout time.Duration `yaml:"timeout"`
	// MaxRetries is how often one page is retried after a 429, a 5xx or a
	// transport error. Negative: never.
	MaxRetries int `yaml:"max_retries"`
	// RetryBase is the first backoff; it doubles per retry up to RetryMax,
	// with jitter. A 429's Retry-After is waited for at least.
	RetryBase time.Duration `yaml:"retry_base"`
	RetryMax  time.Duration `yaml:"retry_max"`
}

// DefaultConfig returns the defaults; credentials and project are left empty.
func DefaultConfig() Config {
	return Config{
		Region:         defaultRegion,
		PageSize:       MaxPageSize,
		QueriesPerHour: DefaultQueriesPerHour,
		MaxConcurrent:  DefaultMaxConcurrent,
		Timeout:        defaultTimeout,
		MaxRetries:     defaultMaxRetries,
		RetryBase:      defaultRetryBase,
		RetryMax:       defaultRetryMax,
	}
}

// Validate reports every problem at once, each naming its field.
func (c Config) Validate() error {
	var errs []error
	if c.BaseURL == "" {
		if _, ok := regionBaseURLs[strings.ToLower(c.Region)]; !ok && c.Region != "" {
			errs = append(errs, fmt.Errorf("region: must be us, eu or in, got %q", c.Region))
		}
	} else if u, err := url.Parse(c.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("base_url: must look like https://host[:port], got %q", c.BaseURL))
	}
	if c.Username == "" {
		errs = append(errs, errors.New("username: the service account's username is required"))
	}
	if c.Secret == "" {
		errs = append(errs, errors.New("secret: the service account's secret is required"))
	}
	switch {
	case c.ProjectID == "":
		errs = append(errs, errors.New("project_id: is required"))
	case strings.Trim(c.ProjectID, "0123456789") != "":
		errs = append(errs, fmt.Errorf("project_id: must be a number, got %q", c.ProjectID))
	}
	if c.PageSize < 0 || c.PageSize > MaxPageSize {
		errs = append(errs, fmt.Errorf("page_size: must be between 1 and %d (0: %d), got %d", MaxPageSize, MaxPageSize, c.PageSize))
	}
	if c.QueriesPerHour < 0 {
		errs = append(errs, fmt.Errorf("queries_per_hour: must not be negative, got %d", c.QueriesPerHour))
	}
	if c.MaxConcurrent < 0 {
		errs = append(errs, fmt.Errorf("max_concurrent: must not be negative, got %d", c.MaxConcurrent))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout: must not be negative, got %s", c.Timeout))
	}
	if c.RetryBase < 0 {
		errs = append(errs, fmt.Errorf("retry_base: must not be negative, got %s", c.RetryBase))
	}
	if c.RetryMax < 0 {
		errs = append(errs, fmt.Errorf("retry_max: must not be negative, got %s", c.RetryMax))
	}
	if c.RetryBase > 0 && c.RetryMax > 0 && c.RetryMax < c.RetryBase {
		errs = append(errs, fmt.Errorf("retry_max: %s is below retry_base %s", c.RetryMax, c.RetryBase))
	}
	if strings.ContainsAny(c.IdentityProperty, "\"\n") {
		errs = append(errs, errors.New("identity_property: must not contain quotes or newlines"))
	}
	return errors.Join(errs...)
}

// withDefaults fills the fields whose zero value means "the default".
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Region == "" {
		c.Region = d.Region
	}
	c.Region = strings.ToLower(c.Region)
	if c.PageSize == 0 {
		c.PageSize = d.PageSize
	}
	if c.QueriesPerHour == 0 {
		c.QueriesPerHour = d.QueriesPerHour
	}
	if c.MaxConcurrent == 0 {
		c.MaxConcurrent = d.MaxConcurrent
	}
	if c.Timeout == 0 {
		c.Timeout = d.Timeout
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = d.MaxRetries
	}
	if c.RetryBase == 0 {
		c.RetryBase = d.RetryBase
	}
	if c.RetryMax == 0 {
		c.RetryMax = max(d.RetryMax, c.RetryBase)
	}
	return c
}

// baseURL is where requests go, without a trailing slash.
func (c Config) baseURL() string {
	if c.BaseURL != "" {
		return strings.TrimRight(c.BaseURL, "/")
	}
	return regionBaseURLs[c.Region]
}
