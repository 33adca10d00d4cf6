// Command scenarios drives one broker with franz-go (kgo, kadm) and prints what it observed
// as JSON, so the Python harness can run it against Apache Kafka and against Fjord and
// compare (compat/test_franz_go.py).
//
// Usage: scenarios SCENARIO BOOTSTRAP PREFIX
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

type obj = map[string]any

var (
	seeds  []string
	prefix string
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: scenarios SCENARIO BOOTSTRAP PREFIX (e.g. scenarios records 127.0.0.1:9092 t1)")
		os.Exit(2)
	}
	scenario := os.Args[1]
	seeds = strings.Split(os.Args[2], ",")
	prefix = os.Args[3]
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var out obj
	var err error
	switch scenario {
	case "records":
		out, err = records(ctx)
	case "group":
		out, err = group(ctx)
	case "group-consumer":
		// KIP-848: the broker assigns (franz-go's server-side balancer, range assignor).
		out, err = group(ctx, kgo.Balancers(kgo.RangeBalancer()), kgo.ServerSideBalancer())
	case "transactions":
		out, err = transactions(ctx)
	case "admin":
		out, err = admin(ctx)
	default:
		err = fmt.Errorf("unknown scenario %q (records, group, group-consumer, transactions, admin)", scenario)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "scenario failed:", err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		panic(err)
	}
}

func client(opts ...kgo.Opt) (*kgo.Client, error) {
	return kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seeds...)}, opts...)...)
}

// errName is what a franz-go user sees of a Kafka error: its name.
func errName(err error) any {
	if err == nil {
		return "ok"
	}
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return ke.Message
	}
	return "error: " + err.Error()
}

func createTopic(ctx context.Context, adm *kadm.Client, name string, partitions int32, configs map[string]*string) error {
	resp, err := adm.CreateTopics(ctx, partitions, 1, configs, name)
	if err != nil {
		return err
	}
	return resp[name].Err
}

type seen struct {
	Partition int32      `json:"partition"`
	Offset    int64      `json:"offset"`
	Key       *string    `json:"key"`
	Value     *string    `json:"value"`
	Timestamp int64      `json:"timestamp"`
	Headers   [][]string `json:"headers"`
}

func str(b []byte) *string {
	if b == nil {
		return nil
	}
	s := string(b)
	return &s
}

// consume reads until n records arrived (or the context ends), sorted by partition and offset.
func consume(ctx context.Context, cl *kgo.Client, n int) ([]seen, error) {
	var got []seen
	for len(got) < n {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return got, fmt.Errorf("got %d of %d records: %w", len(got), n, ctx.Err())
		}
		for _, fe := range fetches.Errors() {
			return got, fmt.Errorf("fetch %s/%d: %w", fe.Topic, fe.Partition, fe.Err)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			hs := [][]string{}
			for _, h := range r.Headers {
				hs = append(hs, []string{h.Key, string(h.Value)})
			}
			got = append(got, seen{r.Partition, r.Offset, str(r.Key), str(r.Value), r.Timestamp.UnixMilli(), hs})
		})
	}
	sort.Slice(got, func(i, j int) bool {
		if got[i].Partition != got[j].Partition {
			return got[i].Partition < got[j].Partition
		}
		return got[i].Offset < got[j].Offset
	})
	return got, nil
}

// records: the idempotent producer (franz-go's default) to chosen partitions with keys,
// headers and timestamps, read back by an assigned consumer.
func records(ctx context.Context) (obj, error) {
	topic := prefix + "-records"
	cl, err := client(kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerBatchCompression(kgo.SnappyCompression()))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	// The records are stamped in 2023, past the 7-day retention: kept regardless, or a
	// retention pass of the long-lived brokers (every 5 minutes) could delete them mid-run.
	keep := "-1"
	if err := createTopic(ctx, adm, topic, 3, map[string]*string{"retention.ms": &keep}); err != nil {
		return nil, err
	}
	var recs []*kgo.Record
	for i := 0; i < 45; i++ {
		r := &kgo.Record{Topic: topic, Partition: int32(i % 3), Value: []byte(fmt.Sprintf("value-%d", i)),
			Timestamp: time.UnixMilli(1_700_000_000_000 + int64(i))}
		if i%4 != 0 {
			r.Key = []byte(fmt.Sprintf("k%d", i))
		}
		if i%5 == 0 {
			r.Headers = []kgo.RecordHeader{{Key: "h", Value: []byte(fmt.Sprint(i))}}
		}
		recs = append(recs, r)
	}
	acks := [][]int64{}
	for _, res := range cl.ProduceSync(ctx, recs...) {
		if res.Err != nil {
			return nil, res.Err
		}
		acks = append(acks, []int64{int64(res.Record.Partition), res.Record.Offset})
	}
	// Results come back as partitions finish, not in the order produced.
	sort.Slice(acks, func(i, j int) bool {
		return acks[i][0] < acks[j][0] || acks[i][0] == acks[j][0] && acks[i][1] < acks[j][1]
	})
	reader, err := client(kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {
		0: kgo.NewOffset().AtStart(), 1: kgo.NewOffset().AtStart(), 2: kgo.NewOffset().AtStart()}}))
	if err != nil {
		return nil, err
	}
	defer reader.Close()
	got, err := consume(ctx, reader, 45)
	if err != nil {
		return nil, err
	}
	return obj{"acks": acks, "records": got}, nil
}

// group: a consumer group (franz-go's cooperative-sticky balancer, or the options given) that
// consumes, commits and leaves, as kadm describes it.
func group(ctx context.Context, opts ...kgo.Opt) (obj, error) {
	topic, groupID := prefix+"-group", prefix+"-g"
	cl, err := client()
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if err := createTopic(ctx, adm, topic, 4, nil); err != nil {
		return nil, err
	}
	var recs []*kgo.Record
	for i := 0; i < 40; i++ {
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte("v")})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return nil, err
	}
	member, err := client(append([]kgo.Opt{kgo.ConsumerGroup(groupID), kgo.ConsumeTopics(topic),
		kgo.DisableAutoCommit(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, opts...)...)
	if err != nil {
		return nil, err
	}
	got, err := consume(ctx, member, 40)
	if err != nil {
		return nil, err
	}
	if err := member.CommitUncommittedOffsets(ctx); err != nil {
		return nil, err
	}
	out := obj{"consumed": len(got)}
	described, err := adm.DescribeGroups(ctx, groupID)
	if err != nil {
		return nil, err
	}
	d := described[groupID]
	parts := []int32{}
	for _, m := range d.Members {
		if c, ok := m.Assigned.AsConsumer(); ok {
			for _, t := range c.Topics {
				parts = append(parts, t.Partitions...)
			}
		}
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	out["state"], out["protocol_type"], out["protocol"] = d.State, d.ProtocolType, d.Protocol
	out["members"], out["assigned"], out["describe_err"] = len(d.Members), parts, errName(d.Err)
	member.LeaveGroup()
	member.Close()
	committed, err := adm.FetchOffsets(ctx, groupID)
	if err != nil {
		return nil, err
	}
	offsets := map[string]int64{}
	committed.Each(func(o kadm.OffsetResponse) { offsets[fmt.Sprintf("%d", o.Partition)] = o.At })
	out["committed"] = offsets
	after, err := adm.DescribeGroups(ctx, groupID)
	if err != nil {
		return nil, err
	}
	out["state_after_leave"] = after[groupID].State
	listed, err := adm.ListGroups(ctx)
	if err != nil {
		return nil, err
	}
	_, out["listed"] = listed[groupID]
	deleted, err := adm.DeleteGroups(ctx, groupID)
	if err != nil {
		return nil, err
	}
	out["delete"] = errName(deleted[groupID].Err)
	return out, nil
}

// transactions: a committed and an aborted transaction, read with read_committed.
func transactions(ctx context.Context) (obj, error) {
	topic := prefix + "-txn"
	cl, err := client(kgo.TransactionalID(prefix+"-tx"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if err := createTopic(ctx, adm, topic, 2, nil); err != nil {
		return nil, err
	}
	for _, commit := range []bool{true, false, true} {
		if err := cl.BeginTransaction(); err != nil {
			return nil, err
		}
		var recs []*kgo.Record
		for i := 0; i < 4; i++ {
			recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(i % 2), Value: []byte(fmt.Sprintf("%v-%d", commit, i))})
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			return nil, err
		}
		if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			return nil, err
		}
	}
	out := obj{}
	for _, level := range []kgo.IsolationLevel{kgo.ReadCommitted(), kgo.ReadUncommitted()} {
		want := 8
		name := "read_committed"
		if level == kgo.ReadUncommitted() {
			want, name = 12, "read_uncommitted"
		}
		reader, err := client(kgo.FetchIsolationLevel(level), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
			topic: {0: kgo.NewOffset().AtStart(), 1: kgo.NewOffset().AtStart()}}))
		if err != nil {
			return nil, err
		}
		got, err := consume(ctx, reader, want)
		reader.Close()
		if err != nil {
			return nil, err
		}
		rows := [][]any{}
		for _, r := range got {
			rows = append(rows, []any{r.Partition, r.Offset, *r.Value})
		}
		out[name] = rows
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	endOffsets := map[string]int64{}
	ends.Each(func(o kadm.ListedOffset) { endOffsets[fmt.Sprint(o.Partition)] = o.Offset })
	out["end_offsets"] = endOffsets
	txns, err := adm.DescribeTransactions(ctx, prefix+"-tx")
	if err != nil {
		return nil, err
	}
	out["state"] = txns[prefix+"-tx"].State
	return out, nil
}

// admin: kadm over topics, configs, partitions, records, offsets and the cluster.
func admin(ctx context.Context) (obj, error) {
	topic := prefix + "-admin"
	cl, err := client()
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	out := obj{}
	retention := "3600000"
	out["create"] = errName(createTopic(ctx, adm, topic, 2, map[string]*string{"retention.ms": &retention}))
	out["create_again"] = errName(createTopic(ctx, adm, topic, 2, nil))
	out["create_bad_config"] = errName(createTopic(ctx, adm, topic+"-bad", 1, map[string]*string{"retention.ms": kadm.StringPtr("x")}))
	listed, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return nil, err
	}
	out["partitions"] = len(listed[topic].Partitions)
	configs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return nil, err
	}
	described := map[string]any{}
	for _, c := range configs[0].Configs {
		if c.Key == "flush.messages" {
			continue // Fjord fsyncs by default (docs/compatibility.md)
		}
		described[c.Key] = []any{c.MaybeValue(), c.Source.String()}
	}
	out["configs"] = described
	altered, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{
		{Op: kadm.SetConfig, Name: "retention.ms", Value: kadm.StringPtr("1000")},
		{Op: kadm.AppendConfig, Name: "cleanup.policy", Value: kadm.StringPtr("compact")}}, topic)
	if err != nil {
		return nil, err
	}
	out["alter"] = errName(altered[0].Err)
	// Kafka's brokers learn a config change from the controller a moment after it is
	// acknowledged: read until it shows (at most 10 s), as a client would.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		after, err := adm.DescribeTopicConfigs(ctx, topic)
		if err != nil {
			return nil, err
		}
		for _, c := range after[0].Configs {
			if c.Key == "retention.ms" || c.Key == "cleanup.policy" {
				out["after_"+c.Key] = c.MaybeValue()
			}
		}
		if out["after_retention.ms"] == "1000" || time.Now().After(deadline) {
			break
		}
	}
	grown, err := adm.UpdatePartitions(ctx, 3, topic)
	if err != nil {
		return nil, err
	}
	out["grow"] = errName(grown[topic].Err)
	var recs []*kgo.Record
	for i := 0; i < 10; i++ {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: 0, Key: []byte("k"), Value: []byte("v")})
	}
	producer, err := client(kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		return nil, err
	}
	defer producer.Close()
	if err := producer.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return nil, err
	}
	del := make(kadm.Offsets)
	del.Add(kadm.Offset{Topic: topic, Partition: 0, At: 4})
	deleted, err := adm.DeleteRecords(ctx, del)
	if err != nil {
		return nil, err
	}
	deleted.Each(func(d kadm.DeleteRecordsResponse) { out["delete_records_low"] = d.LowWatermark })
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	so, eo := map[string]int64{}, map[string]int64{}
	starts.Each(func(o kadm.ListedOffset) { so[fmt.Sprint(o.Partition)] = o.Offset })
	ends.Each(func(o kadm.ListedOffset) { eo[fmt.Sprint(o.Partition)] = o.Offset })
	out["start_offsets"], out["end_offsets"] = so, eo
	brokers, err := adm.ListBrokers(ctx)
	if err != nil {
		return nil, err
	}
	out["brokers"] = len(brokers)
	dropped, err := adm.DeleteTopics(ctx, topic)
	if err != nil {
		return nil, err
	}
	out["delete"] = errName(dropped[topic].Err)
	again, err := adm.DeleteTopics(ctx, topic)
	if err != nil {
		return nil, err
	}
	out["delete_again"] = errName(again[topic].Err)
	return out, nil
}
