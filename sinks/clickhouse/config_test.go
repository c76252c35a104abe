package clickhouse_test

import (
	"strings"
	"testing"
	"time"

	chsink "github.com/cohortsync/cohortsync/sinks/clickhouse"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	valid := chsink.DefaultConfig()
	valid.Addr = "127.0.0.1:9000"
	tests := []struct {
		name   string
		mutate func(*chsink.Config)
		want   []string // substrings of the error, each a field path; none = valid
	}{
		{"defaults with an address", func(*chsink.Config) {}, nil},
		{"several addresses", func(c *chsink.Config) { c.Addr = "a:9000, b:9000" }, nil},
		{"cluster", func(c *chsink.Config) { c.Cluster = "main_cluster" }, nil},
		{"no address", func(c *chsink.Config) { c.Addr = "" }, []string{"addr: required"}},
		{"address without port", func(c *chsink.Config) { c.Addr = "localhost" }, []string{`addr: "localhost"`}},
		{"bad port", func(c *chsink.Config) { c.Addr = "h:99999" }, []string{`addr: "h:99999": port`}},
		{"database not an identifier", func(c *chsink.Config) { c.Database = "a-b; DROP" }, []string{"database:"}},
		{"cluster not an identifier", func(c *chsink.Config) { c.Cluster = "x`y" }, []string{"cluster:"}},
		{"every problem at once", func(c *chsink.Config) {
			c.Addr, c.Database, c.DialTimeout, c.QueryTimeout = "", "", -1, 0
			c.Retry = chsink.Retry{Initial: time.Second, Max: time.Millisecond}
		}, []string{"addr:", "database:", "dial_timeout:", "query_timeout:", "retry.max:"}},
		{"retry initial", func(c *chsink.Config) { c.Retry.Initial = 0 }, []string{"retry.initial:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := valid
			tt.mutate(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %v", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to mention %q", err, w)
				}
			}
		})
	}
}

func TestConfigWithDefaults(t *testing.T) {
	t.Parallel()
	got := chsink.Config{Addr: "h:9000"}.WithDefaults()
	want := chsink.DefaultConfig()
	want.Addr = "h:9000"
	if got != want {
		t.Errorf("WithDefaults() = %+v, want %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
	if _, err := chsink.New(chsink.Config{Addr: "nope"}, chsink.Options{}); err == nil || !strings.Contains(err.Error(), "addr") {
		t.Errorf("New with a bad addr = %v, want a validation error", err)
	}
}
