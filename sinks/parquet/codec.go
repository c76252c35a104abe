package parquet

import (
	"fmt"

	"github.com/klauspost/compress/zstd"
	pqzstd "github.com/parquet-go/parquet-go/compress/zstd"
	"github.com/parquet-go/parquet-go/format"
)

// zstdCodec is parquet-go's zstd codec with one encoder kept for the sink's
// life. parquet-go's own codec keeps its encoders in a sync.Pool, which
// every GC cycle empties, and setting up an encoder (megabytes of tables)
// costs more than compressing the pages of a small file. The encoder options
// are parquet-go's, so the bytes are the same.
type zstdCodec struct {
	enc *zstd.Encoder
	dec pqzstd.Codec // the sink never reads; here to complete the interface
}

func newZstdCodec() (*zstdCodec, error) {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithZeroFrames(true),
		zstd.WithEncoderCRC(false),
	)
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	return &zstdCodec{enc: enc}, nil
}

func (c *zstdCodec) String() string                            { return "ZSTD" }
func (c *zstdCodec) CompressionCodec() format.CompressionCodec { return format.Zstd }

// Encode is safe for concurrent use: EncodeAll waits for the one encoder.
func (c *zstdCodec) Encode(dst, src []byte) ([]byte, error) {
	return c.enc.EncodeAll(src, dst[:0]), nil
}

func (c *zstdCodec) Decode(dst, src []byte) ([]byte, error) { return c.dec.Decode(dst, src) }

func (c *zstdCodec) close() error { return c.enc.Close() }
