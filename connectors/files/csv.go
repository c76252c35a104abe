package files

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cohortsync/cohortsync/schemas"
)

// CSVHeader is the one header a CSV backfill file may have (docs/OPERATIONS.md, Replay and backfill).
const CSVHeader = "workspace,partner,cohort_id,id_kind,id,action,event_time"

const csvColumns = 7

// Actions of the CSV action column.
const (
	actionAdd    = "add"
	actionRemove = "remove"
)

// csvRow is one parsed row.
type csvRow struct {
	workspace, partner, cohort string
	kind                       string
	value                      string
	alias                      schemas.Alias
	remove                     bool
	at                         time.Time
}

// csvGroup is the envelope being built from consecutive rows of one key.
type csvGroup struct {
	first   int64 // line of the first row; 0 when the group is empty
	key     csvRow
	ids     int
	changes []schemas.Change
	// rank is the kind order of the last id: a Change lists user ids, then
	// device ids, then aliases, so a row of an earlier kind starts a new
	// Change, which keeps the ids' positions in row order.
	rank int
}

type csvState struct {
	group  csvGroup
	fields []string
	eof    bool
}

func (r *Reader) openCSV() error {
	line, _, err := r.lines.next()
	if err == io.EOF {
		return fmt.Errorf("empty file: want the header %q", CSVHeader)
	}
	if err != nil {
		return fmt.Errorf("header: %w", err)
	}
	// A byte order mark is what spreadsheet programs put first.
	line = bytes.TrimPrefix(line, []byte("\ufeff"))
	if string(line) != CSVHeader {
		return fmt.Errorf("line 1: header must be exactly %q", CSVHeader)
	}
	r.csv = &csvState{}
	return nil
}

func (r *Reader) nextCSV(ctx context.Context) (Item, error) {
	s := r.csv
	for !s.eof {
		if err := ctx.Err(); err != nil {
			return Item{}, err
		}
		line, n, err := r.lines.next()
		if err == io.EOF {
			s.eof = true
			break
		}
		if err != nil {
			if errors.Is(err, errLineTooLong) {
				return Item{}, r.lineError(n, err)
			}
			return Item{}, err
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		row, err := r.parseCSVRow(line)
		if err != nil {
			// The group stays open: rows around a bad one still group.
			return Item{}, r.lineError(n, err)
		}
		g := &s.group
		if g.first != 0 && sameGroup(g.key, row) && g.ids < r.opts.MaxIDsPerRecord {
			r.addToGroup(row)
			continue
		}
		var it Item
		var itErr error
		full := g.first != 0
		if full {
			it, itErr = r.finishGroup()
		}
		r.startGroup(row, n)
		if full {
			return it, itErr
		}
	}
	if s.group.first != 0 {
		return r.finishGroup()
	}
	return Item{}, io.EOF
}

func sameGroup(a, b csvRow) bool {
	return a.workspace == b.workspace && a.partner == b.partner && a.cohort == b.cohort &&
		a.remove == b.remove && a.at.Equal(b.at)
}

func (r *Reader) startGroup(row csvRow, line int64) {
	g := &r.csv.group
	*g = csvGroup{first: line, key: row, changes: g.changes[:0]}
	r.ids.start(tagCSV)
	r.ids.str(row.workspace)
	r.ids.str(row.partner)
	r.ids.str(row.cohort)
	r.ids.int(line)
	r.ids.bool(row.remove)
	r.ids.time(row.at)
	r.addToGroup(row)
}

func kindRank(kind string) int {
	switch kind {
	case schemas.IDKindExternalID:
		return 0
	case schemas.IDKindDeviceID:
		return 1
	default:
		return 2
	}
}

func (r *Reader) addToGroup(row csvRow) {
	g := &r.csv.group
	rank := kindRank(row.kind)
	if len(g.changes) == 0 || rank < g.rank {
		g.changes = append(g.changes, schemas.Change{ShouldRemove: row.remove})
	}
	g.rank = rank
	c := &g.changes[len(g.changes)-1]
	r.ids.str(row.kind)
	switch row.kind {
	case schemas.IDKindExternalID:
		c.UserIDs = append(c.UserIDs, row.value)
		r.ids.str(row.value)
	case schemas.IDKindDeviceID:
		c.DeviceIDs = append(c.DeviceIDs, row.value)
		r.ids.str(row.value)
	default:
		c.Aliases = append(c.Aliases, row.alias)
		r.ids.str(row.alias.Label)
		r.ids.str(row.alias.Name)
	}
	g.ids++
}

// finishGroup turns the group into an item and empties it. The changes
// slice is handed to the envelope, so the next group starts a new one.
func (r *Reader) finishGroup() (Item, error) {
	g := &r.csv.group
	e := schemas.Envelope{
		SchemaVersion: schemas.CurrentVersion,
		RecordID:      r.ids.id(),
		Workspace:     g.key.workspace,
		Partner:       g.key.partner,
		ReceivedAt:    g.key.at,
		EventTime:     g.key.at,
		Payload:       schemas.CohortChangesPayload{CohortID: g.key.cohort, Changes: g.changes},
	}
	line := g.first
	*g = csvGroup{}
	return r.item(e, line)
}

// parseCSVRow checks one data row. Workspace and partner cells may be
// empty when the options name them.
func (r *Reader) parseCSVRow(line []byte) (csvRow, error) {
	fields, err := splitCSVLine(line, r.csv.fields[:0])
	r.csv.fields = fields
	if err != nil {
		return csvRow{}, err
	}
	if len(fields) != csvColumns {
		return csvRow{}, fmt.Errorf("%d fields, want %d (%s)", len(fields), csvColumns, CSVHeader)
	}
	row := csvRow{workspace: fields[0], partner: fields[1], cohort: fields[2], kind: strings.TrimSpace(fields[3])}
	var errs []error
	if row.workspace == "" {
		row.workspace = r.opts.Workspace
	}
	if row.workspace == "" {
		errs = append(errs, errors.New("workspace is empty and no default workspace is set"))
	}
	if row.partner == "" {
		row.partner = r.opts.Partner
	}
	if row.partner == "" {
		errs = append(errs, errors.New("partner is empty and no default partner is set"))
	}
	if strings.TrimSpace(row.cohort) == "" {
		errs = append(errs, errors.New("cohort_id is empty"))
	}
	id := fields[4]
	switch row.kind {
	case schemas.IDKindExternalID, schemas.IDKindDeviceID:
		if id == "" {
			errs = append(errs, fmt.Errorf("id of kind %s is empty", row.kind))
		}
		row.value = id
	case schemas.IDKindAlias:
		// The label comes first and cannot hold ':'; the name may.
		label, name, ok := strings.Cut(id, ":")
		if !ok || label == "" || name == "" {
			errs = append(errs, errors.New("alias id must be alias_label:alias_name, both non-empty"))
		}
		row.alias = schemas.Alias{Name: name, Label: label}
	default:
		errs = append(errs, fmt.Errorf("id_kind %q: want external_id, device_id or alias", clip(row.kind)))
	}
	switch action := strings.TrimSpace(fields[5]); action {
	case actionAdd:
	case actionRemove:
		row.remove = true
	default:
		errs = append(errs, fmt.Errorf("action %q: want add or remove", clip(action)))
	}
	at, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(fields[6]))
	if err != nil {
		errs = append(errs, fmt.Errorf("event_time %q is not an RFC 3339 time", clip(fields[6])))
	} else if y := at.UTC().Year(); y < 1 || y > 9999 {
		errs = append(errs, fmt.Errorf("event_time %q is outside years 1..9999", clip(fields[6])))
	}
	row.at = at.UTC()
	if err := errors.Join(errs...); err != nil {
		return csvRow{}, err
	}
	return row, nil
}

// clip shortens a value quoted in an error message.
func clip(s string) string {
	const limit = 64
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "..."
}

// errQuote is the error of a malformed quoted field.
var errQuote = errors.New(`malformed quoted field: a field with '"' must be wholly quoted, with '"' doubled inside`)

// splitCSVLine splits one RFC 4180 line into fields, appended to dst. A
// quoted field may hold commas and doubled quotes, but not a line break:
// rows are lines here, so that line numbers stay exact and one bad quote
// cannot swallow the rest of the file.
func splitCSVLine(line []byte, dst []string) ([]string, error) {
	i := 0
	for {
		if i < len(line) && line[i] == '"' {
			// Quoted field.
			var b []byte
			j := i + 1
			for {
				k := bytes.IndexByte(line[j:], '"')
				if k < 0 {
					return dst, errors.New("quoted field not closed on its line (fields spanning lines are not supported)")
				}
				b = append(b, line[j:j+k]...)
				j += k + 1
				if j < len(line) && line[j] == '"' {
					b = append(b, '"')
					j++
					continue
				}
				break
			}
			dst = append(dst, string(b))
			if j == len(line) {
				return dst, nil
			}
			if line[j] != ',' {
				return dst, errQuote
			}
			i = j + 1
			continue
		}
		k := bytes.IndexByte(line[i:], ',')
		end := len(line)
		if k >= 0 {
			end = i + k
		}
		field := line[i:end]
		if bytes.IndexByte(field, '"') >= 0 {
			return dst, errQuote
		}
		dst = append(dst, string(field))
		if k < 0 {
			return dst, nil
		}
		i = end + 1
	}
}
