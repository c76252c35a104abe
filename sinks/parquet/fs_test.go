package parquet

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/pipeline"
)

// faultFS is the OS file system with the failures of a full or broken disk
// injected: writes past a byte budget fail with ENOSPC as write(2) does, and
// Sync, Close, Rename and SyncDir can be made to fail.
type faultFS struct {
	FS
	mu         sync.Mutex
	budget     int64 // bytes all files may still take; negative = unlimited
	syncErr    error
	closeErr   error
	renameErr  error
	syncDirErr error
}

func newFaultFS() *faultFS { return &faultFS{FS: OSFS(), budget: -1} }

// heal removes every fault, as freeing space does.
func (f *faultFS) heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.budget, f.syncErr, f.closeErr, f.renameErr, f.syncDirErr = -1, nil, nil, nil, nil
}

func (f *faultFS) CreateNew(name string) (File, error) {
	file, err := f.FS.CreateNew(name)
	if err != nil {
		return nil, err
	}
	return &faultFile{File: file, fs: f, name: name}, nil
}

func (f *faultFS) Rename(oldpath, newpath string) error {
	if f.renameErr != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: f.renameErr}
	}
	return f.FS.Rename(oldpath, newpath)
}

func (f *faultFS) SyncDir(dir string) error {
	if f.syncDirErr != nil {
		return &fs.PathError{Op: "sync", Path: dir, Err: f.syncDirErr}
	}
	return f.FS.SyncDir(dir)
}

type faultFile struct {
	File
	fs   *faultFS
	name string
}

func (f *faultFile) Write(p []byte) (int, error) {
	f.fs.mu.Lock()
	allowed := len(p)
	if f.fs.budget >= 0 && int64(allowed) > f.fs.budget {
		allowed = int(f.fs.budget)
	}
	if f.fs.budget >= 0 {
		f.fs.budget -= int64(allowed)
	}
	f.fs.mu.Unlock()
	n, err := f.File.Write(p[:allowed])
	if err == nil && allowed < len(p) {
		err = &fs.PathError{Op: "write", Path: f.name, Err: syscall.ENOSPC}
	}
	return n, err
}

func (f *faultFile) Sync() error {
	if f.fs.syncErr != nil {
		return &fs.PathError{Op: "sync", Path: f.name, Err: f.fs.syncErr}
	}
	return f.File.Sync()
}

func (f *faultFile) Close() error {
	err := f.File.Close()
	if f.fs.closeErr != nil {
		return &fs.PathError{Op: "close", Path: f.name, Err: f.fs.closeErr}
	}
	return err
}

// tempFiles lists the temporary files under root, the staging area included.
func tempFiles(t *testing.T, root string) []string {
	t.Helper()
	var tmp []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && isTempName(d.Name()) {
			tmp = append(tmp, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return tmp
}

// writeAndRoll stages out and rolls it into the trees.
func writeAndRoll(ctx context.Context, s *Sink, out *pipeline.Output) error {
	if err := s.Write(ctx, out); err != nil {
		return err
	}
	return s.Flush(ctx)
}

// TestDiskFull: whatever step fails (staging the batch or rolling it),
// the error wraps the OS error, no temporary file is left, and every file in
// the trees is a complete one, exactly what a clean write produces. After
// the fault is gone, the retry converges on the clean result. A redelivery
// of a batch already rolled touches no disk, so a full disk cannot fail it.
func TestDiskFull(t *testing.T) {
	t.Parallel()
	spec := smallSpec()
	changes := generate(spec)

	// The reference: what a healthy disk holds after the batch.
	refRoot := t.TempDir()
	{
		s := newTestSink(t, refRoot, Options{})
		if err := writeAndRoll(testkit.DetachedContext(t, 30*time.Second), s, buildOutput(t, changes, spec.partitions)); err != nil {
			t.Fatal(err)
		}
	}
	ref := listFiles(t, refRoot)

	tests := []struct {
		name string
		// prewritten: the batch was written once before (a replay onto a
		// disk that has filled up since).
		prewritten bool
		inject     func(*faultFS)
		wantErr    error
		wantReason string
	}{
		{"no space for the first byte", false, func(f *faultFS) { f.budget = 0 }, syscall.ENOSPC, reasonDiskFull},
		{"no space while staging", false, func(f *faultFS) { f.budget = 3_000 }, syscall.ENOSPC, reasonDiskFull},
		{"no space while rolling", false, func(f *faultFS) { f.budget = 14_000 }, syscall.ENOSPC, reasonDiskFull},
		{"quota exceeded at fsync", false, func(f *faultFS) { f.syncErr = syscall.EDQUOT }, syscall.EDQUOT, reasonDiskFull},
		{"rename refused", false, func(f *faultFS) { f.renameErr = syscall.EROFS }, syscall.EROFS, reasonIO},
		{"replay onto a full disk", true, func(f *faultFS) { f.budget = 0 }, nil, ""},
		{"replay with directory syncs failing", true, func(f *faultFS) { f.syncDirErr = syscall.EIO }, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := testkit.DetachedContext(t, 30*time.Second)
			root := t.TempDir()
			out := buildOutput(t, changes, spec.partitions)
			if tc.prewritten {
				s, err := New(Config{Root: root}, Options{})
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Write(ctx, out); err != nil {
					t.Fatal(err)
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
			ffs := newFaultFS()
			tc.inject(ffs)
			reg := prometheus.NewRegistry()
			s := newTestSink(t, root, Options{Registerer: reg, FS: ffs})

			err := writeAndRoll(ctx, s, out)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("replay: %v, want nil (nothing to write)", err)
				}
				if got := listFiles(t, root); !sameFiles(got, ref) {
					t.Fatalf("the replay changed the trees: %s", diffFiles(got, ref))
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Write and roll: %v, want an error wrapping %v", err, tc.wantErr)
			}
			if tmp := tempFiles(t, root); len(tmp) > 0 {
				t.Fatalf("temporary files left: %v", tmp)
			}
			for rel, b := range listFiles(t, root) {
				if string(b) != string(ref[rel]) {
					t.Errorf("%s: not a complete file of the batch (%d bytes, want %d)", rel, len(b), len(ref[rel]))
				}
			}
			if r := testutil.ToFloat64(s.m.errors.WithLabelValues(tc.wantReason)); r != 1 {
				t.Errorf("write_errors_total{%s} = %v, want 1", tc.wantReason, r)
			}
			if err := s.Healthy(); !errors.Is(err, tc.wantErr) {
				t.Errorf("Healthy: %v, want the write error", err)
			}

			// Space freed: the redelivery of the batch and the next roll
			// succeed and the disk holds exactly the clean result.
			ffs.heal()
			if err := writeAndRoll(ctx, s, out); err != nil {
				t.Fatalf("Write after the fault cleared: %v", err)
			}
			if err := s.Healthy(); err != nil {
				t.Errorf("Healthy after recovery: %v", err)
			}
			if final := listFiles(t, root); !sameFiles(final, ref) {
				t.Fatalf("after recovery: %s", diffFiles(final, ref))
			}
		})
	}
}

func TestWriteFileAtomic(t *testing.T) {
	t.Parallel()
	content := func(s string) func(io.Writer) error {
		return func(w io.Writer) error { _, err := io.WriteString(w, s); return err }
	}
	t.Run("creates directories and replaces", func(t *testing.T) {
		t.Parallel()
		ctx := testkit.DetachedContext(t, 30*time.Second)
		dir := filepath.Join(t.TempDir(), "snapshots", "workspace=w", "partner=p")
		for _, s := range []string{"first", "second"} {
			if err := WriteFileAtomic(ctx, OSFS(), dir, "version=1.parquet", content(s)); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(dir, "version=1.parquet"))
			if err != nil || string(b) != s {
				t.Fatalf("content %q, %v; want %q", b, err, s)
			}
		}
		entries, err := os.ReadDir(dir)
		if err != nil || len(entries) != 1 {
			t.Fatalf("directory holds %v (%v), want the one file", entries, err)
		}
	})
	t.Run("failed write keeps the old file", func(t *testing.T) {
		t.Parallel()
		ctx := testkit.DetachedContext(t, 30*time.Second)
		dir := t.TempDir()
		if err := WriteFileAtomic(ctx, OSFS(), dir, "f", content("old")); err != nil {
			t.Fatal(err)
		}
		boom := errors.New("encoder failed")
		err := WriteFileAtomic(ctx, OSFS(), dir, "f", func(w io.Writer) error {
			_, _ = io.WriteString(w, "partial")
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("err = %v, want %v", err, boom)
		}
		b, _ := os.ReadFile(filepath.Join(dir, "f"))
		if string(b) != "old" {
			t.Fatalf("content %q, want the old one", b)
		}
		if tmp := tempFiles(t, dir); len(tmp) > 0 {
			t.Fatalf("temporary files left: %v", tmp)
		}
	})
	t.Run("cancelled context stops the write", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(testkit.DetachedContext(t, 30*time.Second))
		dir := t.TempDir()
		err := WriteFileAtomic(ctx, OSFS(), dir, "f", func(w io.Writer) error {
			if _, err := io.WriteString(w, "a"); err != nil {
				return err
			}
			cancel()
			_, err := io.WriteString(w, "b")
			return err
		})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if files := listFiles(t, dir); len(files) != 0 {
			t.Fatalf("files left: %v", files)
		}
	})
	t.Run("path through a file", func(t *testing.T) {
		t.Parallel()
		ctx := testkit.DetachedContext(t, 30*time.Second)
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "x"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		err := WriteFileAtomic(ctx, OSFS(), filepath.Join(dir, "x", "y"), "f", content("c"))
		if !errors.Is(err, syscall.ENOTDIR) {
			t.Fatalf("err = %v, want ENOTDIR", err)
		}
	})
}

func TestStaleTempSweep(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	dir := filepath.Join(root, "changes", "workspace=w", "date=2024-01-01")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(dir, tempName("part-a.parquet"))
	fresh := filepath.Join(dir, tempName("part-b.parquet"))
	data := filepath.Join(dir, "part-c.parquet")
	for _, p := range []string{old, fresh, data} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	longAgo := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(old, longAgo, longAgo); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(data, longAgo, longAgo); err != nil {
		t.Fatal(err)
	}
	newTestSink(t, root, Options{})
	var left []string
	for rel := range listFiles(t, root) {
		left = append(left, filepath.Base(rel))
	}
	if len(left) != 2 {
		t.Fatalf("left %v, want the fresh temporary file and the data file", left)
	}
	if _, err := os.Stat(old); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale temporary file still there: %v", err)
	}
	for _, p := range []string{fresh, data} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s removed: %v", filepath.Base(p), err)
		}
	}
	// The sweep also runs on a root that does not exist yet.
	newTestSink(t, filepath.Join(root, "not-yet"), Options{})
}
