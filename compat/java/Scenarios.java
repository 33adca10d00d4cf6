// The Java client (kafka-clients 4.4) in the differential suite: each scenario drives one
// broker with the stock producer, consumer and Admin, and prints what it observed as JSON on
// stdout, so the Python harness can run it against Apache Kafka and against Fjord and compare.
//
// Run (Java's single-file launcher, no build step):
//   java -cp "$(compat/reference/kafka.sh classpath)" compat/java/Scenarios.java \
//       SCENARIO BOOTSTRAP PREFIX
// SCENARIO is one of the names in main(); PREFIX makes topic and group names unique.

import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.*;
import java.util.concurrent.ExecutionException;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.*;
import org.apache.kafka.common.acl.*;
import org.apache.kafka.common.resource.*;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.*;

public class Scenarios {
    static String bootstrap;
    static String prefix;

    public static void main(String[] args) throws Exception {
        String scenario = args[0];
        bootstrap = args[1];
        prefix = args[2];
        Map<String, Object> out = switch (scenario) {
            case "records" -> records();
            case "produce-errors" -> produceErrors();
            case "admin" -> admin();
            case "configs" -> configs();
            case "broker-configs" -> brokerConfigs();
            case "admin-more" -> adminMore();
            case "group-classic" -> group("classic");
            case "group-consumer" -> group("consumer");
            case "transactions" -> transactions();
            default -> throw new IllegalArgumentException("unknown scenario " + scenario);
        };
        System.out.println(new ObjectMapper().writerWithDefaultPrettyPrinter().writeValueAsString(out));
        System.exit(0);
    }

    static boolean sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        return true;
    }

    static Properties common() {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        return p;
    }

    static KafkaProducer<String, String> producer(Map<String, Object> extra) {
        Properties p = common();
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        p.putAll(extra);
        return new KafkaProducer<>(p);
    }

    static KafkaConsumer<String, String> consumer(Map<String, Object> extra) {
        Properties p = common();
        p.put("key.deserializer", StringDeserializer.class.getName());
        p.put("value.deserializer", StringDeserializer.class.getName());
        p.put("auto.offset.reset", "earliest");
        p.putAll(extra);
        return new KafkaConsumer<>(p);
    }

    static Admin admin_() {
        return Admin.create(common());
    }

    static void createTopic(Admin a, String name, int partitions, Map<String, String> configs) throws Exception {
        a.createTopics(List.of(new NewTopic(name, partitions, (short) 1).configs(configs))).all().get();
    }

    /** An exception as a client sees it: its class and message. */
    static Map<String, Object> error(Throwable e) {
        Throwable c = e instanceof ExecutionException && e.getCause() != null ? e.getCause() : e;
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("class", c.getClass().getSimpleName());
        m.put("message", c.getMessage());
        return m;
    }

    static Object outcome(KafkaFuture<?> f) {
        try {
            Object v = f.get();
            return v == null ? "ok" : v.toString();
        } catch (Exception e) {
            return error(e);
        }
    }

    static List<Map<String, Object>> drain(KafkaConsumer<String, String> c, int expected) {
        List<Map<String, Object>> out = new ArrayList<>();
        long deadline = System.currentTimeMillis() + 30_000;
        while (out.size() < expected && System.currentTimeMillis() < deadline) {
            for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) {
                Map<String, Object> m = new LinkedHashMap<>();
                m.put("partition", r.partition());
                m.put("offset", r.offset());
                m.put("key", r.key());
                m.put("value", r.value());
                m.put("timestamp", r.timestamp());
                m.put("timestampType", r.timestampType().toString());
                m.put("leaderEpoch", r.leaderEpoch().orElse(null));
                List<List<String>> hs = new ArrayList<>();
                for (Header h : r.headers()) {
                    hs.add(Arrays.asList(h.key(), h.value() == null ? null : new String(h.value(), StandardCharsets.UTF_8)));
                }
                m.put("headers", hs);
                out.add(m);
            }
        }
        out.sort(Comparator.comparing((Map<String, Object> m) -> (Integer) m.get("partition"))
                .thenComparing(m -> (Long) m.get("offset")));
        return out;
    }

    /** The idempotent producer (Java's default) and an assigned consumer. */
    static Map<String, Object> records() throws Exception {
        String topic = prefix + "-records";
        Map<String, Object> out = new LinkedHashMap<>();
        try (Admin a = admin_()) {
            // The records are stamped in 2023, past the 7-day retention: on these long-lived
            // brokers a retention pass (every 5 minutes) could delete them mid-scenario.
            createTopic(a, topic, 3, Map.of("retention.ms", "-1"));
        }
        List<Object> acks = new ArrayList<>();
        try (KafkaProducer<String, String> p = producer(Map.of("linger.ms", 5, "compression.type", "lz4"))) {
            List<java.util.concurrent.Future<RecordMetadata>> fs = new ArrayList<>();
            for (int i = 0; i < 50; i++) {
                ProducerRecord<String, String> r = new ProducerRecord<>(topic, i % 3, 1_700_000_000_000L + i,
                        i % 4 == 0 ? null : "k" + i, i % 7 == 0 ? null : "value-" + i);
                if (i % 5 == 0) {
                    r.headers().add("h", ("v" + i).getBytes(StandardCharsets.UTF_8));
                    r.headers().add("n", null);
                }
                fs.add(p.send(r));
            }
            for (var f : fs) {
                RecordMetadata m = f.get();
                acks.add(List.of(m.partition(), m.offset(), m.timestamp()));
            }
        }
        out.put("acks", acks);
        try (KafkaConsumer<String, String> c = consumer(Map.of())) {
            List<TopicPartition> tps = List.of(new TopicPartition(topic, 0), new TopicPartition(topic, 1),
                    new TopicPartition(topic, 2));
            c.assign(tps);
            c.seekToBeginning(tps);
            out.put("records", drain(c, 50));
            Map<String, Object> ends = new TreeMap<>();
            c.endOffsets(tps).forEach((tp, o) -> ends.put(tp.toString(), o));
            out.put("endOffsets", ends);
            Map<String, Object> times = new TreeMap<>();
            Map<TopicPartition, Long> q = new HashMap<>();
            for (TopicPartition tp : tps) q.put(tp, 1_700_000_000_010L);
            c.offsetsForTimes(q).forEach((tp, o) -> times.put(tp.toString(),
                    o == null ? null : List.of(o.offset(), o.timestamp())));
            out.put("offsetsForTimes", times);
        }
        return out;
    }

    /** What the broker's validation tells a Java producer (KIP-467 record errors included). */
    static Map<String, Object> produceErrors() throws Exception {
        String compacted = prefix + "-compacted";
        String plain = prefix + "-plain";
        String small = prefix + "-small";
        try (Admin a = admin_()) {
            createTopic(a, compacted, 1, Map.of("cleanup.policy", "compact"));
            createTopic(a, plain, 1, Map.of());
            createTopic(a, small, 1, Map.of("max.message.bytes", "200"));
        }
        Map<String, Object> out = new LinkedHashMap<>();
        long now = System.currentTimeMillis();
        // max.block.ms bounds the wait for partition 7's metadata (60 s by default, on each side).
        try (KafkaProducer<String, String> p = producer(Map.of("retries", 0, "enable.idempotence", false,
                "linger.ms", 0, "max.block.ms", 4000))) {
            out.put("keyless_compacted", sendOutcome(p, new ProducerRecord<>(compacted, null, "v")));
            out.put("keyed_compacted", sendOutcome(p, new ProducerRecord<>(compacted, "k", "v")));
            out.put("future_timestamp", sendOutcome(p, new ProducerRecord<>(plain, 0, now + 7_200_000L, "k", "v")));
            out.put("too_large", sendOutcome(p, new ProducerRecord<>(small, "k", "x".repeat(500))));
            out.put("unknown_partition", sendOutcome(p, new ProducerRecord<>(plain, 7, "k", "v")));
        }
        return out;
    }

    static Object sendOutcome(KafkaProducer<String, String> p, ProducerRecord<String, String> r) {
        try {
            RecordMetadata m = p.send(r).get(15, java.util.concurrent.TimeUnit.SECONDS);
            return List.of(m.partition(), m.offset());
        } catch (Exception e) {
            Map<String, Object> err = error(e);
            String msg = (String) err.get("message");
            // Timestamps in the broker's message come from its clock: keep only the wording.
            if (msg != null) err.put("message", msg.replaceAll("-?\\d{13,}", "<ms>"));
            return err;
        }
    }

    /** Admin methods over topics, partitions, records, offsets and the cluster. */
    static Map<String, Object> admin() throws Exception {
        String topic = prefix + "-admin";
        Map<String, Object> out = new LinkedHashMap<>();
        try (Admin a = admin_()) {
            out.put("create", outcome(a.createTopics(List.of(new NewTopic(topic, 2, (short) 1))).all()));
            out.put("create_again", outcome(a.createTopics(List.of(new NewTopic(topic, 2, (short) 1))).all()));
            TopicDescription d = a.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
            out.put("describe", Map.of("name", d.name(), "internal", d.isInternal(),
                    "partitions", d.partitions().stream().map(p -> List.of(p.partition(), p.leader().id(),
                            p.replicas().size(), p.isr().size())).collect(Collectors.toList())));
            out.put("listed", a.listTopics().names().get().contains(topic));
            out.put("grow", outcome(a.createPartitions(Map.of(topic, NewPartitions.increaseTo(4))).all()));
            out.put("shrink", outcome(a.createPartitions(Map.of(topic, NewPartitions.increaseTo(1))).all()));
            out.put("same", outcome(a.createPartitions(Map.of(topic, NewPartitions.increaseTo(4))).all()));
            out.put("grow_missing", outcome(a.createPartitions(Map.of(topic + "-missing", NewPartitions.increaseTo(4))).all()));
            ConfigResource missing = new ConfigResource(ConfigResource.Type.TOPIC, topic + "-missing");
            out.put("describe_configs_missing", outcome(a.describeConfigs(List.of(missing)).all()));
            out.put("alter_configs_missing", outcome(a.incrementalAlterConfigs(Map.of(missing, List.of(
                    new AlterConfigOp(new ConfigEntry("retention.ms", "1000"), AlterConfigOp.OpType.SET)))).all()));
            ConfigResource mine = new ConfigResource(ConfigResource.Type.TOPIC, topic);
            for (String[] kv : new String[][] {{"retention.ms", "soon"}, {"segment.bytes", "1000"},
                    {"cleanup.policy", "compact,keep"}, {"no.such.config", "1"}, {"min.insync.replicas", "0"},
                    {"compression.type", "brotli"}, {"preallocate", "yes"}, {"min.cleanable.dirty.ratio", "2"}}) {
                out.put("alter_" + kv[0] + "=" + kv[1], outcome(a.incrementalAlterConfigs(Map.of(mine, List.of(
                        new AlterConfigOp(new ConfigEntry(kv[0], kv[1]), AlterConfigOp.OpType.SET)))).all()));
            }
            out.put("alter_append_non_list", outcome(a.incrementalAlterConfigs(Map.of(mine, List.of(
                    new AlterConfigOp(new ConfigEntry("retention.ms", "1"), AlterConfigOp.OpType.APPEND)))).all()));
            out.put("alter_lag_conflict", outcome(a.incrementalAlterConfigs(Map.of(mine, List.of(
                    new AlterConfigOp(new ConfigEntry("min.compaction.lag.ms", "10"), AlterConfigOp.OpType.SET),
                    new AlterConfigOp(new ConfigEntry("max.compaction.lag.ms", "5"), AlterConfigOp.OpType.SET)))).all()));
            out.put("create_bad_config", outcome(a.createTopics(List.of(new NewTopic(topic + "-bad", 1, (short) 1)
                    .configs(Map.of("retention.ms", "x")))).all()));
            out.put("create_unknown_config", outcome(a.createTopics(List.of(new NewTopic(topic + "-bad", 1, (short) 1)
                    .configs(Map.of("no.such.config", "x")))).all()));
            out.put("create_rf", outcome(a.createTopics(List.of(new NewTopic(topic + "-rf", 1, (short) 2))).all()));
            out.put("create_zero", outcome(a.createTopics(List.of(new NewTopic(topic + "-zero", 0, (short) 1))).all()));
            out.put("create_bad_name", outcome(a.createTopics(List.of(new NewTopic("bad/name", 1, (short) 1))).all()));
            out.put("create_dot_name", outcome(a.createTopics(List.of(new NewTopic("..", 1, (short) 1))).all()));
            out.put("create_long_name", outcome(a.createTopics(List.of(new NewTopic("x".repeat(250), 1, (short) 1))).all()));
            out.put("create_dotted", outcome(a.createTopics(List.of(new NewTopic(topic + ".a", 1, (short) 1))).all()));
            out.put("create_colliding", outcome(a.createTopics(List.of(new NewTopic(topic + "_a", 1, (short) 1))).all()));
            try (KafkaProducer<String, String> p = producer(Map.of())) {
                for (int i = 0; i < 10; i++) p.send(new ProducerRecord<>(topic, 0, "k", "v" + i)).get();
            }
            TopicPartition tp0 = new TopicPartition(topic, 0);
            out.put("delete_records", outcome(a.deleteRecords(Map.of(tp0, RecordsToDelete.beforeOffset(4)))
                    .lowWatermarks().get(tp0).thenApply(DeletedRecords::lowWatermark)));
            out.put("delete_records_beyond", outcome(a.deleteRecords(Map.of(tp0, RecordsToDelete.beforeOffset(99)))
                    .lowWatermarks().get(tp0).thenApply(DeletedRecords::lowWatermark)));
            Map<String, Object> offs = new LinkedHashMap<>();
            offs.put("earliest", a.listOffsets(Map.of(tp0, OffsetSpec.earliest())).partitionResult(tp0).get().offset());
            offs.put("latest", a.listOffsets(Map.of(tp0, OffsetSpec.latest())).partitionResult(tp0).get().offset());
            offs.put("maxTimestamp", a.listOffsets(Map.of(tp0, OffsetSpec.maxTimestamp())).partitionResult(tp0).get().offset());
            offs.put("earliestLocal", a.listOffsets(Map.of(tp0, OffsetSpec.earliestLocal())).partitionResult(tp0).get().offset());
            offs.put("latestTiered", a.listOffsets(Map.of(tp0, OffsetSpec.latestTiered())).partitionResult(tp0).get().offset());
            out.put("listOffsets", offs);
            DescribeClusterResult c = a.describeCluster();
            out.put("cluster_nodes", c.nodes().get().size());
            out.put("cluster_controller_is_a_node", c.nodes().get().stream().anyMatch(n -> {
                try {
                    return n.id() == c.controller().get().id();
                } catch (Exception e) {
                    return false;
                }
            }));
            out.put("log_dirs_has_topic", a.describeLogDirs(List.of(c.nodes().get().iterator().next().id()))
                    .allDescriptions().get().values().stream().flatMap(m -> m.values().stream())
                    .anyMatch(ld -> ld.replicaInfos().containsKey(tp0)));
            out.put("delete", outcome(a.deleteTopics(List.of(topic)).all()));
            out.put("delete_again", outcome(a.deleteTopics(List.of(topic)).all()));
            out.put("acls_describe", outcome(a.describeAcls(AclBindingFilter.ANY).values()));
            AclBinding acl = new AclBinding(new ResourcePattern(ResourceType.TOPIC, topic, PatternType.LITERAL),
                    new AccessControlEntry("User:alice", "*", AclOperation.READ, AclPermissionType.ALLOW));
            out.put("acls_create", outcome(a.createAcls(List.of(acl)).all()));
            out.put("acls_delete", outcome(a.deleteAcls(List.of(AclBindingFilter.ANY)).all()));
        }
        return out;
    }

    /** DescribeConfigs of a topic: every config with its value, source, flags and synonyms. */
    static Map<String, Object> configs() throws Exception {
        String topic = prefix + "-configs";
        Map<String, Object> out = new TreeMap<>();
        try (Admin a = admin_()) {
            createTopic(a, topic, 1, Map.of("retention.ms", "3600000", "cleanup.policy", "compact"));
            ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, topic);
            a.incrementalAlterConfigs(Map.of(r, List.of(
                    new AlterConfigOp(new ConfigEntry("segment.ms", "86400000"), AlterConfigOp.OpType.SET),
                    new AlterConfigOp(new ConfigEntry("retention.ms", ""), AlterConfigOp.OpType.DELETE)))).all().get();
            // Kafka's brokers learn a config change from the controller a moment after it is
            // acknowledged: read until it shows (at most 10 s), as a client would.
            Config c;
            long deadline = System.currentTimeMillis() + 10_000;
            do {
                c = a.describeConfigs(List.of(r), new DescribeConfigsOptions().includeSynonyms(true))
                        .all().get().get(r);
            } while (!"86400000".equals(c.get("segment.ms").value()) && System.currentTimeMillis() < deadline
                    && sleep(50));
            for (ConfigEntry e : c.entries()) {
                Map<String, Object> m = new LinkedHashMap<>();
                m.put("value", e.value());
                m.put("source", e.source().toString());
                m.put("default", e.isDefault());
                m.put("readOnly", e.isReadOnly());
                m.put("sensitive", e.isSensitive());
                m.put("type", e.type().toString());
                m.put("synonyms", e.synonyms().stream().map(s -> List.of(s.name(), String.valueOf(s.value()),
                        s.source().toString())).collect(Collectors.toList()));
                out.put(e.name(), m);
            }
        }
        return out;
    }

    /** The Admin methods the other scenarios leave out: topics by id, features, fencing
     *  transactional producers, removing a static member, filtered group listings. */
    @SuppressWarnings("unchecked")
    static Map<String, Object> adminMore() throws Exception {
        String topic = prefix + "-more";
        String group = prefix + "-static";
        Map<String, Object> out = new LinkedHashMap<>();
        try (Admin a = admin_()) {
            createTopic(a, topic, 2, Map.of());
            Uuid id = a.describeTopics(List.of(topic)).allTopicNames().get().get(topic).topicId();
            TopicDescription byId = a.describeTopics(TopicCollection.ofTopicIds(List.of(id)))
                    .allTopicIds().get().get(id);
            out.put("describe_by_id", List.of(byId.name(), byId.partitions().size()));
            Uuid unknown = Uuid.randomUuid();
            Object missing = outcome(a.describeTopics(TopicCollection.ofTopicIds(List.of(unknown))).allTopicIds());
            if (missing instanceof Map<?, ?> m && m.get("message") instanceof String msg) {
                ((Map<String, Object>) m).put("message", msg.replace(unknown.toString(), "<id>"));
            }
            out.put("describe_unknown_id", missing);
            FeatureMetadata f = a.describeFeatures().featureMetadata().get();
            Map<String, Object> finalized = new TreeMap<>();
            f.finalizedFeatures().forEach((k, v) -> finalized.put(k, List.of(v.minVersionLevel(), v.maxVersionLevel())));
            out.put("finalized_features", finalized);
            // A transactional producer with an open transaction, fenced by the Admin.
            String txnId = prefix + "-fenced";
            KafkaProducer<String, String> p = producer(Map.of("transactional.id", txnId));
            p.initTransactions();
            p.beginTransaction();
            p.send(new ProducerRecord<>(topic, 0, "k", "v")).get();
            out.put("fence", outcome(a.fenceProducers(List.of(txnId)).all()));
            try {
                p.commitTransaction();
                out.put("commit_after_fence", "ok");
            } catch (Exception e) {
                out.put("commit_after_fence", error(e).get("class"));
            }
            p.close();
            // A static member, removed by the Admin.
            try (KafkaConsumer<String, String> c = consumer(Map.of("group.id", group,
                    "group.instance.id", "static-1", "group.protocol", "classic"))) {
                c.subscribe(List.of(topic));
                long deadline = System.currentTimeMillis() + 30_000;
                while (c.assignment().isEmpty() && System.currentTimeMillis() < deadline) c.poll(Duration.ofMillis(100));
                out.put("static_assigned", c.assignment().size());
                out.put("listed_stable", a.listGroups(ListGroupsOptions.forConsumerGroups()
                        .inGroupStates(Set.of(GroupState.STABLE))).all().get().stream()
                        .anyMatch(g -> g.groupId().equals(group)));
                out.put("listed_empty_filter", a.listGroups(ListGroupsOptions.forConsumerGroups()
                        .inGroupStates(Set.of(GroupState.EMPTY))).all().get().stream()
                        .anyMatch(g -> g.groupId().equals(group)));
                out.put("remove_member", outcome(a.removeMembersFromConsumerGroup(group,
                        new RemoveMembersFromConsumerGroupOptions(List.of(new MemberToRemove("static-1")))).all()));
                out.put("remove_unknown_member", outcome(a.removeMembersFromConsumerGroup(group,
                        new RemoveMembersFromConsumerGroupOptions(List.of(new MemberToRemove("nobody")))).all()));
                out.put("members_after", a.describeConsumerGroups(List.of(group)).all().get().get(group).members().size());
            }
        }
        return out;
    }

    /** DescribeConfigs of the broker: every config with its value, source, type and synonyms. */
    static Map<String, Object> brokerConfigs() throws Exception {
        Map<String, Object> out = new TreeMap<>();
        try (Admin a = admin_()) {
            int id = a.describeCluster().nodes().get().iterator().next().id();
            ConfigResource r = new ConfigResource(ConfigResource.Type.BROKER, String.valueOf(id));
            Config c = a.describeConfigs(List.of(r), new DescribeConfigsOptions().includeSynonyms(true))
                    .all().get().get(r);
            for (ConfigEntry e : c.entries()) {
                Map<String, Object> m = new LinkedHashMap<>();
                m.put("value", e.value());
                m.put("source", e.source().toString());
                m.put("readOnly", e.isReadOnly());
                m.put("sensitive", e.isSensitive());
                m.put("type", e.type().toString());
                m.put("synonyms", e.synonyms().stream().map(s -> Arrays.asList(s.name(), s.value(),
                        s.source().toString())).collect(Collectors.toList()));
                out.put(e.name(), m);
            }
        }
        return out;
    }

    /** A consumer group (classic or KIP-848) as Admin describes it, and its committed offsets. */
    static Map<String, Object> group(String protocol) throws Exception {
        String topic = prefix + "-group-" + protocol;
        String group = prefix + "-g-" + protocol;
        Map<String, Object> out = new LinkedHashMap<>();
        try (Admin a = admin_()) {
            createTopic(a, topic, 4, Map.of());
            try (KafkaProducer<String, String> p = producer(Map.of())) {
                for (int i = 0; i < 40; i++) p.send(new ProducerRecord<>(topic, i % 4, "k" + i, "v" + i)).get();
            }
            Map<String, Object> props = new HashMap<>(Map.of("group.id", group, "group.protocol", protocol,
                    "enable.auto.commit", false));
            if (protocol.equals("classic")) props.put("partition.assignment.strategy", RangeAssignor.class.getName());
            try (KafkaConsumer<String, String> c = consumer(props)) {
                c.subscribe(List.of(topic));
                List<Map<String, Object>> got = drain(c, 40);
                out.put("consumed", got.size());
                c.commitSync();
                out.put("assignment", c.assignment().stream().map(TopicPartition::partition).sorted()
                        .collect(Collectors.toList()));
                ConsumerGroupDescription d = a.describeConsumerGroups(List.of(group)).all().get().get(group);
                out.put("state", d.groupState().toString());
                out.put("type", d.type().toString());
                out.put("assignor", d.partitionAssignor());
                out.put("members", d.members().size());
                out.put("member_partitions", d.members().stream().flatMap(m -> m.assignment().topicPartitions().stream())
                        .map(TopicPartition::partition).sorted().collect(Collectors.toList()));
            }
            Map<String, Object> committed = new TreeMap<>();
            a.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get()
                    .forEach((tp, o) -> committed.put(tp.toString(), o.offset()));
            out.put("committed", committed);
            ConsumerGroupDescription after = a.describeConsumerGroups(List.of(group)).all().get().get(group);
            out.put("state_after_close", after.groupState().toString());
            out.put("listed", a.listGroups().all().get().stream().anyMatch(g -> g.groupId().equals(group)));
            TopicPartition tp0 = new TopicPartition(topic, 0);
            out.put("alter_offsets", outcome(a.alterConsumerGroupOffsets(group, Map.of(tp0, new OffsetAndMetadata(3))).all()));
            out.put("offset_after_alter", a.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get().get(tp0).offset());
            out.put("delete_offsets", outcome(a.deleteConsumerGroupOffsets(group, Set.of(tp0)).all()));
            out.put("delete_group", outcome(a.deleteConsumerGroups(List.of(group)).all()));
            out.put("describe_deleted", outcome(a.describeConsumerGroups(List.of(group)).all()
                    .thenApply(m -> m.get(group).groupState().toString())));
        }
        return out;
    }

    /** A committed and an aborted transaction, read_committed and read_uncommitted views, and
     *  what the transaction Admin APIs report. */
    static Map<String, Object> transactions() throws Exception {
        String topic = prefix + "-txn";
        String txnId = prefix + "-tx";
        Map<String, Object> out = new LinkedHashMap<>();
        try (Admin a = admin_()) {
            createTopic(a, topic, 2, Map.of());
            try (KafkaProducer<String, String> p = producer(Map.of("transactional.id", txnId))) {
                p.initTransactions();
                p.beginTransaction();
                for (int i = 0; i < 6; i++) p.send(new ProducerRecord<>(topic, i % 2, "c" + i, "committed"));
                p.commitTransaction();
                p.beginTransaction();
                for (int i = 0; i < 4; i++) p.send(new ProducerRecord<>(topic, i % 2, "a" + i, "aborted"));
                p.flush();
                TransactionDescription open = a.describeTransactions(List.of(txnId)).all().get().get(txnId);
                out.put("open_state", open.state().toString());
                out.put("open_partitions", open.topicPartitions().stream().map(TopicPartition::partition).sorted()
                        .collect(Collectors.toList()));
                out.put("open_listed", a.listTransactions().all().get().stream().anyMatch(t -> t.transactionalId().equals(txnId)));
                out.put("producers_active", a.describeProducers(List.of(new TopicPartition(topic, 0))).all().get()
                        .get(new TopicPartition(topic, 0)).activeProducers().stream()
                        .map(s -> s.currentTransactionStartOffset().isPresent()).collect(Collectors.toList()));
                p.abortTransaction();
            }
            TransactionDescription done = a.describeTransactions(List.of(txnId)).all().get().get(txnId);
            out.put("done_state", done.state().toString());
            for (String iso : List.of("read_committed", "read_uncommitted")) {
                try (KafkaConsumer<String, String> c = consumer(Map.of("isolation.level", iso))) {
                    List<TopicPartition> tps = List.of(new TopicPartition(topic, 0), new TopicPartition(topic, 1));
                    c.assign(tps);
                    c.seekToBeginning(tps);
                    List<Map<String, Object>> got = drain(c, iso.equals("read_committed") ? 6 : 10);
                    out.put(iso, got.stream().map(m -> List.of(m.get("partition"), m.get("offset"), m.get("key")))
                            .collect(Collectors.toList()));
                    Map<String, Object> ends = new TreeMap<>();
                    c.endOffsets(tps).forEach((tp, o) -> ends.put(tp.toString(), o));
                    out.put(iso + "_end", ends);
                }
            }
        }
        return out;
    }
}
