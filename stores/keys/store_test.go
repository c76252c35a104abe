package keys

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cohortsync/cohortsync/internal/testkit"
)

func TestStoreLifecycle(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 30*time.Second)
	s := openStore(t, newTestClient(t, testBrokers), Options{})

	k1, secret1, err := s.Create(ctx, "acme", "mixpanel", "first")
	if err != nil {
		t.Fatal(err)
	}
	if !ValidKeyID(k1.ID) || k1.Workspace != "acme" || k1.Partner != "mixpanel" || k1.Label != "first" || k1.CreatedAt.IsZero() || k1.Revoked() {
		t.Fatalf("created key %+v", k1)
	}
	if id, _ := ParseSecret(secret1); id != k1.ID {
		t.Fatalf("secret carries key id %q, want %q", id, k1.ID)
	}
	if k1.SecretSHA256 != HashSecret(secret1) {
		t.Fatal("stored hash is not the SHA-256 of the secret")
	}
	raw, err := json.Marshal(s.List("acme"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(secret1)) || bytes.Contains(raw, []byte(secret1[len(SecretPrefix)+keyIDLen+1:])) {
		t.Fatal("listed keys contain the secret")
	}

	// Read-your-writes: usable the moment Create returns.
	got, ok := s.VerifySecret(secret1)
	if !ok || got.ID != k1.ID || got.Workspace != "acme" || got.Partner != "mixpanel" {
		t.Fatalf("VerifySecret right after Create = %+v, %v", got, ok)
	}

	// Rotation: a second key of the same workspace and partner; both valid.
	k2, secret2, err := s.Create(ctx, "acme", "mixpanel", "second")
	if err != nil {
		t.Fatal(err)
	}
	for _, sec := range []string{secret1, secret2} {
		if _, ok := s.VerifySecret(sec); !ok {
			t.Fatalf("key %s refused while both should be valid", Mask(sec))
		}
	}
	if _, _, err := s.Create(ctx, "other", "heap", ""); err != nil {
		t.Fatal(err)
	}
	list := s.List("acme")
	if len(list) != 2 || list[0].ID != k1.ID || list[1].ID != k2.ID {
		t.Fatalf("List(acme) = %+v, want k1 then k2", list)
	}

	if err := s.Revoke(ctx, "other", k1.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoke from another workspace: %v, want ErrNotFound", err)
	}
	if err := s.Revoke(ctx, "acme", "ffffffffffffffff"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoke unknown key: %v, want ErrNotFound", err)
	}
	if err := s.Revoke(ctx, "acme", k1.ID); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.VerifySecret(secret1); ok {
		t.Fatal("revoked key still accepted")
	}
	if _, ok := s.VerifySecret(secret2); !ok {
		t.Fatal("revoking one key invalidated its sibling")
	}
	revoked, _ := s.Get(k1.ID)
	if err := s.Revoke(ctx, "acme", k1.ID); err != nil {
		t.Fatalf("second revoke: %v", err)
	}
	again, _ := s.Get(k1.ID)
	if !again.RevokedAt.Equal(*revoked.RevokedAt) {
		t.Fatal("second revoke moved the revocation time")
	}
	if ws := s.Workspaces(); !slices.Equal(ws, []string{"acme", "other"}) {
		t.Fatalf("Workspaces = %v, want [acme other] (a revoked key keeps its workspace listed)", ws)
	}
	list = s.List("acme")
	if len(list) != 2 || list[0].Status() != "revoked" || list[0].RevokedAt == nil || list[1].Status() != "active" {
		t.Fatalf("List after revoke = %+v", list)
	}
	if st := s.Status(); st.Keys != 3 || st.ActiveKeys != 2 || st.AppliedOffset < 4 {
		t.Fatalf("Status = %+v", st)
	}
	if err := s.Healthy(); err != nil {
		t.Fatalf("Healthy: %v", err)
	}
}

func TestListReturnsCopies(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 30*time.Second)
	s := openStore(t, newTestClient(t, testBrokers), Options{})
	k, _, err := s.Create(ctx, "acme", "mixpanel", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Revoke(ctx, "acme", k.ID); err != nil {
		t.Fatal(err)
	}
	l := s.List("acme")
	*l[0].RevokedAt = time.Time{}
	if again := s.List("acme"); again[0].RevokedAt.IsZero() {
		t.Fatal("changing a listed key changed the index")
	}
}

func TestVerifySecretRejects(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 30*time.Second)
	reg := prometheus.NewRegistry()
	s := openStore(t, newTestClient(t, testBrokers), Options{Registerer: reg})
	k, secret, err := s.Create(ctx, "acme", "amplitude", "")
	if err != nil {
		t.Fatal(err)
	}
	_, revokedSecret, err := s.Create(ctx, "acme", "amplitude", "")
	if err != nil {
		t.Fatal(err)
	}
	rk, _ := ParseSecret(revokedSecret)
	if err := s.Revoke(ctx, "acme", rk); err != nil {
		t.Fatal(err)
	}
	otherID := "0000000000000000"
	if otherID == k.ID {
		otherID = "1111111111111111"
	}
	tests := []struct {
		name   string
		secret string
		result string
	}{
		{"empty", "", resultMalformed},
		{"garbage", "not a secret", resultMalformed},
		{"truncated", secret[:len(secret)-1], resultMalformed},
		{"unknown key id", SecretPrefix + otherID + secret[len(SecretPrefix)+keyIDLen:], resultUnknown},
		{"right id, wrong secret", secret[:len(secret)-2] + flip(secret[len(secret)-2]) + secret[len(secret)-1:], resultMismatch},
		{"revoked", revokedSecret, resultRevoked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := testutil.ToFloat64(s.metrics.verify.WithLabelValues(tt.result))
			if got, ok := s.VerifySecret(tt.secret); ok || got.ID != "" {
				t.Fatalf("VerifySecret = %+v, %v; want refusal", got, ok)
			}
			if after := testutil.ToFloat64(s.metrics.verify.WithLabelValues(tt.result)); after != before+1 {
				t.Fatalf("verify_total{result=%q} went from %v to %v", tt.result, before, after)
			}
		})
	}
	if _, ok := s.VerifySecret(secret); !ok {
		t.Fatal("valid secret refused")
	}
	if got := testutil.ToFloat64(s.metrics.active); got != 1 {
		t.Fatalf("keys_active = %v, want 1", got)
	}
	n, err := testutil.GatherAndCount(reg, "cohortsync_keys_active", "cohortsync_keys_verify_total")
	if err != nil || n != 6 {
		t.Fatalf("gathered %d series (%v), want 1 gauge + 5 results", n, err)
	}
}

// flip changes one base64url character to another valid one.
func flip(c byte) string {
	if c == 'A' {
		return "Q"
	}
	return "A"
}

func TestCreateValidation(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 30*time.Second)
	s := openStore(t, newTestClient(t, testBrokers), Options{})
	tests := []struct {
		name, workspace, partner, label string
	}{
		{"empty workspace", "", "mixpanel", ""},
		{"bad workspace", "Acme Corp", "mixpanel", ""},
		{"empty partner", "acme", "", ""},
		{"bad partner", "acme", "Mix Panel", ""},
		{"long label", "acme", "mixpanel", strings.Repeat("x", MaxLabelLength+1)},
		{"control chars in label", "acme", "mixpanel", "a\nb"},
		{"invalid utf-8 label", "acme", "mixpanel", "\xff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, secret, err := s.Create(ctx, tt.workspace, tt.partner, tt.label)
			if !errors.Is(err, ErrInvalid) || secret != "" {
				t.Fatalf("Create = %q, %v; want ErrInvalid", secret, err)
			}
		})
	}
}

// TestRevocationAcrossInstances is the contract: a key created on one instance
// works on another, and a revocation on either is refused by both within 5 s.
func TestRevocationAcrossInstances(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 30*time.Second)
	client := newTestClient(t, testBrokers)
	a := openStore(t, client, Options{})
	b := openStore(t, client, Options{})

	k, secret, err := a.Create(ctx, "acme", "mixpanel", "shared")
	if err != nil {
		t.Fatal(err)
	}
	took := eventually(t, 5*time.Second, "instance B accepts a key created on A", func() bool {
		_, ok := b.VerifySecret(secret)
		return ok
	})
	t.Logf("B saw the new key after %s", took)

	if err := b.Revoke(ctx, "acme", k.ID); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.VerifySecret(secret); ok {
		t.Fatal("B accepts the key it just revoked")
	}
	took = eventually(t, 5*time.Second, "instance A refuses a key revoked on B", func() bool {
		_, ok := a.VerifySecret(secret)
		return !ok
	})
	t.Logf("A refused the revoked key after %s", took)
	if took > time.Second {
		t.Errorf("revocation took %s to reach A; the poll wait is %s", took, DefaultPollWait)
	}
}

// TestReopenSeesEverything replays the topic, after compaction too, and finds
// every key and every revocation.
func TestReopenSeesEverything(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 60*time.Second)
	// Own cluster: compaction is cluster-wide and must not touch other tests.
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	client := newTestClient(t, cluster.ListenAddrs())

	first, err := Open(ctx, client, Options{})
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{}
	for i := range 5 {
		k, secret, err := first.Create(ctx, "acme", "census", "")
		if err != nil {
			t.Fatal(err)
		}
		secrets[k.ID] = secret
		if i%2 == 0 {
			if err := first.Revoke(ctx, "acme", k.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := first.List("acme")
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	check := func(name string) {
		s, err := Open(ctx, client, Options{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		defer s.Close()
		got := s.List("acme")
		if len(got) != len(want) {
			t.Fatalf("%s: %d keys, want %d", name, len(got), len(want))
		}
		for i := range want {
			w, g := want[i], got[i]
			if g.ID != w.ID || g.SecretSHA256 != w.SecretSHA256 || !g.CreatedAt.Equal(w.CreatedAt) || g.Revoked() != w.Revoked() {
				t.Fatalf("%s: key %d = %+v, want %+v", name, i, g, w)
			}
			if _, ok := s.VerifySecret(secrets[w.ID]); ok == w.Revoked() {
				t.Fatalf("%s: VerifySecret(%s) = %v with revoked=%v", name, w.ID, ok, w.Revoked())
			}
		}
	}
	check("reopen")
	cluster.Compact()
	check("reopen after compaction")
}

// TestBadRecordsDoNotStopTheTail writes what a buggy or foreign producer
// might: the store skips it and keeps applying what follows.
func TestBadRecordsDoNotStopTheTail(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 30*time.Second)
	client := newTestClient(t, testBrokers)
	reg := prometheus.NewRegistry()
	s := openStore(t, client, Options{Registerer: reg})
	k, secret, err := s.Create(ctx, "acme", "segment", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Revoke(ctx, "acme", k.ID); err != nil {
		t.Fatal(err)
	}

	unrevoked := k
	unrevoked.RevokedAt = nil
	resurrect, _ := json.Marshal(record{Version: recordVersion, Key: unrevoked})
	valid, _ := json.Marshal(record{Version: recordVersion, Key: Key{ID: "abcdefabcdefabcd", Workspace: "acme", Partner: "heap", SecretSHA256: strings.Repeat("0", 64), CreatedAt: time.Now()}})
	futureVersion, _ := json.Marshal(record{Version: 99, Key: Key{ID: "1111111111111111", Workspace: "acme", Partner: "heap", SecretSHA256: strings.Repeat("0", 64), CreatedAt: time.Now()}})
	w := client.Writer(client.Config().Topics.Keys)
	defer w.Close()
	err = w.WriteMessages(ctx,
		kafkago.Message{Key: []byte("garbage"), Value: []byte("{not json")},
		kafkago.Message{Key: []byte("2222222222222222"), Value: valid}, // message key differs from key_id
		kafkago.Message{Key: []byte("1111111111111111"), Value: futureVersion},
		kafkago.Message{Key: []byte(k.ID), Value: resurrect},
		kafkago.Message{Key: []byte("abcdefabcdefabcd"), Value: valid},
	)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the valid record after the bad ones is applied", func() bool {
		_, ok := s.Get("abcdefabcdefabcd")
		return ok
	})
	if _, ok := s.Get("1111111111111111"); ok {
		t.Fatal("record of an unknown schema version was applied")
	}
	if _, ok := s.VerifySecret(secret); ok {
		t.Fatal("a later record without revoked_at brought a revoked key back")
	}
	if got := testutil.ToFloat64(s.metrics.invalidRecords); got != 3 {
		t.Fatalf("invalid_records_total = %v, want 3", got)
	}

	// A tombstone removes a key altogether.
	if err := w.WriteMessages(ctx, kafkago.Message{Key: []byte("abcdefabcdefabcd"), Value: nil}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "tombstone applied", func() bool {
		_, ok := s.Get("abcdefabcdefabcd")
		return !ok
	})
	if l := s.List("acme"); len(l) != 1 || l[0].ID != k.ID {
		t.Fatalf("List after tombstone = %+v", l)
	}
}

func TestMetricsRegistration(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 30*time.Second)
	client := newTestClient(t, testBrokers)
	reg := prometheus.NewRegistry()
	s, err := Open(ctx, client, Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, client, Options{Registerer: reg}); err == nil {
		t.Fatal("a second store on the same registry should fail to register")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Close unregisters, so the store can be re-opened on the same registry.
	s = openStore(t, client, Options{Registerer: reg})
	if _, _, err := s.Create(ctx, "acme", "heap", ""); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(s.metrics.active); got != 1 {
		t.Fatalf("keys_active = %v, want 1", got)
	}
}

func TestOpenFailsOnMissingTopic(t *testing.T) {
	t.Parallel()
	client := newTestClient(t, testBrokers)
	ctx := testkit.Context(t, 2*time.Second)
	start := time.Now()
	_, err := Open(ctx, client, Options{Topic: "keys.does-not-exist"})
	if err == nil {
		t.Fatal("Open on a missing topic succeeded")
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("Open took %s to fail", time.Since(start))
	}
}

// TestHealthyReportsLostBroker checks that a store cut off from Kafka says so
// instead of silently serving an index that may miss revocations.
func TestHealthyReportsLostBroker(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 30*time.Second)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	client := newTestClient(t, cluster.ListenAddrs())
	s, err := Open(ctx, client, Options{PollWait: 50 * time.Millisecond, MaxStaleness: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, secret, err := s.Create(ctx, "acme", "mixpanel", "")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond) // longer than MaxStaleness: the tail must keep confirming
	if err := s.Healthy(); err != nil {
		t.Fatalf("Healthy while the broker is up: %v", err)
	}
	cluster.Close()
	eventually(t, 5*time.Second, "Healthy reports the lost broker", func() bool { return s.Healthy() != nil })
	if _, ok := s.VerifySecret(secret); !ok {
		t.Fatal("the index should stay readable; callers decide with Healthy")
	}
	if _, _, err := s.Create(testkit.Context(t, time.Second), "acme", "mixpanel", ""); err == nil {
		t.Fatal("Create succeeded without a broker")
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case <-closed:
	case <-time.After(15 * time.Second):
		t.Fatal("Close hangs while the broker is gone")
	}
	if err := s.Healthy(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Healthy after Close = %v, want ErrClosed", err)
	}
	if _, _, err := s.Create(ctx, "acme", "mixpanel", ""); !errors.Is(err, ErrClosed) {
		t.Fatalf("Create after Close = %v, want ErrClosed", err)
	}
}

func TestStoreNeverLogsSecrets(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 30*time.Second)
	var buf testkit.SyncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	client := newTestClient(t, testBrokers)
	s := openStore(t, client, Options{Logger: log})
	k, secret, err := s.Create(ctx, "acme", "mixpanel", "")
	if err != nil {
		t.Fatal(err)
	}
	s.VerifySecret(secret)
	if err := s.Revoke(ctx, "acme", k.ID); err != nil {
		t.Fatal(err)
	}
	s.VerifySecret(secret)
	assertNoSecret(t, buf.String(), secret, k.ID)
}

// assertNoSecret fails when logs contain the secret or its random part, and
// also when they do not mention keyID, which would mean nothing was logged
// and the check proved nothing.
func assertNoSecret(t *testing.T, logs, secret, keyID string) {
	t.Helper()
	body := secret[len(SecretPrefix)+keyIDLen+1:]
	if strings.Contains(logs, secret) || strings.Contains(logs, body) {
		t.Fatalf("logs contain a secret:\n%s", logs)
	}
	if !strings.Contains(logs, keyID) {
		t.Fatalf("logs do not mention key %s at all:\n%s", keyID, logs)
	}
}
