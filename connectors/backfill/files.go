package backfill

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cohortsync/cohortsync/connectors/files"
)

// FileSources describes each path as a Source read by connectors/files. The
// fingerprint (absolute path, size and modification time) keeps a
// checkpoint from being resumed over a changed file.
func FileSources(paths []string, opts files.Options) ([]Source, error) {
	var out []Source
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("backfill: %w", err)
		}
		if fi.IsDir() {
			return nil, fmt.Errorf("backfill: %s is a directory: name the files", p)
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("backfill: %w", err)
		}
		path := p
		out = append(out, Source{
			Name:        path,
			Fingerprint: fmt.Sprintf("%s:%d:%d", abs, fi.Size(), fi.ModTime().UnixNano()),
			Size:        fi.Size(),
			Open: func() (Input, error) {
				if opts.TempDir != "" {
					if err := os.MkdirAll(opts.TempDir, 0o700); err != nil {
						return nil, fmt.Errorf("backfill: temp dir: %w", err)
					}
				}
				r, err := files.Open(path, opts)
				if err != nil {
					return nil, err
				}
				return fileInput{r}, nil
			},
		})
	}
	return out, nil
}

// fileInput adapts a files.Reader to Input.
type fileInput struct{ r *files.Reader }

func (in fileInput) Next(ctx context.Context) (Item, error) {
	it, err := in.r.Next(ctx)
	return Item{Envelope: it.Envelope, Line: it.Line}, err
}
func (in fileInput) Progress() (int64, int64) { return in.r.Progress() }
func (in fileInput) Close() error             { return in.r.Close() }
