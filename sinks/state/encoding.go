package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"time"
)

// Composite keys are tuples of strings in an order-preserving encoding: each
// component has its 0x00 bytes escaped as 0x00 0xFF and ends with 0x00 0x01.
// So any string, the empty one included, is a valid component, no component
// can run into the next, and byte order of keys equals tuple order, which
// lets cursors list a workspace's cohorts and rejections already sorted.
const (
	escByte  = 0x00
	escEsc   = 0xFF
	escTerm  = 0x01
	dayBytes = 4
	posBytes = 4
)

func tupleLen(parts ...string) int {
	n := 0
	for _, p := range parts {
		n += len(p) + strings.Count(p, "\x00") + 2
	}
	return n
}

func appendTuple(b []byte, s string) []byte {
	for {
		i := strings.IndexByte(s, escByte)
		if i < 0 {
			break
		}
		b = append(b, s[:i+1]...)
		b = append(b, escEsc)
		s = s[i+1:]
	}
	b = append(b, s...)
	return append(b, escByte, escTerm)
}

var errBadTuple = errors.New("state: corrupt key")

// readTuple decodes the first component of b and returns the rest.
func readTuple(b []byte) (string, []byte, error) {
	var out []byte
	for i := 0; i < len(b); i++ {
		if b[i] != escByte {
			continue
		}
		if i+1 >= len(b) {
			return "", nil, errBadTuple
		}
		switch b[i+1] {
		case escTerm:
			if out == nil {
				return string(b[:i]), b[i+2:], nil
			}
			out = append(out, b[:i]...)
			return string(out), b[i+2:], nil
		case escEsc:
			out = append(out, b[:i+1]...)
			b = b[i+2:]
			i = -1
		default:
			return "", nil, errBadTuple
		}
	}
	return "", nil, errBadTuple
}

func tuple(parts ...string) []byte {
	b := make([]byte, 0, tupleLen(parts...))
	for _, p := range parts {
		b = appendTuple(b, p)
	}
	return b
}

// Days are counted from the Unix epoch and stored with the sign bit flipped,
// so that byte order is day order on both sides of 1970.
const microsPerDay = 86_400_000_000

func dayOfMicros(us int64) int32 {
	d := us / microsPerDay
	if us%microsPerDay < 0 {
		d--
	}
	return int32(d)
}

func dayOf(t time.Time) int32 { return dayOfMicros(t.UnixMicro()) }

func dayTime(d int32) time.Time { return time.Unix(int64(d)*86_400, 0).UTC() }

func appendDay(b []byte, d int32) []byte {
	return binary.BigEndian.AppendUint32(b, uint32(d)^(1<<31))
}

func readDay(b []byte) int32 { return int32(binary.BigEndian.Uint32(b) ^ (1 << 31)) }

// memberState is the value of a membership key (the user id in its cohort's
// bucket): is_member(1) version(8) event_time µs(8) record_id(rest).
type memberState struct {
	isMember  bool
	version   uint64
	eventTime int64
	recordID  string
}

const memberFixed = 1 + 8 + 8

func (m memberState) size() int { return memberFixed + len(m.recordID) }

func (m memberState) appendTo(b []byte) []byte {
	var f byte
	if m.isMember {
		f = 1
	}
	b = append(b, f)
	b = binary.BigEndian.AppendUint64(b, m.version)
	b = binary.BigEndian.AppendUint64(b, uint64(m.eventTime))
	return append(b, m.recordID...)
}

func readMember(v []byte) (memberState, error) {
	if len(v) < memberFixed {
		return memberState{}, errors.New("state: corrupt membership value")
	}
	return memberState{
		isMember:  v[0] == 1,
		version:   binary.BigEndian.Uint64(v[1:9]),
		eventTime: int64(binary.BigEndian.Uint64(v[9:17])),
		recordID:  string(v[17:]),
	}, nil
}

// A data point's value: flags(1) day(4) version(8) user_id(rest). The record
// id and position are its key, which is what makes a redelivery find it.
const (
	pointAdd       = 1 << 0
	pointEffective = 1 << 1
	pointFixed     = 1 + dayBytes + 8
)

// Counter values are two int64s: billable and effective data points of a
// day, or ids and records of a rejection.
const pairBytes = 16

func appendPair(b []byte, x, y int64) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(x))
	return binary.BigEndian.AppendUint64(b, uint64(y))
}

// readPair reads a counter value; a missing one (nil) is zero.
func readPair(v []byte) (x, y int64, err error) {
	if v == nil {
		return 0, 0, nil
	}
	if len(v) != pairBytes {
		return 0, 0, errors.New("state: corrupt counter value")
	}
	return int64(binary.BigEndian.Uint64(v[:8])), int64(binary.BigEndian.Uint64(v[8:])), nil
}

// historyValue is the value of a history key (tuple(user_id) version(8)):
// is_member(1) event_time µs(8) received_at µs(8) record_id(rest).
type historyValue struct {
	isMember              bool
	eventTime, receivedAt int64
	recordID              string
}

const historyFixed = 1 + 8 + 8

func (h historyValue) size() int { return historyFixed + len(h.recordID) }

func (h historyValue) appendTo(b []byte) []byte {
	var f byte
	if h.isMember {
		f = 1
	}
	b = append(b, f)
	b = binary.BigEndian.AppendUint64(b, uint64(h.eventTime))
	b = binary.BigEndian.AppendUint64(b, uint64(h.receivedAt))
	return append(b, h.recordID...)
}

var errBadHistory = errors.New("state: corrupt history entry")

// readHistory decodes a history entry; the record id aliases v.
func readHistory(k, v []byte) (user []byte, version uint64, h historyValue, rid []byte, err error) {
	if len(k) < 2+8 || len(v) < historyFixed || k[len(k)-10] != escByte || k[len(k)-9] != escTerm {
		return nil, 0, historyValue{}, nil, errBadHistory
	}
	h = historyValue{
		isMember:   v[0] == 1,
		eventTime:  int64(binary.BigEndian.Uint64(v[1:9])),
		receivedAt: int64(binary.BigEndian.Uint64(v[9:17])),
	}
	user = k[:len(k)-10]
	if bytes.IndexByte(user, escByte) >= 0 {
		u, _, err := readTuple(k)
		if err != nil {
			return nil, 0, historyValue{}, nil, err
		}
		user = []byte(u)
	}
	return user, binary.BigEndian.Uint64(k[len(k)-8:]), h, v[historyFixed:], nil
}

// Landing seconds are stored with the sign bit flipped, as days are.
func secondOfMicros(us int64) int64 {
	s := us / 1_000_000
	if us%1_000_000 < 0 {
		s--
	}
	return s
}

func appendSecond(b []byte, sec int64) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(sec)^(1<<63))
}

func readSecond(b []byte) int64 { return int64(binary.BigEndian.Uint64(b) ^ (1 << 63)) }
