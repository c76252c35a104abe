// Package duckdbtest reads the Parquet sink's trees with DuckDB, a reader
// that shares no code with the writer, and checks that the queries of
// docs/PARQUET.md return what the API returns after redeliveries, re-cut
// batches, restarts and records landed again.
//
// It is a module of its own: DuckDB's Go bindings need cgo, and the main
// module (and the cohortsync binary) stays cgo-free. Run it with
//
//	cd sinks/parquet/duckdbtest && go test -count=1 ./...
package duckdbtest
