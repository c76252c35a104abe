package files

import (
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// TestLineReaderSmallBuffer drives lines across the bufio buffer's edge,
// which files of real sizes only reach with very long lines.
func TestLineReaderSmallBuffer(t *testing.T) {
	t.Parallel()
	in := strings.Join([]string{
		"short",
		strings.Repeat("a", 40),        // spans several buffers, at the limit
		strings.Repeat("b", 41),        // one over
		strings.Repeat("c", 40) + "\r", // at the limit plus a CR
		"",
		strings.Repeat("d", 100), // far over
		"last-without-newline",
	}, "\n")
	l := newLineReader(strings.NewReader(in), 16, 40)
	type got struct {
		n    int64
		line string
		long bool
	}
	var gots []got
	for {
		line, n, err := l.next()
		if err == io.EOF {
			break
		}
		if err != nil && !errors.Is(err, errLineTooLong) {
			t.Fatal(err)
		}
		gots = append(gots, got{n, string(line), err != nil})
	}
	want := []got{
		{1, "short", false},
		{2, strings.Repeat("a", 40), false},
		{3, "", true},
		{4, strings.Repeat("c", 40), false},
		{5, "", false},
		{6, "", true},
		{7, "last-without-newline", false},
	}
	if !reflect.DeepEqual(gots, want) {
		t.Errorf("lines\n got %+v\nwant %+v", gots, want)
	}
}

func TestSplitCSVLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want []string
		err  bool
	}{
		{"a,b,c", []string{"a", "b", "c"}, false},
		{"a,,", []string{"a", "", ""}, false},
		{`"a,b","c""d",""`, []string{"a,b", `c"d`, ""}, false},
		{`"x"`, []string{"x"}, false},
		{`a"b,c`, nil, true},
		{`"a"b,c`, nil, true},
		{`"open,c`, nil, true},
		{`,"`, nil, true},
	}
	for _, tc := range tests {
		got, err := splitCSVLine([]byte(tc.in), nil)
		if (err != nil) != tc.err {
			t.Errorf("%q: err %v, want error %v", tc.in, err, tc.err)
			continue
		}
		if !tc.err && !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: %q, want %q", tc.in, got, tc.want)
		}
	}
}
