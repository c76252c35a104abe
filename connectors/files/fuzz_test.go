package files_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/connectors/files"
	"github.com/cohortsync/cohortsync/internal/testkit"
)

// FuzzLines reads arbitrary bytes as NDJSON and as CSV (behind a valid
// header): Next never panics, every envelope validates, and items and bad
// lines come in increasing line order within the file.
func FuzzLines(f *testing.F) {
	f.Add(ndjsonFixture(f))
	f.Add([]byte(strings.TrimPrefix(csvFixture, "\ufeff"+files.CSVHeader+"\r\n")))
	f.Add([]byte(`{"cohort_id":"c","cohort_changes":[{"user_ids":["a"],"device_ids":[""]}]}` + "\n\n\r\n"))
	f.Add([]byte(`w,p,c,alias,":",add,2024-01-01T00:00:00Z` + "\n\"\"\"\n,,,,,,\n"))
	f.Add([]byte("\x1f\x8b\x08garbage"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, c := range []struct{ name, header string }{{"f.ndjson", ""}, {"f.csv", files.CSVHeader + "\n"}} {
			tmp, err := os.CreateTemp(dir, "*-"+c.name)
			if err != nil {
				t.Fatal(err)
			}
			path := tmp.Name()
			_, err = tmp.Write(append([]byte(c.header), data...))
			if cerr := tmp.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatal(err)
			}
			checkFuzzRead(t, path, bytes.Count(data, []byte{'\n'})+2)
			_ = os.Remove(path)
		}
	})
}

func checkFuzzRead(t *testing.T, path string, maxLine int) {
	r, err := files.Open(path, files.Options{Workspace: "w", Partner: "p", MaxIDsPerRecord: 3, MaxLineBytes: 256})
	if err != nil {
		// Only a compressed-looking stream with a broken header may fail
		// to open; the CSV header is always valid here.
		if !strings.Contains(err.Error(), "gzip") && !strings.Contains(err.Error(), "zstd") {
			t.Fatalf("Open %s: %v", filepath.Base(path), err)
		}
		return
	}
	defer r.Close()
	ctx := testkit.DetachedContext(t, 60*time.Second)
	var last int64
	for range 10000 {
		it, err := r.Next(ctx)
		if err == io.EOF {
			return
		}
		line := it.Line
		if le, ok := errors.AsType[*files.LineError](err); ok {
			line = le.Line
		} else if err != nil {
			// A stream error (a corrupt compressed stream) ends the file.
			return
		} else if verr := it.Envelope.Validate(); verr != nil {
			t.Fatalf("line %d: invalid envelope: %v", it.Line, verr)
		}
		// CSV groups report their first line after later bad lines, so
		// only the NDJSON order is strict; both stay within the file.
		if line < 1 || line > int64(maxLine) {
			t.Fatalf("line %d outside 1..%d", line, maxLine)
		}
		if strings.HasSuffix(path, ".ndjson") && line <= last {
			t.Fatalf("line %d after line %d", line, last)
		}
		last = line
	}
	t.Fatal("Next did not reach the end")
}
