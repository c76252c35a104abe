package main

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	kafkago "github.com/segmentio/kafka-go"
)

// engineRound is the peer: ClickHouse's own Kafka engine reading the landing
// topic, and a materialized view that turns each landed record into one
// membership row per id of a ReplacingMergeTree, as a data engineer would
// build it by hand. It reads the envelope with the JSON functions 18.16 has
// (each message is one TSV field: the envelope holds no tab, newline or
// backslash), resolves no identities and keeps no history, no data points
// and no Parquet: it is the least work that still lands membership.
func engineRound(ctx context.Context, conn driver.Conn, env roundEnv, round int) (result, error) {
	db := fmt.Sprintf("peers_engine_%d", round)
	group := fmt.Sprintf("peers-engine-%d", round)
	stmts := []string{
		"DROP DATABASE IF EXISTS " + db,
		"CREATE DATABASE " + db,
		`CREATE TABLE ` + db + `.membership (
			workspace String, partner String, cohort_id String, user_id String,
			is_member UInt8, version UInt64, received_at DateTime
		) ENGINE = ReplacingMergeTree(version)
		PARTITION BY toYYYYMM(received_at)
		ORDER BY (workspace, partner, cohort_id, user_id)`,
		`CREATE TABLE ` + db + `.landing (raw String) ENGINE = Kafka SETTINGS
			kafka_broker_list = '` + env.brokerAddr + `',
			kafka_topic_list = '` + env.topic + `',
			kafka_group_name = '` + group + `',
			kafka_format = 'TSV',
			kafka_row_delimiter = '\n'`,
	}
	// The engine's consumers join the group as soon as the Kafka table
	// exists, and librdkafka (auto.offset.reset=largest on 18.16) would start
	// a new group at the end of the topic: commit its start first, as an
	// operator does for a replay with kafka-consumer-groups.
	if err := commitStart(ctx, env, group); err != nil {
		return result{}, err
	}
	for _, s := range stmts {
		if err := conn.Exec(ctx, s); err != nil {
			return result{}, fmt.Errorf("engine: %w", err)
		}
	}
	before, err := sample(env.serverPid)
	if err != nil {
		return result{}, err
	}
	rssReset := resetPeakRSS(env.serverPid)
	start := time.Now()
	// Attaching the view is what starts the engine's consumers.
	mv := `CREATE MATERIALIZED VIEW ` + db + `.landing_mv TO ` + db + `.membership AS
		SELECT
			visitParamExtractString(raw, 'workspace') AS workspace,
			visitParamExtractString(raw, 'partner') AS partner,
			visitParamExtractString(raw, 'cohort_id') AS cohort_id,
			arrayJoin(extractAll(visitParamExtractRaw(raw, 'user_ids'), '"([^"]+)"')) AS user_id,
			toUInt8(1 - visitParamExtractBool(raw, 'should_remove')) AS is_member,
			toUInt64(toUnixTimestamp(parseDateTimeBestEffort(visitParamExtractString(raw, 'received_at')))) AS version,
			parseDateTimeBestEffort(visitParamExtractString(raw, 'received_at')) AS received_at
		FROM ` + db + `.landing`
	if err := conn.Exec(ctx, mv); err != nil {
		return result{}, fmt.Errorf("engine: %w", err)
	}
	want := env.work.changes()
	var rows uint64
	for {
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".membership").Scan(&rows); err != nil {
			return result{}, fmt.Errorf("engine: count: %w", err)
		}
		if int64(rows) >= want {
			break
		}
		if time.Since(start) > env.timeout {
			d, derr := env.client.Admin().DescribeGroups(ctx, &kafkago.DescribeGroupsRequest{GroupIDs: []string{group}})
			state := fmt.Sprint(derr)
			if derr == nil && len(d.Groups) == 1 {
				state = fmt.Sprintf("%s, %d members, err %v", d.Groups[0].GroupState, len(d.Groups[0].Members), d.Groups[0].Error)
			}
			return result{}, fmt.Errorf("engine: %d of %d rows after %s (group %s: %s)", rows, want, env.timeout, group, state)
		}
		select {
		case <-ctx.Done():
			return result{}, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	wall := time.Since(start)
	after, err := sample(env.serverPid)
	if err != nil {
		return result{}, err
	}
	// Stop the consumers before the next round reads the same topic, and
	// leave the server as it was.
	for _, s := range []string{"DROP TABLE " + db + ".landing_mv", "DROP TABLE " + db + ".landing", "DROP DATABASE " + db} {
		if err := conn.Exec(ctx, s); err != nil {
			return result{}, fmt.Errorf("engine: %w", err)
		}
	}
	r := result{
		name: "clickhouse-kafka-engine", rows: int64(rows), wall: wall,
		serverCPU: after.cpu - before.cpu, serverRSS: after.rss, serverRSSReset: rssReset,
	}
	return r, nil
}

// commitStart commits offset 0 of every partition for group.
func commitStart(ctx context.Context, env roundEnv, group string) error {
	var offs []kafkago.OffsetCommit
	for p := range env.ends {
		offs = append(offs, kafkago.OffsetCommit{Partition: p, Offset: 0})
	}
	resp, err := env.client.Admin().OffsetCommit(ctx, &kafkago.OffsetCommitRequest{
		GroupID: group, GenerationID: -1, Topics: map[string][]kafkago.OffsetCommit{env.topic: offs},
	})
	if err != nil {
		return fmt.Errorf("engine: commit start of %s: %w", group, err)
	}
	for _, parts := range resp.Topics {
		for _, p := range parts {
			if p.Error != nil {
				return fmt.Errorf("engine: commit start of %s/%d: %w", group, p.Partition, p.Error)
			}
		}
	}
	return nil
}

// openClickHouse connects over the native protocol.
func openClickHouse(ctx context.Context, addr string) (driver.Conn, error) {
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}, DialTimeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("clickhouse %s: %w", addr, err)
	}
	if err := conn.Ping(ctx); err != nil {
		return nil, fmt.Errorf("clickhouse %s: %w (start it with: bash scripts/clickhouse.sh up)", addr, err)
	}
	return conn, nil
}
