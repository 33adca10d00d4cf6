"""Consumer groups on the classic protocol with real clients."""

import subprocess
import threading
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import wait_for


def group_broker(broker_factory, tmp_path):
    cfg = tmp_path / "groups.toml"
    cfg.write_text('"group.initial.rebalance.delay.ms" = 0\n"offsets.topic.num.partitions" = 4\n')
    return broker_factory(["--config", str(cfg)])


def produce_n(bootstrap, topic, n, partitions=6):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(10)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2})
    for i in range(n):
        p.produce(topic, key=str(i).encode(), value=f"v{i}".encode())
    assert p.flush(30) == 0


class Member(threading.Thread):
    """A consumer in a group, recording (partition, offset, value) and its assignment."""

    def __init__(self, bootstrap, group, topic, **conf):
        super().__init__(daemon=True)
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                           "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
                           "heartbeat.interval.ms": 500, "enable.auto.commit": True,
                           "auto.commit.interval.ms": 200, **conf})
        self.c.subscribe([topic])
        self.seen = []
        self.assigned = set()
        self.stop_flag = False
        self.error = None

    def run(self):
        try:
            while not self.stop_flag:
                m = self.c.poll(0.2)
                self.assigned = {tp.partition for tp in self.c.assignment()}
                if m is None:
                    continue
                if m.error():
                    continue
                self.seen.append((m.partition(), m.offset(), m.value()))
        except Exception as e:  # reported by the test
            self.error = e

    def close(self):
        self.stop_flag = True
        self.join(20)
        self.c.close()


def test_three_consumers_share_partitions_and_take_over(broker_factory, tmp_path):
    broker = group_broker(broker_factory, tmp_path)
    produce_n(broker.bootstrap, "shared", 600)
    group = f"g-{uuid.uuid4()}"
    members = [Member(broker.bootstrap, group, "shared") for _ in range(3)]
    for m in members:
        m.start()
    assert wait_for(lambda: all(len(m.assigned) == 2 for m in members)), [m.assigned for m in members]
    sets = [m.assigned for m in members]
    assert set().union(*sets) == set(range(6)) and sum(len(s) for s in sets) == 6, "no overlap, all covered"
    distinct = lambda: len({v for m in members for (_, _, v) in m.seen})
    assert wait_for(lambda: distinct() == 600)
    # One member leaves: the others take over its partitions.
    members[0].close()
    assert wait_for(lambda: len(members[1].assigned | members[2].assigned) == 6
                    and not (members[1].assigned & members[2].assigned))
    assert distinct() == 600, "every record consumed (at least once)"
    for m in members[1:]:
        m.close()
        assert m.error is None


def test_committed_offsets_resume_after_restart(broker_factory, tmp_path):
    broker = group_broker(broker_factory, tmp_path)
    produce_n(broker.bootstrap, "resume", 100, partitions=2)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "resumer", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe(["resume"])
    got = []
    end = time.monotonic() + 30
    while len(got) < 60 and time.monotonic() < end:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m)
    # Commit exactly what was consumed, with metadata.
    positions = {}
    for m in got[:60]:
        positions[m.partition()] = m.offset() + 1
    c.commit(offsets=[TopicPartition("resume", p, o, metadata=f"meta-{p}") for p, o in positions.items()],
             asynchronous=False)
    committed = c.committed([TopicPartition("resume", p) for p in positions], timeout=10)
    assert {tp.partition: tp.offset for tp in committed} == positions
    assert all(tp.metadata == f"meta-{tp.partition}" for tp in committed), "metadata round-trips"
    c.close()
    broker.restart()
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "resumer", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    committed = c.committed([TopicPartition("resume", p) for p in positions], timeout=10)
    assert {tp.partition: tp.offset for tp in committed} == positions, "offsets survive a restart"
    c.subscribe(["resume"])
    rest = []
    end = time.monotonic() + 30
    while len(rest) < 100 - sum(positions.values()) and time.monotonic() < end:
        m = c.poll(0.5)
        if m is not None and not m.error():
            rest.append(m)
    assert all(m.offset() >= positions.get(m.partition(), 0) for m in rest), "resumed from the commits"
    c.close()


def test_sigkilled_member_is_replaced_within_session_timeout(broker_factory, tmp_path):
    broker = group_broker(broker_factory, tmp_path)
    produce_n(broker.bootstrap, "killme", 10, partitions=4)
    script = f"""
import time
from confluent_kafka import Consumer
c = Consumer({{"bootstrap.servers": "{broker.bootstrap}", "group.id": "kg", "session.timeout.ms": 6000,
               "heartbeat.interval.ms": 500, "auto.offset.reset": "earliest"}})
c.subscribe(["killme"])
while True:
    c.poll(0.2)
"""
    import sys
    victim = subprocess.Popen([sys.executable, "-c", script])
    survivor = Member(broker.bootstrap, "kg", "killme")
    survivor.start()
    assert wait_for(lambda: len(survivor.assigned) == 2), survivor.assigned
    victim.kill()
    victim.wait()
    start = time.monotonic()
    assert wait_for(lambda: len(survivor.assigned) == 4, timeout=20), survivor.assigned
    assert time.monotonic() - start < 6 + 6, "taken over within the session timeout (plus a rejoin)"
    survivor.close()


def test_admin_lists_describes_and_deletes_groups(broker_factory, tmp_path):
    broker = group_broker(broker_factory, tmp_path)
    produce_n(broker.bootstrap, "adm", 10, partitions=2)
    m = Member(broker.bootstrap, "admg", "adm", **{"client.id": "admin-test"})
    m.start()
    assert wait_for(lambda: len(m.assigned) == 2)
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    listed = a.list_consumer_groups().result(10)
    assert "admg" in [g.group_id for g in listed.valid]
    desc = a.describe_consumer_groups(["admg"])["admg"].result(10)
    assert str(desc.state).endswith("STABLE")
    assert len(desc.members) == 1 and desc.members[0].client_id == "admin-test"
    assert {tp.partition for tp in desc.members[0].assignment.topic_partitions} == {0, 1}
    with pytest_raises(KafkaException):
        a.delete_consumer_groups(["admg"])["admg"].result(10)
    m.close()
    assert wait_for(lambda: str(a.describe_consumer_groups(["admg"])["admg"].result(10).state).endswith("EMPTY"))
    a.delete_consumer_groups(["admg"])["admg"].result(10)
    assert "admg" not in [g.group_id for g in a.list_consumer_groups().result(10).valid]


def pytest_raises(exc):
    import pytest
    return pytest.raises(exc)


def test_kafka_python_group(broker_factory, tmp_path):
    from kafka import KafkaConsumer
    broker = group_broker(broker_factory, tmp_path)
    produce_n(broker.bootstrap, "kpg", 200, partitions=4)
    consumers = [KafkaConsumer("kpg", bootstrap_servers=broker.bootstrap, group_id="kp-group",
                               auto_offset_reset="earliest", consumer_timeout_ms=15000,
                               session_timeout_ms=6000, heartbeat_interval_ms=500) for _ in range(2)]
    seen = set()
    end = time.monotonic() + 60

    def settled():
        parts = [c.assignment() for c in consumers]
        return all(parts) and not (parts[0] & parts[1]) and len(parts[0] | parts[1]) == 4

    while (len(seen) < 200 or not settled()) and time.monotonic() < end:
        for c in consumers:
            for tp, msgs in c.poll(timeout_ms=200).items():
                for msg in msgs:
                    seen.add(msg.value)
    assert len(seen) == 200
    assert settled(), [c.assignment() for c in consumers]
    for c in consumers:
        c.close()


def fjord_cli(broker, *args):
    import json
    import os
    out = subprocess.run([os.environ.get("FJORD_BIN", "target/debug/fjord"), *args, "--bootstrap", broker.bootstrap],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    text = out.stdout.decode()
    return [json.loads(line) for line in text.splitlines()] if "--output" in args else text


def test_group_cli_shows_lag_resets_and_history(broker_factory, tmp_path):
    broker = group_broker(broker_factory, tmp_path)
    produce_n(broker.bootstrap, "lagged", 100, partitions=2)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "cli-g", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "client.id": "lagger"})
    c.subscribe(["lagged"])
    got = []
    end = time.monotonic() + 30
    while len(got) < 30 and time.monotonic() < end:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m)
    c.commit(asynchronous=False)
    d = fjord_cli(broker, "group", "describe", "cli-g", "--output", "json")[0]
    assert d["state"] == "Stable"
    assert d["members"][0]["client_id"] == "lagger"
    assert sorted(a["partition"] for a in d["members"][0]["assignment"]) == [0, 1]
    committed = {o["partition"]: o["committed"] for o in d["offsets"]}
    assert sum(o["log_end_offset"] for o in d["offsets"]) == 100
    assert d["total_lag"] == sum(o["log_end_offset"] - o["committed"] for o in d["offsets"] if o["committed"] is not None)
    assert sum(v for v in committed.values() if v is not None) >= 30, "the commit covers what was consumed"
    assert all(o["lag_ms"] is not None for o in d["offsets"] if o["lag"]), d["offsets"]
    assert any(g["group"] == "cli-g" for g in fjord_cli(broker, "group", "list", "--output", "json")[0])
    import urllib.request
    page = urllib.request.urlopen(f"http://127.0.0.1:{broker.http_port}/metrics", timeout=10).read().decode()
    lag_lines = [l for l in page.splitlines() if l.startswith('fjord_group_lag_records{group="cli-g"')]
    assert sum(float(l.split()[-1]) for l in lag_lines) == d["total_lag"], lag_lines
    assert any(l.startswith('fjord_group_lag_seconds{group="cli-g"') for l in page.splitlines())
    assert 'fjord_group_rebalances_total{group="cli-g"} 1' in page
    history = fjord_cli(broker, "group", "history", "cli-g", "--http", f"127.0.0.1:{broker.http_port}", "--output", "json")[0]
    assert any("joined" in e["event"] for e in history) and any("stable" in e["event"] for e in history)
    c.close()
    assert wait_for(lambda: fjord_cli(broker, "group", "describe", "cli-g", "--output", "json")[0]["state"] == "Empty")
    plan = fjord_cli(broker, "group", "reset-offsets", "cli-g", "--topic", "lagged", "--to-earliest", "--output", "json")[0]
    assert plan["executed"] is False and all(p["new"] == 0 for p in plan["partitions"])
    after = fjord_cli(broker, "group", "describe", "cli-g", "--output", "json")[0]
    committed = {p: v for p, v in committed.items() if v is not None}
    assert {o["partition"]: o["committed"] for o in after["offsets"]} == committed, "a dry run changes nothing"
    fjord_cli(broker, "group", "reset-offsets", "cli-g", "--topic", "lagged", "--shift-by", "-5", "--execute")
    shifted = fjord_cli(broker, "group", "describe", "cli-g", "--output", "json")[0]
    # Every partition of the topic gets an offset; those without a commit shift from the start.
    start = {0: 0, 1: 0, **committed}
    assert {o["partition"]: o["committed"] for o in shifted["offsets"]} == {p: max(v - 5, 0) for p, v in start.items()}
    fjord_cli(broker, "group", "delete", "cli-g")
    assert not any(g["group"] == "cli-g" for g in fjord_cli(broker, "group", "list", "--output", "json")[0])


def test_static_member_restart_keeps_partitions_without_rebalance(broker_factory, tmp_path):
    broker = group_broker(broker_factory, tmp_path)
    produce_n(broker.bootstrap, "static", 10, partitions=4)
    conf = {"group.instance.id": "worker-1", "session.timeout.ms": 10000}
    a = Member(broker.bootstrap, "sg", "static", **conf)
    b = Member(broker.bootstrap, "sg", "static", **{"group.instance.id": "worker-2", "session.timeout.ms": 10000})
    a.start()
    b.start()
    assert wait_for(lambda: len(a.assigned) == 2 and len(b.assigned) == 2)
    before = set(a.assigned)
    gen_before = fjord_cli(broker, "group", "describe", "sg", "--output", "json")[0]
    rebalances = lambda: sum(1 for e in fjord_cli(broker, "group", "history", "sg", "--http",
                                                  f"127.0.0.1:{broker.http_port}", "--output", "json")[0]
                             if "formed" in e["event"])
    formed = rebalances()
    # A static member stops without leaving (as a restart does) and comes back in time.
    a.stop_flag = True
    a.join(20)
    a.c.close()  # static members do not send LeaveGroup on close
    a2 = Member(broker.bootstrap, "sg", "static", **conf)
    a2.start()
    assert wait_for(lambda: len(a2.assigned) == 2)
    assert a2.assigned == before, "the restarted static member gets its partitions back"
    assert rebalances() == formed, "and no rebalance happened"
    assert b.assigned and not (b.assigned & a2.assigned)
    a2.close()
    b.close()
    assert gen_before["state"] == "Stable"


def test_cooperative_sticky_rebalances_incrementally(broker_factory, tmp_path):
    broker = group_broker(broker_factory, tmp_path)
    produce_n(broker.bootstrap, "coop", 300, partitions=6)
    conf = {"partition.assignment.strategy": "cooperative-sticky"}
    a = Member(broker.bootstrap, "cg", "coop", **conf)
    a.start()
    assert wait_for(lambda: len(a.assigned) == 6)
    kept_by_a = []
    b = Member(broker.bootstrap, "cg", "coop", **conf)
    b.start()
    assert wait_for(lambda: len(a.assigned) == 3 and len(b.assigned) == 3), (a.assigned, b.assigned)
    assert not (a.assigned & b.assigned)
    assert wait_for(lambda: len({v for m in (a, b) for (_, _, v) in m.seen}) == 300)
    a.close()
    b.close()


def test_offsets_of_empty_groups_expire_after_retention(broker_factory, tmp_path):
    cfg = tmp_path / "retention.toml"
    cfg.write_text('"offsets.retention.minutes" = 1\n"log.retention.check.interval.ms" = 500\n'
                   '"offsets.topic.num.partitions" = 2\n')
    broker = broker_factory(["--config", str(cfg)])
    produce_n(broker.bootstrap, "expiring", 10, partitions=1)
    # A tool commit for a group without members, then nothing: after a minute it is gone.
    fjord_cli(broker, "group", "reset-offsets", "idle", "--topic", "expiring", "--to-offset", "5", "--execute")
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "idle"})
    assert c.committed([TopicPartition("expiring", 0)], timeout=10)[0].offset == 5
    assert wait_for(lambda: c.committed([TopicPartition("expiring", 0)], timeout=10)[0].offset < 0, timeout=90, step=2)
    c.close()
    # The expiry is durable: a restart does not bring the offset back.
    broker.restart()
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "idle"})
    assert c.committed([TopicPartition("expiring", 0)], timeout=10)[0].offset < 0
    c.close()
