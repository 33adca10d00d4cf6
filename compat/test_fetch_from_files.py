"""Large fetches: record data sent straight from the segment files (sendfile), read by every
client, byte for byte, across segment rolls and with read_committed."""

import hashlib
import shutil
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer
from kafka import TopicPartition as KpPartition

PARTITIONS = 3
COUNT = 1500  # ~15 MB: fetches of whole MiBs per partition


def value(i):
    """A record of 1-19 KiB whose bytes depend on i, so a misplaced byte is caught."""
    size = 1024 * (1 + i % 19)
    seed = hashlib.sha256(str(i).encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


@pytest.fixture
def loaded(broker):
    """A topic of 3 partitions with small segments (several rolls), filled with COUNT records
    round-robin; returns (topic, {partition: [record index, ...]})."""
    topic = f"files-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1,
                                  config={"segment.bytes": str(4 * 1024 * 1024)})])[topic].result(10)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(COUNT):
        p.produce(topic, key=str(i).encode(), value=value(i), partition=i % PARTITIONS)
        p.poll(0)
    assert p.flush(60) == 0
    return topic, {q: list(range(q, COUNT, PARTITIONS)) for q in range(PARTITIONS)}


def check(per_partition, got):
    """got: {partition: [(offset, key, value), ...]} in consumption order."""
    for q, indices in per_partition.items():
        records = got.get(q, [])
        assert [o for o, _, _ in records] == list(range(len(indices))), f"partition {q} offsets"
        for (offset, key, val), i in zip(records, indices):
            assert key == str(i).encode(), f"partition {q} offset {offset}: key"
            assert val == value(i), f"partition {q} offset {offset}: value differs"


@pytest.mark.parametrize("isolation", ["read_uncommitted", "read_committed"])
def test_librdkafka_reads_every_byte(broker, loaded, isolation):
    topic, expected = loaded
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"g-{uuid.uuid4()}",
                  "enable.auto.commit": False, "isolation.level": isolation,
                  "fetch.max.bytes": 8 * 1024 * 1024, "max.partition.fetch.bytes": 4 * 1024 * 1024})
    c.assign([TopicPartition(topic, q, 0) for q in range(PARTITIONS)])
    got = {}
    n = 0
    deadline = time.monotonic() + 60
    while n < COUNT and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        assert m.error() is None, m.error()
        got.setdefault(m.partition(), []).append((m.offset(), m.key(), m.value()))
        n += 1
    c.close()
    assert n == COUNT
    check(expected, got)


def test_kafka_python_reads_every_byte(broker, loaded):
    topic, expected = loaded
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                      auto_offset_reset="earliest", consumer_timeout_ms=20_000,
                      max_partition_fetch_bytes=2 * 1024 * 1024, fetch_max_bytes=6 * 1024 * 1024)
    c.assign([KpPartition(topic, q) for q in range(PARTITIONS)])
    c.seek_to_beginning()
    got = {}
    n = 0
    for m in c:
        got.setdefault(m.partition, []).append((m.offset, m.key, m.value))
        n += 1
        if n == COUNT:
            break
    c.close()
    check(expected, got)


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed (.ci/run installs it)")
def test_kcat_reads_every_byte(broker, loaded):
    """librdkafka 2.0 (older Fetch versions, non-flexible encoding below v12)."""
    topic, expected = loaded
    for q, indices in expected.items():
        out = subprocess.run(
            ["kcat", "-b", broker.bootstrap, "-C", "-t", topic, "-p", str(q), "-o", "beginning",
             "-e", "-f", "%o %k %S\n", "-X", "api.version.request=true"],
            capture_output=True, timeout=120)
        assert out.returncode == 0, out.stderr.decode()
        lines = out.stdout.decode().splitlines()
        assert len(lines) == len(indices)
        for line, (offset, i) in zip(lines, enumerate(indices)):
            o, k, size = line.split()
            assert (int(o), k, int(size)) == (offset, str(i), len(value(i)))
    # Byte-exact values through kcat's binary output of one partition.
    out = subprocess.run(["kcat", "-b", broker.bootstrap, "-C", "-t", topic, "-p", "0",
                          "-o", "beginning", "-e", "-f", "%s"], capture_output=True, timeout=120)
    assert out.returncode == 0
    assert out.stdout == b"".join(value(i) for i in expected[0])
