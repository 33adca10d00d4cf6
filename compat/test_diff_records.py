"""Differential: records, offsets and timestamps as a client sees them, Kafka against Fjord."""

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from diff import compare, unique


def create(t, name, partitions=1, config=None):
    # The scenarios stamp records in 2023, past the 7-day retention: kept regardless, or a
    # retention pass of these long-lived brokers (every 5 minutes) could delete them mid-run.
    a = AdminClient({"bootstrap.servers": t.bootstrap})
    a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                              config={"retention.ms": "-1", **(config or {})})])[name].result(15)
    return a


def consume_all(t, topic, partitions, expected, **conf):
    c = Consumer({"bootstrap.servers": t.bootstrap, "group.id": unique("g"),
                  "enable.auto.commit": False, **conf})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out = []
    for _ in range(200):
        if len(out) >= expected:
            break
        for m in c.consume(100, timeout=0.2):
            if m.error():
                raise KafkaException(m.error())
            out.append({"partition": m.partition(), "offset": m.offset(), "key": m.key(),
                        "value": m.value(), "headers": m.headers(),
                        "timestamp": list(m.timestamp()), "leader_epoch": m.leader_epoch()})
    c.close()
    return sorted(out, key=lambda r: (r["partition"], r["offset"]))


def records_scenario(t, compression):
    topic = unique("rec")
    create(t, topic, 3)
    p = Producer({"bootstrap.servers": t.bootstrap, "compression.type": compression,
                  "linger.ms": 5})
    for i in range(60):
        headers = [("h", b"v%d" % i), ("dup", b"a"), ("dup", None)] if i % 3 == 0 else None
        p.produce(topic, key=(b"k%d" % i) if i % 4 else None,
                  value=None if i % 7 == 0 else b"value-%d" % i * (i % 5 + 1),
                  partition=i % 3, headers=headers, timestamp=1_700_000_000_000 + i)
    assert p.flush(15) == 0
    return consume_all(t, topic, 3, 60)


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "records: keys, values, headers, timestamps, offsets")
def test_records_roundtrip_uncompressed(both):
    compare(both, records_scenario, "none")


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "records, zstd-compressed")
def test_records_roundtrip_zstd(both):
    compare(both, records_scenario, "zstd")


def list_offsets_scenario(t):
    topic = unique("lo")
    a = create(t, topic, 2)
    p = Producer({"bootstrap.servers": t.bootstrap, "linger.ms": 0})
    # Timestamps out of order in partition 0: max timestamp is not the last record's.
    for i, ts in enumerate([1000, 5000, 3000, 9000, 2000]):
        p.produce(topic, value=b"v", partition=0, timestamp=1_700_000_000_000 + ts)
        p.flush(10)
    specs = {
        "earliest": OffsetSpec.earliest(), "latest": OffsetSpec.latest(),
        "max_timestamp": OffsetSpec.max_timestamp(),
        "ts_0": OffsetSpec.for_timestamp(0),
        "ts_2500": OffsetSpec.for_timestamp(1_700_000_002_500),
        "ts_5000": OffsetSpec.for_timestamp(1_700_000_005_000),
        "ts_after": OffsetSpec.for_timestamp(1_700_000_009_001),
    }
    out = {}
    for name, spec in specs.items():
        for part in (0, 1):
            tp = TopicPartition(topic, part)
            r = a.list_offsets({tp: spec})[tp].result(10)
            out[f"{name}/{part}"] = [r.offset, r.timestamp, r.leader_epoch]
    return out


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "ListOffsets: earliest, latest, max timestamp, by time")
def test_list_offsets(both):
    compare(both, list_offsets_scenario)


def produce_outcomes(t, topic, records, **conf):
    """Each record's delivery: [offset] or the error's name (one batch per record)."""
    p = Producer({"bootstrap.servers": t.bootstrap, "linger.ms": 0, "retries": 0,
                  "enable.idempotence": False, **conf})
    out = []

    def done(err, msg):
        out.append(err.name() if err else msg.offset())

    for r in records:
        p.produce(topic, on_delivery=done, **r)
        p.flush(15)
    return out


def validation_scenario(t):
    import time
    now = int(time.time() * 1000)
    compacted = unique("cmp")
    create(t, compacted, 1, {"cleanup.policy": "compact"})
    plain = unique("plain")
    create(t, plain, 1)
    return {
        "compacted": produce_outcomes(t, compacted, [
            {"key": b"k", "value": b"v"}, {"value": b"no key"}, {"key": b"k2", "value": None}]),
        # Kafka 4 refuses timestamps more than an hour ahead (message.timestamp.after.max.ms).
        "timestamps": produce_outcomes(t, plain, [
            {"value": b"now", "timestamp": now},
            {"value": b"old", "timestamp": 1},
            {"value": b"future", "timestamp": now + 2 * 3600 * 1000},
            {"value": b"near future", "timestamp": now + 600 * 1000}]),
    }


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "produce validation: keyless compacted, timestamp bounds")
def test_broker_validation_on_produce(both):
    compare(both, validation_scenario)
