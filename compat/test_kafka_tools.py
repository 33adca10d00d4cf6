"""Kafka's own command-line tools (run as their main classes, compat/reference/kafka.sh) against
Kafka and against Fjord: the same commands, outputs compared after removing what differs by
nature (topic ids, the run's names, timings)."""

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from diff import compare, unique
from reference import run_tool

TOPICS = "org.apache.kafka.tools.TopicCommand"
CONFIGS = "org.apache.kafka.tools.ConfigCommand"
PRODUCER = "org.apache.kafka.tools.ConsoleProducer"
CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"
GROUPS = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
OFFSETS = "org.apache.kafka.tools.GetOffsetShell"
DELETE_RECORDS = "org.apache.kafka.tools.DeleteRecordsCommand"
TRANSACTIONS = "org.apache.kafka.tools.TransactionsCommand"
LOG_DIRS = "org.apache.kafka.tools.LogDirsCommand"
PRODUCER_PERF = "org.apache.kafka.tools.ProducerPerformance"
CONSUMER_PERF = "org.apache.kafka.tools.ConsumerPerformance"


def tool(t, main, *args, input=None, check=True):
    p = run_tool(main, *args, bootstrap=t.bootstrap, input=input, check=check)
    return p


def lines(text, prefix):
    """Output lines without the run's names, topic ids, JVM warnings or blank padding."""
    out = []
    for line in text.replace(prefix, "<p>").splitlines():
        line = re.sub(r"TopicId: \S+", "TopicId: <id>", line).rstrip()
        line = re.sub(r"127\.0\.0\.1:\d+", "<address>", line)
        if not line.strip() or "deprecated" in line or "KIP-848" in line:
            continue
        out.append(line)
    return out


def topics_and_configs(t):
    p = unique("tool")
    topic = f"{p}-t"
    out = {}
    out["create"] = lines(tool(t, TOPICS, "--create", "--topic", topic, "--partitions", "3",
                               "--config", "retention.ms=100000").stdout, p)
    out["create_again"] = lines(tool(t, TOPICS, "--create", "--topic", topic, "--partitions", "3",
                                     check=False).stdout, p)
    out["list"] = topic in tool(t, TOPICS, "--list").stdout.split()
    out["describe"] = lines(tool(t, TOPICS, "--describe", "--topic", topic).stdout, p)
    out["alter_partitions"] = lines(tool(t, TOPICS, "--alter", "--topic", topic,
                                         "--partitions", "4").stdout, p)
    out["configs_describe"] = lines(tool(t, CONFIGS, "--describe", "--entity-type", "topics",
                                         "--entity-name", topic).stdout, p)
    out["configs_alter"] = lines(tool(t, CONFIGS, "--alter", "--entity-type", "topics",
                                      "--entity-name", topic, "--add-config",
                                      "segment.ms=86400000,cleanup.policy=[compact,delete]",
                                      "--delete-config", "retention.ms").stdout, p)
    # Kafka's brokers learn a config change a moment after it is acknowledged: read until
    # it shows (at most 10 s), as a user would.
    deadline = time.monotonic() + 10
    while True:
        out["configs_after"] = lines(tool(t, CONFIGS, "--describe", "--entity-type", "topics",
                                          "--entity-name", topic).stdout, p)
        if any("segment.ms=86400000" in l for l in out["configs_after"]) \
                or time.monotonic() > deadline:
            break
    out["configs_all"] = lines(tool(t, CONFIGS, "--describe", "--all", "--entity-type", "topics",
                                    "--entity-name", topic).stdout, p)
    bad = tool(t, CONFIGS, "--alter", "--entity-type", "topics", "--entity-name", topic,
               "--add-config", "retention.ms=soon", check=False)
    out["configs_bad"] = [bad.returncode != 0, lines(bad.stdout + bad.stderr, p)[:2]]
    out["delete"] = lines(tool(t, TOPICS, "--delete", "--topic", topic).stdout, p)
    return out


# Fjord's default flush.messages (fsync before acks=all) shows in `--describe --all`.
@pytest.mark.compat("kafka-topics, kafka-configs", "create, describe, alter, delete; configs describe/alter")
def test_kafka_topics_and_kafka_configs(both):
    k, f = both
    kafka = topics_and_configs(k)
    fjord = topics_and_configs(f)
    flush_k = [l for l in kafka["configs_all"] if "flush.messages=" in l]
    flush_f = [l for l in fjord["configs_all"] if "flush.messages=" in l]
    assert flush_k == ["  flush.messages=9223372036854775807 sensitive=false "
                       "synonyms={DEFAULT_CONFIG:log.flush.interval.messages=9223372036854775807}"]
    assert flush_f == ["  flush.messages=1 sensitive=false "
                       "synonyms={DEFAULT_CONFIG:log.flush.interval.messages=1}"]
    kafka["configs_all"] = [l for l in kafka["configs_all"] if l not in flush_k]
    fjord["configs_all"] = [l for l in fjord["configs_all"] if l not in flush_f]
    compare((k, f), lambda t: kafka if t is k else fjord)


def console_and_groups(t):
    p = unique("tool")
    topic, group = f"{p}-t", f"{p}-g"
    tool(t, TOPICS, "--create", "--topic", topic, "--partitions", "3")
    records = "".join(f"k{i}:v{i}\n" for i in range(12))
    tool(t, PRODUCER, "--topic", topic, "--reader-property", "parse.key=true",
         "--reader-property", "key.separator=:", input=records)
    consumed = tool(t, CONSUMER, "--topic", topic, "--from-beginning", "--max-messages", "12",
                    "--group", group, "--formatter-property", "print.key=true",
                    "--formatter-property", "print.partition=true",
                    "--formatter-property", "print.offset=true",
                    "--formatter-property", "print.timestamp=false")
    out = {"consumed": sorted(lines(consumed.stdout, p))}
    out["groups_list"] = group in tool(t, GROUPS, "--list").stdout.split()
    desc = tool(t, GROUPS, "--describe", "--group", group).stdout
    # GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG (member columns are empty).
    out["groups_describe"] = sorted(" ".join(l.split()[:6]) for l in lines(desc, p)
                                    if l.split()[0] in (group.replace(p, "<p>"), "GROUP"))
    state = tool(t, GROUPS, "--describe", "--group", group, "--state").stdout
    out["groups_state"] = [" ".join(l.split()[1:]) for l in lines(state, p)]
    reset = tool(t, GROUPS, "--reset-offsets", "--group", group, "--topic", topic,
                 "--to-earliest", "--execute").stdout
    out["groups_reset"] = sorted(" ".join(l.split()) for l in lines(reset, p))
    shift = tool(t, GROUPS, "--reset-offsets", "--group", group, "--topic", f"{topic}:0",
                 "--shift-by", "2", "--execute").stdout
    out["groups_shift"] = sorted(" ".join(l.split()) for l in lines(shift, p))
    out["offsets_latest"] = sorted(lines(tool(t, OFFSETS, "--topic", topic).stdout, p))
    out["offsets_earliest"] = sorted(lines(tool(t, OFFSETS, "--topic", topic,
                                                "--time", "-2").stdout, p))
    return out, topic, group, p


def delete_records_and_dirs(t, topic, group, p, tmp):
    path = tmp / f"{t.name}-delete.json"
    path.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": topic, "partition": 0, "offset": 2}]}))
    out = {"delete_records": lines(tool(t, DELETE_RECORDS, "--offset-json-file",
                                        str(path)).stdout, p)}
    out["offsets_after_delete"] = sorted(lines(tool(t, OFFSETS, "--topic", topic,
                                                    "--time", "-2").stdout, p))
    dirs = tool(t, LOG_DIRS, "--describe", "--topic-list", topic).stdout.splitlines()[-1]
    described = json.loads(dirs)
    out["log_dirs"] = sorted((part["partition"].replace(p, "<p>"), part["size"] > 0)
                             for b in described["brokers"] for d in b["logDirs"]
                             for part in d["partitions"])
    out["groups_delete"] = lines(tool(t, GROUPS, "--delete", "--group", group).stdout, p)
    return out


@pytest.mark.compat("console producer/consumer, kafka-consumer-groups, kafka-get-offsets, kafka-delete-records, kafka-log-dirs", "produce, consume, groups list/describe/reset/delete, offsets, delete records, log dirs")
def test_console_tools_groups_offsets_records(both, tmp_path):
    def scenario(t):
        out, topic, group, p = console_and_groups(t)
        out.update(delete_records_and_dirs(t, topic, group, p, tmp_path))
        return out
    compare(both, scenario)


def transactions_tool(t):
    from confluent_kafka import Producer
    p = unique("tool")
    topic = f"{p}-t"
    tool(t, TOPICS, "--create", "--topic", topic, "--partitions", "1")
    prod = Producer({"bootstrap.servers": t.bootstrap, "transactional.id": f"{p}-tx"})
    prod.init_transactions(15)
    prod.begin_transaction()
    prod.produce(topic, b"v")
    prod.flush(10)
    out = {}
    listed = tool(t, TRANSACTIONS, "list").stdout
    out["list_ongoing"] = [" ".join(l.split()[i] for i in (0, 3)) for l in lines(listed, p)
                           if l.startswith("<p>")]
    desc = tool(t, TRANSACTIONS, "describe", "--transactional-id", f"{p}-tx").stdout
    rows = lines(desc, p)
    header = rows[0].split("\t")
    row = dict(zip([h.strip() for h in header], [c.strip() for c in rows[1].split("\t")]))
    out["describe"] = {k: row[k] for k in ("TransactionalId", "TransactionState",
                                           "TopicPartitions", "TransactionTimeoutMs")}
    producers = tool(t, TRANSACTIONS, "describe-producers", "--topic", topic,
                     "--partition", "0").stdout
    out["producers_rows"] = len(lines(producers, p)) - 1
    prod.commit_transaction(15)
    listed = tool(t, TRANSACTIONS, "list").stdout
    out["list_done"] = [" ".join(l.split()[i] for i in (0, 3)) for l in lines(listed, p)
                        if l.startswith("<p>")]
    hanging = tool(t, TRANSACTIONS, "find-hanging", "--broker-id", "1").stdout
    out["find_hanging"] = [l for l in lines(hanging, p) if p in l or "<p>" in l]
    return out


@pytest.mark.compat("kafka-transactions", "list, describe, describe-producers, find-hanging")
def test_kafka_transactions_tool(both):
    compare(both, transactions_tool)


def perf_tools(t):
    topic = unique("perf")
    tool(t, TOPICS, "--create", "--topic", topic, "--partitions", "2")
    prod = run_tool(PRODUCER_PERF, "--topic", topic, "--num-records", "20000",
                    "--record-size", "100", "--throughput", "-1",
                    "--producer-props", f"bootstrap.servers={t.bootstrap}", "acks=all")
    summary = prod.stdout.strip().splitlines()[-1]
    cons = run_tool(CONSUMER_PERF, "--topic", topic, "--messages", "20000",
                    "--timeout", "30000", bootstrap=t.bootstrap)
    last = cons.stdout.strip().splitlines()[-1].split(",")
    return {"produced": summary.split()[0], "consumed_records": last[4].strip()}


@pytest.mark.compat("kafka-producer-perf-test, kafka-consumer-perf-test", "acks=all produce and consume 20,000 records")
def test_perf_tools(both):
    compare(both, perf_tools)


OFFSETS_FORMATTER = "org.apache.kafka.tools.consumer.OffsetsMessageFormatter"
GROUP_FORMATTER = "org.apache.kafka.tools.consumer.GroupMetadataMessageFormatter"
TXN_FORMATTER = "org.apache.kafka.tools.consumer.TransactionLogMessageFormatter"


def java_hash(name):
    """Java's String.hashCode of an ASCII name."""
    h = 0
    for c in name:
        h = (31 * h + ord(c)) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def internal_records(t, internal_topic, key, formatter, wanted):
    """The records of an internal topic as Kafka's own formatter prints them, those `wanted`
    says are this run's, in order. Only the partition of `key` (a group or transactional id
    with a non-negative hash) is read: assigned, without a group to join."""
    from confluent_kafka.admin import AdminClient
    topics = AdminClient({"bootstrap.servers": t.bootstrap}).list_topics(internal_topic, timeout=10)
    partition = java_hash(key) % len(topics.topics[internal_topic].partitions)
    out = tool(t, CONSUMER, "--topic", internal_topic, "--partition", str(partition),
               "--offset", "earliest", "--timeout-ms", "3000", "--formatter", formatter,
               check=False)
    # The formatters print one JSON object per record, not always a line each.
    records, text, at = [], out.stdout, 0
    decoder = json.JSONDecoder()
    while (at := text.find('{"key"', at)) >= 0:
        r, at = decoder.raw_decode(text, at)
        if wanted(r):
            records.append(r)
    assert "Exception" not in out.stderr.replace("TimeoutException", ""), out.stderr
    return records


def internal_topics(t):
    """A classic group commits and leaves, a transaction commits; then Kafka's formatters read
    `__consumer_offsets` and `__transaction_state`: what they print of this run's group and
    transactional id, timestamps and generated ids aside."""
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    # Ids whose hash is negative live on another partition in Fjord than in Kafka
    # (docs/compatibility.md): the run takes ids whose hash is not.
    p = unique("fmt")
    while java_hash(f"{p}-g") < 0 or java_hash(f"{p}-tx") < 0:
        p = unique("fmt")
    topic, group, txid = f"{p}-t", f"{p}-g", f"{p}-tx"
    admin = AdminClient({"bootstrap.servers": t.bootstrap})
    for f in admin.create_topics([NewTopic(topic, 2, 1), NewTopic(f"{p}-tx-out", 1, 1)]).values():
        f.result(15)
    prod = Producer({"bootstrap.servers": t.bootstrap, "transactional.id": txid})
    prod.init_transactions(15)
    prod.begin_transaction()
    prod.produce(f"{p}-tx-out", b"in a transaction")
    prod.commit_transaction(15)
    # Plain records for the group (no markers: each partition's position ends at 3).
    plain = Producer({"bootstrap.servers": t.bootstrap})
    for i in range(6):
        plain.produce(topic, b"v%d" % i, partition=i % 2)
    assert plain.flush(15) == 0
    c = Consumer({"bootstrap.servers": t.bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "group.protocol": "classic"})
    c.subscribe([topic])
    got, end = 0, time.monotonic() + 30
    while got < 6 and time.monotonic() < end:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got += 1
    c.commit(asynchronous=False)
    c.close()

    def data(r, part, drop=()):
        d = dict(r[part]["data"]) if r.get(part) else None
        for k in drop:
            d and d.pop(k, None)
        return d

    # The three tools run at once (each is mostly a JVM starting).
    with ThreadPoolExecutor(3) as pool:
        reads = [pool.submit(internal_records, t, internal, key, formatter, wanted)
                 for internal, key, formatter, wanted in (
                     ("__consumer_offsets", group, OFFSETS_FORMATTER,
                      lambda r: r["key"]["data"].get("group") == group),
                     ("__consumer_offsets", group, GROUP_FORMATTER,
                      lambda r: r["key"]["data"].get("group") == group),
                     ("__transaction_state", txid, TXN_FORMATTER,
                      lambda r: r["key"]["data"].get("transactionalId") == txid))]
        offsets, groups, txns = (r.result() for r in reads)
    # The topic id is each broker's own: whether it is there is compared.
    out = {"offsets": sorted((json.dumps(data(r, "key")), r["key"]["type"],
                              json.dumps(data(r, "value", ("commitTimestamp", "topicId"))),
                              r["value"] and r["value"]["version"],
                              bool(r["value"] and r["value"]["data"].get("topicId")))
                             for r in offsets)}
    # The last record: the group after its only member left (Empty, no members).
    last = groups[-1]
    out["group_last"] = (last["key"]["type"], last["value"]["version"],
                         data(last, "value", ("currentStateTimestamp",)))
    out["group_generations"] = sorted({r["value"]["data"]["generation"] for r in groups if r["value"]})
    def txn(r):
        d = data(r, "value", ("transactionLastUpdateTimestampMs", "transactionStartTimestampMs"))
        # Ids depend on what ran before: whether the previous id is the current one counts.
        pid = d.pop("producerId")
        if "previousProducerId" in d:
            d["previousProducerId"] = d["previousProducerId"] == pid
        return d
    out["txn_states"] = [(r["key"]["type"], r["value"]["version"], txn(r)) for r in txns]
    return json.loads(json.dumps(out).replace(p, "<p>"))


@pytest.mark.compat("kafka-console-consumer formatters", "__consumer_offsets and __transaction_state read by Kafka's OffsetsMessageFormatter, GroupMetadataMessageFormatter, TransactionLogMessageFormatter")
def test_kafka_formatters_read_the_internal_topics(both):
    # Kafka 4.4 runs transaction.version 2 and writes TransactionLogValue v1 (with the
    # previous producer id); Fjord runs transactions v1, for which Kafka writes v0
    # (docs/compatibility.md).
    differ = {}
    for i in range(4):
        differ[f"txn_states[{i}][1]"] = (1, 0)
        differ[f"txn_states[{i}][2].previousProducerId"] = (True, "<absent>")
    compare(both, internal_topics, differ=differ)


def broker_throttles(t):
    """kafka-configs on a broker's replication throttles: set on the broker and as every
    broker's default, described, a bad value refused, then deleted."""
    from confluent_kafka.admin import AdminClient
    broker = str(next(iter(AdminClient({"bootstrap.servers": t.bootstrap})
                           .list_topics(timeout=10).brokers)))
    entity = ["--entity-type", "brokers", "--entity-name", broker]
    default = ["--entity-type", "brokers", "--entity-default"]
    out = {}

    def run(name, *args, check=True):
        p = tool(t, CONFIGS, *args, check=check)
        text = (p.stdout + p.stderr).replace(f"broker {broker}", "broker <id>")
        # Only the throttles (the reference broker has other dynamic defaults of its own) and
        # the first lines of an error, without the address.
        text = re.sub(r"127\.0\.0\.1:\d+", "<address>", text)
        out[name] = [line for line in text.splitlines()
                     if line.strip() and "at org.apache" not in line and "at java." not in line
                     and ("=" not in line or "throttled" in line or "Error" in line)][:3]

    run("set", "--alter", *entity, "--add-config",
        "leader.replication.throttled.rate=1000000,follower.replication.throttled.rate=2000000")
    run("set_default", "--alter", *default, "--add-config",
        "follower.replication.throttled.rate=3000000")
    run("describe", "--describe", *entity)
    run("describe_default", "--describe", *default)
    run("negative", "--alter", *entity, "--add-config", "leader.replication.throttled.rate=-1",
        check=False)
    run("delete", "--alter", *entity, "--delete-config",
        "leader.replication.throttled.rate,follower.replication.throttled.rate")
    run("delete_default", "--alter", *default, "--delete-config",
        "follower.replication.throttled.rate")
    run("described_after", "--describe", *entity)
    return out


@pytest.mark.compat("kafka-configs", "a broker's replication throttles (dynamic broker configs): set per broker and as the default, described, refused, deleted")
def test_kafka_configs_sets_broker_throttles(both):
    compare(both, broker_throttles)
