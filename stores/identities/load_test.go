package identities

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/internal/testkit"
)

func TestLineReader(t *testing.T) {
	t.Parallel()
	type line struct {
		n       int64
		text    string
		tooLong bool
	}
	tests := []struct {
		name  string
		input string
		want  []line
	}{
		{"empty", "", nil},
		{"no final newline", "a\nb", []line{{1, "a", false}, {2, "b", false}}},
		{"crlf and blank", "a\r\n\r\nb\n", []line{{1, "a", false}, {2, "", false}, {3, "b", false}}},
		{"exactly the limit", "12345678\n", []line{{1, "12345678", false}}},
		{"limit plus cr", "12345678\r\n", []line{{1, "12345678", false}}},
		{"one over", "123456789\nok", []line{{1, "", true}, {2, "ok", false}}},
		{"far over, then more", strings.Repeat("x", 100) + "\nok\n", []line{{1, "", true}, {2, "ok", false}}},
		{"far over at the end", "ok\n" + strings.Repeat("x", 100), []line{{1, "ok", false}, {2, "", true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			lr := newLineReader(strings.NewReader(tt.input), 8)
			var got []line
			for {
				s, tooLong, err := lr.next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, line{lr.line, string(s), tooLong})
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("line %d: got %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestLoaderErrors(t *testing.T) {
	t.Parallel()
	client := newTestClient(t)
	l := newTestLoader(t, client)
	if _, err := l.Load(testkit.Context(t, 5*time.Second), "Bad Workspace", strings.NewReader(`{"user_id":"u"}`), nil); !errors.Is(err, ErrInvalidWorkspace) {
		t.Errorf("bad workspace: %v", err)
	}
	failing := io.MultiReader(strings.NewReader(`{"user_id":"u1"}`+"\n"), errReader{})
	st, err := l.Load(testkit.Context(t, 5*time.Second), "acme", failing, nil)
	if err == nil || !strings.Contains(err.Error(), "read line 2") {
		t.Errorf("failing reader: %+v, %v", st, err)
	}
	cfg := testConfig(t)
	cfg.MaxLineBytes = 2 << 20
	cfg.MaxBodyBytes = 4 << 20
	if _, err := NewLoader(client, cfg, nil); err == nil || !strings.Contains(err.Error(), "does not fit kafka.max_message_bytes") {
		t.Errorf("oversized lines: %v", err)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	if err := DefaultConfig("/data").Validate(); err != nil {
		t.Errorf("default config: %v", err)
	}
	bad := Config{PollWait: time.Second, MaxStaleness: time.Second, MaxLineBytes: 10, MaxBodyBytes: 5}
	err := bad.Validate()
	for _, want := range []string{"path:", "open_timeout:", "max_staleness:", "max_line_bytes:", "max_body_bytes:", "land_timeout:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, lacks %q", err, want)
		}
	}
}
