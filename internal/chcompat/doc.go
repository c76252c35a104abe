// Package chcompat checks that cohortsync's SQL means the same on a current
// ClickHouse as on 18.16, the release CI's server runs. It has no code of its
// own, only a test: the real sink and segment engine run against a private
// 18.16 server that logs every statement, and the logged statements (the
// DDL, the inserts' column lists and every generated query, values bound
// by the driver as the server received them) run again on chDB, a current
// ClickHouse engine in-process, whose answers must match 18.16's.
//
// chDB comes from npm and runs under Node.js; .ci/run installs it (and
// Debian's Node.js on a machine without one):
//
//	npm install --prefix internal/chcompat/testdata/chdb --ignore-scripts
//
// It checks the SQL, not the native protocol or the driver: chDB has no
// server to connect to.
package chcompat
