// Package jsonscan reads JSON in exactly the form one of the project's own
// encoders writes it, without reflection: fixed field names in a fixed order,
// no whitespace, strings without escapes. The input is copied into one string
// once and every string read is a slice of it, so a record of a thousand ids
// costs a few allocations instead of a thousand. Every method reports false
// on anything it does not expect; callers then read the input with
// encoding/json, which gives the answer for every other form.
package jsonscan

import "unicode/utf8"

// Scanner walks one JSON document.
type Scanner struct {
	data []byte
	text string // data as one string; every string read is a slice of it
	i    int
}

// New returns a scanner over data, or false when data is not valid UTF-8
// (encoding/json would replace the invalid bytes, which slicing cannot).
func New(data []byte) (*Scanner, bool) {
	if !utf8.Valid(data) {
		return nil, false
	}
	return &Scanner{data: data, text: string(data)}, true
}

// Literal consumes lit if the input continues with it.
func (s *Scanner) Literal(lit string) bool {
	if len(s.data)-s.i < len(lit) || s.text[s.i:s.i+len(lit)] != lit {
		return false
	}
	s.i += len(lit)
	return true
}

// Field reads name (which includes its quotes and colon) and a string.
func (s *Scanner) Field(name string, dst *string) bool {
	return s.Literal(name) && s.String(dst)
}

// String reads a JSON string without escapes. A backslash, or a control
// character (invalid in JSON unescaped), makes it fail, as does a missing
// closing quote.
func (s *Scanner) String(dst *string) bool {
	if s.i >= len(s.data) || s.data[s.i] != '"' {
		return false
	}
	start := s.i + 1
	for j := start; j < len(s.data); j++ {
		switch b := s.data[j]; {
		case b == '"':
			*dst = s.text[start:j]
			s.i = j + 1
			return true
		case b == '\\' || b < 0x20:
			return false
		}
	}
	return false
}

// Array reads `[e,e,...]`, calling elem to read each element.
func (s *Scanner) Array(elem func() bool) bool {
	if !s.Literal("[") {
		return false
	}
	for n := 0; !s.Literal("]"); n++ {
		if n > 0 && !s.Literal(",") {
			return false
		}
		if !elem() {
			return false
		}
	}
	return true
}

// Strings reads an array of strings. An empty one, `[]`, gives an empty
// non-nil slice, as encoding/json does.
func (s *Scanner) Strings(dst *[]string) bool {
	out := []string{}
	ok := s.Array(func() bool {
		var v string
		if !s.String(&v) {
			return false
		}
		out = append(out, v)
		return true
	})
	if ok {
		*dst = out
	}
	return ok
}

// Pair reads an object of two string fields in this order:
// `{first"a",second"b"}`, the names with their quotes and colons.
func (s *Scanner) Pair(first string, a *string, second string, b *string) bool {
	return s.Literal("{") && s.Field(first, a) && s.Literal(",") && s.Field(second, b) && s.Literal("}")
}

// End reports whether the whole input has been read.
func (s *Scanner) End() bool { return s.i == len(s.data) }
