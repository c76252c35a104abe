package parquet

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	pq "github.com/parquet-go/parquet-go"
)

// seenKey names one day of one workspace's data points: the unit in which
// the sink remembers which (record_id, position) pairs its trees hold. A
// record keeps its received_at through every replay (it is part of the
// landed envelope, and file and Mixpanel backfills derive it from their
// input), so a re-landed record always falls on the day of its first copy.
type seenKey struct {
	workspace string
	day       int32
}

// seenDay is the (record_id, position) pairs of one seenKey: a bit set of
// positions per record id. Records hold up to a few thousand ids, numbered
// from 0, so a record costs its id plus one bit per position.
type seenDay struct {
	// loaded says the day's datapoints/ files have been read in; before,
	// recs holds only what was staged since the sink opened.
	loaded bool
	recs   map[string][]uint64
	// used is the roll count when the day was last consulted, for eviction.
	used uint64
}

// hasBit tells whether bit pos of a record's position set is set.
func hasBit(bits []uint64, pos int32) bool {
	w := int(pos) >> 6
	return pos >= 0 && w < len(bits) && bits[w]&(1<<(uint(pos)&63)) != 0
}

// setBit sets bit pos of a position set, growing it as needed.
func setBit(bits []uint64, pos int32) []uint64 {
	w := int(pos) >> 6
	if w >= len(bits) {
		bits = slices.Grow(bits, w+1-len(bits))[:w+1]
	}
	bits[w] |= 1 << (uint(pos) & 63)
	return bits
}

// runKey is one copy of a landed record in a batch: the rows of one record
// id at one offset.
type runKey struct {
	record string
	offset int64
}

// positionsOf is the set of positions rows hold of record: for the rare
// record that lands twice in one batch, to skip its second copy.
func positionsOf(rows []changeRow, record string) []uint64 {
	var bits []uint64
	for i := range rows {
		if rows[i].RecordID == record && rows[i].Position >= 0 {
			bits = setBit(bits, rows[i].Position)
		}
	}
	return bits
}

func (d *seenDay) add(record string, pos int32) {
	if pos < 0 {
		return
	}
	key, bits := d.entry(record)
	d.recs[key] = setBit(bits, pos)
}

// entry returns record's positions and the key to store them under: the
// map's own key, or for a new record a copy, since record may point into an
// Arrow buffer or a row slice that is reused.
func (d *seenDay) entry(record string) (string, []uint64) {
	if bits, ok := d.recs[record]; ok {
		return record, bits
	}
	return strings.Clone(record), nil
}

// seenIndex is the sink's memory of what its trees hold, by day. A day is
// read from its datapoints/ folder the first time a batch touches it; what
// the sink stages afterwards is added as soon as it is durable.
type seenIndex struct {
	root string
	days map[seenKey]*seenDay
}

func newSeenIndex(root string) *seenIndex {
	return &seenIndex{root: root, days: map[seenKey]*seenDay{}}
}

// addRows remembers staged rows. A record's rows come together, so each
// run of one record is looked up and stored once. Every row's day must have
// been read in (day) before.
func (x *seenIndex) addRows(rows []changeRow) {
	for i := 0; i < len(rows); {
		r := &rows[i]
		d := x.days[seenKey{r.Workspace, dayOf(arrowTimestamp(r.ReceivedAt))}]
		key, bits := d.entry(r.RecordID)
		j := i
		for ; j < len(rows) && rows[j].RecordID == r.RecordID && rows[j].Workspace == r.Workspace && rows[j].ReceivedAt == r.ReceivedAt; j++ {
			if rows[j].Position >= 0 {
				bits = setBit(bits, rows[j].Position)
			}
		}
		d.recs[key] = bits
		i = j
	}
}

// day returns k's entry, reading the day's files in first.
func (x *seenIndex) day(k seenKey, rolls uint64) (*seenDay, error) {
	d := x.days[k]
	if d == nil {
		d = &seenDay{recs: map[string][]uint64{}}
		x.days[k] = d
	}
	d.used = rolls
	if !d.loaded {
		dir := filepath.Join(x.root, tableDataPoints, "workspace="+escapePartitionValue(k.workspace), "date="+dateString(k.day))
		if err := readKeys(dir, d.add); err != nil {
			return nil, err
		}
		d.loaded = true
	}
	return d, nil
}

// pending returns k's entry without reading its files: for rows found in
// the staging area at start, which must be remembered before any day is read.
func (x *seenIndex) pending(k seenKey) *seenDay {
	d := x.days[k]
	if d == nil {
		d = &seenDay{recs: map[string][]uint64{}}
		x.days[k] = d
	}
	return d
}

// evict forgets the days not consulted since roll count before, keeping at
// least keep of the most recent. Only safe when nothing is staged: a staged
// row is remembered nowhere but here until its file is rolled.
func (x *seenIndex) evict(keep int) {
	if len(x.days) <= keep {
		return
	}
	type kv struct {
		k    seenKey
		used uint64
	}
	all := make([]kv, 0, len(x.days))
	for k, d := range x.days {
		all = append(all, kv{k, d.used})
	}
	slices.SortFunc(all, func(a, b kv) int { return cmp.Compare(b.used, a.used) })
	for _, e := range all[keep:] {
		delete(x.days, e.k)
	}
}

// readKeys calls add with the (record_id, position) of every row of the
// .parquet files in dir, of any format version (position was UINT_32 in
// format 1 and is INT32 now: both are INT32 physically).
func readKeys(dir string, add func(record string, pos int32)) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list %s: %w", dir, err)
	}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".parquet") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if err := readFileKeys(filepath.Join(dir, e.Name()), add); err != nil {
			return err
		}
	}
	return nil
}

func readFileKeys(path string, add func(record string, pos int32)) error {
	pf, f, err := openParquet(path)
	if err != nil {
		return err
	}
	defer f.Close()
	rc, ok := pf.Schema().Lookup("record_id")
	pc, ok2 := pf.Schema().Lookup("position")
	if !ok || !ok2 {
		return fmt.Errorf("read %s: no record_id or position column", path)
	}
	for _, rg := range pf.RowGroups() {
		records, err := columnValues(rg.ColumnChunks()[rc.ColumnIndex])
		if err != nil {
			return fmt.Errorf("read %s: record_id: %w", path, err)
		}
		positions, err := columnValues(rg.ColumnChunks()[pc.ColumnIndex])
		if err != nil {
			return fmt.Errorf("read %s: position: %w", path, err)
		}
		if len(records) != len(positions) {
			return fmt.Errorf("read %s: %d record ids but %d positions", path, len(records), len(positions))
		}
		for i := range records {
			add(string(records[i].ByteArray()), positions[i].Int32())
		}
	}
	return nil
}

// columnValues reads every value of one column chunk.
func columnValues(cc pq.ColumnChunk) ([]pq.Value, error) {
	pages := cc.Pages()
	defer pages.Close()
	var out []pq.Value
	for {
		p, err := pages.ReadPage()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		vals := make([]pq.Value, p.NumValues())
		n, err := p.Values().ReadValues(vals)
		pq.Release(p)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		// ByteArray values point into the page's buffers; clone them
		// before the page is reused.
		for i := range vals[:n] {
			vals[i] = vals[i].Clone()
		}
		out = append(out, vals[:n]...)
	}
}
