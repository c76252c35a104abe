package files_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/cohortsync/cohortsync/connectors/files"
	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	sinkpq "github.com/cohortsync/cohortsync/sinks/parquet"
)

// Benchmark inputs: 1M changes in records of 1,000 ids (the API's limit).
const (
	benchRecords = 1000
	benchIDs     = 1000
)

func benchEnvelope(i int) schemas.Envelope {
	ids := make([]string, benchIDs)
	for j := range ids {
		ids[j] = "user-" + strconv.Itoa(i*benchIDs+j)
	}
	at := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second)
	return changesEnvelope(fmt.Sprintf("0190f5a2-7b1c-7def-8abc-%012d", i), "acme", "mixpanel",
		"cohort-"+strconv.Itoa(i%20), at, schemas.Change{UserIDs: ids, ShouldRemove: i%4 == 0})
}

func writeLines(b *testing.B, path string, comp string, line func(i int) []byte) {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	var w io.Writer = f
	var closer io.Closer
	if comp != "plain" {
		pr, pw := io.Pipe()
		done := make(chan []byte)
		go func() {
			data, _ := io.ReadAll(pr)
			done <- data
		}()
		w, closer = pw, pw
		defer func() {
			data := compress(b, comp, <-done)
			if _, err := f.Write(data); err != nil {
				b.Fatal(err)
			}
			if err := f.Close(); err != nil {
				b.Fatal(err)
			}
		}()
	} else {
		closer = f
	}
	bw := bufio.NewWriter(w)
	for i := range benchRecords {
		bw.Write(line(i))
		bw.WriteByte('\n')
	}
	if err := bw.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := closer.Close(); err != nil {
		b.Fatal(err)
	}
}

func benchNDJSONEnvelopes(b *testing.B, path, comp string) {
	writeLines(b, path, comp, func(i int) []byte {
		data, err := schemas.Encode(benchEnvelope(i))
		if err != nil {
			b.Fatal(err)
		}
		return data
	})
}

func benchNDJSONBodies(b *testing.B, path string) {
	writeLines(b, path, "plain", func(i int) []byte {
		e := benchEnvelope(i)
		p := e.Payload.(schemas.CohortChangesPayload)
		data := []byte(`{"partner_api_key":"pak","client_secret":"csk_x_y","cohort_id":"` + p.CohortID + `","cohort_changes":[{"user_ids":[`)
		for j, id := range p.Changes[0].UserIDs {
			if j > 0 {
				data = append(data, ',')
			}
			data = strconv.AppendQuote(data, id)
		}
		data = append(data, `],"should_remove":`+strconv.FormatBool(p.Changes[0].ShouldRemove)+`}],"event_time":"`+e.EventTime.Format(time.RFC3339)+`"}`...)
		return data
	})
}

func benchCSV(b *testing.B, path string) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	bw := bufio.NewWriter(f)
	bw.WriteString(files.CSVHeader + "\n")
	for i := range benchRecords {
		e := benchEnvelope(i)
		p := e.Payload.(schemas.CohortChangesPayload)
		action := "add"
		if p.Changes[0].ShouldRemove {
			action = "remove"
		}
		for _, id := range p.Changes[0].UserIDs {
			fmt.Fprintf(bw, "acme,mixpanel,%s,external_id,%s,%s,%s\n", p.CohortID, id, action, e.EventTime.Format(time.RFC3339))
		}
	}
	if err := bw.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}

// benchParquet writes the changes through the real sink: one file of 1M
// rows sorted by user, the worst case for rebuilding records.
func benchParquet(b *testing.B, dir string) string {
	cb := schemas.NewChangesBuilder(memory.NewGoAllocator())
	defer cb.Release()
	for i := range benchRecords {
		for _, c := range resolve(landedRecord{env: benchEnvelope(i), offset: int64(i)}) {
			cb.Append(c)
		}
	}
	batch := cb.NewRecordBatch()
	defer batch.Release()
	sink, err := sinkpq.New(sinkpq.Config{Root: dir}, sinkpq.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	out := &pipeline.Output{Changes: batch, Rejections: pipeline.NewRejections(),
		Positions: map[int]pipeline.OffsetRange{0: {First: 0, Last: benchRecords - 1}}}
	if err := sink.Write(testkit.DetachedContext(b, 60*time.Second), out); err != nil {
		b.Fatal(err)
	}
	paths, err := filepath.Glob(filepath.Join(dir, "changes", "*", "*", "*.parquet"))
	if err != nil || len(paths) != 1 {
		b.Fatalf("sink wrote %v (%v), want one file", paths, err)
	}
	return paths[0]
}

func BenchmarkRead(b *testing.B) {
	cases := []struct {
		name string
		make func(b *testing.B, dir string) string
	}{
		{"ndjson-envelopes", func(b *testing.B, dir string) string {
			p := filepath.Join(dir, "e.ndjson")
			benchNDJSONEnvelopes(b, p, "plain")
			return p
		}},
		{"ndjson-envelopes-zst", func(b *testing.B, dir string) string {
			p := filepath.Join(dir, "e.ndjson.zst")
			benchNDJSONEnvelopes(b, p, "zstd")
			return p
		}},
		{"ndjson-bodies", func(b *testing.B, dir string) string {
			p := filepath.Join(dir, "b.ndjson")
			benchNDJSONBodies(b, p)
			return p
		}},
		{"csv", func(b *testing.B, dir string) string {
			p := filepath.Join(dir, "c.csv")
			benchCSV(b, p)
			return p
		}},
		{"parquet-sink", benchParquet},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			path := c.make(b, b.TempDir())
			st, err := os.Stat(path)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(st.Size())
			opts := files.Options{Workspace: "acme", Partner: "mixpanel"}
			ctx := testkit.DetachedContext(b, 60*time.Second)
			var envelopes, changes int64
			b.ResetTimer()
			for b.Loop() {
				r, err := files.Open(path, opts)
				if err != nil {
					b.Fatal(err)
				}
				for {
					it, err := r.Next(ctx)
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
					envelopes++
					for _, ch := range it.Envelope.Payload.(schemas.CohortChangesPayload).Changes {
						changes += int64(len(ch.UserIDs) + len(ch.DeviceIDs) + len(ch.Aliases))
					}
				}
				if err := r.Close(); err != nil {
					b.Fatal(err)
				}
			}
			if want := int64(b.N) * benchRecords * benchIDs; changes != want {
				b.Fatalf("read %d changes, want %d", changes, want)
			}
			secs := b.Elapsed().Seconds()
			b.ReportMetric(float64(envelopes)/secs, "envelopes/s")
			b.ReportMetric(float64(changes)/secs, "changes/s")
		})
	}
}
