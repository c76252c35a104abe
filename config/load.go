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
// It does not validate; call Validate on the result.
func Load(opts LoadOptions) (Config, error) {
	cfg := Default()
	path := opts.File
	if path == "" && opts.Flags != nil && opts.Flags.Lookup(FlagConfig) != nil {
		p, err := opts.Flags.GetString(FlagConfig)
		if err != nil {
			return Config{}, fmt.Errorf("--%s: %w", FlagConfig, err)
		}
		path = p
	}
	if path != "" {
		if err := loadFile(&cfg, path); err != nil {
			return Config{}, err
		}
	}
	if err := applyEnv(&cfg, opts.Env); err != nil {
		return Config{}, err
	}
	if opts.Flags != nil {
		if err := applyFlags(&cfg, opts.Flags); err != nil {
			return Config{}, err
		}
	}
	return cfg, nil
}

// loadFile overlays the YAML file at path on cfg. Keys the file leaves out keep
// the value cfg already has.
func loadFile(cfg *Config, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading config file: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	if doc.Kind == 0 || (doc.Kind == yaml.DocumentNode && len(doc.Content) == 0) {
		return nil // empty or comments only
	}
	// A misspelt key would otherwise be ignored silently and its default used.
	// The decoder's own KnownFields check names the Go type, not the key's
	// path, and is lost below custom unmarshalers, so the tree is checked here.
	if errs := unknownKeys(&doc, reflect.TypeFor[Config](), ""); len(errs) > 0 {
		for i, e := range errs {
			errs[i] = fmt.Errorf("config file %s: %w", path, e)
		}
		return errors.Join(errs...)
	}
	partners := cfg.Partners
	if err := doc.Decode(cfg); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	if cfg.Partners == nil {
		// The decoder sets an empty "partners:" to nil without asking
		// Partners.UnmarshalYAML; like an empty mapping it should change nothing.
		cfg.Partners = partners
	}
	return nil
}

// unknownKeys reports each mapping key of n that has no field in t, with its
// dotted path and line.
func unknownKeys(n *yaml.Node, t reflect.Type, path string) []error {
	for n.Kind == yaml.DocumentNode || n.Kind == yaml.AliasNode {
		if n.Kind == yaml.AliasNode {
			n = n.Alias
		} else if len(n.Content) > 0 {
			n = n.Content[0]
		} else {
			return nil
		}
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	join := func(key string) string {
		if path == "" {
			return key
		}
		return path + "." + key
	}
	var errs []error
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.ShortTag() == "!!merge" {
				// A merge key brings in another mapping's keys: check them against t too.
				errs = append(errs, unknownKeys(v, t, path)...)
				continue
			}
			f, ok := fields[k.Value]
			if !ok {
				errs = append(errs, fmt.Errorf("line %d: unknown key %s", k.Line, join(k.Value)))
				continue
			}
			errs = append(errs, unknownKeys(v, f.typ, join(k.Value))...)
		}
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			errs = append(errs, unknownKeys(n.Content[i+1], t.Elem(), join(n.Content[i].Value))...)
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, item := range n.Content {
			errs = append(errs, unknownKeys(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i))...)
		}
	}
	// Any other shape is a type mismatch, which the decoder reports.
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
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if slices.Contains(strings.Split(opts, ","), "inline") && f.Type.Kind() == reflect.Struct {
			for k, sub := range yamlFields(f.Type) {
				out[k] = yamlField{index: append([]int{i}, sub.index...), typ: sub.typ}
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = yamlField{index: []int{i}, typ: f.Type}
	}
	return out
}

// UnmarshalYAML merges the file's partners into those already set, the
// defaults, instead of replacing the map: a file that configures mixpanel
// keeps the other default partners, and a partner named without settings
// ("foo:") starts enabled like one named with them.
func (ps *Partners) UnmarshalYAML(n *yaml.Node) error {
	var raw map[string]yaml.Node
	if err := n.Decode(&raw); err != nil {
		return err
	}
	names := slices.Sorted(maps.Keys(raw))
	if *ps == nil {
		*ps = make(Partners, len(raw))
	}
	for _, name := range names {
		p, ok := (*ps)[name]
		if !ok {
			p = newPartner()
		}
		node := raw[name]
		if err := node.Decode(&p); err != nil {
			return fmt.Errorf("partners.%s: %w", name, err)
		}
		(*ps)[name] = p
	}
	return nil
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
// bad value at once, each naming its variable.
func applyEnv(cfg *Config, env map[string]string) error {
	if len(env) == 0 {
		return nil
	}
	var errs []error
	root := reflect.ValueOf(cfg).Elem()
	for _, f := range envFields(root.Type(), EnvPrefix, nil) {
		s, ok := env[f.name]
		if !ok {
			continue
		}
		if err := setFromString(root.FieldByIndex(f.index), s); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.name, err))
		}
	}
	errs = append(errs, applyPartnerEnv(cfg, env)...)
	return errors.Join(errs...)
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
			return err
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
			return fmt.Errorf("%q is not a whole number in range", s)
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
