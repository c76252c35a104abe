package identity_test

import (
	"testing"

	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/stores/identities"
	"github.com/cohortsync/cohortsync/transforms/identity"
)

// ruleCases are single ids against testDirectory and what the rule says.
var ruleCases = []struct {
	name         string
	ws           string
	id           identity.ID
	user, reason string
}{
	{"external id", "acme", identity.ExternalID("ext-1"), "u-ident", ""},
	{"external id of a user created anonymous", "acme", identity.ExternalID("ext-later"), "u-later", ""},
	{"a user id is not an external id", "acme", identity.ExternalID("u-ident"), "", pipeline.ReasonUnknownUser},
	{"alias of an identified user", "acme", identity.AliasID(schemas.Alias{Name: "a@x.io", Label: "email"}), "u-ident", ""},
	{"alias-only user", "acme", identity.AliasID(schemas.Alias{Name: "crm-7", Label: "crm"}), "u-alias", ""},
	{"alias under another label", "acme", identity.AliasID(schemas.Alias{Name: "a@x.io", Label: "phone"}), "", pipeline.ReasonUnknownUser},
	{"device of an anonymous user", "acme", identity.DeviceID("dev-anon"), "u-anon", ""},
	{"device of a user later identified", "acme", identity.DeviceID("dev-later"), "", pipeline.ReasonDeviceIDOfIdentifiedUser},
	{"unknown device", "acme", identity.DeviceID("dev-new"), "", pipeline.ReasonUnknownUser},
	{"other workspace", "globex", identity.ExternalID("ext-1"), "", pipeline.ReasonUnknownUser},
	{"empty external id", "acme", identity.ExternalID(""), "", pipeline.ReasonUnknownUser},
	{"unknown kind", "acme", identity.ID{Kind: "email", Value: "ext-1"}, "", identity.ReasonUnknownIDKind},
}

func TestResolveID(t *testing.T) {
	t.Parallel()
	dir := testDirectory(t)
	err := dir.View(func(l identities.Lookup) error {
		for _, tc := range ruleCases {
			user, reason := identity.ResolveID(l, tc.ws, tc.id)
			if user != tc.user || reason != tc.reason {
				t.Errorf("%s: got (%q, %q), want (%q, %q)", tc.name, user, reason, tc.user, tc.reason)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestResolverFollowsResolveID checks that the stream's Resolver decides
// every id exactly as ResolveID does: the same row or the same reason.
func TestResolverFollowsResolveID(t *testing.T) {
	t.Parallel()
	dir := testDirectory(t)
	r := newResolver(t, dir, nil)
	for i, tc := range ruleCases {
		var ch schemas.Change
		switch tc.id.Kind {
		case schemas.IDKindExternalID:
			if tc.id.Value == "" {
				continue // an envelope cannot carry an empty id
			}
			ch.UserIDs = []string{tc.id.Value}
		case schemas.IDKindDeviceID:
			ch.DeviceIDs = []string{tc.id.Value}
		case schemas.IDKindAlias:
			ch.Aliases = []schemas.Alias{tc.id.Alias}
		default:
			continue // not expressible in a record
		}
		rows, rej := resolve(t, r, changesRecord(int64(i), tc.ws, "c1", "rec", ch))
		got := rejected(rej)
		switch {
		case tc.reason == "" && (len(rows) != 1 || rows[0].UserID != tc.user || len(got) != 0):
			t.Errorf("%s: resolver gave rows %+v, rejections %v; ResolveID matched %q", tc.name, rows, got, tc.user)
		case tc.reason != "" && (len(rows) != 0 || got[tc.reason] != 1):
			t.Errorf("%s: resolver gave rows %+v, rejections %v; ResolveID refused with %s", tc.name, rows, got, tc.reason)
		}
	}
}
