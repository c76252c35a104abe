package keys

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"regexp"
	"strings"
	"testing"
)

var secretShape = regexp.MustCompile(`^csk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$`)

func TestNewSecretFormatAndEntropy(t *testing.T) {
	t.Parallel()
	const n = 2000
	seenIDs := make(map[string]bool, n)
	seenBodies := make(map[string]bool, n)
	// Count set bits over all secrets: uniformly random bytes set half of them.
	var ones, bits int
	for range n {
		id, err := newKeyID()
		if err != nil {
			t.Fatal(err)
		}
		secret, err := newSecret(id)
		if err != nil {
			t.Fatal(err)
		}
		if !secretShape.MatchString(secret) {
			t.Fatalf("secret %q does not have the documented shape", Mask(secret))
		}
		got, ok := ParseSecret(secret)
		if !ok || got != id {
			t.Fatalf("ParseSecret(%s) = %q, %v; want %q, true", Mask(secret), got, ok, id)
		}
		body := secret[len(SecretPrefix)+keyIDLen+1:]
		raw, err := base64.RawURLEncoding.DecodeString(body)
		if err != nil || len(raw) != 32 {
			t.Fatalf("secret body decodes to %d bytes (%v), want 32", len(raw), err)
		}
		if seenIDs[id] || seenBodies[body] {
			t.Fatal("repeated key id or secret body: not random")
		}
		seenIDs[id], seenBodies[body] = true, true
		for _, b := range raw {
			for i := range 8 {
				ones += int(b>>i) & 1
			}
			bits += 8
		}
	}
	if ratio := float64(ones) / float64(bits); ratio < 0.49 || ratio > 0.51 {
		t.Fatalf("share of set bits %.4f, want about 0.5", ratio)
	}
}

func TestParseSecret(t *testing.T) {
	t.Parallel()
	const id = "0123456789abcdef"
	body := base64.RawURLEncoding.EncodeToString(make([]byte, 32))
	// A body full of '_' and '-' proves the parse does not split on '_'.
	underscores := base64.RawURLEncoding.EncodeToString([]byte(strings.Repeat("\xff\xff\xfe", 10) + "\xff\xff"))
	tests := []struct {
		name   string
		secret string
		wantID string
		wantOK bool
	}{
		{"valid", "csk_" + id + "_" + body, id, true},
		{"body with underscores", "csk_" + id + "_" + underscores, id, true},
		{"empty", "", "", false},
		{"wrong prefix", "csx_" + id + "_" + body, "", false},
		{"no prefix", id + "_" + body + "abcd", "", false},
		{"uppercase id", "csk_" + strings.ToUpper(id) + "_" + body, "", false},
		{"short id", "csk_0123456789abcde_" + body + "A", "", false},
		{"missing separator", "csk_" + id + "-" + body, "", false},
		{"short body", "csk_" + id + "_" + body[:42], "", false},
		{"long body", "csk_" + id + "_" + body + "A", "", false},
		{"padding", "csk_" + id + "_" + body[:42] + "=", "", false},
		{"standard base64 alphabet", "csk_" + id + "_" + body[:42] + "+", "", false},
		{"non-canonical last char", "csk_" + id + "_" + body[:42] + "B", "", false},
		{"admin token", "cst_" + id + "_" + body, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := ParseSecret(tt.secret)
			if got != tt.wantID || ok != tt.wantOK {
				t.Fatalf("ParseSecret = %q, %v; want %q, %v", got, ok, tt.wantID, tt.wantOK)
			}
		})
	}
}

func TestHashSecret(t *testing.T) {
	t.Parallel()
	secret := "csk_0123456789abcdef_" + base64.RawURLEncoding.EncodeToString(make([]byte, 32))
	sum := sha256.Sum256([]byte(secret))
	if got, want := HashSecret(secret), hex.EncodeToString(sum[:]); got != want {
		t.Fatalf("HashSecret = %s, want %s", got, want)
	}
	if got := HashSecret(secret); strings.Contains(got, secret[len(SecretPrefix)+keyIDLen+1:]) {
		t.Fatal("hash contains the secret body")
	}
}

func TestMask(t *testing.T) {
	t.Parallel()
	body := base64.RawURLEncoding.EncodeToString(make([]byte, 32))
	tests := []struct {
		name, in, want string
	}{
		{"secret", "csk_0123456789abcdef_" + body, "csk_0123456789abcdef_****"},
		{"truncated secret keeps id", "csk_0123456789abcdef_abc", "csk_0123456789abcdef_****"},
		{"garbage", "hunter2", "****"},
		{"empty", "", "****"},
		{"bad id", "csk_XYZ3456789abcdef_" + body, "****"},
		{"prefix only", "csk_", "****"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Mask(tt.in); got != tt.want {
				t.Fatalf("Mask(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestValidWorkspace(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"simple", "acme", true},
		{"digits dash underscore", "acme-eu_2", true},
		{"63 chars", strings.Repeat("a", 63), true},
		{"64 chars", strings.Repeat("a", 64), false},
		{"empty", "", false},
		{"uppercase", "Acme", false},
		{"leading dash", "-acme", false},
		{"slash", "acme/eu", false},
		{"dot dot", "..", false},
		{"space", "ac me", false},
		{"unicode", "acmé", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := ValidWorkspace(tt.in); got != tt.want {
				t.Fatalf("ValidWorkspace(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}
