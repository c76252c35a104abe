package parquet

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func TestStagedCodec(t *testing.T) {
	t.Parallel()
	rows := []changeRow{
		{Workspace: "acme", Partner: "mixpanel", CohortID: "c/1", UserID: "u1", IDKind: "external_id", IDValue: "u1",
			IsMember: true, Version: 1 << 40, RecordID: "r1", Position: 0, EventTime: -5, ReceivedAt: 1_700_000_000_000_000, Partition: 3, Offset: 1 << 33},
		{Workspace: "", Partner: "é", CohortID: string([]byte{0, 0xff}), IsMember: false, Version: 0, Position: 1 << 20, Partition: 0, Offset: 0},
	}
	data := appendStaged(nil, rows)
	got, err := decodeStaged(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, rows) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, rows)
	}
	if got, err := decodeStaged(appendStaged(nil, nil)); err != nil || len(got) != 0 {
		t.Fatalf("empty file: %v rows, %v", len(got), err)
	}
	// Every truncation and every flipped byte is refused, never misread.
	for n := range len(data) {
		if _, err := decodeStaged(data[:n]); !errors.Is(err, errStagedCorrupt) {
			t.Fatalf("truncated to %d bytes: %v, want errStagedCorrupt", n, err)
		}
	}
	for i := range data {
		bad := bytes.Clone(data)
		bad[i] ^= 0x41
		if _, err := decodeStaged(bad); !errors.Is(err, errStagedCorrupt) {
			t.Fatalf("byte %d flipped: %v, want errStagedCorrupt", i, err)
		}
	}
}

func FuzzDecodeStaged(f *testing.F) {
	f.Add(appendStaged(nil, []changeRow{{Workspace: "w", RecordID: "r", Position: 2}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		rows, err := decodeStaged(data)
		if err != nil {
			return
		}
		// What decodes encodes back to the same bytes.
		if !bytes.Equal(appendStaged(nil, rows), data) {
			t.Fatalf("decoded %d rows that encode differently", len(rows))
		}
	})
}
