package config

import (
	"bytes"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Redacted is what MarshalYAMLText writes in place of a secret when asked to redact.
const Redacted = "<redacted>"

// SecretPaths lists the settings that hold secrets, as Reference writes their
// paths (<name> for a map level). TestSecretPathsAreComplete fails when a new
// setting is named like a secret and is neither here nor declared harmless
// in that test.
func SecretPaths() []string {
	return []string{
		"admin_token",
		"partners.<name>.api_key",
		"kafka.sasl.password",
		"clickhouse.password",
	}
}

// MarshalOptions says how MarshalYAMLText writes a configuration.
type MarshalOptions struct {
	// Redact writes Redacted in place of every secret that is set; a secret
	// that is empty stays empty, so the reader sees it is unset.
	Redact bool
}

// MarshalYAMLText writes c as a YAML file with every key, in the order of the
// Config struct, that Load reads back to c. Durations are written as a user
// would (720h, not 720h0m0s).
func (c Config) MarshalYAMLText(opts MarshalOptions) ([]byte, error) {
	secrets := SecretPaths()
	doc := &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{
		encodeNode(reflect.ValueOf(c), "", func(pattern string) bool {
			return opts.Redact && slices.Contains(secrets, pattern)
		}),
	}}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("encoding configuration: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encoding configuration: %w", err)
	}
	return b.Bytes(), nil
}

// encodeNode builds the node of v. pattern is v's path with map keys written
// <name>, as SecretPaths has them; redact says whether the value at a pattern
// is to be hidden.
func encodeNode(v reflect.Value, pattern string, redact func(pattern string) bool) *yaml.Node {
	t := v.Type()
	scalar := func(tag, value string) *yaml.Node {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: value}
	}
	switch {
	case t == durationType:
		return scalar("!!str", formatValue(v))
	case t.Kind() == reflect.String:
		if s := v.String(); s != "" && redact(pattern) {
			return scalar("!!str", Redacted)
		}
		return scalar("!!str", v.String())
	case t.Kind() == reflect.Bool:
		return scalar("!!bool", strconv.FormatBool(v.Bool()))
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		return scalar("!!int", strconv.FormatInt(v.Int(), 10))
	case t.Kind() == reflect.Slice:
		n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle}
		for i := range v.Len() {
			n.Content = append(n.Content, encodeNode(v.Index(i), pattern, redact))
		}
		return n
	case t.Kind() == reflect.Map:
		n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(a.String(), b.String()) })
		for _, k := range keys {
			n.Content = append(n.Content, scalar("!!str", k.String()),
				encodeNode(v.MapIndex(k), joinPath(pattern, mapKeyPlaceholder), redact))
		}
		return n
	case t.Kind() == reflect.Struct:
		n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		for i := range t.NumField() {
			name, ok := yamlKey(t.Field(i))
			if !ok {
				continue
			}
			n.Content = append(n.Content, scalar("!!str", name),
				encodeNode(v.Field(i), joinPath(pattern, name), redact))
		}
		return n
	default:
		// Config has no other kinds; TestMarshalRoundTrip would catch one.
		return scalar("!!str", fmt.Sprint(v.Interface()))
	}
}
