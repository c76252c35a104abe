package parquet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"slices"
)

// A staged file is read once, by the roll, and never by anyone else, so it
// is not Parquet: encoding and decoding a Parquet file cost several times
// more than the fsync that makes the batch durable. The format is
//
//	"cohortsync-staged-1\n" rows(uvarint) row... crc32c(4, little endian)
//
// with each row its seven strings (uvarint length, bytes), is_member (one
// byte), then version, position, event_time, received_at, partition and
// offset as varints. The checksum covers everything before it, so a file
// damaged on disk is refused rather than rolled.
const stagedMagic = "cohortsync-staged-1\n"

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// appendStaged appends the staged file of rows, checksum included, to b.
// The whole file is built in memory (about the size of the batch's Arrow
// columns) and written at once: appending to one buffer costs a fraction of
// a buffered writer's call per field.
func appendStaged(b []byte, rows []changeRow) []byte {
	size := len(stagedMagic) + binary.MaxVarintLen64 + 4
	for i := range rows {
		r := &rows[i]
		size += len(r.Workspace) + len(r.Partner) + len(r.CohortID) + len(r.UserID) + len(r.IDKind) + len(r.IDValue) + len(r.RecordID) + 7 + 1 + 6*binary.MaxVarintLen64
	}
	b = slices.Grow(b, size)
	start := len(b)
	str := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = append(b, stagedMagic...)
	b = binary.AppendUvarint(b, uint64(len(rows)))
	for i := range rows {
		r := &rows[i]
		str(r.Workspace)
		str(r.Partner)
		str(r.CohortID)
		str(r.UserID)
		str(r.IDKind)
		str(r.IDValue)
		str(r.RecordID)
		if r.IsMember {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
		b = binary.AppendVarint(b, r.Version)
		b = binary.AppendVarint(b, int64(r.Position))
		b = binary.AppendVarint(b, r.EventTime)
		b = binary.AppendVarint(b, r.ReceivedAt)
		b = binary.AppendVarint(b, int64(r.Partition))
		b = binary.AppendVarint(b, r.Offset)
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], crcTable))
}

// errStagedCorrupt is wrapped by the errors of a staged file that does not
// decode.
var errStagedCorrupt = errors.New("staged file is damaged")

// readStaged decodes a staged file. The strings of the rows share one
// allocation, the file's content.
func readStaged(path string) ([]changeRow, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	rows, err := decodeStaged(b)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return rows, nil
}

func decodeStaged(data []byte) ([]changeRow, error) {
	if len(data) < len(stagedMagic)+4 || string(data[:len(stagedMagic)]) != stagedMagic {
		return nil, fmt.Errorf("%w: not a staged file", errStagedCorrupt)
	}
	n4 := len(data) - 4
	if crc32.Checksum(data[:n4], crcTable) != binary.LittleEndian.Uint32(data[n4:]) {
		return nil, fmt.Errorf("%w: checksum mismatch", errStagedCorrupt)
	}
	body := string(data[:n4])
	d := stagedDecoder{s: body, i: len(stagedMagic)}
	n := d.uvarint()
	if d.err != nil || n > uint64(len(body)) {
		return nil, fmt.Errorf("%w: bad row count", errStagedCorrupt)
	}
	rows := make([]changeRow, n)
	for k := range rows {
		r := &rows[k]
		r.Workspace, r.Partner, r.CohortID, r.UserID = d.str(), d.str(), d.str(), d.str()
		r.IDKind, r.IDValue, r.RecordID = d.str(), d.str(), d.str()
		r.IsMember = d.byte() == 1
		r.Version = d.varint()
		r.Position = d.int32()
		r.EventTime, r.ReceivedAt = d.varint(), d.varint()
		r.Partition = d.int32()
		r.Offset = d.varint()
		if d.err != nil {
			return nil, fmt.Errorf("%w: row %d: %w", errStagedCorrupt, k, d.err)
		}
	}
	if d.i != len(body) {
		return nil, fmt.Errorf("%w: %d bytes after the last row", errStagedCorrupt, len(body)-d.i)
	}
	return rows, nil
}

type stagedDecoder struct {
	s   string
	i   int
	err error
}

var errShort = errors.New("truncated")

func (d *stagedDecoder) uvarint() uint64 {
	var v uint64
	for shift := uint(0); shift < 64; shift += 7 {
		if d.i >= len(d.s) {
			d.err = errShort
			return 0
		}
		c := d.s[d.i]
		d.i++
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return v
		}
	}
	d.err = errors.New("varint overflows")
	return 0
}

func (d *stagedDecoder) varint() int64 {
	u := d.uvarint()
	return int64(u>>1) ^ -int64(u&1)
}

func (d *stagedDecoder) int32() int32 {
	v := d.varint()
	if v < math.MinInt32 || v > math.MaxInt32 {
		d.err = errors.New("int32 out of range")
		return 0
	}
	return int32(v)
}

func (d *stagedDecoder) byte() byte {
	if d.i >= len(d.s) {
		d.err = errShort
		return 0
	}
	c := d.s[d.i]
	d.i++
	return c
}

func (d *stagedDecoder) str() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.s)-d.i) {
		d.err = errShort
		return ""
	}
	v := d.s[d.i : d.i+int(n)]
	d.i += int(n)
	return v
}
