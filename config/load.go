package config

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// LoadOptions says where Load finds configuration besides the defaults.
type LoadOptions struct {
	// File is a YAML file. Empty means the --config flag of Flags, if set,
	// and otherwise no file.
	File string
	// Env holds environment variables by name. Nil means none: the process
	// environment is only read when the caller passes OSEnv(), so tests can
	// run in parallel with their own variables.
	Env map[string]string
	// Flags is a flag set BindFlags registered on, already parsed. Only flags
	// the user set are applied, so a flag's default never hides the file or env.
	Flags *pflag.FlagSet
}

// OSEnv returns the environment of the process, for LoadOptions.Env.
func OSEnv() map[string]string {
	env := make(map[string]string)
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}

// Load builds the configuration from, in increasing precedence: Default(),
// the YAML file, COHORTSYNC_* environment variables and the flags that were set.
//
// It does not stop at the first problem: every layer is applied and every
// problem reported, joined with errors.Join, one per line and each naming
// its key path (with the file's line) or its variable or flag. A setting
// whose value was rejected keeps the value of the layer below, so the
// Config returned alongside an error is the best that could be built, and
// validating it as well (Validate) shows the user everything to fix in one
// run. Load does not validate.
func Load(opts LoadOptions) (Config, error) {
	cfg := Default()
	var errs []error
	path := opts.File
	if path == "" && opts.Flags != nil && opts.Flags.Lookup(FlagConfig) != nil {
		p, err := opts.Flags.GetString(FlagConfig)
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s: %w", FlagConfig, err))
		}
		path = p
	}
	if path != "" {
		errs = append(errs, loadFile(&cfg, path)...)
	}
	errs = append(errs, applyEnv(&cfg, opts.Env)...)
	if opts.Flags != nil {
		errs = append(errs, applyFlags(&cfg, opts.Flags)...)
	}
	return cfg, errors.Join(errs...)
}

// loadFile overlays the YAML file at path on cfg and returns every problem.
// Keys the file leaves out, and keys whose value is rejected, keep the value
// cfg already has.
func loadFile(cfg *Config, path string) []error {
	data, err := os.ReadFile(path)
	if err != nil {
		return []error{fmt.Errorf("reading config file: %w", err)}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return []error{fmt.Errorf("config file %s: %w", path, err)}
	}
	if doc.Kind == 0 || (doc.Kind == yaml.DocumentNode && len(doc.Content) == 0) {
		return nil // empty or comments only
	}
	if errs := checkDocument(&doc, path); len(errs) > 0 {
		return errs
	}
	d := fileDecoder{}
	d.decode(&doc, reflect.ValueOf(cfg).Elem(), "")
	return d.errs
}

// checkDocument has go-yaml decode the document without a target type, which
// applies its checks of the document itself: duplicate keys, merge keys whose
// value is not a mapping, aliases that contain themselves and excessive
// aliasing (a "billion laughs" file). fileDecoder relies on these.
func checkDocument(doc *yaml.Node, path string) []error {
	var probe any
	err := doc.Decode(&probe)
	if err == nil {
		return nil
	}
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return []error{fmt.Errorf("config file %s: %w", path, err)}
	}
	errs := make([]error, len(te.Errors))
	for i, e := range te.Errors {
		errs[i] = fmt.Errorf("config file %s: %s", path, e)
	}
	return errs
}

type yamlField struct {
	index []int
	typ   reflect.Type
}

// yamlFields maps each YAML key of struct type t to its field, by the rules of
// go.yaml.in/yaml/v3: the tag's name, else the lower-cased field name; "-"
// skips; ",inline" lifts a struct's fields into the parent.
func yamlFields(t reflect.Type) map[string]yamlField {
	out := make(map[string]yamlField)
	for i := range t.NumField() {
		f := t.Field(i)
		name, ok := yamlKey(f)
		if !ok {
			continue
		}
		if _, opts, _ := strings.Cut(f.Tag.Get("yaml"), ","); slices.Contains(strings.Split(opts, ","), "inline") && f.Type.Kind() == reflect.Struct {
			for k, sub := range yamlFields(f.Type) {
				out[k] = yamlField{index: append([]int{i}, sub.index...), typ: sub.typ}
			}
			continue
		}
		out[name] = yamlField{index: []int{i}, typ: f.Type}
	}
	return out
}

// yamlKey is the key of struct field f in a YAML file: its tag's name, else
// its lower-cased name; ok is false for a field the file cannot set
// (unexported, or tagged "-").
func yamlKey(f reflect.StructField) (name string, ok bool) {
	if !f.IsExported() {
		return "", false
	}
	name, _, _ = strings.Cut(f.Tag.Get("yaml"), ",")
	switch name {
	case "-":
		return "", false
	case "":
		return strings.ToLower(f.Name), true
	}
	return name, true
}

// envField is one scalar setting that an environment variable can set.
type envField struct {
	name  string
	index []int
	typ   reflect.Type
}

// envFields lists the variable of every scalar field under t, named after its
// YAML path: kafka.sasl.password is COHORTSYNC_KAFKA_SASL_PASSWORD. Maps are
// left out; partners have their own scheme (applyPartnerEnv).
func envFields(t reflect.Type, prefix string, index []int) []envField {
	var out []envField
	for key, f := range yamlFields(t) {
		name := prefix + strings.ToUpper(key)
		idx := append(slices.Clip(index), f.index...)
		switch f.typ.Kind() {
		case reflect.Struct:
			out = append(out, envFields(f.typ, name+"_", idx)...)
		case reflect.Map:
		default:
			out = append(out, envField{name: name, index: idx, typ: f.typ})
		}
	}
	slices.SortFunc(out, func(a, b envField) int { return strings.Compare(a.name, b.name) })
	return out
}

// applyEnv overlays the COHORTSYNC_* variables of env on cfg and reports every
// bad value at once, each naming its variable. A COHORTSYNC_* variable that
// configures nothing is reported too, with the known name it is closest to:
// a misspelt variable would otherwise leave its setting at the default
// without a word.
func applyEnv(cfg *Config, env map[string]string) []error {
	if len(env) == 0 {
		return nil
	}
	var errs []error
	root := reflect.ValueOf(cfg).Elem()
	fields := envFields(root.Type(), EnvPrefix, nil)
	known := make(map[string]bool, len(fields))
	for _, f := range fields {
		known[f.name] = true
		s, ok := env[f.name]
		if !ok {
			continue
		}
		if err := setFromString(root.FieldByIndex(f.index), s); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.name, err))
		}
	}
	errs = append(errs, unknownEnv(env, known)...)
	errs = append(errs, applyPartnerEnv(cfg, env)...)
	return errs
}

// unknownEnv reports the COHORTSYNC_* variables of env that are neither a
// setting (known), a partner variable (applyPartnerEnv checks those) nor
// read elsewhere by the project (nonConfigEnv).
func unknownEnv(env map[string]string, known map[string]bool) []error {
	var names []string
	for k := range env {
		if strings.HasPrefix(k, EnvPrefix) && !known[k] && !strings.HasPrefix(k, EnvPrefix+"PARTNERS_") && !isNonConfigEnv(k) {
			names = append(names, k)
		}
	}
	slices.Sort(names) // map order would shuffle the report between runs
	candidates := slices.Sorted(maps.Keys(known))
	var errs []error
	for _, k := range names {
		msg := "unknown variable, it sets nothing"
		if s := closest(k, candidates); s != "" {
			msg += "; did you mean " + s + "?"
		}
		errs = append(errs, fmt.Errorf("%s: %s", k, msg))
	}
	return errs
}

// applyPartnerEnv handles COHORTSYNC_PARTNERS_<NAME>_API_KEY and _ENABLED. The
// partner name is not known in advance (a variable can add a partner), so the
// variables are found by prefix and the setting by suffix.
func applyPartnerEnv(cfg *Config, env map[string]string) []error {
	const prefix = EnvPrefix + "PARTNERS_"
	var names []string
	for k := range env {
		if strings.HasPrefix(k, prefix) {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	var errs []error
	for _, k := range names {
		rest := strings.TrimPrefix(k, prefix)
		var partner string
		var set func(p *Partner, s string) error
		switch {
		case strings.HasSuffix(rest, "_API_KEY"):
			partner = strings.TrimSuffix(rest, "_API_KEY")
			set = func(p *Partner, s string) error { p.APIKey = s; return nil }
		case strings.HasSuffix(rest, "_ENABLED"):
			partner = strings.TrimSuffix(rest, "_ENABLED")
			set = func(p *Partner, s string) error {
				b, err := strconv.ParseBool(s)
				if err != nil {
					return fmt.Errorf("%q is not a boolean (true, false, 1, 0)", s)
				}
				p.Enabled = b
				return nil
			}
		default:
			// Under this prefix a variable can only be meant for us, so an
			// unknown suffix is a typo worth stopping for.
			errs = append(errs, fmt.Errorf("%s: unknown partner setting, want %s<NAME>_API_KEY or %s<NAME>_ENABLED", k, prefix, prefix))
			continue
		}
		if partner == "" {
			errs = append(errs, fmt.Errorf("%s: missing partner name", k))
			continue
		}
		name := strings.ToLower(partner)
		if cfg.Partners == nil {
			cfg.Partners = make(Partners)
		}
		p, ok := cfg.Partners[name]
		if !ok {
			p = newPartner()
		}
		if err := set(&p, env[k]); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k, err))
			continue
		}
		cfg.Partners[name] = p
	}
	return errs
}

var durationType = reflect.TypeFor[time.Duration]()

// setFromString parses s into v by v's type: durations as time.ParseDuration,
// bools as strconv.ParseBool, integers in base 10, string lists comma-separated.
func setFromString(v reflect.Value, s string) error {
	if v.Type() == durationType {
		d, err := time.ParseDuration(s)
		if err != nil {
			return notDuration(s)
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%q is not a boolean (true, false, 1, 0)", s)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, v.Type().Bits())
		if err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return outOfRange(s, v.Type())
			}
			return notWholeNumber(s)
		}
		v.SetInt(n)
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("lists of %s cannot be set from the environment", v.Type().Elem())
		}
		var items []string
		for item := range strings.SplitSeq(s, ",") {
			if item = strings.TrimSpace(item); item != "" {
				items = append(items, item)
			}
		}
		v.Set(reflect.ValueOf(items))
	default:
		return fmt.Errorf("a %s cannot be set from the environment", v.Type())
	}
	return nil
}
