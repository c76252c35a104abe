package config

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"golang.org/x/term"
)

// NewLogger builds the logger l describes, writing to w. It checks l itself,
// so it is safe to call on a configuration that was not validated.
//
// Format "auto" writes text when w is a terminal (a person reads it) and
// JSON anywhere else (a collector parses it). Durations are written as text
// ("15s") in both: slog's JSON handler would write nanoseconds.
func (l Log) NewLogger(w io.Writer) (*slog.Logger, error) {
	level, err := parseLevel(l.Level)
	if err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: durationsAsText}
	format := strings.ToLower(l.Format)
	if format == "auto" {
		format = "json"
		if isTerminal(w) {
			format = "text"
		}
	}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log.format: %w", checkFormat(l.Format))
}

// durationsAsText writes a time.Duration as Go writes it ("1m30s").
func durationsAsText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func checkFormat(s string) error {
	switch strings.ToLower(s) {
	case "auto", "json", "text":
		return nil
	}
	return fmt.Errorf("%q is not one of auto, json, text", s)
}

// parseLevel accepts only the four named levels: slog's own parser also takes
// offsets such as "info+2", which would be a surprising thing to support in a
// config file. Case is ignored here and in the format because values set
// through env vars are often upper-cased.
func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%q is not one of debug, info, warn, error", s)
}
