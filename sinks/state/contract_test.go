package state

import (
	"path/filepath"
	"testing"

	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/sinks/sinktest"
)

func TestSinkContract(t *testing.T) {
	sinktest.Run(t, func(t *testing.T) sinktest.Subject {
		cfg := DefaultConfig(t.TempDir())
		cfg.Path = filepath.Join(t.TempDir(), FileName)
		return sinktest.Subject{
			Open: func(t *testing.T) pipeline.Sink {
				s, err := Open(cfg, nil)
				if err != nil {
					t.Fatal(err)
				}
				return s
			},
			// bbolt locks its file: the store is read through its own handle,
			// whose reads see only committed (fsynced) transactions.
			Contents: func(t *testing.T, open pipeline.Sink) string { return dump(t, open.(*Store)) },
		}
	})
}
