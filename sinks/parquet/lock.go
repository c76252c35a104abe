package parquet

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// ErrTreeLocked means the Parquet tree is in use in a way that excludes the
// caller: a compaction while a sink has it open, or a sink while a
// compaction runs.
var ErrTreeLocked = errors.New("the Parquet tree is in use by another cohortsync process")

// treeLockName is the lock file at the root of a tree. Sinks hold it shared
// (several instances may write one tree on shared storage, each its own
// Kafka partitions); a compaction holds it exclusive, since it rewrites
// partitions that sinks would read and write.
const treeLockName = ".lock"

type treeLock struct{ f *os.File }

func lockTree(root string, exclusive bool) (*treeLock, error) {
	path := filepath.Join(root, treeLockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	if err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			if exclusive {
				return nil, fmt.Errorf("%w: a running server writes %s (stop it first)", ErrTreeLocked, root)
			}
			return nil, fmt.Errorf("%w: `cohortsync parquet compact` is rewriting %s", ErrTreeLocked, root)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return &treeLock{f: f}, nil
}

// release drops the lock; closing the file does.
func (l *treeLock) release() {
	if l != nil && l.f != nil {
		_ = l.f.Close()
		l.f = nil
	}
}
