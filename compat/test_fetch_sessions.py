"""Incremental fetch sessions (KIP-227) driven by kafka-python, which uses them by default: the
consumer reads every record exactly once while its assignment changes under the session, and
the broker's session holds exactly the partitions assigned."""

import threading
import time
import urllib.request

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from conftest import wait_for


def metric(broker, name):
    page = urllib.request.urlopen(f"http://127.0.0.1:{broker.http_port}/metrics",
                                  timeout=10).read().decode()
    values = [float(line.split()[1]) for line in page.splitlines()
              if line.split(" ")[0] == name]
    return values[0] if values else None


def produce(bootstrap, plan, tag):
    """Writes `tag-partition-round` values for every (topic, partitions, rounds) in `plan`."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    for topic, partitions, rounds in plan:
        for r in range(rounds):
            for p in partitions:
                producer.send(topic, partition=p, value=f"{tag}-{p}-{r}".encode())
            if r % 50 == 49:
                producer.flush(30)
    producer.flush(30)
    producer.close()


def consume(consumer, want, timeout=60):
    got = {}
    deadline = time.monotonic() + timeout
    while sum(len(v) for v in got.values()) < want and time.monotonic() < deadline:
        for tp, msgs in consumer.poll(timeout_ms=500).items():
            got.setdefault((tp.topic, tp.partition), []).extend(m.value for m in msgs)
    return got


def test_kafka_python_reads_through_a_session_as_its_assignment_changes(broker):
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic("fs-a", 6, 1), NewTopic("fs-b", 2, 1)])
    admin.close()
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest", fetch_max_wait_ms=100)
    first = [TopicPartition("fs-a", p) for p in range(6)]
    consumer.assign(first)

    # Records arrive while the consumer polls: most fetches are incremental and carry only
    # the partitions that received something.
    writer = threading.Thread(target=produce,
                              args=(broker.bootstrap, [("fs-a", range(6), 200)], "one"))
    writer.start()
    got = consume(consumer, 1200)
    writer.join()
    assert sorted(got) == [("fs-a", p) for p in range(6)]
    for p in range(6):
        assert got[("fs-a", p)] == [f"one-{p}-{r}".encode() for r in range(200)], p
    handlers = consumer._fetcher._session_handlers
    assert any(h.next_metadata.session_id != 0 for h in handlers.values()), \
        "kafka-python holds a session the broker created"
    assert metric(broker, "fjord_fetch_sessions") == 1
    assert metric(broker, "fjord_fetch_session_partitions") == 6

    # A new assignment: three partitions forgotten, two of another topic added.
    second = first[3:] + [TopicPartition("fs-b", p) for p in range(2)]
    consumer.assign(second)
    for tp in first[3:]:
        consumer.seek(tp, 200)
    for tp in second[3:]:
        consumer.seek(tp, 0)
    writer = threading.Thread(target=produce, args=(
        broker.bootstrap, [("fs-a", range(6), 100), ("fs-b", range(2), 100)], "two"))
    writer.start()
    got = consume(consumer, 500)
    writer.join()
    assert sorted(got) == [("fs-a", p) for p in range(3, 6)] + [("fs-b", 0), ("fs-b", 1)]
    for (topic, p), values in got.items():
        assert values == [f"two-{p}-{r}".encode() for r in range(100)], (topic, p)
    # Nothing more comes: the forgotten partitions' new records are not sent.
    assert consume(consumer, 1, timeout=1.5) == {}
    assert wait_for(lambda: metric(broker, "fjord_fetch_session_partitions") == 5, timeout=10)
    assert metric(broker, "fjord_fetch_sessions") == 1
    consumer.close()


def test_a_full_cache_serves_fetchers_without_sessions(broker_factory, tmp_path):
    cfg = tmp_path / "one-slot.toml"
    cfg.write_text('"max.incremental.fetch.session.cache.slots" = 1\n')
    broker = broker_factory(["--config", str(cfg)])
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic("fs-c", 2, 1)])
    admin.close()
    produce(broker.bootstrap, [("fs-c", range(2), 50)], "c")
    consumers = []
    for _ in range(2):
        c = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                          auto_offset_reset="earliest", fetch_max_wait_ms=100)
        c.assign([TopicPartition("fs-c", p) for p in range(2)])
        consumers.append(c)
    for c in consumers:
        got = consume(c, 100)
        for p in range(2):
            assert got[("fs-c", p)] == [f"c-{p}-{r}".encode() for r in range(50)]
    with_session = [any(h.next_metadata.session_id != 0
                        for h in c._fetcher._session_handlers.values()) for c in consumers]
    assert with_session == [True, False], "one slot: the second consumer reads sessionless"
    assert metric(broker, "fjord_fetch_sessions") == 1
    for c in consumers:
        c.close()
