"""Topic configs take effect on a running broker."""

import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import wait_for


def test_retention_ms_deletes_old_segments(tmp_path, broker_factory):
    config = tmp_path / "fjord.toml"
    config.write_text('"log.retention.check.interval.ms" = 200\n')
    broker = broker_factory(["--config", str(config)])
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("short", num_partitions=1, replication_factor=1,
                                  config={"retention.ms": "60000", "internal.segment.bytes": "2000"})])["short"].result(10)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0})
    old = int(time.time() * 1000) - 3_600_000  # an hour ago: past retention at once
    for i in range(60):
        p.produce("short", value=b"x" * 100, timestamp=old + i)
        p.flush(10)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "w"})
    tp = TopicPartition("short", 0)
    assert c.get_watermark_offsets(tp, timeout=10)[1] == 60
    assert wait_for(lambda: c.get_watermark_offsets(tp, timeout=10)[0] == 60), \
        f"log start offset stuck at {c.get_watermark_offsets(tp, timeout=10)}"
    # New data is still accepted and readable after everything old was deleted.
    p.produce("short", value=b"fresh")
    p.flush(10)
    assert c.get_watermark_offsets(tp, timeout=10) == (60, 61)
    c.close()


def test_log_append_time_and_max_message_bytes(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("lat", num_partitions=1, replication_factor=1,
                                  config={"message.timestamp.type": "LogAppendTime"})])["lat"].result(10)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    reports = []
    before = int(time.time() * 1000)
    p.produce("lat", value=b"a", timestamp=1000, on_delivery=lambda e, m: reports.append(m.timestamp()))
    p.flush(10)
    after = int(time.time() * 1000)
    ttype, ts = reports[0]
    assert ttype == 2, "the delivery report carries LogAppendTime"
    assert before - 1000 <= ts <= after + 1000
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "lat", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.assign([TopicPartition("lat", 0, 0)])
    m = None
    end = time.monotonic() + 10
    while m is None and time.monotonic() < end:
        m = c.poll(0.5)
    assert m.timestamp() == (2, ts), "consumers see the broker's append time"
    c.close()


def test_min_insync_replicas_is_capped_at_the_replica_count(broker):
    # Kafka 4 counts min.insync.replicas against the partition's replicas at most
    # (Partition.effectiveMinIsr): one replica and min.insync.replicas=2 takes acks=all
    # (checked against Apache Kafka 4.4). With more replicas than in sync, acks=all is
    # refused: test_replication.py.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("isr2", num_partitions=1, replication_factor=1,
                                  config={"min.insync.replicas": "2"})])["isr2"].result(10)
    for acks in ("all", "1"):
        done = []
        p = Producer({"bootstrap.servers": broker.bootstrap, "acks": acks,
                      "message.timeout.ms": 5000, "retries": 0})
        p.produce("isr2", value=b"a", on_delivery=lambda e, m: done.append(e))
        p.flush(10)
        assert done == [None], f"acks={acks}"


def test_auto_creation_uses_num_partitions_and_can_be_off(tmp_path, broker_factory):
    on = tmp_path / "on.toml"
    on.write_text('"num.partitions" = 3\n')
    b = broker_factory(["--config", str(on)])
    p = Producer({"bootstrap.servers": b.bootstrap})
    p.produce("auto", value=b"x")
    assert p.flush(10) == 0
    md = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=10)
    assert len(md.topics["auto"].partitions) == 3

    off = tmp_path / "off.toml"
    off.write_text('"auto.create.topics.enable" = false\n')
    b2 = broker_factory(["--config", str(off)])
    errs = []
    p2 = Producer({"bootstrap.servers": b2.bootstrap, "message.timeout.ms": 2000})
    p2.produce("nope", value=b"x", on_delivery=lambda e, m: errs.append(e))
    p2.flush(10)
    assert errs and errs[0] is not None, "no topic, no auto-creation: the produce fails"
    md = AdminClient({"bootstrap.servers": b2.bootstrap}).list_topics(timeout=10)
    assert "nope" not in md.topics


def test_concurrent_incremental_changes_are_all_kept(broker):
    """Eight admin clients each SET a different key of one topic at the same moment: every
    change is kept (a read-modify-write outside the broker's admin lock lost some)."""
    import threading
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType
    keys = {"retention.ms": "86400001", "segment.ms": "86400002", "delete.retention.ms": "86400003",
            "file.delete.delay.ms": "60004", "flush.ms": "86400005", "max.compaction.lag.ms": "86400006",
            "min.compaction.lag.ms": "7", "message.timestamp.after.max.ms": "86400008"}
    admins = [AdminClient({"bootstrap.servers": broker.bootstrap}) for _ in keys]
    admins[0].create_topics([NewTopic("racy", num_partitions=1, replication_factor=1)])["racy"].result(10)
    for a in admins:  # connect every client before the race
        a.list_topics(timeout=10)
    for round in range(5):
        start = threading.Barrier(len(keys))
        errors = []

        def change(admin, key, value):
            res = ConfigResource(ResourceType.TOPIC, "racy", incremental_configs=[
                ConfigEntry(key, value + str(round), incremental_operation=AlterConfigOpType.SET)])
            start.wait()
            try:
                admin.incremental_alter_configs([res])[res].result(10)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=change, args=(a, k, v)) for a, (k, v) in zip(admins, keys.items())]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors
        res = ConfigResource(ResourceType.TOPIC, "racy")
        described = admins[0].describe_configs([res])[res].result(10)
        got = {k: described[k].value for k in keys}
        assert got == {k: v + str(round) for k, v in keys.items()}, f"round {round}: {got}"
