// Runs SQL on chDB, a current ClickHouse engine in-process, for
// internal/chcompat's test. It is a plain loop: the Go test decides what to
// run and compares the answers.
//
//   node run.js IN.json OUT.json
//
// IN is {"dir": a directory for the session's data, "setup": [statements],
// "queries": [statements]}. Setup statements run in order and the first
// failure stops the run, since every later one depends on it. Each query
// runs whatever the others did, so one report names every query that fails.
//
// OUT is a stream of JSON values, one per line:
//   {"kind":"engine","version":"26.7.2.1","timezone":"UTC"}
//   {"kind":"setup","index":3,"error":"..."}            (only on failure)
//   {"kind":"query","index":0,"result":{JSONCompact}}   or ..."error":"..."}
// A result is the engine's JSONCompact text passed through unparsed: parsing
// it here would turn UInt64 values above 2^53 into the nearest double.
"use strict";

const fs = require("fs");
const { Session } = require("chdb");

const [inPath, outPath] = process.argv.slice(2);
if (!inPath || !outPath) {
  process.stderr.write("usage: node run.js IN.json OUT.json\n");
  process.exit(2);
}
const input = JSON.parse(fs.readFileSync(inPath, "utf8"));
const out = fs.openSync(outPath, "w");
const emit = (text) => fs.writeSync(out, text + "\n");

const session = new Session(input.dir);
try {
  const engine = JSON.parse(
    session.query("SELECT version() AS version, timezone() AS timezone", "JSONEachRow"),
  );
  emit(JSON.stringify({ kind: "engine", version: engine.version, timezone: engine.timezone }));

  let setupFailed = false;
  for (const [index, sql] of (input.setup || []).entries()) {
    try {
      session.query(sql, "JSONCompact");
    } catch (err) {
      emit(JSON.stringify({ kind: "setup", index, error: String(err && err.message) }));
      setupFailed = true;
      break;
    }
  }
  if (!setupFailed) {
    for (const [index, sql] of (input.queries || []).entries()) {
      let result;
      try {
        result = session.query(sql, "JSONCompact").trim();
      } catch (err) {
        emit(JSON.stringify({ kind: "query", index, error: String(err && err.message) }));
        continue;
      }
      emit('{"kind":"query","index":' + index + ',"result":' + result + "}");
    }
  }
} finally {
  session.close();
  fs.closeSync(out);
}
