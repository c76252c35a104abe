package backfillrun

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cohortsync/cohortsync/config"
)

func TestValidateReportsEveryProblemAtOnce(t *testing.T) {
	err := Options{From: FromKafka, Server: "http://x", Paths: []string{"a.ndjson"}, Batch: 0}.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"needs --since", "cannot go through a server", "takes no PATH", "--batch 0"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if err := (Options{From: FromFile, Paths: []string{"a.csv"}, Batch: 500}).Validate(); err != nil {
		t.Errorf("valid options refused: %v", err)
	}
}

func TestRunRefusesBadOptionsAsUsageError(t *testing.T) {
	cfg := config.Default()
	cfg.Embedded.KafkaAddr = "127.0.0.1:0" // tests run in parallel: any free port
	cfg.DataDir = t.TempDir()
	_, err := Run(context.Background(), cfg, Options{From: "s3", Batch: 500})
	var ue *UsageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), `--from "s3"`) {
		t.Fatalf("Run = %v, want a UsageError naming --from", err)
	}
}
