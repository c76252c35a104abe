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
		if err != nil || d.IsDir() || isTempName(d.Name()) {
			return err
		}
		if strings.HasSuffix(d.Name(), stagedSuffix) {
			rows, err := readStaged(path)
			for _, r := range rows {
				for _, tb := range []string{tableChanges, tableDataPoints} {
					lines = append(lines, fmt.Sprintf("%s %s %d", tb, r.RecordID, r.Position))
				}
			}
			return err
		}
		if !strings.HasSuffix(d.Name(), ".parquet") {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		table := strings.Split(filepath.ToSlash(rel), "/")[0]
		return readFileKeys(path, func(record string, pos int32) {
			lines = append(lines, fmt.Sprintf("%s %s %d", table, record, pos))
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}
