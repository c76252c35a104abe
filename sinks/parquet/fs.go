package parquet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// FS is the part of the file system the sink writes through. It exists so
// that tests can make a write, a sync or a rename fail the way a full disk
// does, without filling a disk.
type FS interface {
	Stat(name string) (fs.FileInfo, error)
	Mkdir(name string, perm fs.FileMode) error
	// CreateNew creates name, failing if it exists.
	CreateNew(name string) (File, error)
	Rename(oldpath, newpath string) error
	Remove(name string) error
	// SyncDir makes the entries of dir (creations, renames) durable.
	SyncDir(dir string) error
}

// File is a file being written.
type File interface {
	io.Writer
	Sync() error
	Close() error
}

// OSFS returns the FS of the operating system.
func OSFS() FS { return osFS{} }

type osFS struct{}

func (osFS) Stat(name string) (fs.FileInfo, error)     { return os.Stat(name) }
func (osFS) Mkdir(name string, perm fs.FileMode) error { return os.Mkdir(name, perm) }
func (osFS) Rename(oldpath, newpath string) error      { return os.Rename(oldpath, newpath) }
func (osFS) Remove(name string) error                  { return os.Remove(name) }

// CreateNew uses mode 0666 and not os.CreateTemp's 0600 so that the umask
// decides, as for any data file: other users' Spark or DuckDB must read them.
func (osFS) CreateNew(name string) (File, error) {
	return os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
}

func (osFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// tempMarker is in every temporary name. A temporary name starts with a dot
// and does not end in .parquet, so the globs of Spark, DuckDB and ClickHouse
// skip it while it is being written.
const tempMarker = ".tmp-"

func tempName(name string) string {
	return "." + name + tempMarker + fmt.Sprintf("%016x", rand.Uint64())
}

func isTempName(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name, tempMarker)
}

// WriteFileAtomic writes dir/name so that it is either absent, or complete
// and durable: write streams the content into a temporary file in dir,
// which is fsynced, renamed over name and followed by an fsync of dir. Only
// then does it return nil. Missing directories are created and their
// parents fsynced. On any error the temporary file is removed and an
// existing dir/name is left as it was; the error wraps the OS error, so
// errors.Is(err, syscall.ENOSPC) tells a full disk.
//
// ctx is checked between the writes of write, so a cancelled write stops
// early and leaves nothing behind.
func WriteFileAtomic(ctx context.Context, fsys FS, dir, name string, write func(io.Writer) error) error {
	if err := writeFileNoDirSync(ctx, fsys, dir, name, write); err != nil {
		return err
	}
	return fsys.SyncDir(dir)
}

// writeFileNoDirSync is WriteFileAtomic without the final directory sync, so
// that a batch of files sharing a directory syncs it once. The caller must
// SyncDir(dir) before reporting the file durable.
func writeFileNoDirSync(ctx context.Context, fsys FS, dir, name string, write func(io.Writer) error) error {
	p, err := createPending(ctx, fsys, dir, name)
	if err != nil {
		return err
	}
	if err := write(p); err != nil {
		p.abort()
		return fmt.Errorf("write %s: %w", p.final, err)
	}
	return p.commit()
}

// pendingFile is a file being written under its temporary name: commit
// makes it durable under its final name (its directory still to be
// synced), abort removes it.
type pendingFile struct {
	fsys       FS
	final, tmp string
	f          File
	w          ctxWriter
	n          int64
}

func createPending(ctx context.Context, fsys FS, dir, name string) (*pendingFile, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := MkdirAllSync(fsys, dir); err != nil {
		return nil, err
	}
	p := &pendingFile{fsys: fsys, final: filepath.Join(dir, name), tmp: filepath.Join(dir, tempName(name))}
	f, err := fsys.CreateNew(p.tmp)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", p.tmp, err)
	}
	p.f, p.w = f, ctxWriter{ctx: ctx, w: f}
	return p, nil
}

func (p *pendingFile) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.n += int64(n)
	return n, err
}

// commit syncs, closes and renames the file into place. On an error the
// temporary file is removed.
func (p *pendingFile) commit() (err error) {
	closed := false
	defer func() {
		if err == nil {
			return
		}
		if !closed {
			_ = p.f.Close() // the first error is the one to report
		}
		if rerr := p.fsys.Remove(p.tmp); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = errors.Join(err, fmt.Errorf("remove temporary file: %w", rerr))
		}
	}()
	if err := p.f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", p.final, err)
	}
	closed = true
	// Close can report a deferred write error (NFS), so it is checked too.
	if err := p.f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", p.final, err)
	}
	if err := p.fsys.Rename(p.tmp, p.final); err != nil {
		return fmt.Errorf("rename to %s: %w", p.final, err)
	}
	return nil
}

// abort closes and removes the temporary file.
func (p *pendingFile) abort() {
	_ = p.f.Close()
	_ = p.fsys.Remove(p.tmp)
}

// MkdirAllSync creates dir and any missing parents. Each directory it creates
// is made durable by syncing its parent: without that, a crash could keep a
// synced file but lose the directory entry that leads to it.
func MkdirAllSync(fsys FS, dir string) error {
	dir = filepath.Clean(dir)
	if fi, err := fsys.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("mkdir %s: %w", dir, syscall.ENOTDIR)
		}
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("stat %s: %w", dir, err)
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := MkdirAllSync(fsys, parent); err != nil {
			return err
		}
	}
	if err := fsys.Mkdir(dir, 0o777); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("mkdir %s: %w", dir, err)
	}
	// Synced even when another writer won the race to create dir: its
	// own sync of the parent may not have happened yet.
	return fsys.SyncDir(parent)
}

// ctxWriter stops a long write once ctx ends.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c *ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// sweepTemp removes the temporary files under root older than maxAge: what
// a crash in the middle of a write leaves behind. It returns how many it removed.
func sweepTemp(fsys FS, root string, maxAge time.Duration, now time.Time) (int, error) {
	removed := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() || !isTempName(d.Name()) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // renamed or removed by its writer meanwhile
			}
			return err
		}
		if now.Sub(info.ModTime()) < maxAge {
			return nil
		}
		if err := fsys.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		removed++
		return nil
	})
	if err != nil {
		return removed, fmt.Errorf("sweep temporary files under %s: %w", root, err)
	}
	return removed, nil
}
