"""KIP-848 consumer groups (group.protocol=consumer) with librdkafka."""

import threading
import time
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import wait_for


def setup(broker_factory, tmp_path, topic, partitions, n):
    cfg = tmp_path / "kip848.toml"
    cfg.write_text('"group.consumer.heartbeat.interval.ms" = 500\n"group.consumer.session.timeout.ms" = 6000\n'
                   '"offsets.topic.num.partitions" = 4\n')
    broker = broker_factory(["--config", str(cfg)])
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(10)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 2})
    for i in range(n):
        p.produce(topic, key=str(i).encode(), value=f"v{i}".encode())
    assert p.flush(30) == 0
    return broker, admin


class Member(threading.Thread):
    def __init__(self, bootstrap, group, topic, **conf):
        super().__init__(daemon=True)
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "group.protocol": "consumer",
                           "auto.offset.reset": "earliest", "enable.auto.commit": True,
                           "auto.commit.interval.ms": 200, **conf})
        self.c.subscribe([topic])
        self.seen = []
        self.assigned = set()
        self.stop_flag = False

    def run(self):
        while not self.stop_flag:
            m = self.c.poll(0.2)
            self.assigned = {tp.partition for tp in self.c.assignment()}
            if m is not None and not m.error():
                self.seen.append((m.partition(), m.offset(), m.value()))

    def close(self):
        self.stop_flag = True
        self.join(20)
        self.c.close()


def test_consumer_protocol_group_shares_partitions_and_rebalances(broker_factory, tmp_path):
    broker, admin = setup(broker_factory, tmp_path, "kip848", 6, 600)
    group = f"cg-{uuid.uuid4()}"
    members = [Member(broker.bootstrap, group, "kip848") for _ in range(3)]
    for m in members:
        m.start()
    assert wait_for(lambda: all(len(m.assigned) == 2 for m in members), timeout=40), [m.assigned for m in members]
    assert set().union(*[m.assigned for m in members]) == set(range(6))
    assert wait_for(lambda: len({v for m in members for (_, _, v) in m.seen}) == 600, timeout=40)
    described = admin.describe_consumer_groups([group])[group].result(10)
    assert len(described.members) == 3
    listed = admin.list_consumer_groups().result(10)
    assert group in [g.group_id for g in listed.valid]
    members[0].close()
    assert wait_for(lambda: len(members[1].assigned | members[2].assigned) == 6
                    and not (members[1].assigned & members[2].assigned), timeout=40)
    for m in members[1:]:
        m.close()


def test_consumer_protocol_commits_resume(broker_factory, tmp_path):
    broker, _ = setup(broker_factory, tmp_path, "kip848c", 2, 100)
    m = Member(broker.bootstrap, "resume-848", "kip848c", **{"enable.auto.commit": False})
    m.start()
    assert wait_for(lambda: len(m.seen) == 100, timeout=40)
    # Commit from the main thread once the member thread stopped polling (one thread per
    # consumer handle at a time).
    m.stop_flag = True
    m.join(20)
    m.c.commit(asynchronous=False)
    m.c.close()
    m2 = Member(broker.bootstrap, "resume-848", "kip848c")
    m2.start()
    assert wait_for(lambda: len(m2.assigned) == 2, timeout=40)
    assert not wait_for(lambda: m2.seen, timeout=3), "nothing is re-read after the commit"
    m2.close()


def test_consumer_protocol_sigkilled_member_is_replaced(broker_factory, tmp_path):
    import subprocess
    import sys
    broker, _ = setup(broker_factory, tmp_path, "kip848k", 4, 10)
    script = f"""
from confluent_kafka import Consumer
c = Consumer({{"bootstrap.servers": "{broker.bootstrap}", "group.id": "k848", "group.protocol": "consumer",
               "auto.offset.reset": "earliest"}})
c.subscribe(["kip848k"])
while True:
    c.poll(0.2)
"""
    victim = subprocess.Popen([sys.executable, "-c", script])
    survivor = Member(broker.bootstrap, "k848", "kip848k")
    survivor.start()
    assert wait_for(lambda: len(survivor.assigned) == 2, timeout=40), survivor.assigned
    victim.kill()
    victim.wait()
    start = time.monotonic()
    assert wait_for(lambda: len(survivor.assigned) == 4, timeout=30), survivor.assigned
    assert time.monotonic() - start < 6 + 5, "taken over within the session timeout"
    survivor.close()


def test_consumer_protocol_group_survives_broker_restart(broker_factory, tmp_path):
    import json
    import urllib.request
    broker, _ = setup(broker_factory, tmp_path, "kip848r", 2, 10)
    m = Member(broker.bootstrap, "r848", "kip848r")
    m.start()
    assert wait_for(lambda: len(m.assigned) == 2 and len(m.seen) == 10, timeout=40)
    broker.restart()

    def history():
        url = f"http://127.0.0.1:{broker.http_port}/v1/groups/r848/history"
        return json.loads(urllib.request.urlopen(url, timeout=10).read())

    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(10):
        p.produce("kip848r", key=str(i).encode(), value=f"after{i}".encode())
    assert p.flush(30) == 0
    assert wait_for(lambda: len(m.seen) == 20, timeout=40), len(m.seen)
    assert not [e for e in history() if "joined" in e["event"]], "the member went on with its epoch, no rejoin"
    assert len(m.assigned) == 2
    m.close()
