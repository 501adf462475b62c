// Command kadmcheck runs franz-go's admin client (kadm) and kgo against a Strom broker, one
// call after another, and prints `OK <step>` for each; the first that does not answer as
// Kafka would ends the run with `FAIL <step>: <why>` and exit status 1.
// Usage: go run ./kadmcheck <bootstrap>
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func fail(step string, format string, args ...any) {
	fmt.Printf("FAIL %s: %s\n", step, fmt.Sprintf(format, args...))
	os.Exit(1)
}

func ok(step string) { fmt.Printf("OK %s\n", step) }

func must(step string, err error) {
	if err != nil {
		fail(step, "%v", err)
	}
}

func main() {
	seeds := os.Args[1]
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	topic := fmt.Sprintf("kadm-%d", time.Now().UnixNano())
	group := topic + "-group"

	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds))
	must("client", err)
	defer cl.Close()
	adm := kadm.NewClient(cl)

	retention := "3600000"
	created, err := adm.CreateTopics(ctx, 3, 1, map[string]*string{"retention.ms": &retention}, topic)
	must("create_topics", err)
	must("create_topics", created.Error())
	ok("create_topics")

	listed, err := adm.ListTopics(ctx, topic)
	must("list_topics", err)
	if d, exists := listed[topic]; !exists || len(d.Partitions) != 3 {
		fail("list_topics", "topic described as %+v", listed[topic])
	}
	ok("list_topics")

	configs, err := adm.DescribeTopicConfigs(ctx, topic)
	must("describe_topic_configs", err)
	rc, err := configs.On(topic, nil)
	must("describe_topic_configs", err)
	found := false
	for _, c := range rc.Configs {
		if c.Key == "retention.ms" {
			found = c.MaybeValue() == retention
		}
	}
	if !found {
		fail("describe_topic_configs", "retention.ms is not %s in %+v", retention, rc.Configs)
	}
	ok("describe_topic_configs")

	compact := "compact"
	altered, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "cleanup.policy", Value: &compact}, {Op: kadm.DeleteConfig, Name: "retention.ms"}}, topic)
	must("alter_topic_configs", err)
	if r, err := altered.On(topic, nil); err != nil || r.Err != nil {
		fail("alter_topic_configs", "%v %v", err, r.Err)
	}
	ok("alter_topic_configs")

	var records []*kgo.Record
	for i := 0; i < 30; i++ {
		records = append(records, &kgo.Record{Topic: topic, Partition: int32(i % 3), Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(fmt.Sprintf("v%d", i))})
	}
	producer, err := kgo.NewClient(kgo.SeedBrokers(seeds), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	must("produce", err)
	must("produce", producer.ProduceSync(ctx, records...).FirstErr())
	producer.Close()
	ok("produce")

	ends, err := adm.ListEndOffsets(ctx, topic)
	must("list_end_offsets", err)
	for p := int32(0); p < 3; p++ {
		if o, _ := ends.Lookup(topic, p); o.Offset != 10 {
			fail("list_end_offsets", "partition %d ends at %d, not 10", p, o.Offset)
		}
	}
	ok("list_end_offsets")

	var del kadm.Offsets
	del.AddOffset(topic, 0, 4, -1)
	deleted, err := adm.DeleteRecords(ctx, del)
	must("delete_records", err)
	if r, _ := deleted.Lookup(topic, 0); r.Err != nil || r.LowWatermark != 4 {
		fail("delete_records", "%+v", r)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	must("delete_records", err)
	if o, _ := starts.Lookup(topic, 0); o.Offset != 4 {
		fail("delete_records", "partition 0 starts at %d, not 4", o.Offset)
	}
	ok("delete_records")

	consumer, err := kgo.NewClient(kgo.SeedBrokers(seeds), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
	must("group_consume", err)
	seen := 0
	for seen < 26 && ctx.Err() == nil {
		fetches := consumer.PollFetches(ctx)
		must("group_consume", fetches.Err())
		seen += fetches.NumRecords()
	}
	must("group_consume", consumer.CommitUncommittedOffsets(ctx))
	if seen != 26 {
		fail("group_consume", "read %d records, not 26", seen)
	}
	ok("group_consume")

	groups, err := adm.ListGroups(ctx)
	must("list_groups", err)
	if _, exists := groups[group]; !exists {
		fail("list_groups", "%s not in %v", group, groups.Groups())
	}
	ok("list_groups")

	lags, err := adm.Lag(ctx, group)
	must("lag", err)
	l := lags[group]
	if l.DescribeErr != nil || l.FetchErr != nil || l.State != "Stable" || len(l.Members) != 1 {
		fail("lag", "%+v", l)
	}
	for p := int32(0); p < 3; p++ {
		if m := l.Lag[topic][p]; m.Lag != 0 || m.Commit.At != 10 {
			fail("lag", "partition %d: commit %d lag %d", p, m.Commit.At, m.Lag)
		}
	}
	ok("lag")
	consumer.Close()

	var reset kadm.Offsets
	reset.AddOffset(topic, 1, 2, -1)
	committed, err := adm.CommitOffsets(ctx, group, reset)
	must("commit_offsets", err)
	must("commit_offsets", committed.Error())
	fetched, err := adm.FetchOffsets(ctx, group)
	must("fetch_offsets", err)
	if o, _ := fetched.Lookup(topic, 1); o.At != 2 {
		fail("fetch_offsets", "partition 1 committed at %d, not 2", o.At)
	}
	ok("commit_and_fetch_offsets")

	dg, err := adm.DeleteGroups(ctx, group)
	must("delete_groups", err)
	must("delete_groups", dg.Error())
	ok("delete_groups")

	client := "kadm-quota"
	entity := kadm.ClientQuotaEntity{{Type: "client-id", Name: &client}}
	aq, err := adm.AlterClientQuotas(ctx, []kadm.AlterClientQuotaEntry{{Entity: entity, Ops: []kadm.AlterClientQuotaOp{{Key: "consumer_byte_rate", Value: 4096}}}})
	must("client_quotas", err)
	for _, r := range aq {
		must("client_quotas", r.Err)
	}
	dq, err := adm.DescribeClientQuotas(ctx, true, []kadm.DescribeClientQuotaComponent{{Type: "client-id", MatchName: &client, MatchType: 0}})
	must("client_quotas", err)
	if len(dq) != 1 || len(dq[0].Values) != 1 || dq[0].Values[0] != (kadm.ClientQuotaValue{Key: "consumer_byte_rate", Value: 4096}) {
		fail("client_quotas", "described %+v", dq)
	}
	ok("client_quotas")

	brokers, err := adm.ListBrokers(ctx)
	must("list_brokers", err)
	if len(brokers) == 0 {
		fail("list_brokers", "no brokers")
	}
	ok("list_brokers")

	dirs, err := adm.DescribeAllLogDirs(ctx, nil)
	must("describe_log_dirs", err)
	partitions := 0
	dirs.Each(func(d kadm.DescribedLogDir) {
		for t, ps := range d.Topics {
			if t == topic {
				partitions += len(ps)
			}
		}
	})
	if partitions != 3 {
		fail("describe_log_dirs", "%d partitions of %s described", partitions, topic)
	}
	ok("describe_log_dirs")

	grown, err := adm.CreatePartitions(ctx, 2, topic)
	must("create_partitions", err)
	must("create_partitions", grown.Error())
	ok("create_partitions")

	gone, err := adm.DeleteTopics(ctx, topic)
	must("delete_topics", err)
	must("delete_topics", gone.Error())
	ok("delete_topics")
}
