package parquet

import (
	"crypto/sha256"
	"fmt"
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
			// The files themselves, as another reader finds them while the
			// sink is still open: every name with a digest of its bytes.
			Contents: func(t *testing.T, _ pipeline.Sink) string {
				files := listFiles(t, root)
				var lines []string
				for name, b := range files {
					lines = append(lines, fmt.Sprintf("%s %x", name, sha256.Sum256(b)))
				}
				slices.Sort(lines)
				return strings.Join(lines, "\n")
			},
		}
	})
}
