package identities

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// feed builds topic messages for Index.Apply, numbering offsets from 0.
type feed struct {
	t    *testing.T
	msgs []Message
}

func (f *feed) put(ws string, r Record) *feed {
	f.t.Helper()
	v, err := EncodeValue(ws, r)
	if err != nil {
		f.t.Fatal(err)
	}
	f.msgs = append(f.msgs, Message{Offset: int64(len(f.msgs)), Key: MessageKey(ws, r.UserID), Value: v})
	return f
}

func (f *feed) tombstone(ws, user string) *feed {
	f.msgs = append(f.msgs, Message{Offset: int64(len(f.msgs)), Key: MessageKey(ws, user)})
	return f
}

func (f *feed) raw(key, value string) *feed {
	f.msgs = append(f.msgs, Message{Offset: int64(len(f.msgs)), Key: []byte(key), Value: []byte(value)})
	return f
}

func openTestIndex(t *testing.T, path string) *Index {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), FileName)
	}
	x, err := OpenIndex(path, IndexOptions{Topic: "ids"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = x.Close() })
	return x
}

func apply(t *testing.T, x *Index, partition int, msgs []Message) Applied {
	t.Helper()
	res, err := x.Apply(partition, msgs, 0)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// match is what one lookup answered.
type match struct {
	user              string
	identified, found bool
}

func lookups(x *Index, ws string) (ext, alias, dev func(...string) match) {
	ext = func(a ...string) match {
		u, i, f := x.LookupExternalID(ws, a[0])
		return match{u, i, f}
	}
	alias = func(a ...string) match {
		u, i, f := x.LookupAlias(ws, a[0], a[1])
		return match{u, i, f}
	}
	dev = func(a ...string) match {
		u, i, f := x.LookupDevice(ws, a[0])
		return match{u, i, f}
	}
	return ext, alias, dev
}

var none = match{}

func TestIndexIdentityRules(t *testing.T) {
	t.Parallel()
	f := &feed{t: t}
	f.put("acme", Record{UserID: "u-ident", ExternalID: "ext-1", Aliases: []Alias{{Name: "a@x.io", Label: "email"}}})
	f.put("acme", Record{UserID: "u-anon", DeviceIDs: []string{"dev-anon"}})
	// Created anonymous with a device, then identified: the second record
	// replaces the first and keeps the device id.
	f.put("acme", Record{UserID: "u-later", DeviceIDs: []string{"dev-later"}})
	f.put("acme", Record{UserID: "u-later", ExternalID: "ext-later", DeviceIDs: []string{"dev-later"}})
	f.put("acme", Record{UserID: "u-alias-only", Aliases: []Alias{{Name: "crm-7", Label: "crm"}}})
	x := openTestIndex(t, "")
	if res := apply(t, x, 0, f.msgs); res.Records != 5 || len(res.Skipped) != 0 || res.Next != 5 {
		t.Fatalf("apply = %+v", res)
	}
	ext, alias, dev := lookups(x, "acme")
	tests := []struct {
		name string
		got  match
		want match
	}{
		{"external id", ext("ext-1"), match{"u-ident", true, true}},
		{"external id of a later identified user", ext("ext-later"), match{"u-later", true, true}},
		{"unknown external id", ext("ext-404"), none},
		{"a user id is not an external id", ext("u-ident"), none},
		{"alias", alias("a@x.io", "email"), match{"u-ident", true, true}},
		{"alias of an anonymous user", alias("crm-7", "crm"), match{"u-alias-only", false, true}},
		{"alias name under another label", alias("a@x.io", "phone"), none},
		{"alias name and label swapped", alias("email", "a@x.io"), none},
		{"device of an anonymous user", dev("dev-anon"), match{"u-anon", false, true}},
		{"created anonymous, later identified: device found but identified", dev("dev-later"), match{"u-later", true, true}},
		{"unknown device", dev("dev-404"), none},
		{"empty id", ext(""), none},
		{"NUL cannot reach into the next key component", ext("ext-1\x00u-ident"), none},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %+v, want %+v", tt.name, tt.got, tt.want)
		}
	}
	if n := x.Users(); n != 4 {
		t.Errorf("users = %d, want 4", n)
	}
}

func TestIndexReplacedRecordDropsStaleEntries(t *testing.T) {
	t.Parallel()
	f := &feed{t: t}
	f.put("acme", Record{UserID: "u1", ExternalID: "old-ext", DeviceIDs: []string{"d-old", "d-kept"}, Aliases: []Alias{{Name: "old", Label: "email"}}})
	f.put("acme", Record{UserID: "u1", ExternalID: "new-ext", DeviceIDs: []string{"d-kept"}, Aliases: []Alias{{Name: "new", Label: "email"}}})
	f.put("acme", Record{UserID: "u2", DeviceIDs: []string{"d2"}})
	f.tombstone("acme", "u2")
	f.tombstone("acme", "never-existed")
	x := openTestIndex(t, "")
	apply(t, x, 0, f.msgs)
	ext, alias, dev := lookups(x, "acme")
	for name, tt := range map[string]struct{ got, want match }{
		"old external id":  {ext("old-ext"), none},
		"new external id":  {ext("new-ext"), match{"u1", true, true}},
		"old alias":        {alias("old", "email"), none},
		"new alias":        {alias("new", "email"), match{"u1", true, true}},
		"dropped device":   {dev("d-old"), none},
		"kept device":      {dev("d-kept"), match{"u1", true, true}},
		"tombstoned user":  {dev("d2"), none},
		"tombstoned twice": {ext("u2"), none},
	} {
		if tt.got != tt.want {
			t.Errorf("%s: got %+v, want %+v", name, tt.got, tt.want)
		}
	}
	if n := x.Users(); n != 1 {
		t.Errorf("users = %d, want 1", n)
	}
	// Identified → anonymous again: the flag follows the record.
	g := &feed{t: t, msgs: make([]Message, len(f.msgs))}
	g.put("acme", Record{UserID: "u1", DeviceIDs: []string{"d-kept"}})
	apply(t, x, 0, g.msgs[len(f.msgs):])
	if got := dev("d-kept"); got != (match{"u1", false, true}) {
		t.Errorf("device after losing the external id: %+v", got)
	}
	if got := ext("new-ext"); got != none {
		t.Errorf("external id after removal: %+v", got)
	}
	// A device id that becomes the external id of the same text: the two
	// entries have the same key bytes in different indexes, and the device
	// entry must still go.
	h := &feed{t: t, msgs: make([]Message, len(f.msgs)+1)}
	h.put("acme", Record{UserID: "u1", ExternalID: "d-kept"})
	apply(t, x, 0, h.msgs[len(f.msgs)+1:])
	if got := dev("d-kept"); got != none {
		t.Errorf("device id after it became the external id: %+v", got)
	}
	if got := ext("d-kept"); got != (match{"u1", true, true}) {
		t.Errorf("external id that was a device id: %+v", got)
	}
}

func TestIndexWorkspaceIsolation(t *testing.T) {
	t.Parallel()
	f := &feed{t: t}
	f.put("acme", Record{UserID: "u1", ExternalID: "shared", DeviceIDs: []string{"dev"}, Aliases: []Alias{{Name: "n", Label: "l"}}})
	f.put("globex", Record{UserID: "g1", DeviceIDs: []string{"shared"}})
	f.put("globex", Record{UserID: "u1"}) // same user id, other workspace
	x := openTestIndex(t, "")
	apply(t, x, 0, f.msgs)
	acmeExt, acmeAlias, acmeDev := lookups(x, "acme")
	gExt, gAlias, gDev := lookups(x, "globex")
	for name, tt := range map[string]struct{ got, want match }{
		"acme ext":               {acmeExt("shared"), match{"u1", true, true}},
		"globex ext":             {gExt("shared"), none},
		"acme device":            {acmeDev("dev"), match{"u1", true, true}},
		"globex device":          {gDev("dev"), none},
		"globex own device":      {gDev("shared"), match{"g1", false, true}},
		"acme cannot see globex": {acmeDev("shared"), none},
		"globex alias":           {gAlias("n", "l"), none},
		"acme alias":             {acmeAlias("n", "l"), match{"u1", true, true}},
		"workspace prefix trick": {match2(x.LookupExternalID("acm", "e\x00shared")), none},
	} {
		if tt.got != tt.want {
			t.Errorf("%s: got %+v, want %+v", name, tt.got, tt.want)
		}
	}
	// Replacing globex/u1 must leave acme/u1's entries alone.
	g := &feed{t: t, msgs: make([]Message, len(f.msgs))}
	g.tombstone("globex", "u1")
	apply(t, x, 0, g.msgs[len(f.msgs):])
	if got := acmeExt("shared"); got != (match{"u1", true, true}) {
		t.Errorf("acme lost its user when globex's was deleted: %+v", got)
	}
}

func match2(u string, i, f bool) match { return match{u, i, f} }

// Two users claiming one id is a data error upstream; what matters is that
// every instance answers the same whatever order its partitions were
// applied in, and that removing one claim leaves the other.
func TestIndexConflictingClaimsAreOrderIndependent(t *testing.T) {
	t.Parallel()
	recs := []Record{
		{UserID: "zed", ExternalID: "e", DeviceIDs: []string{"dev"}},
		{UserID: "amy", ExternalID: "e", DeviceIDs: []string{"dev"}},
		{UserID: "bob", DeviceIDs: []string{"dev"}}, // the only anonymous claimant
	}
	answers := map[string]match{}
	for _, order := range [][]int{{0, 1, 2}, {2, 1, 0}, {1, 2, 0}} {
		x := openTestIndex(t, "")
		for i, r := range order {
			f := &feed{t: t}
			f.put("acme", recs[r])
			apply(t, x, i, f.msgs) // each user on its own partition
		}
		ext, _, dev := lookups(x, "acme")
		for name, got := range map[string]match{"ext": ext("e"), "dev": dev("dev")} {
			if prev, ok := answers[name]; ok && prev != got {
				t.Errorf("order %v: %s = %+v, another order gave %+v", order, name, got, prev)
			}
			answers[name] = got
		}
	}
	if answers["ext"] != (match{"amy", true, true}) {
		t.Errorf("ext = %+v, want the smallest user id", answers["ext"])
	}
	if answers["dev"] != (match{"bob", false, true}) {
		t.Errorf("dev = %+v, want the anonymous claimant", answers["dev"])
	}
}

func TestIndexReplayIsIdempotent(t *testing.T) {
	t.Parallel()
	f := &feed{t: t}
	f.put("acme", Record{UserID: "u1", ExternalID: "e1", DeviceIDs: []string{"d1"}})
	f.put("acme", Record{UserID: "u2", DeviceIDs: []string{"d2"}})
	f.put("acme", Record{UserID: "u1", ExternalID: "e1b"})
	x := openTestIndex(t, "")
	first := apply(t, x, 3, f.msgs)
	// The whole range again, as after a crash before the offset was stored
	// elsewhere: below the stored offset nothing is applied twice.
	again := apply(t, x, 3, f.msgs)
	if first.Records != 3 || again.Records != 0 || again.Next != 3 {
		t.Errorf("first %+v, again %+v", first, again)
	}
	// An offset never moves backwards through SkipTo.
	y := openTestIndex(t, "")
	apply(t, y, 3, f.msgs)
	if err := y.SkipTo(3, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := y.Apply(3, nil, 0); err != nil {
		t.Fatal(err)
	}
	offs, _ := y.Offsets()
	if offs[3] != 3 {
		t.Errorf("SkipTo moved the offset backwards: %v", offs)
	}
	// Records applied a second time over the state they built (here through
	// another partition's offsets, which knows nothing of the first pass)
	// leave that state as it was: applying a record replaces, never adds.
	z := openTestIndex(t, "")
	apply(t, z, 3, f.msgs)
	if res := apply(t, z, 4, f.msgs); res.Records != 3 {
		t.Errorf("second pass applied %d records, want 3", res.Records)
	}
	for _, idx := range []*Index{x, y, z} {
		ext, _, dev := lookups(idx, "acme")
		if got := ext("e1b"); got != (match{"u1", true, true}) {
			t.Errorf("%s: e1b = %+v", idx.Path(), got)
		}
		if got := ext("e1"); got != none {
			t.Errorf("%s: stale e1 = %+v", idx.Path(), got)
		}
		if got := dev("d1"); got != none {
			t.Errorf("%s: stale d1 = %+v", idx.Path(), got)
		}
		if n := idx.Users(); n != 2 {
			t.Errorf("%s: users = %d", idx.Path(), n)
		}
	}
}

func TestIndexSkipsInvalidRecords(t *testing.T) {
	t.Parallel()
	f := &feed{t: t}
	f.raw("acme/u1", "not json")
	f.raw("acme/u2", `{"v":1,"workspace":"acme","user_id":"u-other"}`)
	f.raw("acme/u3", `{"v":9,"workspace":"acme","user_id":"u3"}`)
	f.raw("no-slash", "")
	f.msgs[len(f.msgs)-1].Value = nil // tombstone with a bad key
	f.put("acme", Record{UserID: "ok", ExternalID: "e"})
	x := openTestIndex(t, "")
	res := apply(t, x, 0, f.msgs)
	if res.Records != 1 || len(res.Skipped) != 4 || res.Next != 5 {
		t.Fatalf("apply = %+v", res)
	}
	for i, s := range res.Skipped {
		if s.Offset != int64(i) || s.Err == nil {
			t.Errorf("skipped[%d] = %+v", i, s)
		}
		if strings.Contains(s.Err.Error(), "u-other") {
			t.Errorf("skip reason quotes an identifier: %v", s.Err)
		}
	}
	if u, _, ok := x.LookupExternalID("acme", "e"); !ok || u != "ok" {
		t.Error("the valid record after the bad ones was not applied")
	}
}

func TestIndexOffsetsSurviveReopen(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), FileName)
	x, err := OpenIndex(path, IndexOptions{Topic: "ids"})
	if err != nil {
		t.Fatal(err)
	}
	f := &feed{t: t}
	f.put("acme", Record{UserID: "u1", ExternalID: "e1"})
	f.put("acme", Record{UserID: "u2", ExternalID: "e2"})
	apply(t, x, 0, f.msgs[:1])
	if _, err := x.Apply(2, f.msgs[1:], 40); err != nil {
		t.Fatal(err)
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	if err := x.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}

	y := openTestIndex(t, path)
	offs, err := y.Offsets()
	if err != nil {
		t.Fatal(err)
	}
	if len(offs) != 2 || offs[0] != 1 || offs[2] != 40 {
		t.Errorf("offsets after reopen = %v, want map[0:1 2:40]", offs)
	}
	if u, _, ok := y.LookupExternalID("acme", "e2"); !ok || u != "u2" {
		t.Error("index content lost on reopen")
	}
	// Dropping partition 2 removes its users only.
	if err := y.ResetPartition(2, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := y.LookupExternalID("acme", "e2"); ok {
		t.Error("user of the reset partition survived")
	}
	if _, _, ok := y.LookupExternalID("acme", "e1"); !ok {
		t.Error("user of another partition was dropped")
	}
	if n := y.Users(); n != 1 {
		t.Errorf("users = %d, want 1", n)
	}
	// Dropping partition 0 removes its users and forgets its offset.
	if err := y.DropPartition(0); err != nil {
		t.Fatal(err)
	}
	offs, _ = y.Offsets()
	if n := y.Users(); n != 0 || len(offs) != 1 || offs[2] != 0 {
		t.Errorf("after drop: %d users, offsets %v", n, offs)
	}
	if err := y.Close(); err != nil {
		t.Fatal(err)
	}

	// The same file opened for another topic starts empty.
	z, err := OpenIndex(path, IndexOptions{Topic: "other-topic"})
	if err != nil {
		t.Fatal(err)
	}
	defer z.Close()
	offs, _ = z.Offsets()
	if n := z.Users(); n != 0 || len(offs) != 0 {
		t.Errorf("index of another topic kept %d users and offsets %v", n, offs)
	}
}

func TestIndexSecondOpenTimesOut(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), FileName)
	openTestIndex(t, path)
	_, err := OpenIndex(path, IndexOptions{Topic: "ids", OpenTimeout: 50e6})
	if err == nil || !strings.Contains(err.Error(), "another process holds it") {
		t.Errorf("second open: %v", err)
	}
}

// dumpIndex returns every key and value of the index's buckets but the
// offsets, as text, for comparing two indexes.
func dumpIndex(t *testing.T, x *Index) string {
	t.Helper()
	var b strings.Builder
	err := x.db.View(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketUsers, bucketExt, bucketAlias, bucketDevice} {
			if err := tx.Bucket(name).ForEach(func(k, v []byte) error {
				fmt.Fprintf(&b, "%s %q=%q\n", name, k, v)
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestIndexBatchEqualsOneByOne: a batch is collapsed to each user's last
// message and written in key order; the index it leaves, its users count,
// its change count and its skipped messages must be exactly those of
// applying the same messages one at a time, in offset order. Random
// batches over a few users and shared ids exercise replaced records, ids
// moving between users, tombstones of present and absent users and
// invalid messages.
func TestIndexBatchEqualsOneByOne(t *testing.T) {
	t.Parallel()
	for seed := range uint64(12) {
		r := rand.New(rand.NewPCG(seed, 7))
		f := &feed{t: t}
		for range 20 + r.IntN(30) {
			user := fmt.Sprintf("u%d", r.IntN(6))
			switch n := r.IntN(10); {
			case n == 0:
				f.tombstone("acme", user)
			case n == 1:
				f.raw("acme/"+user, "not json")
			default:
				rec := Record{UserID: user}
				if r.IntN(2) == 0 {
					rec.ExternalID = fmt.Sprintf("e%d", r.IntN(4))
				}
				for range r.IntN(3) {
					rec.DeviceIDs = append(rec.DeviceIDs, fmt.Sprintf("d%d", r.IntN(5)))
				}
				slices.Sort(rec.DeviceIDs)
				rec.DeviceIDs = slices.Compact(rec.DeviceIDs)
				if r.IntN(3) == 0 {
					rec.Aliases = []Alias{{Name: fmt.Sprintf("a%d", r.IntN(3)), Label: "email"}}
				}
				f.put("acme", rec)
			}
		}
		// The same start for both: a first batch applied one by one.
		split := len(f.msgs) / 3
		one, batch := openTestIndex(t, ""), openTestIndex(t, "")
		for _, x := range []*Index{one, batch} {
			for _, m := range f.msgs[:split] {
				apply(t, x, 0, []Message{m})
			}
		}
		var oneRecords int
		var oneSkipped []int64
		for _, m := range f.msgs[split:] {
			res := apply(t, one, 0, []Message{m})
			oneRecords += res.Records
			for _, s := range res.Skipped {
				oneSkipped = append(oneSkipped, s.Offset)
			}
		}
		res := apply(t, batch, 0, f.msgs[split:])
		var batchSkipped []int64
		for _, s := range res.Skipped {
			batchSkipped = append(batchSkipped, s.Offset)
		}
		if a, b := dumpIndex(t, one), dumpIndex(t, batch); a != b {
			t.Fatalf("seed %d: the batch left\n%s\none by one left\n%s", seed, b, a)
		}
		if res.Records != oneRecords || !slices.Equal(batchSkipped, oneSkipped) {
			t.Fatalf("seed %d: batch counted %d changes, skipped %v; one by one %d, %v", seed, res.Records, batchSkipped, oneRecords, oneSkipped)
		}
	}
}

// The user count Users reads from memory is the one the commits stored,
// also when the tails of several partitions commit together in one batch
// and their commit handlers race, and after a reopen.
func TestIndexUsersFollowsConcurrentCommits(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), FileName)
	x := openTestIndex(t, path)
	const partitions, perPartition = 4, 50
	var wg sync.WaitGroup
	for p := range partitions {
		wg.Go(func() {
			for i := range perPartition {
				f := &feed{t: t}
				for range i {
					f.msgs = append(f.msgs, Message{}) // offsets up to i
				}
				f.put("acme", Record{UserID: fmt.Sprintf("u%d-%d", p, i)})
				if _, err := x.Apply(p, f.msgs[i:], 0); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	var stored int64
	if err := x.db.View(func(tx *bolt.Tx) error {
		stored = int64(readU64(tx.Bucket(bucketMeta).Get(keyUsers)))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := x.Users(); got != stored || got != partitions*perPartition {
		t.Errorf("Users() = %d, stored %d, want %d", got, stored, partitions*perPartition)
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	if got := openTestIndex(t, path).Users(); got != partitions*perPartition {
		t.Errorf("after reopen Users() = %d, want %d", got, partitions*perPartition)
	}
}

// TestApplyGroupWritesEachRequestOnce: tails applying at once all return,
// every request is written by exactly one transaction, and no call writes
// for the group more than once (a leader hands over instead of serving the
// others for as long as they keep coming).
func TestApplyGroupWritesEachRequestOnce(t *testing.T) {
	t.Parallel()
	var g applyGroup
	var mu sync.Mutex
	written := map[*applyRequest]int{}
	transactions := 0
	const tails, rounds = 8, 12
	var wg sync.WaitGroup
	for tail := range tails {
		wg.Go(func() {
			for i := range rounds {
				// Tails arrive out of step, so that requests keep coming
				// while a leader writes.
				time.Sleep(time.Duration((tail*137+i*71)%20) * time.Millisecond)
				req := &applyRequest{partition: tail, done: make(chan struct{}), lead: make(chan struct{})}
				led := 0
				g.run(req, func(reqs []*applyRequest) {
					led++
					time.Sleep(15 * time.Millisecond)
					mu.Lock()
					defer mu.Unlock()
					transactions++
					for _, r := range reqs {
						written[r]++
					}
				})
				mu.Lock()
				n := written[req]
				mu.Unlock()
				if n != 1 || led > 1 {
					t.Errorf("tail %d: request written %d times when run returned, after writing for the group %d times", tail, n, led)
				}
			}
		})
	}
	wg.Wait()
	if len(written) != tails*rounds || transactions >= tails*rounds {
		t.Errorf("%d requests written in %d transactions; want %d requests in fewer transactions", len(written), transactions, tails*rounds)
	}
}
