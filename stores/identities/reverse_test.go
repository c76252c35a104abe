package identities

import (
	"reflect"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/internal/testkit"
)

func TestIndexLookupUser(t *testing.T) {
	t.Parallel()
	x := openTestIndex(t, "")
	f := &feed{t: t}
	f.put("acme", Record{UserID: "u1", DeviceIDs: []string{"dev-1"}}).
		put("acme", Record{UserID: "u2", ExternalID: "ext-2", Aliases: []Alias{{Name: "bob@x.io", Label: "email"}}}).
		put("acme", Record{UserID: "u3", Aliases: []Alias{{Name: "carol", Label: "crm"}}}).
		put("globex", Record{UserID: "u1", ExternalID: "g-ext-1"}).
		put("acme", Record{UserID: "gone", ExternalID: "ext-gone"}).
		tombstone("acme", "gone").
		// u1 is identified later: the record is replaced whole.
		put("acme", Record{UserID: "u1", ExternalID: "ext-1", DeviceIDs: []string{"dev-1"}})
	apply(t, x, 0, f.msgs)

	for _, tc := range []struct {
		ws, user string
		want     Record
		found    bool
	}{
		{"acme", "u1", Record{UserID: "u1", ExternalID: "ext-1", DeviceIDs: []string{"dev-1"}}, true},
		{"acme", "u2", Record{UserID: "u2", ExternalID: "ext-2", Aliases: []Alias{{Name: "bob@x.io", Label: "email"}}}, true},
		{"acme", "u3", Record{UserID: "u3", Aliases: []Alias{{Name: "carol", Label: "crm"}}}, true},
		{"globex", "u1", Record{UserID: "u1", ExternalID: "g-ext-1"}, true},
		{"acme", "gone", Record{}, false},
		{"acme", "u", Record{}, false}, // a prefix of a user id is not that user
		{"acme", "", Record{}, false},
		{"acme", "u1\x00", Record{}, false},
		{"initech", "u1", Record{}, false},
	} {
		got, found, err := x.LookupUser(tc.ws, tc.user)
		if err != nil {
			t.Fatalf("%s/%q: %v", tc.ws, tc.user, err)
		}
		if found != tc.found || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s/%q: got %+v %v, want %+v %v", tc.ws, tc.user, got, found, tc.want, tc.found)
		}
	}

	// Forward and reverse lookups share one snapshot inside ViewUsers.
	err := x.ViewUsers(func(l UserLookup) error {
		user, identified, found := l.LookupAlias("acme", "bob@x.io", "email")
		rec, ok, err := l.LookupUser("acme", user)
		if err != nil || !ok || !found || !identified || rec.ExternalID != "ext-2" {
			t.Errorf("alias then user: %q %v %v / %+v %v %v", user, identified, found, rec, ok, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestDirectoryLookupUser reads a record landed on the topic back through a
// replica tailing a real (in-process) broker.
func TestDirectoryLookupUser(t *testing.T) {
	t.Parallel()
	client := newTestClient(t)
	land(t, newTestLoader(t, client), "acme",
		`{"user_id":"u1","external_id":"ext-1","device_ids":["d1","d2"],"aliases":[{"alias_name":"a","alias_label":"l"}]}`)
	d := openDir(t, client, dirPath(t))
	if err := d.WaitApplied(testkit.Context(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	rec, found, err := d.LookupUser("acme", "u1")
	want := Record{UserID: "u1", ExternalID: "ext-1", DeviceIDs: []string{"d1", "d2"}, Aliases: []Alias{{Name: "a", Label: "l"}}}
	if err != nil || !found || !reflect.DeepEqual(rec, want) {
		t.Fatalf("LookupUser = %+v %v %v, want %+v", rec, found, err, want)
	}
	if _, found, err := d.LookupUser("acme", "u2"); found || err != nil {
		t.Errorf("unknown user: found %v, err %v", found, err)
	}
}
