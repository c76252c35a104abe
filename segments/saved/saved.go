// Package saved keeps saved segments (a name and a filter per workspace) in a
// compacted Kafka topic, so every instance serves the same segments: each
// one replays the topic at start and tails it.
package saved

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync/kafka"
)

// Errors a caller maps to answers.
var (
	ErrNotFound = errors.New("saved: segment not found")
	ErrInvalid  = errors.New("saved: invalid segment")
	// ErrNameTaken is a name already used by another segment of the workspace.
	ErrNameTaken = errors.New("saved: segment name already in use")
)

// MaxNameLen and MaxFilterBytes bound what one segment may hold.
const (
	MaxNameLen     = 200
	MaxFilterBytes = 64 << 10
)

// Segment is one saved segment.
type Segment struct {
	ID        string          `json:"id"`
	Workspace string          `json:"workspace"`
	Name      string          `json:"name"`
	Filter    json.RawMessage `json:"filter"`
	CreatedAt time.Time       `json:"created_at"`
}

func (s Segment) clone() Segment {
	s.Filter = bytes.Clone(s.Filter)
	return s
}

// recordKey is the topic key of a segment: compaction keeps the latest
// record per workspace and id.
func recordKey(workspace, id string) string { return workspace + "/" + id }

// Options tune a Store. The zero value is usable.
type Options struct {
	// Topic is the compacted segments topic; empty means the client's Topics.Segments.
	Topic      string
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// PollWait and MaxStaleness tune the topic's tail (kafka.TableOptions).
	PollWait     time.Duration
	MaxStaleness time.Duration
}

// Store is the saved segments of every workspace, as this instance has read
// them from the topic.
type Store struct {
	table *kafka.Table
	log   *slog.Logger

	mu   sync.RWMutex
	byWS map[string]map[string]Segment // workspace → id → segment
}

// Open replays the segments topic and tails it until Close. The topic must
// exist (kafka.Client.EnsureTopics creates it with StandardTopics).
func Open(ctx context.Context, client *kafka.Client, opts Options) (*Store, error) {
	if client == nil {
		return nil, errors.New("saved: open: nil kafka client")
	}
	topic := opts.Topic
	if topic == "" {
		topic = client.Config().Topics.Segments
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{log: log.With("component", "saved-segments"), byWS: map[string]map[string]Segment{}}
	table, err := client.OpenTable(ctx, kafka.TableOptions{
		Topic: topic, Name: "segments", Apply: s.apply, Reset: s.reset,
		Logger: log, Registerer: opts.Registerer,
		PollWait: opts.PollWait, MaxStaleness: opts.MaxStaleness,
	})
	if err != nil {
		return nil, fmt.Errorf("saved: open: %w", err)
	}
	s.table = table
	return s, nil
}

// Close stops the tail.
func (s *Store) Close() error { return s.table.Close() }

// Healthy reports whether the store is in step with its topic.
func (s *Store) Healthy() error { return s.table.Healthy() }

// Create saves a segment. The filter is stored as given (compacted); the
// caller validates it. When Create returns, Get on this store finds it.
func (s *Store) Create(ctx context.Context, workspace, name string, filter json.RawMessage) (Segment, error) {
	name = strings.TrimSpace(name)
	if err := validate(workspace, name, filter); err != nil {
		return Segment{}, err
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, filter); err != nil {
		return Segment{}, fmt.Errorf("%w: filter is not JSON: %v", ErrInvalid, err)
	}
	s.mu.RLock()
	taken := false
	for _, seg := range s.byWS[workspace] {
		taken = taken || seg.Name == name
	}
	s.mu.RUnlock()
	// Two instances may race to the same name; the check keeps the common
	// mistake (saving twice) out, not every concurrent one.
	if taken {
		return Segment{}, fmt.Errorf("%w: %q", ErrNameTaken, name)
	}
	id, err := newID()
	if err != nil {
		return Segment{}, err
	}
	seg := Segment{ID: id, Workspace: workspace, Name: name, Filter: compact.Bytes(), CreatedAt: time.Now().UTC().Truncate(time.Millisecond)}
	val, err := json.Marshal(seg)
	if err != nil {
		return Segment{}, fmt.Errorf("saved: encode segment: %w", err)
	}
	if err := s.table.Put(ctx, []byte(recordKey(workspace, id)), val); err != nil {
		return Segment{}, fmt.Errorf("saved: store segment: %w", err)
	}
	s.log.InfoContext(ctx, "segment saved", "workspace", workspace, "segment_id", id)
	return seg.clone(), nil
}

// Get returns a segment of workspace.
func (s *Store) Get(workspace, id string) (Segment, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	seg, ok := s.byWS[workspace][id]
	return seg.clone(), ok
}

// List returns the segments of workspace, oldest first.
func (s *Store) List(workspace string) []Segment {
	s.mu.RLock()
	out := make([]Segment, 0, len(s.byWS[workspace]))
	for _, seg := range s.byWS[workspace] {
		out = append(out, seg.clone())
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Delete removes a segment with a tombstone. An unknown id, or one of
// another workspace, is ErrNotFound.
func (s *Store) Delete(ctx context.Context, workspace, id string) error {
	if _, ok := s.Get(workspace, id); !ok {
		return fmt.Errorf("%w: %q", ErrNotFound, truncate(id))
	}
	if err := s.table.Put(ctx, []byte(recordKey(workspace, id)), nil); err != nil {
		return fmt.Errorf("saved: delete segment: %w", err)
	}
	s.log.InfoContext(ctx, "segment deleted", "workspace", workspace, "segment_id", id)
	return nil
}

// apply folds one record into the index; invalid records are skipped so one
// foreign write cannot stop the tail.
func (s *Store) apply(r kafka.TableRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ws, id, ok := strings.Cut(string(r.Key), "/")
	if !ok {
		s.log.Warn("skipping record with a malformed key on the segments topic", "offset", r.Offset)
		return
	}
	if r.Value == nil {
		if m := s.byWS[ws]; m != nil {
			delete(m, id)
			if len(m) == 0 {
				delete(s.byWS, ws)
			}
		}
		return
	}
	var seg Segment
	if err := json.Unmarshal(r.Value, &seg); err != nil {
		s.log.Warn("skipping undecodable record on the segments topic", "offset", r.Offset, "error", err)
		return
	}
	if seg.Workspace != ws || seg.ID != id {
		s.log.Warn("skipping record whose key does not match its content", "offset", r.Offset)
		return
	}
	if err := validate(seg.Workspace, seg.Name, seg.Filter); err != nil {
		s.log.Warn("skipping invalid record on the segments topic", "offset", r.Offset, "error", err)
		return
	}
	m := s.byWS[ws]
	if m == nil {
		m = map[string]Segment{}
		s.byWS[ws] = m
	}
	m[id] = seg
}

func (s *Store) reset() {
	s.mu.Lock()
	s.byWS = map[string]map[string]Segment{}
	s.mu.Unlock()
}

func validate(workspace, name string, filter json.RawMessage) error {
	var errs []error
	if workspace == "" || strings.ContainsAny(workspace, "/\x00") {
		errs = append(errs, fmt.Errorf("%w: workspace %q", ErrInvalid, truncate(workspace)))
	}
	switch {
	case name == "":
		errs = append(errs, fmt.Errorf("%w: name must be a non-empty string", ErrInvalid))
	case len(name) > MaxNameLen:
		errs = append(errs, fmt.Errorf("%w: name is longer than %d bytes", ErrInvalid, MaxNameLen))
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		errs = append(errs, fmt.Errorf("%w: name must not contain control characters", ErrInvalid))
	}
	switch {
	case len(bytes.TrimSpace(filter)) == 0:
		errs = append(errs, fmt.Errorf("%w: filter is required", ErrInvalid))
	case len(filter) > MaxFilterBytes:
		errs = append(errs, fmt.Errorf("%w: filter is larger than %d bytes", ErrInvalid, MaxFilterBytes))
	case !json.Valid(filter):
		errs = append(errs, fmt.Errorf("%w: filter is not JSON", ErrInvalid))
	}
	return errors.Join(errs...)
}

func newID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("saved: generate id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

func truncate(s string) string {
	if len(s) <= 64 {
		return s
	}
	return s[:64] + "..."
}
