package identity

import (
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/stores/identities"
)

// ReasonUnknownIDKind refuses an ID whose Kind is none of the three id kinds.
// Records decoded from the landing log never produce one; it guards callers
// that build IDs themselves.
const ReasonUnknownIDKind = "unknown_id_kind"

// ID is one id of a membership change, the way a partner names a user.
type ID struct {
	// Kind is schemas.IDKindExternalID, schemas.IDKindDeviceID or
	// schemas.IDKindAlias.
	Kind string
	// Value is the external id or the device id; unused for an alias.
	Value string
	// Alias is the id of kind schemas.IDKindAlias.
	Alias schemas.Alias
}

// ExternalID, DeviceID and AliasID build the IDs of each kind.
func ExternalID(id string) ID    { return ID{Kind: schemas.IDKindExternalID, Value: id} }
func DeviceID(id string) ID      { return ID{Kind: schemas.IDKindDeviceID, Value: id} }
func AliasID(a schemas.Alias) ID { return ID{Kind: schemas.IDKindAlias, Alias: a} }

// ResolveID is the identity rule of docs/ARCHITECTURE.md ("Import rules") for one id, shared by the
// stream (Resolver) and every backfill that must decide exactly as the
// stream would:
//
//   - an external id matches the user with that external_id;
//   - an alias matches the user with that (alias_name, alias_label);
//   - a device id matches only a user without an external_id; a device id
//     of a user created anonymous and later identified is refused with
//     pipeline.ReasonDeviceIDOfIdentifiedUser;
//   - anything else is refused with pipeline.ReasonUnknownUser (users are
//     never created), or ReasonUnknownIDKind for a kind that is none of the
//     three.
//
// It returns the matched user id and an empty reason, or an empty user id
// and the reason of the refusal.
func ResolveID(l identities.Lookup, workspace string, id ID) (userID, reason string) {
	switch id.Kind {
	case schemas.IDKindExternalID:
		if user, _, found := l.LookupExternalID(workspace, id.Value); found {
			return user, ""
		}
		return "", pipeline.ReasonUnknownUser
	case schemas.IDKindDeviceID:
		user, identified, found := l.LookupDevice(workspace, id.Value)
		switch {
		case !found:
			return "", pipeline.ReasonUnknownUser
		case identified:
			return "", pipeline.ReasonDeviceIDOfIdentifiedUser
		default:
			return user, ""
		}
	case schemas.IDKindAlias:
		if user, _, found := l.LookupAlias(workspace, id.Alias.Name, id.Alias.Label); found {
			return user, ""
		}
		return "", pipeline.ReasonUnknownUser
	default:
		return "", ReasonUnknownIDKind
	}
}
