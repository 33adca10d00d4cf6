"""Kafka Streams 4.4 on Kafka and on Fjord: a word count with exactly_once_v2
(compat/java/WordCount.java), killed with SIGKILL in the middle and restarted on an empty
state directory (its state comes back from the changelog); the output read with
read_committed must count every word 1, 2, 3, ... exactly once, and the repartition and
changelog topics Streams creates must look as they do on Kafka."""

import queue
import subprocess
import threading

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from conftest import three_nodes, wait_for
from diff import compare, unique

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon"]


def line(i):
    return " ".join(WORDS[(i * k) % len(WORDS)] for k in (1, 2, 3))


class App:
    """The word-count application as a child JVM; `start` returns once it is RUNNING."""

    def __init__(self, java, bootstrap, app_id, topic_in, topic_out, state, replication=1):
        self.cmd = ["java", f"-Dlog4j2.configurationFile={java.log4j}", "-Xmx512m", "-cp",
                    java.classpath, "WordCount", app_id, bootstrap, topic_in, topic_out, str(state),
                    str(replication)]
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True)
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x.strip()) for x in self.proc.stdout],
                         daemon=True).start()
        state = lines.get(timeout=120)
        assert state == "RUNNING", f"streams app: {state}\n{self.proc.stderr.read()[-3000:]}"

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def read_counts(bootstrap, topic, expected, timeout=120):
    """Every (word, count) on `topic` read with read_committed, until each word's last count
    reaches the expected one (or the timeout)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("reader"),
                  "isolation.level": "read_committed", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(2)])
    seen = {}

    def done():
        for m in c.consume(500, timeout=0.5):
            if m.error() is None:
                seen.setdefault(m.key().decode(), []).append(int.from_bytes(m.value(), "big"))
        return all(seen.get(w, [0])[-1] >= n for w, n in expected.items())
    wait_for(done, timeout=timeout, step=0)
    c.close()
    return seen


def streams_scenario(t, java, tmp):
    app_id = unique(f"wc{t.name}")
    topic_in, topic_out = f"{app_id}-lines", f"{app_id}-counts"
    a = AdminClient({"bootstrap.servers": t.bootstrap})
    for f in a.create_topics([NewTopic(topic_in, 2, 1), NewTopic(topic_out, 2, 1)]).values():
        f.result(15)
    lines = [line(i) for i in range(120)]
    expected = {}
    for text in lines:
        for w in text.split():
            expected[w] = expected.get(w, 0) + 1
    p = Producer({"bootstrap.servers": t.bootstrap, "linger.ms": 5})
    app = App(java, t.bootstrap, app_id, topic_in, topic_out, tmp / f"{app_id}-state-1")
    try:
        app.start()
        for i, text in enumerate(lines[:60]):
            p.produce(topic_in, text.encode(), key=str(i).encode())
        assert p.flush(15) == 0
        # Some output committed, then a crash in the middle.
        half = {w: 1 for w in WORDS}
        read_counts(t.bootstrap, topic_out, half, timeout=60)
        app.kill()
        app = App(java, t.bootstrap, app_id, topic_in, topic_out, tmp / f"{app_id}-state-2")
        app.start()
        for i, text in enumerate(lines[60:], 60):
            p.produce(topic_in, text.encode(), key=str(i).encode())
        assert p.flush(15) == 0
        counts = read_counts(t.bootstrap, topic_out, expected)
    finally:
        app.stop()
    internal = sorted(n for n in a.list_topics(timeout=10).topics if n.startswith(app_id + "-")
                      and n not in (topic_in, topic_out))
    described = {}
    for name in internal:
        res = ConfigResource(ResourceType.TOPIC, name)
        cfg = a.describe_configs([res])[res].result(10)
        md = a.list_topics(name, timeout=10).topics[name]
        described[name.replace(app_id, "<app>")] = {
            "partitions": len(md.partitions),
            "cleanup.policy": cfg["cleanup.policy"].value,
            "overrides": sorted(k for k, v in cfg.items() if v.source == 1)}
    return {"counts": counts, "expected": expected, "internal_topics": described}


@pytest.mark.compat("Kafka Streams 4.4", "word count, exactly_once_v2, SIGKILL and restart")
def test_streams_exactly_once_survives_a_kill(both, java, tmp_path):
    kafka, fjord = compare(both, streams_scenario, java, tmp_path)
    for result in (kafka, fjord):
        for w, n in result["expected"].items():
            assert result["counts"][w] == list(range(1, n + 1)), f"{w}: {result['counts'][w]}"


@pytest.fixture
def cluster(tmp_path):
    yield from three_nodes(tmp_path, '"replica.lag.time.max.ms" = 4000\n')


@pytest.mark.compat("Kafka Streams 4.4", "word count, exactly_once_v2, on three Fjord nodes (replication factor 3) through the kill -9 of its group coordinator's broker")
def test_streams_exactly_once_survives_a_broker_kill(cluster, java, tmp_path):
    servers = ",".join(n.bootstrap for n in cluster)
    app_id = unique("wc3")
    topic_in, topic_out = f"{app_id}-lines", f"{app_id}-counts"
    a = AdminClient({"bootstrap.servers": servers})
    for f in a.create_topics([NewTopic(t, 2, 3, config={"min.insync.replicas": "2"})
                              for t in (topic_in, topic_out)]).values():
        f.result(30)
    lines = [line(i) for i in range(120)]
    expected = {}
    for text in lines:
        for w in text.split():
            expected[w] = expected.get(w, 0) + 1
    p = Producer({"bootstrap.servers": servers, "acks": "all", "enable.idempotence": True})
    app = App(java, servers, app_id, topic_in, topic_out, tmp_path / "state", replication=3)
    killed = None
    try:
        app.start()
        for i, text in enumerate(lines[:60]):
            p.produce(topic_in, text.encode(), key=str(i).encode())
        assert p.flush(30) == 0
        read_counts(servers, topic_out, {w: 1 for w in WORDS}, timeout=60)
        # The broker coordinating the application's group (and perhaps its transactions, or
        # leading its partitions) dies mid-stream.
        killed = a.describe_consumer_groups([app_id])[app_id].result(10).coordinator.id
        cluster[killed - 1].kill()
        for i, text in enumerate(lines[60:], 60):
            p.produce(topic_in, text.encode(), key=str(i).encode())
        assert p.flush(60) == 0
        counts = read_counts(servers, topic_out, expected, timeout=180)
        assert app.proc.poll() is None, "the streams application died"
    finally:
        app.stop()
        if killed:
            cluster[killed - 1].start(timeout=60)
    for w, n in expected.items():
        assert counts[w] == list(range(1, n + 1)), f"{w}: {counts[w]}"
