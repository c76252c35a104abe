package config

// settingDocs describes every setting for the generated reference in
// docs/OPERATIONS.md. TestReferenceDescribesEveryField fails when a
// configuration field has no entry here, so a new field is documented in the
// change that adds it.
func settingDocs() map[string]string {
	return map[string]string{
		"data_dir":         "Local state: the embedded broker's log, the identity replica, the embedded state store, bootstrap credentials, Parquet output under `parquet/`.",
		"http_addr":        "Where the HTTP server (partner API, admin API, health, metrics, OpenAPI) listens. Containers need `0.0.0.0:8080`.",
		"debug_addr":       "Where Go's profiles (`/debug/pprof/`) are served, on a listener of their own and without authentication: keep it on loopback, e.g. `127.0.0.1:6060`. Empty: off.",
		"admin_token":      "Bearer token of the admin API (at least 16 characters). Empty: generated at first start, printed once, stored hashed in `data_dir`.",
		"log.level":        "debug, info, warn or error.",
		"log.format":       "auto (text when stderr is a terminal, JSON anywhere else), json or text; logs go to stderr, durations as text such as `15s`.",
		"shutdown_timeout": "How long SIGTERM waits for in-flight requests, the stream's drain and offset commits before the process exits.",

		"partners.<name>.api_key": "The `partner_api_key` that partner sends. Empty: generated at first start and kept in `data_dir` (set it when several instances run).",
		"partners.<name>.enabled": "Whether `/partners/<name>/...` accepts requests. Naming a partner in the file or env enables it.",

		"ingest.max_body_bytes":      "Largest partner API request body; larger ones get 413. Must stay 16 KiB below `kafka.max_message_bytes`.",
		"ingest.rate_limit_per_hour": "Partner API requests per workspace and hour, per instance; beyond it 429 with Retry-After.",
		"ingest.rate_burst":          "Requests a workspace may send at once before the hourly rate applies.",

		"kafka.brokers":                  "Bootstrap brokers as HOST:PORT. Empty starts the embedded broker under `data_dir`.",
		"kafka.client_id":                "Kafka client id, visible in broker logs and quotas.",
		"kafka.tls.enabled":              "Use TLS towards the brokers.",
		"kafka.tls.ca_file":              "PEM file of the CAs that sign the brokers' certificates; empty uses the system pool.",
		"kafka.tls.cert_file":            "Client certificate (PEM) for mutual TLS; set with `kafka.tls.key_file`.",
		"kafka.tls.key_file":             "Client private key (PEM) for mutual TLS.",
		"kafka.tls.insecure_skip_verify": "Do not verify the brokers' certificates (tests only).",
		"kafka.sasl.mechanism":           "plain, scram-sha-256 or scram-sha-512; empty: no SASL.",
		"kafka.sasl.username":            "SASL user.",
		"kafka.sasl.password":            "SASL password; prefer the environment variable or a Secret to the file.",
		"kafka.topics.exports":           "Landing topic of partner requests (key workspace/partner/cohort_id).",
		"kafka.topics.identities":        "Compacted topic of the identity directory (key workspace/user_id).",
		"kafka.topics.deadletter":        "Topic of landed messages that could not be decoded, with reason headers.",
		"kafka.topics.keys":              "Compacted topic of data import keys (hashes only).",
		"kafka.topics.tokens":            "Compacted topic of workspace-scoped admin tokens (hashes only).",
		"kafka.topics.segments":          "Compacted topic of saved segments (key workspace/segment_id).",
		"kafka.partitions":               "Partitions of the exports topic when cohortsync creates it: the ceiling on stream instances that do work.",
		"kafka.replication_factor":       "Replication factor of the topics cohortsync creates; -1 leaves it to the broker.",
		"kafka.exports_retention":        "retention.ms of the exports topic: how far back a replay can go.",
		"kafka.max_message_bytes":        "Largest produce batch; must stay under the broker's message.max.bytes (checked at start).",
		"kafka.batch_timeout":            "How long a landing waits for other records to share its produce batch.",
		"kafka.write_timeout":            "Bound on one landing including its acks; past it the partner gets 503.",

		"embedded.kafka_addr": "Where the embedded broker listens (only without `kafka.brokers`), printed in the start banner; Kafka clients such as kcat connect here. Port 0 picks a free one at each start.",

		"clickhouse.addr":             "ClickHouse native-protocol HOST:PORT (comma-separated for fail-over). Empty keeps the embedded state store.",
		"clickhouse.database":         "Database that holds every table; created by the migration.",
		"clickhouse.username":         "ClickHouse user.",
		"clickhouse.password":         "ClickHouse password; prefer the environment variable or a Secret to the file.",
		"clickhouse.dial_timeout":     "Bound on opening one connection.",
		"clickhouse.query_timeout":    "Bound on every statement or insert attempt.",
		"clickhouse.cluster":          "Cluster name for ON CLUSTER DDL, Replicated engines and Distributed tables; empty: one server.",
		"clickhouse.migrate_on_start": "Create or upgrade the tables when serve starts. Turn off when `cohortsync migrate` runs as a deploy step.",

		"snapshots.interval": "Time between rounds of Parquet member-list snapshots of changed cohorts; negative turns timed rounds off.",
		"snapshots.kept":     "Snapshots of each cohort kept on disk.",

		"parquet.roll_rows":     "Acknowledged rows of one Kafka partition that wait in the staging area (`DATA_DIR/parquet/_staging`) before they are rolled into `changes/` and `datapoints/`, one file per Hive partition: the file size (Kafka Connect's `flush.size`, also per partition). A roll streams: it holds one row group (131,072 rows) per Hive partition it writes, whatever this is.",
		"parquet.roll_interval": "Longest a staged row waits for its roll, so a slow stream still reaches the trees (Kafka Connect's `rotate.interval.ms`).",

		"stream.batch_max_records": "Most landed records in one batch of the stream. A batch is one write to every sink and one offset commit.",
		"stream.batch_max_bytes":   "Most bytes (keys and values) in one batch of the stream; also the size of one fetch.",
		"stream.batch_max_wait":    "Longest the first record of a batch waits for others before the batch goes to the sinks: the main term of the time from a landing to its change being visible. Longer batches cost ClickHouse and the stream less per change (docs/PERFORMANCE.md, ClickHouse parts under a sustained stream).",

		"identities.snapshot_path":     "A file on storage every instance mounts (the Parquet volume, say): an instance that has no identity replica yet starts from this copy and replays only the identities topic after it, instead of the whole topic. Empty: no snapshots.",
		"identities.snapshot_interval": "How often a caught-up instance rewrites the snapshot; 0 only reads it.",
		"identities.snapshot_max_age":  "The oldest snapshot a start uses. Keep it below the identities topic's `delete.retention.ms` (24 h by default): an older copy could miss a deletion whose tombstone compaction has since removed.",

		"retention.cutoff": "RFC 3339 instant: records with an earlier event time are dropped and counted under `retention`.",
	}
}
