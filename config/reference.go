package config

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Setting is one configuration key as docs/OPERATIONS.md documents it.
type Setting struct {
	// Path is the YAML path, such as kafka.sasl.password; a map level is
	// written <name> (partners.<name>.api_key).
	Path string
	// Env is the environment variable that sets it.
	Env string
	// Flag is the command-line flag that sets it, with its dashes; empty when none.
	Flag string
	// Type is how the value is written: string, bool, integer, duration, list.
	Type string
	// Default is Default()'s value, formatted as a user would write it.
	Default string
	// Doc says what the setting does.
	Doc string
}

// mapKeyPlaceholder stands for the key of a map level in paths and env names.
const mapKeyPlaceholder = "<name>"

// Reference lists every setting of Config in field order, with its
// environment variable, flag, default and description. It walks the struct
// by reflection, so a new field shows up here (and in the generated
// documentation) without anyone listing it; its description comes from
// settingDocs.
func Reference() []Setting {
	docs := settingDocs()
	flags := settingFlags()
	var out []Setting
	walkSettings(reflect.TypeFor[Config](), reflect.ValueOf(Default()), "", func(path string, t reflect.Type, defaults []reflect.Value, keys []string) {
		out = append(out, Setting{
			Path:    path,
			Env:     envName(path),
			Flag:    flags[path],
			Type:    typeName(t),
			Default: formatDefaults(defaults, keys),
			Doc:     docs[path],
		})
	})
	return out
}

// walkSettings calls leaf for every scalar or list field under t. v holds the
// default values at this level; below a map it is the zero Value, and the
// defaults of each map entry are passed along in defaults, with their keys.
func walkSettings(t reflect.Type, v reflect.Value, prefix string, leaf func(path string, t reflect.Type, defaults []reflect.Value, keys []string)) {
	walkLevel(t, []reflect.Value{v}, nil, prefix, leaf)
}

func walkLevel(t reflect.Type, vals []reflect.Value, keys []string, prefix string, leaf func(string, reflect.Type, []reflect.Value, []string)) {
	join := func(name string) string {
		if prefix == "" {
			return name
		}
		return prefix + "." + name
	}
	switch {
	case t.Kind() == reflect.Struct && t != durationType:
		for i := range t.NumField() {
			f := t.Field(i)
			name, ok := yamlKey(f)
			if !ok {
				continue
			}
			sub := make([]reflect.Value, len(vals))
			for j, v := range vals {
				sub[j] = v.Field(i)
			}
			walkLevel(f.Type, sub, keys, join(name), leaf)
		}
	case t.Kind() == reflect.Map:
		// Every entry of every default map contributes to the defaults of
		// the fields below, keyed by its map key.
		var sub []reflect.Value
		var subKeys []string
		for _, v := range vals {
			mk := v.MapKeys()
			slices.SortFunc(mk, func(a, b reflect.Value) int { return strings.Compare(a.String(), b.String()) })
			for _, k := range mk {
				sub = append(sub, v.MapIndex(k))
				subKeys = append(subKeys, k.String())
			}
		}
		walkLevel(t.Elem(), sub, subKeys, join(mapKeyPlaceholder), leaf)
	default:
		leaf(prefix, t, vals, keys)
	}
}

// envName is the variable of a path: COHORTSYNC_ and the path upper-cased,
// dots as underscores (Load's rule; for partners, <NAME> is the partner).
func envName(path string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
}

func typeName(t reflect.Type) string {
	if t == durationType {
		return "duration"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "bool"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "integer"
	case reflect.Slice:
		return "list of " + typeName(t.Elem()) + "s (comma-separated in env)"
	default:
		return t.String()
	}
}

// formatDefaults renders the default of a leaf. Below a map the entries may
// differ, so each distinct value names the keys that have it.
func formatDefaults(vals []reflect.Value, keys []string) string {
	if keys == nil {
		if len(vals) == 0 {
			return ""
		}
		return formatValue(vals[0])
	}
	if len(vals) == 0 {
		return ""
	}
	byValue := map[string][]string{}
	for i, v := range vals {
		s := formatValue(v)
		byValue[s] = append(byValue[s], keys[i])
	}
	var parts []string
	for _, s := range slices.Sorted(maps.Keys(byValue)) {
		shown := s
		if shown == "" {
			shown = "(empty)"
		}
		parts = append(parts, fmt.Sprintf("%s for %s", shown, strings.Join(byValue[s], ", ")))
	}
	return strings.Join(parts, "; ")
}

func formatValue(v reflect.Value) string {
	if v.Type() == durationType {
		return formatDuration(time.Duration(v.Int()))
	}
	switch v.Kind() {
	case reflect.String:
		return v.String()
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10)
	case reflect.Slice:
		items := make([]string, v.Len())
		for i := range items {
			items[i] = formatValue(v.Index(i))
		}
		return strings.Join(items, ",")
	default:
		return fmt.Sprint(v.Interface())
	}
}

// formatDuration drops the zero units time.Duration.String keeps (720h0m0s → 720h).
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// settingFlags maps the paths that a flag sets to that flag.
func settingFlags() map[string]string {
	return map[string]string{
		"data_dir":                    "--" + FlagDataDir,
		"http_addr":                   "--" + FlagHTTPAddr,
		"log.level":                   "--" + FlagLogLevel,
		"kafka.brokers":               "--" + FlagKafkaBrokers,
		"clickhouse.addr":             "--" + FlagClickHouseAddr,
		"clickhouse.database":         "--" + FlagClickHouseDatabase,
		"clickhouse.migrate_on_start": "--" + FlagNoMigrate + " (serve; sets false)",
	}
}

// ReferenceMarkdown renders Reference as the Markdown table of docs/OPERATIONS.md.
func ReferenceMarkdown() string {
	var b strings.Builder
	b.WriteString("| key | environment variable | flag | type | default | meaning |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- |\n")
	cell := func(s string) string {
		if s == "" {
			return ""
		}
		return "`" + strings.ReplaceAll(s, "|", `\|`) + "`"
	}
	for _, s := range Reference() {
		def := cell(s.Default)
		if s.Default == "" {
			def = "(empty)"
		} else if strings.Contains(s.Default, " for ") {
			def = strings.ReplaceAll(s.Default, "|", `\|`)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n",
			cell(s.Path), cell(s.Env), cell(s.Flag), s.Type, def, strings.ReplaceAll(s.Doc, "|", `\|`))
	}
	return b.String()
}
