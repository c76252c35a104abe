package service_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/internal/chtest"
	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/kafka"
	"github.com/cohortsync/cohortsync/kafka/kafkatest"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/service"
	"github.com/cohortsync/cohortsync/stores/identities"
)

// TestScaleOutThreeInstances is the scale-out proof: three
// pipeline instances share one consumer group on a 3-broker kfake cluster
// whose landing topic has 12 partitions, and write to one ClickHouse
// database. Records land in waves while they run. Mid-stream one instance is
// killed right after its sinks wrote a batch and before the offsets were
// committed (the window a crash hurts most), the group rebalances onto the
// other two, and the instance starts again on its data directory and rejoins.
//
// When the group has committed every offset, membership, data points and
// rejections must equal both a single-instance run over the same log (into a
// second database) and a model computed here from the log itself: nothing
// lost, nothing counted twice.
func TestScaleOutThreeInstances(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	logs := &testkit.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t.Cleanup(func() {
		if t.Failed() {
			out := logs.String()
			if len(out) > 64<<10 {
				out = "...\n" + out[len(out)-64<<10:]
			}
			t.Logf("instance logs:\n%s", out)
		}
	})

	brokers := kafkatest.NewCluster(t, kfake.NumBrokers(3))
	chAddr, db := chtest.NewDatabase(t)
	refDB := chtest.NewDatabaseAt(t, chAddr)

	base := config.Default()

	base.Embedded.KafkaAddr = "127.0.0.1:0" // tests run in parallel: any free port
	base.Kafka.Brokers = brokers
	base.Kafka.Partitions = 12
	base.ClickHouse.Addr, base.ClickHouse.Database = chAddr, db
	// Timed snapshot rounds are not what this test is about.
	base.Snapshots.Interval = -1
	topic := base.Kafka.Topics.Exports
	group := scaleGroupConfig().GroupID

	// The test's own client lands records and watches the group; it is
	// never cut off.
	lcfg := base.Kafka
	lcfg.ClientID = "scaleout-test"
	ctl, err := kafka.NewClient(lcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	if err := ctl.EnsureTopics(ctx, ctl.StandardTopics()); err != nil {
		t.Fatal(err)
	}
	lander := ctl.NewLander(topic)
	defer lander.Close()

	world := newScaleWorld()
	world.loadIdentities(ctx, t, ctl)

	deliveries := newDeliveryLog()
	dirs := map[string]string{"a": t.TempDir(), "b": t.TempDir(), "c": t.TempDir()}
	a := startScaleInstance(ctx, t, base, "a", dirs["a"], log, deliveries)
	b := startScaleInstance(ctx, t, base, "b", dirs["b"], log, deliveries)
	c := startScaleInstance(ctx, t, base, "c", dirs["c"], log, deliveries)

	split := waitSplit(ctx, t, ctl.Admin(), group, topic, base.Kafka.Partitions, a, b, c)
	t.Logf("three instances: %v", split)

	world.land(ctx, t, lander, world.wave(t, 1))
	ends, err := ctl.PartitionEnds(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	for p := range base.Kafka.Partitions {
		if ends[p] == 0 {
			t.Fatalf("partition %d got no record of wave 1 (ends %v): the cohort keys must spread over every partition", p, ends)
		}
	}

	// Kill b: from the next batch its sinks write, b commits nothing more.
	// Once it has written such a batch its Kafka connections are cut and
	// refused (no heartbeat, no commit, no LeaveGroup: to the brokers it is a
	// process that died), and only then is it stopped, which just releases
	// its local resources; whatever it still writes to ClickHouse while
	// stopping are copies of records it will never commit, which the others
	// write again.
	b.src.crashOnNextWrite()
	world.land(ctx, t, lander, world.wave(t, 2))
	lost := b.src.waitCrashed(ctx, t)
	b.kill(t)
	t.Logf("b killed after writing %d records it never committed (partitions %v)", len(lost), partitionsOf(lost))

	// Landing goes on while the group has not yet noticed, and after.
	world.land(ctx, t, lander, world.wave(t, 3))
	split = waitSplit(ctx, t, ctl.Admin(), group, topic, base.Kafka.Partitions, a, c)
	t.Logf("after the kill: %v", split)
	world.land(ctx, t, lander, world.wave(t, 4))
	waitGroupCommitted(ctx, t, ctl, group, topic)
	for _, m := range lost {
		if by := deliveries.writers(m.Partition, m.Offset); !slices.ContainsFunc(by, func(s string) bool { return s != "b" }) {
			t.Errorf("record %d@%d, written by b but never committed, was not written again by the instances that took over (written by %v)",
				m.Partition, m.Offset, by)
		}
	}

	conn := chtest.Open(t, chAddr)
	// Evidence, not an assertion: background merges may already have
	// collapsed the copies the redelivery wrote.
	mid := readScaleOutcome(ctx, t, conn, db)
	t.Logf("after the takeover: %d data_points rows for %d distinct (record_id, position)", mid.rowsWritten, mid.distinct)

	b = startScaleInstance(ctx, t, base, "b", dirs["b"], log, deliveries)
	split = waitSplit(ctx, t, ctl.Admin(), group, topic, base.Kafka.Partitions, a, b, c)
	t.Logf("after b rejoined: %v", split)
	world.land(ctx, t, lander, world.wave(t, 5))
	waitGroupCommitted(ctx, t, ctl, group, topic)

	var wg sync.WaitGroup
	for _, in := range []*scaleInstance{a, b, c} {
		wg.Go(func() {
			if err := in.stop(); err != nil {
				t.Errorf("stop %s: %v", in.name, err)
			}
		})
	}
	wg.Wait()

	ends, err = ctl.PartitionEnds(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if missing := deliveries.missing(ends); len(missing) > 0 {
		t.Errorf("landed records that no instance wrote: %v", missing)
	}
	t.Logf("records written per instance: %v", deliveries.perInstance())

	// (a) the same log through a single instance, into its own database.
	ref := base
	ref.DataDir = t.TempDir()
	ref.ClickHouse.Database = refDB
	replay(t, ref)

	// (b) a model of the import rules over what the log holds.
	want := world.model(t, kafkatest.ReadAll(t, ctl, topic))
	if want.billable == 0 {
		t.Fatal("the generated stream has no billable data point")
	}
	for _, reason := range []string{"retention", "unknown_user", "device_id_of_identified_user"} {
		if !slices.ContainsFunc(want.rejections, func(l string) bool { return strings.Contains(l, "/"+reason+" ") }) {
			t.Fatalf("the generated stream has no rejection for %s", reason)
		}
	}

	got := readScaleOutcome(ctx, t, conn, db)
	single := readScaleOutcome(ctx, t, conn, refDB)
	t.Logf("landed %d records: %d members, %d billable data points, %d rejection rows; %d data_points rows without FINAL (merges may already have collapsed copies)",
		sumEnds(ends), len(want.members), want.billable, len(want.rejections), got.rowsWritten)

	compareLines(t, "membership rows (FINAL) vs the single-instance run", got.membership, single.membership)
	compareLines(t, "data points vs the single-instance run", got.dataPoints, single.dataPoints)
	compareLines(t, "rejections vs the single-instance run", got.rejections, single.rejections)
	compareLines(t, "cohorts vs the single-instance run", got.cohorts, single.cohorts)
	if got.billable != single.billable || got.distinct != single.distinct {
		t.Errorf("billable %d, distinct (record_id, position) %d; the single-instance run has %d and %d",
			got.billable, got.distinct, single.billable, single.distinct)
	}

	compareLines(t, "members vs the model", got.members, want.members)
	compareLines(t, "data points vs the model", got.dataPoints, want.dataPoints)
	compareLines(t, "rejections vs the model", got.rejections, want.rejections)
	compareLines(t, "cohorts vs the model", got.cohorts, want.cohorts)
	if got.billable != want.billable || got.distinct != want.billable {
		t.Errorf("billable %d, distinct (record_id, position) %d, want %d (one per accepted assignment)",
			got.billable, got.distinct, want.billable)
	}
}

// scaleGroupConfig keeps the group's timers short enough for a test (the
// broker's minimum session timeout is 6 s) and batches small, so that every
// instance commits many times per wave.
func scaleGroupConfig() kafka.GroupConfig {
	g := kafka.DefaultGroupConfig()
	g.BatchMaxRecords = 25
	g.BatchMaxWait = 100 * time.Millisecond
	g.SessionTimeout = 6 * time.Second
	g.RebalanceTimeout = 15 * time.Second
	g.DrainTimeout = 4 * time.Second
	return g
}

// scaleInstance is one pipeline process: its own Kafka client (behind a
// switch that can cut it off), consumer-group source, stream and data dir.
type scaleInstance struct {
	name    string
	net     *netSwitch
	client  *kafka.Client
	src     *crashableSource
	stream  *service.Stream
	stopped atomic.Bool
}

// startScaleInstance starts what `cohortsync serve` starts for the stream,
// with the ClickHouse sink, against the shared brokers.
func startScaleInstance(ctx context.Context, t *testing.T, base config.Config, name, dataDir string, log *slog.Logger, deliveries *deliveryLog) *scaleInstance {
	t.Helper()
	cfg := base
	cfg.DataDir = dataDir
	// The client id tells the group's members apart in DescribeGroups.
	cfg.Kafka.ClientID = "cohortsync-" + name
	log = log.With("instance", name)

	in := &scaleInstance{name: name, net: newNetSwitch()}
	client, err := kafka.NewClient(cfg.Kafka)
	if err != nil {
		t.Fatal(err)
	}
	// Every connection of this instance goes through its switch. The hooks
	// are set before anything dials.
	client.Dialer().DialFunc = in.net.dial
	client.Transport().Dial = in.net.dial
	in.client = client
	if err := client.EnsureTopics(ctx, client.StandardTopics()); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	gs, err := client.NewGroupSource(cfg.Kafka.Topics.Exports, scaleGroupConfig(), reg, log)
	if err != nil {
		t.Fatal(err)
	}
	in.src = &crashableSource{GroupSource: gs, instance: name, deliveries: deliveries, crashed: make(chan struct{})}
	// The stream needs only the Kafka client of a Core; building it here
	// lets the instance's connections be hooked.
	st, err := service.StartStream(ctx, cfg, &service.Core{Kafka: client}, log, reg, service.StreamOptions{Source: in.src})
	if err != nil {
		_ = gs.Close()
		t.Fatalf("start instance %s: %v", name, err)
	}
	in.stream = st
	t.Cleanup(func() {
		if err := in.stop(); err != nil {
			t.Logf("stop %s at cleanup: %v", name, err)
		}
	})
	return in
}

// stop is a graceful stop: drain, commit, leave the group, close.
func (in *scaleInstance) stop() error {
	if !in.stopped.CompareAndSwap(false, true) {
		return nil
	}
	err := in.stream.Stop()
	in.client.Close()
	return err
}

// kill cuts the instance off Kafka, then stops what is left of it. Its
// errors are expected (nothing it tries reaches Kafka) and only logged.
func (in *scaleInstance) kill(t *testing.T) {
	in.net.cut()
	if !in.stopped.CompareAndSwap(false, true) {
		return
	}
	if err := in.stream.Stop(); err != nil {
		t.Logf("killed instance %s stopped with: %v", in.name, err)
	}
	in.client.Close()
}

// netSwitch dials TCP for one instance and can cut every connection it made
// at once, refusing new ones afterwards.
type netSwitch struct {
	d     net.Dialer
	mu    sync.Mutex
	down  bool
	conns map[*switchedConn]struct{}
}

var errNetworkCut = errors.New("scaleout: instance is cut off the network")

func newNetSwitch() *netSwitch { return &netSwitch{conns: map[*switchedConn]struct{}{}} }

func (n *netSwitch) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	n.mu.Lock()
	down := n.down
	n.mu.Unlock()
	if down {
		return nil, errNetworkCut
	}
	c, err := n.d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	sc := &switchedConn{Conn: c, sw: n}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.down {
		_ = c.Close()
		return nil, errNetworkCut
	}
	n.conns[sc] = struct{}{}
	return sc, nil
}

func (n *netSwitch) cut() {
	n.mu.Lock()
	n.down = true
	conns := n.conns
	n.conns = map[*switchedConn]struct{}{}
	n.mu.Unlock()
	for c := range conns {
		_ = c.Conn.Close()
	}
}

type switchedConn struct {
	net.Conn
	sw *netSwitch
}

func (c *switchedConn) Close() error {
	c.sw.mu.Lock()
	delete(c.sw.conns, c)
	c.sw.mu.Unlock()
	return c.Conn.Close()
}

// crashableSource is the consumer-group source with the crash window made
// reachable: once armed, the first batch the sinks have written is not
// acked (so not committed), and neither is any batch after it. Every batch
// the sinks wrote is recorded in the delivery log.
type crashableSource struct {
	*kafka.GroupSource
	instance   string
	deliveries *deliveryLog

	armed   atomic.Bool
	once    sync.Once
	crashed chan struct{}
	lost    []pipeline.Message // the first batch written and not committed; set before crashed closes
}

func (s *crashableSource) crashOnNextWrite() { s.armed.Store(true) }

func (s *crashableSource) Next(ctx context.Context) (pipeline.Batch, error) {
	b, err := s.GroupSource.Next(ctx)
	if err != nil || b.Ack == nil {
		return b, err
	}
	ack, msgs := b.Ack, b.Messages
	b.Ack = func(ctx context.Context, err error) error {
		if err == nil {
			s.deliveries.written(s.instance, msgs)
		}
		if !s.armed.Load() {
			return ack(ctx, err)
		}
		if err == nil && len(msgs) > 0 {
			s.once.Do(func() {
				s.lost = msgs
				close(s.crashed)
			})
		}
		return errors.New("scaleout: instance killed before it could commit")
	}
	return b, nil
}

func (s *crashableSource) waitCrashed(ctx context.Context, t *testing.T) []pipeline.Message {
	t.Helper()
	select {
	case <-s.crashed:
		return s.lost
	case <-ctx.Done():
		t.Fatalf("instance %s wrote no batch after the crash was armed", s.instance)
		return nil
	}
}

func partitionsOf(msgs []pipeline.Message) []int {
	var ps []int
	for _, m := range msgs {
		if !slices.Contains(ps, m.Partition) {
			ps = append(ps, m.Partition)
		}
	}
	slices.Sort(ps)
	return ps
}

// deliveryLog records which instances' sinks wrote each landed record.
type deliveryLog struct {
	mu sync.Mutex
	by map[[2]int64][]string
}

func newDeliveryLog() *deliveryLog { return &deliveryLog{by: map[[2]int64][]string{}} }

func (d *deliveryLog) written(instance string, msgs []pipeline.Message) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, m := range msgs {
		k := [2]int64{int64(m.Partition), m.Offset}
		d.by[k] = append(d.by[k], instance)
	}
}

func (d *deliveryLog) writers(partition int, offset int64) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.by[[2]int64{int64(partition), offset}])
}

// missing lists, per partition, the offsets below ends no instance wrote.
func (d *deliveryLog) missing(ends map[int]int64) map[int][]int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[int][]int64{}
	for p, end := range ends {
		for off := range end {
			if len(d.by[[2]int64{int64(p), off}]) == 0 {
				out[p] = append(out[p], off)
			}
		}
	}
	return out
}

func (d *deliveryLog) perInstance() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]int{}
	for _, by := range d.by {
		for _, in := range by {
			out[in]++
		}
	}
	return out
}

// waitSplit waits until the group is stable with exactly the given
// instances as members, every partition of topic owned by exactly one of
// them, each owning some, and each instance's source holding what the broker
// assigned it. It returns the assignment by instance.
func waitSplit(ctx context.Context, t *testing.T, admin *kafkago.Client, group, topic string, partitions int, live ...*scaleInstance) map[string][]int {
	t.Helper()
	var last string
	for {
		split, why := describeSplit(ctx, admin, group, topic, partitions, live)
		if why == "" {
			return split
		}
		last = why
		select {
		case <-ctx.Done():
			t.Fatalf("the group never split %d partitions between %d instances: %s", partitions, len(live), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// describeSplit returns the split, or why it is not (yet) the one wanted.
func describeSplit(ctx context.Context, admin *kafkago.Client, group, topic string, partitions int, live []*scaleInstance) (map[string][]int, string) {
	byClient := map[string]*scaleInstance{}
	for _, in := range live {
		byClient[in.client.Config().ClientID] = in
	}
	resp, err := admin.DescribeGroups(ctx, &kafkago.DescribeGroupsRequest{GroupIDs: []string{group}})
	if err != nil {
		return nil, fmt.Sprintf("describe group: %v", err)
	}
	if len(resp.Groups) != 1 {
		return nil, fmt.Sprintf("describe group: %d groups", len(resp.Groups))
	}
	g := resp.Groups[0]
	if g.Error != nil {
		return nil, fmt.Sprintf("describe group: %v", g.Error)
	}
	if g.GroupState != "Stable" {
		return nil, "group state " + g.GroupState
	}
	if len(g.Members) != len(live) {
		return nil, fmt.Sprintf("%d members, want %d", len(g.Members), len(live))
	}
	split := map[string][]int{}
	owner := map[int]string{}
	for _, m := range g.Members {
		in, ok := byClient[m.ClientID]
		if !ok {
			return nil, "member with client id " + m.ClientID + " is not a live instance"
		}
		if _, dup := split[in.name]; dup {
			return nil, "two members for instance " + in.name
		}
		var mine []int
		for _, tp := range m.MemberAssignments.Topics {
			if tp.Topic != topic {
				continue
			}
			for _, p := range tp.Partitions {
				if o, dup := owner[p]; dup {
					return nil, fmt.Sprintf("partition %d assigned to both %s and %s", p, o, in.name)
				}
				owner[p] = in.name
				mine = append(mine, p)
			}
		}
		slices.Sort(mine)
		if len(mine) == 0 {
			return nil, "instance " + in.name + " owns no partition"
		}
		split[in.name] = mine
	}
	for p := range partitions {
		if _, ok := owner[p]; !ok {
			return nil, fmt.Sprintf("partition %d owned by nobody", p)
		}
	}
	if len(owner) != partitions {
		return nil, fmt.Sprintf("%d partitions assigned, the topic has %d", len(owner), partitions)
	}
	// The broker's view and each instance's own must agree.
	for _, in := range live {
		if n := in.src.Stats().Partitions; n != len(split[in.name]) {
			return nil, fmt.Sprintf("instance %s reads %d partitions, the group assigned it %d", in.name, n, len(split[in.name]))
		}
	}
	return split, ""
}

// waitGroupCommitted waits until the group's committed offsets reach the
// end of every partition of topic as it is now.
func waitGroupCommitted(ctx context.Context, t *testing.T, client *kafka.Client, group, topic string) {
	t.Helper()
	ends, err := client.PartitionEnds(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if err := client.WaitCommitted(ctx, group, topic, ends, 0, nil); err != nil {
		t.Fatalf("group %s did not commit up to %v: %v", group, ends, err)
	}
}

func sumEnds(ends map[int]int64) int64 {
	var n int64
	for _, e := range ends {
		n += e
	}
	return n
}

// scaleWorld generates the stream: three workspaces, two partners, six
// cohorts each, users known by external id, alias or device id, and the
// awkward cases of the import rules.
type scaleWorld struct {
	rng        *rand.Rand
	workspaces []string
	cohorts    []scaleCohort
	firstSync  map[scaleCohort]schemas.CohortChangesPayload
}

type scaleCohort struct{ workspace, partner, id string }

func (c scaleCohort) String() string { return c.workspace + "/" + c.partner + "/" + c.id }

// Users 0..79 are identified (external id x-W-NNN), 0..19 also have an
// alias (aNNN in label crm), 70..79 also carry an old device id; users
// 80..99 are anonymous with device id d-W-NNN.
const (
	scaleUsers      = 100
	scaleIdentified = 80
	scaleAliased    = 20
	scaleOldDevices = 70
)

func newScaleWorld() *scaleWorld {
	w := &scaleWorld{
		rng:        rand.New(rand.NewPCG(7, 2026)),
		workspaces: []string{"acme", "globex", "initech"},
		firstSync:  map[scaleCohort]schemas.CohortChangesPayload{},
	}
	for _, ws := range w.workspaces {
		for _, p := range []string{"mixpanel", "amplitude"} {
			for i := range 6 {
				w.cohorts = append(w.cohorts, scaleCohort{ws, p, fmt.Sprintf("cohort-%d", i)})
			}
		}
	}
	return w
}

func (w *scaleWorld) identity(ws string, i int) identities.Record {
	r := identities.Record{UserID: fmt.Sprintf("u%03d", i)}
	if i < scaleIdentified {
		r.ExternalID = fmt.Sprintf("x-%s-%03d", ws, i)
	}
	if i < scaleAliased {
		r.Aliases = []identities.Alias{{Name: fmt.Sprintf("a%03d", i), Label: "crm"}}
	}
	if i >= scaleOldDevices {
		r.DeviceIDs = []string{fmt.Sprintf("d-%s-%03d", ws, i)}
	}
	return r
}

// loadIdentities lands the directory of every workspace before any
// instance starts; each instance's directory catches up with it at start.
func (w *scaleWorld) loadIdentities(ctx context.Context, t *testing.T, client *kafka.Client) {
	t.Helper()
	loader, err := identities.NewLoader(client, identities.DefaultConfig(t.TempDir()), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer loader.Close()
	for _, ws := range w.workspaces {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		for i := range scaleUsers {
			if err := enc.Encode(w.identity(ws, i)); err != nil {
				t.Fatal(err)
			}
		}
		st, err := loader.Load(ctx, ws, &buf, func(le identities.LineError) { t.Errorf("identity line refused: %+v", le) })
		if err != nil {
			t.Fatalf("load identities of %s: %v", ws, err)
		}
		if st.Accepted != scaleUsers {
			t.Fatalf("identities of %s: %+v, want %d accepted", ws, st, scaleUsers)
		}
	}
}

// change draws one change entry: mostly known users, some unknown ones
// (including another workspace's), and device ids of identified users.
func (w *scaleWorld) change(ws string, remove bool) schemas.Change {
	c := schemas.Change{ShouldRemove: remove}
	for range 3 + w.rng.IntN(12) {
		r := w.rng.IntN(100)
		switch {
		case r < 62:
			c.UserIDs = append(c.UserIDs, fmt.Sprintf("x-%s-%03d", ws, w.rng.IntN(scaleIdentified)))
		case r < 72:
			c.Aliases = append(c.Aliases, schemas.Alias{Name: fmt.Sprintf("a%03d", w.rng.IntN(scaleAliased)), Label: "crm"})
		case r < 86:
			// Anonymous users match; identified ones (70..79) are refused.
			c.DeviceIDs = append(c.DeviceIDs, fmt.Sprintf("d-%s-%03d", ws, scaleOldDevices+w.rng.IntN(scaleUsers-scaleOldDevices)))
		case r < 92:
			c.UserIDs = append(c.UserIDs, fmt.Sprintf("x-%s-%03d", ws, 900+w.rng.IntN(50)))
		case r < 96:
			other := w.workspaces[(slices.Index(w.workspaces, ws)+1)%len(w.workspaces)]
			c.UserIDs = append(c.UserIDs, fmt.Sprintf("x-%s-%03d", other, w.rng.IntN(scaleIdentified)))
		default:
			c.Aliases = append(c.Aliases, schemas.Alias{Name: fmt.Sprintf("a%03d", w.rng.IntN(scaleAliased)), Label: "ads"})
		}
	}
	return c
}

func (w *scaleWorld) envelope(t *testing.T, c scaleCohort, received, event time.Time, p schemas.Payload) schemas.Envelope {
	t.Helper()
	id, err := schemas.NewRecordID()
	if err != nil {
		t.Fatal(err)
	}
	return schemas.Envelope{
		SchemaVersion: schemas.CurrentVersion, RecordID: id,
		Workspace: c.workspace, Partner: c.partner,
		ReceivedAt: received, EventTime: event, Payload: p,
	}
}

// wave is one sync round of every cohort. Wave 1 creates the cohorts and
// adds users; later waves add and remove. Waves 2 and 4 carry records older
// than the retention cutoff, wave 3 re-sends the first sync of some cohorts
// (a partner restarting a sync: new records, same changes), wave 4 renames
// some cohorts.
func (w *scaleWorld) wave(t *testing.T, n int) []schemas.Envelope {
	t.Helper()
	now := time.Now().UTC()
	var out []schemas.Envelope
	for i, c := range w.cohorts {
		if n == 1 {
			out = append(out, w.envelope(t, c, now, now, schemas.CohortPayload{CohortID: c.id, Name: "Cohort " + c.String(), CreatedAt: now}))
		}
		if n == 4 && i%12 == 0 {
			out = append(out, w.envelope(t, c, now, now, schemas.CohortPayload{CohortID: c.id, Name: "Renamed " + c.String(), CreatedAt: now}))
		}
		p := schemas.CohortChangesPayload{CohortID: c.id}
		for range 1 + w.rng.IntN(3) {
			p.Changes = append(p.Changes, w.change(c.workspace, n > 1 && w.rng.IntN(5) < 2))
		}
		if n == 1 {
			w.firstSync[c] = p
		}
		out = append(out, w.envelope(t, c, now, now, p))
		if (n == 2 || n == 4) && i%9 == n/2 {
			old := time.Date(2009, 6, 1, 12, 0, 0, 0, time.UTC)
			out = append(out, w.envelope(t, c, now, old, schemas.CohortChangesPayload{CohortID: c.id, Changes: []schemas.Change{w.change(c.workspace, false)}}))
		}
		if n == 3 && i%6 == 1 {
			out = append(out, w.envelope(t, c, now, now, w.firstSync[c]))
		}
	}
	return out
}

func (w *scaleWorld) land(ctx context.Context, t *testing.T, lander *kafka.Lander, envs []schemas.Envelope) {
	t.Helper()
	recs := make([]kafka.KeyValue, len(envs))
	for i, e := range envs {
		v, err := schemas.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		recs[i] = kafka.KeyValue{Key: e.PartitionKey(), Value: v}
	}
	if err := lander.LandBatch(ctx, recs); err != nil {
		t.Fatal(err)
	}
}

// scaleOutcome is what a run left in ClickHouse (or what the model
// expects), as sorted lines so that differences print readably.
type scaleOutcome struct {
	membership  []string // every row of membership FINAL
	members     []string // W/P/C/user of rows with is_member = 1
	dataPoints  []string // W/P/C/day adds removes
	rejections  []string // W/P/C/record/reason ids records
	cohorts     []string // W/P/C name
	billable    uint64   // rows of data_points FINAL
	distinct    uint64   // distinct (record_id, position) of every row written
	rowsWritten uint64   // rows of data_points before deduplication (merges may already have removed some)
}

// model applies the import rules to the landed records in log order: a
// cohort's records share a partition, so offset order is the order its
// changes happened in, and the last change per user wins.
func (w *scaleWorld) model(t *testing.T, msgs []kafkago.Message) scaleOutcome {
	t.Helper()
	slices.SortFunc(msgs, func(a, b kafkago.Message) int {
		if a.Partition != b.Partition {
			return a.Partition - b.Partition
		}
		return int(a.Offset - b.Offset)
	})
	type dir struct {
		external, alias map[string]string
		device          map[string]identities.Record
	}
	dirs := map[string]dir{}
	for _, ws := range w.workspaces {
		d := dir{external: map[string]string{}, alias: map[string]string{}, device: map[string]identities.Record{}}
		for i := range scaleUsers {
			r := w.identity(ws, i)
			if r.ExternalID != "" {
				d.external[r.ExternalID] = r.UserID
			}
			for _, a := range r.Aliases {
				d.alias[a.Label+"\x00"+a.Name] = r.UserID
			}
			for _, dv := range r.DeviceIDs {
				d.device[dv] = r
			}
		}
		dirs[ws] = d
	}
	cutoff, err := config.Default().Retention.CutoffTime()
	if err != nil {
		t.Fatal(err)
	}

	member := map[string]bool{}
	type dpKey struct{ cohort, day string }
	dps := map[dpKey][2]int{}
	type rejKey struct{ cohort, record, reason string }
	rejections := map[rejKey][2]int{}
	names := map[string]string{}
	var out scaleOutcome
	for _, m := range msgs {
		e, err := schemas.Decode(m.Value)
		if err != nil {
			t.Fatalf("landed record %d@%d: %v", m.Partition, m.Offset, err)
		}
		c := scaleCohort{e.Workspace, e.Partner, e.CohortID()}.String()
		if p, ok := e.Payload.(schemas.CohortPayload); ok {
			names[c] = p.Name
			continue
		}
		p, ok := e.Payload.(schemas.CohortChangesPayload)
		if !ok {
			t.Fatalf("landed record %d@%d has payload %T", m.Partition, m.Offset, e.Payload)
		}
		if e.EventTime.Before(cutoff) {
			k := rejKey{c, e.RecordID, "retention"}
			n := 0
			for _, ch := range p.Changes {
				n += len(ch.UserIDs) + len(ch.DeviceIDs) + len(ch.Aliases)
			}
			rejections[k] = [2]int{rejections[k][0] + n, rejections[k][1] + 1}
			continue
		}
		d := dirs[e.Workspace]
		day := e.ReceivedAt.UTC().Format(time.DateOnly)
		apply := func(user string, ok bool, reason string, add bool) {
			if !ok {
				k := rejKey{c, e.RecordID, reason}
				r := rejections[k]
				rejections[k] = [2]int{r[0] + 1, r[1]}
				return
			}
			member[c+"/"+user] = add
			k := dpKey{c, day}
			v := dps[k]
			if add {
				v[0]++
			} else {
				v[1]++
			}
			dps[k] = v
			out.billable++
		}
		for _, ch := range p.Changes {
			add := !ch.ShouldRemove
			for _, id := range ch.UserIDs {
				u, ok := d.external[id]
				apply(u, ok, "unknown_user", add)
			}
			for _, id := range ch.DeviceIDs {
				r, ok := d.device[id]
				switch {
				case !ok:
					apply("", false, "unknown_user", add)
				case r.ExternalID != "":
					apply("", false, "device_id_of_identified_user", add)
				default:
					apply(r.UserID, true, "", add)
				}
			}
			for _, a := range ch.Aliases {
				u, ok := d.alias[a.Label+"\x00"+a.Name]
				apply(u, ok, "unknown_user", add)
			}
		}
	}
	for k, in := range member {
		if in {
			out.members = append(out.members, k)
		}
	}
	for k, v := range dps {
		out.dataPoints = append(out.dataPoints, fmt.Sprintf("%s/%s adds=%d removes=%d", k.cohort, k.day, v[0], v[1]))
	}
	for k, v := range rejections {
		out.rejections = append(out.rejections, fmt.Sprintf("%s/%s/%s ids=%d records=%d", k.cohort, k.record, k.reason, v[0], v[1]))
	}
	for c, n := range names {
		out.cohorts = append(out.cohorts, c+" "+n)
	}
	sort.Strings(out.members)
	sort.Strings(out.dataPoints)
	sort.Strings(out.rejections)
	sort.Strings(out.cohorts)
	return out
}

// readScaleOutcome reads the state of record of database db. FINAL
// collapses the copies redeliveries wrote.
func readScaleOutcome(ctx context.Context, t *testing.T, conn driver.Conn, db string) scaleOutcome {
	t.Helper()
	table := func(name string) string { return "`" + db + "`.`" + name + "`" }
	query := func(q string, scan func(driver.Rows) error) {
		t.Helper()
		rows, err := conn.Query(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		defer rows.Close()
		for rows.Next() {
			if err := scan(rows); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var out scaleOutcome
	// No WHERE on is_member: a server may run it as PREWHERE, before FINAL.
	query("SELECT workspace, partner, cohort_id, user_id, is_member, version, record_id FROM "+table("membership")+" FINAL", func(r driver.Rows) error {
		var ws, p, c, u, rec string
		var in uint8
		var v uint64
		if err := r.Scan(&ws, &p, &c, &u, &in, &v, &rec); err != nil {
			return err
		}
		key := ws + "/" + p + "/" + c + "/" + u
		out.membership = append(out.membership, fmt.Sprintf("%s is_member=%d version=%d record=%s", key, in, v, rec))
		if in == 1 {
			out.members = append(out.members, key)
		}
		return nil
	})
	query("SELECT workspace, partner, cohort_id, toString(day), countIf(is_member = 1), countIf(is_member = 0) FROM "+table("data_points")+
		" FINAL GROUP BY workspace, partner, cohort_id, day", func(r driver.Rows) error {
		var ws, p, c, day string
		var adds, removes uint64
		if err := r.Scan(&ws, &p, &c, &day, &adds, &removes); err != nil {
			return err
		}
		out.dataPoints = append(out.dataPoints, fmt.Sprintf("%s/%s/%s/%s adds=%d removes=%d", ws, p, c, day, adds, removes))
		out.billable += adds + removes
		return nil
	})
	query("SELECT uniqExact(concat(record_id, '/', toString(position))), count() FROM "+table("data_points"), func(r driver.Rows) error {
		return r.Scan(&out.distinct, &out.rowsWritten)
	})
	query("SELECT workspace, partner, cohort_id, record_id, reason, ids, records FROM "+table("import_rejections")+" FINAL", func(r driver.Rows) error {
		var ws, p, c, rec, reason string
		var ids, records uint64
		if err := r.Scan(&ws, &p, &c, &rec, &reason, &ids, &records); err != nil {
			return err
		}
		out.rejections = append(out.rejections, fmt.Sprintf("%s/%s/%s/%s/%s ids=%d records=%d", ws, p, c, rec, reason, ids, records))
		return nil
	})
	query("SELECT workspace, partner, cohort_id, name FROM "+table("cohorts")+" FINAL", func(r driver.Rows) error {
		var ws, p, c, name string
		if err := r.Scan(&ws, &p, &c, &name); err != nil {
			return err
		}
		out.cohorts = append(out.cohorts, ws+"/"+p+"/"+c+" "+name)
		return nil
	})
	for _, s := range [][]string{out.membership, out.members, out.dataPoints, out.rejections, out.cohorts} {
		sort.Strings(s)
	}
	return out
}

// compareLines reports the lines only one side has, a few of each.
func compareLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if slices.Equal(got, want) {
		return
	}
	extra, missing := lineDiff(got, want), lineDiff(want, got)
	t.Errorf("%s: %d lines, want %d; %d unexpected %v; %d missing %v",
		what, len(got), len(want), len(extra), headOf(extra, 5), len(missing), headOf(missing, 5))
}

func lineDiff(a, b []string) []string {
	in := map[string]int{}
	for _, s := range b {
		in[s]++
	}
	var out []string
	for _, s := range a {
		if in[s] > 0 {
			in[s]--
			continue
		}
		out = append(out, s)
	}
	return out
}

func headOf(s []string, n int) string {
	if len(s) > n {
		return strings.Join(s[:n], "; ") + "; ..."
	}
	return strings.Join(s, "; ")
}
