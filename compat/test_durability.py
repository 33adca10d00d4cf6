"""Nothing acknowledged is lost: SIGKILL the broker under an acks=all producer."""

import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def test_sigkill_loses_nothing_acknowledged(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("dur", num_partitions=3, replication_factor=1)])["dur"].result(10)
    acked = {}  # (partition, offset) -> value

    def on_delivery(err, msg):
        if err is None:
            acked[(msg.partition(), msg.offset())] = msg.value()

    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 1,
                  "message.timeout.ms": 30000, "reconnect.backoff.ms": 10,
                  "reconnect.backoff.max.ms": 200})
    killed_at = None
    deadline = time.monotonic() + 60
    i = 0
    while time.monotonic() < deadline and i < 30000:
        p.produce("dur", key=str(i % 17).encode(), value=f"v{i}".encode(), on_delivery=on_delivery)
        i += 1
        if i % 100 == 0:
            p.poll(0)
        if killed_at is None and len(acked) >= 3000:
            killed_at = len(acked)
            broker.kill()  # SIGKILL while requests are in flight
            broker.start()
        if killed_at is not None and len(acked) >= killed_at + 3000:
            break
        if i % 1000 == 0:
            p.flush(30)
    assert p.flush(60) == 0
    assert killed_at is not None, "the producer never got far enough to kill the broker"
    assert len(acked) > killed_at, "the producer resumed after the restart"

    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "verify",
                  "enable.auto.commit": False})
    stored = {}
    for part in range(3):
        lo, hi = c.get_watermark_offsets(TopicPartition("dur", part), timeout=10)
        c.assign([TopicPartition("dur", part, lo)])
        got = 0
        end = time.monotonic() + 30
        while got < hi - lo and time.monotonic() < end:
            m = c.poll(0.5)
            if m is None:
                continue
            assert m.error() is None, m.error()
            stored[(m.partition(), m.offset())] = m.value()
            got += 1
        assert got == hi - lo, f"partition {part}: read {got} of {hi - lo}"
    c.close()
    missing = {k: v for k, v in acked.items() if stored.get(k) != v}
    assert not missing, f"{len(missing)} acknowledged records lost or moved, e.g. {list(missing.items())[:5]}"
    # Offsets are dense per partition: nothing after the crash left a hole.
    for part in range(3):
        offsets = sorted(o for (p_, o) in stored if p_ == part)
        assert offsets == list(range(len(offsets)))
