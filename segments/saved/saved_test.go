package saved_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/kafka"
	"github.com/cohortsync/cohortsync/kafka/kafkatest"
	"github.com/cohortsync/cohortsync/segments/saved"
)

func open(t *testing.T, client *kafka.Client) *saved.Store {
	t.Helper()
	s, err := saved.Open(testkit.Context(t, 20*time.Second), client, saved.Options{PollWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestStoreLifecycleAcrossInstances(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 20*time.Second)
	client := kafkatest.NewClient(t, kafkatest.NewCluster(t), "saved")
	a := open(t, client)

	churn, err := a.Create(ctx, "acme", "  churn risk ", json.RawMessage(`{ "cohort" : {"partner":"mixpanel","id":"c1"} }`))
	if err != nil {
		t.Fatal(err)
	}
	if churn.Name != "churn risk" || string(churn.Filter) != `{"cohort":{"partner":"mixpanel","id":"c1"}}` || churn.Workspace != "acme" {
		t.Fatalf("created %+v (filter %s)", churn, churn.Filter)
	}
	vip, err := a.Create(ctx, "acme", "vip", json.RawMessage(`{"not":{"cohort":{"partner":"mixpanel","id":"c2"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Create(ctx, "beta", "churn risk", json.RawMessage(`{"cohort":{"partner":"mixpanel","id":"c9"}}`)); err != nil {
		t.Fatalf("same name in another workspace: %v", err)
	}
	if _, err := a.Create(ctx, "acme", "vip", json.RawMessage(`{}`)); !errors.Is(err, saved.ErrNameTaken) {
		t.Fatalf("duplicate name: %v", err)
	}

	b := open(t, client)
	got := b.List("acme")
	if len(got) != 2 || got[0].ID != churn.ID || got[1].ID != vip.ID || string(got[1].Filter) != string(vip.Filter) {
		t.Fatalf("replayed list %+v", got)
	}
	if _, ok := b.Get("beta", churn.ID); ok {
		t.Fatal("acme's segment visible in beta")
	}
	if err := a.Delete(ctx, "beta", churn.ID); !errors.Is(err, saved.ErrNotFound) {
		t.Fatalf("delete through another workspace: %v", err)
	}
	if err := a.Delete(ctx, "acme", churn.ID); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.Get("acme", churn.ID); ok {
		t.Fatal("deleted segment still there on the deleting instance")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := b.Get("acme", churn.ID); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("deletion not seen by the other instance within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := a.Delete(ctx, "acme", churn.ID); !errors.Is(err, saved.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	// A returned segment is a copy: changing it changes nothing stored.
	g, _ := a.Get("acme", vip.ID)
	g.Filter[0] = 'X'
	if again, _ := a.Get("acme", vip.ID); again.Filter[0] != '{' {
		t.Fatal("Get shares the stored filter")
	}
}

func TestCreateRejects(t *testing.T) {
	t.Parallel()
	client := kafkatest.NewClient(t, kafkatest.NewCluster(t), "savedbad")
	s := open(t, client)
	tests := []struct {
		name, ws, segName, filter, want string
	}{
		{"empty name", "acme", " ", `{}`, "name must be a non-empty string"},
		{"control chars", "acme", "a\nb", `{}`, "control characters"},
		{"long name", "acme", strings.Repeat("n", saved.MaxNameLen+1), `{}`, "longer than"},
		{"no filter", "acme", "x", ``, "filter is required"},
		{"not json", "acme", "x", `{"and":`, "not JSON"},
		{"slash in workspace", "a/b", "x", `{}`, "workspace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := s.Create(testkit.Context(t, 20*time.Second), tt.ws, tt.segName, json.RawMessage(tt.filter))
			if !errors.Is(err, saved.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Create = %v, want ErrInvalid with %q", err, tt.want)
			}
		})
	}
}
