"""librdkafka (confluent-kafka): produce, consume and admin against Apache Kafka and against Fjord
(restart survival against Fjord only)."""

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from diff import unique

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def produce(bootstrap, topic, messages, **conf):
    """messages: (key, value, headers, partition, timestamp) tuples; returns delivery reports."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, **conf})
    reports = []

    def cb(err, msg):
        reports.append((err, msg.partition() if msg else None, msg.offset() if msg else None))

    for key, value, headers, partition, ts in messages:
        kw = {"key": key, "value": value, "on_delivery": cb}
        if headers is not None:
            kw["headers"] = headers
        if partition is not None:
            kw["partition"] = partition
        if ts is not None:
            kw["timestamp"] = ts
        p.produce(topic, **kw)
    assert p.flush(30) == 0, "messages still queued after 30s"
    errors = [r for r in reports if r[0] is not None]
    assert not errors, errors
    return reports


def consume_all(bootstrap, topic, expected, partitions=None, timeout=30, **conf):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4()}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest", **conf})
    if partitions is None:
        md = c.list_topics(topic, timeout=10)
        partitions = list(md.topics[topic].partitions)
    c.assign([TopicPartition(topic, p, 0) for p in partitions])
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < expected and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        assert m.error() is None, m.error()
        out.append(m)
    c.close()
    assert len(out) == expected, f"consumed {len(out)} of {expected}"
    return out


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "every codec: keys, nulls, headers, timestamps")
@pytest.mark.parametrize("codec", CODECS)
def test_every_codec_round_trips_keys_nulls_headers_timestamps(target, codec):
    broker = target
    topic = unique(f"codec-{codec}")
    msgs = []
    # Recent timestamps: records older than the 7-day retention could be deleted by a
    # retention pass of these long-lived brokers before they are read back.
    base = int(time.time() * 1000) - 60_000
    for i in range(200):
        key = f"key-{i % 7}".encode() if i % 5 else None
        value = None if i % 11 == 0 else (f"value-{i}-" + "x" * (i % 50)).encode()
        headers = [("h1", f"v{i}".encode()), ("empty", None)] if i % 3 == 0 else None
        msgs.append((key, value, headers, None, base + i))
    produce(broker.bootstrap, topic, msgs, **{"compression.type": codec})
    got = consume_all(broker.bootstrap, topic, len(msgs))
    for (key, value, headers, _, ts), m in zip(msgs, got):
        assert m.key() == key
        assert m.value() == value
        assert m.timestamp() == (1, ts), "CreateTime timestamps come back as sent"
        if headers:
            assert m.headers() == headers
        else:
            assert not m.headers()
    assert [m.offset() for m in got] == list(range(len(msgs)))


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "12 partitions, keyed routing, dense offsets")
def test_many_partitions_and_keyed_routing(target):
    broker = target
    wide = unique("wide")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    fs = admin.create_topics([NewTopic(wide, num_partitions=12, replication_factor=1)])
    fs[wide].result(10)
    msgs = [(f"k{i}".encode(), f"v{i}".encode(), None, None, None) for i in range(1200)]
    reports = produce(broker.bootstrap, wide, msgs)
    by_key = {}
    for (key, *_), (_, part, _) in zip(msgs, reports):
        by_key.setdefault(key, set()).add(part)
    assert all(len(parts) == 1 for parts in by_key.values()), "a key always lands on one partition"
    assert len({p for _, p, _ in reports}) > 6, "keys spread over partitions"
    got = consume_all(broker.bootstrap, wide, len(msgs))
    assert sorted(m.value() for m in got) == sorted(v for _, v, *_ in msgs)
    # Per partition, offsets are dense from 0.
    per = {}
    for m in got:
        per.setdefault(m.partition(), []).append(m.offset())
    for offsets in per.values():
        assert sorted(offsets) == list(range(len(offsets)))


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "admin: create with configs, validate-only, errors")
def test_admin_create_topics_with_configs_and_validate_only(target):
    broker = target
    dry, orders, bad, rf3 = unique("dry"), unique("orders"), unique("bad"), unique("rf3")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    fs = admin.create_topics([NewTopic(dry, num_partitions=3, replication_factor=1)], validate_only=True)
    fs[dry].result(10)
    assert dry not in admin.list_topics(timeout=10).topics
    fs = admin.create_topics([NewTopic(orders, num_partitions=6, replication_factor=1,
                                       config={"retention.ms": "86400000", "cleanup.policy": "delete"})])
    fs[orders].result(10)
    md = admin.list_topics(timeout=10)
    assert len(md.topics[orders].partitions) == 6
    with pytest.raises(KafkaException) as e:
        admin.create_topics([NewTopic(orders, num_partitions=1, replication_factor=1)])[orders].result(10)
    assert e.value.args[0].name() == "TOPIC_ALREADY_EXISTS"
    with pytest.raises(KafkaException) as e:
        admin.create_topics([NewTopic(bad, num_partitions=1, replication_factor=1,
                                      config={"retention.ms": "soon"})])[bad].result(10)
    assert e.value.args[0].name() == "INVALID_CONFIG"
    with pytest.raises(KafkaException) as e:
        admin.create_topics([NewTopic(rf3, num_partitions=1, replication_factor=3)])[rf3].result(10)
    assert e.value.args[0].name() == "INVALID_REPLICATION_FACTOR"
    with pytest.raises(KafkaException) as e:
        admin.create_topics([NewTopic("bad name!", num_partitions=1, replication_factor=1)])["bad name!"].result(10)
    assert e.value.args[0].name() == "TOPIC_EXCEPTION"  # librdkafka's name for code 17


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "offsets for times, watermarks (auto-created topic)")
def test_offsets_for_times_and_watermarks(target):
    broker = target
    times = unique("times")
    msgs = [(None, f"v{i}".encode(), None, None, 1_000_000 + i * 1000) for i in range(50)]
    produce(broker.bootstrap, times, msgs)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("g-times")})
    lo, hi = c.get_watermark_offsets(TopicPartition(times, 0), timeout=10)
    assert (lo, hi) == (0, 50)
    found = c.offsets_for_times([TopicPartition(times, 0, 1_000_000 + 20_500)], timeout=10)
    assert found[0].offset == 21
    past_end = c.offsets_for_times([TopicPartition(times, 0, 9_999_999_999)], timeout=10)
    assert past_end[0].offset == -1
    c.close()


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "large messages, max.message.bytes, fetch limits")
def test_large_messages_and_max_message_bytes(target):
    broker = target
    big = unique("big")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(big, num_partitions=1, replication_factor=1,
                                  config={"max.message.bytes": "200000"})])[big].result(10)
    produce(broker.bootstrap, big, [(None, b"x" * 150_000, None, None, None)])
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "message.max.bytes": 1_000_000})
    errs = []
    p.produce(big, b"y" * 300_000, on_delivery=lambda err, msg: errs.append(err))
    p.flush(30)
    assert errs and errs[0] is not None and errs[0].name() == "MSG_SIZE_TOO_LARGE"
    got = consume_all(broker.bootstrap, big, 1, **{"fetch.max.bytes": 100_000, "max.partition.fetch.bytes": 100_000,
                                                    "message.max.bytes": 100_000})
    assert len(got[0].value()) == 150_000, "a batch larger than the fetch limits still comes back"


def test_data_survives_restart(broker):
    msgs = [(f"k{i}".encode(), f"v{i}".encode(), None, None, None) for i in range(300)]
    produce(broker.bootstrap, "durable", msgs, **{"compression.type": "lz4"})
    broker.restart()
    produce(broker.bootstrap, "durable", [(b"after", b"restart", None, None, None)])
    got = consume_all(broker.bootstrap, "durable", 301)
    assert [m.value() for m in got] == [v for _, v, *_ in msgs] + [b"restart"]
    assert [m.offset() for m in got] == list(range(301))


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "long poll woken by new data")
def test_consumer_long_poll_sees_new_data(target):
    broker = target
    live = unique("live")
    produce(broker.bootstrap, live, [(None, b"first", None, None, None)])
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("g-live"),
                  "auto.offset.reset": "earliest", "fetch.wait.max.ms": 2000,
                  "enable.auto.commit": False})
    c.assign([TopicPartition(live, 0, 0)])
    m = None
    deadline = time.monotonic() + 10
    while m is None and time.monotonic() < deadline:
        m = c.poll(0.5)
    assert m.value() == b"first"
    start = time.monotonic()
    produce(broker.bootstrap, live, [(None, b"second", None, None, None)])
    m = None
    while m is None and time.monotonic() < start + 10:
        m = c.poll(0.2)
    assert m is not None and m.value() == b"second"
    c.close()
