// Package decode turns landed Kafka messages into pipeline records. It is the
// one place that knows which schema errors exist, so the dead-letter stage and
// the metrics name a failure the same way.
package decode

import (
	"errors"
	"fmt"

	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
)

// Reasons a message could not be decoded. They are the reason field of a
// dead-letter record and the label of the dropped-records metric, so they are
// part of the operational contract: do not rename them.
const (
	ReasonUnknownVersion = "unknown_schema_version"
	ReasonMalformed      = "malformed"
)

// Decoder reads landed records. It holds no state, so one value may be shared
// by every goroutine of the runner.
type Decoder struct{}

// New returns a Decoder.
func New() *Decoder { return &Decoder{} }

// Decode reads one message of the landing topic. The error wraps
// schemas.ErrUnknownVersion or schemas.ErrMalformed (see Reason) and names the
// message's position, never its contents.
func (*Decoder) Decode(m pipeline.Message) (pipeline.Record, error) {
	env, err := schemas.Decode(m.Value)
	if err != nil {
		return pipeline.Record{}, fmt.Errorf("decode %s/%d@%d: %w", m.Topic, m.Partition, m.Offset, err)
	}
	return pipeline.Record{Partition: m.Partition, Offset: m.Offset, Envelope: env}, nil
}

// Reason maps a Decode error to its short reason. An unknown version is
// checked first: it is the one a newer release can fix by being deployed, so
// it must not hide behind "malformed". Errors from elsewhere map to
// pipeline.ReasonUndecodable, nil to "".
func Reason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, schemas.ErrUnknownVersion):
		return ReasonUnknownVersion
	case errors.Is(err, schemas.ErrMalformed):
		return ReasonMalformed
	default:
		return pipeline.ReasonUndecodable
	}
}
