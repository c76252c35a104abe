package atomicfile_test

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/cohortsync/cohortsync/internal/atomicfile"
)

func TestWriteReplacesOrLeavesAlone(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	if err := atomicfile.WriteJSON(path, map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	failed := errors.New("disk on fire")
	err := atomicfile.Write(path, func(w io.Writer) error {
		_, _ = w.Write([]byte("half"))
		return failed
	})
	if !errors.Is(err, failed) {
		t.Fatalf("Write: %v, want the writer's error", err)
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != "{\n  \"n\": 1\n}" {
		t.Fatalf("after a failed write: %q %v, want the old content", got, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v %v, want 0600", fi.Mode(), err)
	}
}
