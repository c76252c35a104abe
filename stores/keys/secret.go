package keys

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
)

// SecretPrefix starts every client secret, so that leaked secrets are easy to
// spot and so that a secret is never mistaken for an admin token (cst_).
const SecretPrefix = "csk_"

const (
	keyIDBytes     = 8 // 16 hex characters: enough to never collide in practice, short enough to read out
	keyIDLen       = 2 * keyIDBytes
	secretRandLen  = 32 // bytes of entropy in a secret: 256 bits
	secretBodyLen  = 43 // base64url without padding of 32 bytes
	secretTotalLen = len(SecretPrefix) + keyIDLen + 1 + secretBodyLen
	maskedSuffix   = "****"
)

// newKeyID returns a random key id of 16 lowercase hex characters.
func newKeyID() (string, error) {
	var b [keyIDBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("keys: generate key id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// newSecret returns a client secret for keyID. The key id is embedded so that
// verification is one map lookup plus one hash comparison, with no need to
// hash against every stored key.
func newSecret(keyID string) (string, error) {
	var b [secretRandLen]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("keys: generate secret: %w", err)
	}
	return SecretPrefix + keyID + "_" + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// ParseSecret returns the key id inside a client secret, and false when the
// secret does not have the exact shape csk_<16 hex>_<43 base64url>. The parse
// is by position rather than by splitting on "_", because base64url itself
// uses "_".
func ParseSecret(secret string) (keyID string, ok bool) {
	if len(secret) != secretTotalLen || secret[:len(SecretPrefix)] != SecretPrefix {
		return "", false
	}
	id := secret[len(SecretPrefix) : len(SecretPrefix)+keyIDLen]
	if !ValidKeyID(id) || secret[len(SecretPrefix)+keyIDLen] != '_' {
		return "", false
	}
	body := secret[len(SecretPrefix)+keyIDLen+1:]
	raw, err := base64.RawURLEncoding.Strict().DecodeString(body)
	if err != nil || len(raw) != secretRandLen {
		return "", false
	}
	return id, true
}

// ValidKeyID reports whether id looks like a key id this package generates.
func ValidKeyID(id string) bool {
	if len(id) != keyIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// HashSecret returns the hex SHA-256 of a secret: the only form in which a
// secret is ever stored. A fast hash is enough because the secret carries 256
// random bits; there is nothing for a slow password hash to protect.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Mask returns a form of secret that is safe to show in a response body or a
// log line: csk_<key_id>_****. Anything that is not recognisably a secret is
// masked entirely, because it might still be one with a typo in it.
func Mask(secret string) string {
	if len(secret) >= len(SecretPrefix)+keyIDLen && secret[:len(SecretPrefix)] == SecretPrefix {
		id := secret[len(SecretPrefix) : len(SecretPrefix)+keyIDLen]
		if ValidKeyID(id) {
			return SecretPrefix + id + "_" + maskedSuffix
		}
	}
	return maskedSuffix
}
