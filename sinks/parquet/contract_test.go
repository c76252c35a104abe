package parquet

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/sinks/sinktest"
)

func TestSinkContract(t *testing.T) {
	sinktest.Run(t, func(t *testing.T) sinktest.Subject {
		root := t.TempDir()
		return sinktest.Subject{
			Open: func(t *testing.T) pipeline.Sink {
				s, err := New(Config{Root: root}, Options{})
				if err != nil {
					t.Fatal(err)
				}
				return s
			},
			Contents: func(t *testing.T, _ pipeline.Sink) string { return logicalRows(t, root) },
		}
	})
}

// logicalRows is what the sink holds, wherever it is: one line per row of
// each tree, a staged row counting for both trees (a roll moves it there).
// A row held twice shows twice.
func logicalRows(t testing.TB, root string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(d.Name(), ".parquet") || isTempName(d.Name()) {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		tables := []string{strings.Split(filepath.ToSlash(rel), "/")[0]}
		if tables[0] == stagingDir {
			tables = []string{tableChanges, tableDataPoints}
		}
		return readFileKeys(path, func(record string, pos int32) {
			for _, tb := range tables {
				lines = append(lines, fmt.Sprintf("%s %s %d", tb, record, pos))
			}
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}
