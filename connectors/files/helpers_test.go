package files_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/cohortsync/cohortsync/connectors/files"
	"github.com/cohortsync/cohortsync/internal/testkit"
)

// compressions are the three encodings every format is tested in, with the
// suffix each adds to a file name.
var compressions = []struct{ name, suffix string }{
	{"plain", ""},
	{"gzip", ".gz"},
	{"zstd", ".zst"},
}

// compress encodes data as the named compression.
func compress(t testing.TB, name string, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch name {
	case "plain":
		return data
	case "gzip":
		w := gzip.NewWriter(&buf)
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	case "zstd":
		w, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("unknown compression %q", name)
	}
	return buf.Bytes()
}

// mtime is the modification time every test file gets, so that envelopes
// that fall back to it are predictable.
var mtime = time.Date(2024, 6, 1, 12, 30, 0, 0, time.UTC)

// writeFile writes data compressed as comp to dir/name and sets its mtime.
func writeFile(t testing.TB, dir, name, comp string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, compress(t, comp, data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	return path
}

// result is one outcome of Next: an item or a bad line.
type result struct {
	item    files.Item
	badLine int64
	badMsg  string
}

// readAll reads path to the end, failing on any error but a LineError.
func readAll(t testing.TB, path string, opts files.Options) []result {
	t.Helper()
	r, err := files.Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	ctx := testkit.DetachedContext(t, 60*time.Second)
	var out []result
	for {
		it, err := r.Next(ctx)
		if err == io.EOF {
			break
		}
		if le, ok := errors.AsType[*files.LineError](err); ok {
			if le.Path != path {
				t.Errorf("LineError path %q, want %q", le.Path, path)
			}
			out = append(out, result{badLine: le.Line, badMsg: le.Error()})
			continue
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if err := it.Envelope.Validate(); err != nil {
			t.Errorf("line %d: envelope does not validate: %v", it.Line, err)
		}
		out = append(out, result{item: it})
	}
	if done, total := r.Progress(); done != total {
		t.Errorf("Progress at the end = %d/%d, want done == total", done, total)
	}
	return out
}

// itemsOf returns the items of rs, dropping bad lines.
func itemsOf(rs []result) []files.Item {
	var items []files.Item
	for _, r := range rs {
		if r.badLine == 0 {
			items = append(items, r.item)
		}
	}
	return items
}
