"""Replicated partitions on three Fjord processes: followers copy their leaders, acks=all waits
for the in-sync replicas, a killed leader is replaced from them, and nothing acknowledged is
lost or duplicated."""

import json
import signal
import subprocess
import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import (FJORD_BIN, Broker, free_port, three_nodes, three_nodes_in_namespaces,
                      wait_for)

# A short lag bound, so ISR changes show within seconds.
LAG = '"replica.lag.time.max.ms" = 4000\n'


@pytest.fixture
def cluster(tmp_path):
    yield from three_nodes(tmp_path, LAG)


@pytest.fixture
def rack_cluster(tmp_path):
    """Three nodes in racks rack1..rack3 whose leaders send consumers to their rack's replica."""
    yield from three_nodes(
        tmp_path,
        LAG + '"replica.selector.class" = '
              '"org.apache.kafka.common.replica.RackAwareReplicaSelector"\n',
        node_args={i: ["--rack", f"rack{i}"] for i in (1, 2, 3)})


@pytest.fixture
def net_cluster(tmp_path):
    """Three nodes, each in a network namespace of its own, and the links between them."""
    yield from three_nodes_in_namespaces(tmp_path, LAG)


def partitions(admin, topic):
    """{partition: (leader, replicas, isrs)} as Metadata describes them."""
    md = admin.list_topics(topic, timeout=10).topics[topic]
    return {p: (m.leader, sorted(m.replicas), sorted(m.isrs)) for p, m in md.partitions.items()}


def produce(bootstrap, topic, values, acked, timeout=60, **config):
    """Sends `values` with an idempotent acks=all producer; adds each acknowledged one to
    `acked` ({value: (partition, offset)}); returns the delivery errors."""
    errors = []

    def done(err, msg):
        if err is None:
            acked[msg.value()] = (msg.partition(), msg.offset())
        else:
            errors.append(err)

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                  "message.timeout.ms": int(timeout * 1000), **config})
    for v in values:
        while True:
            try:
                p.produce(topic, value=v, key=v, on_delivery=done)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    p.flush(timeout + 10)
    return errors


class Producing:
    """`produce` in rounds of `batch` values ("{topic}{n}") on a thread of its own until
    `stop()`: `acked` and `errors` fill as `produce` fills them."""

    def __init__(self, servers, topic, batch=50):
        self.acked, self.errors = {}, []
        self.done = threading.Event()

        def run():
            i = 0
            while not self.done.is_set():
                values = [f"{topic}{i + k}".encode() for k in range(batch)]
                self.errors.extend(produce(servers, topic, values, self.acked))
                i += batch
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def stop(self):
        self.done.set()
        self.thread.join(120)


def read_all(bootstrap, topic, nparts, until):
    """Every record of `topic` from offset 0, as {partition: [(offset, value)]}, polled until
    `until(count)` holds or 60 s pass."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{time.monotonic()}",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(nparts)])
    got = {p: [] for p in range(nparts)}
    end = time.monotonic() + 60
    while not until(sum(map(len, got.values()))) and time.monotonic() < end:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got[m.partition()].append((m.offset(), m.value()))
    c.close()
    return got


def check(acked, got):
    """Every acknowledged record is there once, at the offset it was acknowledged with;
    offsets rise within each partition."""
    seen = {}
    for part, records in got.items():
        offsets = [o for o, _ in records]
        assert offsets == sorted(set(offsets)), f"partition {part} offsets repeat or go back"
        for o, v in records:
            assert v not in seen, f"{v!r} read twice: {seen[v]} and {(part, o)}"
            seen[v] = (part, o)
    lost = [v for v in acked if v not in seen]
    assert not lost, f"{len(lost)} acknowledged records lost, e.g. {lost[:5]}"
    moved = [(v, acked[v], seen[v]) for v in acked if seen[v] != acked[v]]
    assert not moved, f"records read at other offsets than acknowledged: {moved[:5]}"


def leader_seen_by(node, topic):
    """The leader of `topic`'s partition 0 in `node`'s own metadata (the fjord CLI asks only its
    bootstrap broker); None if it does not answer."""
    done = subprocess.run([FJORD_BIN, "topic", "describe", topic, "-o", "json",
                           "-b", node.bootstrap, "--timeout-ms", "5000"],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        return None
    return json.loads(done.stdout)["partitions"][0]["leader"]


def isr_seen_by(node, topic):
    """The in-sync replicas of `topic`'s partition 0 in `node`'s own metadata ([] if it does not
    answer)."""
    done = subprocess.run([FJORD_BIN, "topic", "describe", topic, "-o", "json",
                           "-b", node.bootstrap, "--timeout-ms", "5000"],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        return []
    return json.loads(done.stdout)["partitions"][0]["isr"]


def returned_leader_serves(cluster, topic, old, acked):
    """Kills the current leader of `topic`'s partition 0; the returned broker `old` (first in
    sync in replica order) leads again and serves the 150 records acknowledged in `acked`, at
    their offsets, and no unreplicated tail. Returns the values read; the killed leader is
    started again."""
    a = AdminClient({"bootstrap.servers": ",".join(n.bootstrap for n in cluster)})
    current = partitions(a, topic)[0][0]
    cluster[current - 1].kill()
    assert wait_for(lambda: partitions(a, topic)[0][0] not in (current, -1), timeout=30)
    leader = partitions(a, topic)[0][0]
    assert leader == old, f"the returned broker leads again (first in sync in replica order): {leader}"
    got = read_all(cluster[leader - 1].bootstrap, topic, 1, lambda n: n >= 150)
    check(acked, got)
    values = [v for _, v in got[0]]
    assert not any(v.startswith(b"tail") for v in values), "an unreplicated tail was served"
    assert len(values) == 150
    cluster[current - 1].start(timeout=60)
    return values


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "Replication factor 3: a leader killed under acks=all load, nothing acknowledged lost")
def test_a_killed_leader_is_replaced_and_nothing_acknowledged_is_lost(cluster):
    a = AdminClient({"bootstrap.servers": cluster[0].bootstrap})
    a.create_topics([NewTopic("r", 3, 3, config={"min.insync.replicas": "2"})])["r"].result(30)
    wait_for(lambda: all(len(i) == 3 for _, _, i in partitions(a, "r").values()), timeout=20)
    placed = partitions(a, "r")
    assert all(r == [1, 2, 3] for _, r, _ in placed.values()), placed
    acked = {}
    errors = produce(cluster[0].bootstrap, "r", [f"a{i}".encode() for i in range(1500)], acked)
    assert not errors and len(acked) == 1500, errors[:3]

    # kill -9 the leader of partition 0 while records keep coming.
    victim = placed[0][0]
    survivor = next(n for n in cluster if n is not cluster[victim - 1])
    cluster[victim - 1].kill()
    killed = time.monotonic()
    errors = produce(survivor.bootstrap, "r", [f"b{i}".encode() for i in range(1500)], acked)
    assert not errors, errors[:3]
    assert len(acked) == 3000
    sa = AdminClient({"bootstrap.servers": survivor.bootstrap})
    after = partitions(sa, "r")
    assert after[0][0] not in (victim, -1), after
    assert all(victim not in isr for _, _, isr in after.values()), after
    took = time.monotonic() - killed
    got = read_all(survivor.bootstrap, "r", 3, lambda n: n >= 3000)
    check(acked, got)

    # The killed broker comes back, catches up and rejoins every ISR; then another broker is
    # killed, and the records are all there, read through the partitions' new leaders.
    cluster[victim - 1].start(timeout=60)
    wait_for(lambda: all(len(i) == 3 for _, _, i in partitions(sa, "r").values()), timeout=60)
    second = next(n for n in cluster if n is not cluster[victim - 1] and n is not survivor)
    second.kill()
    wait_for(lambda: all(l not in (-1, cluster.index(second) + 1)
                         for l, _, _ in partitions(sa, "r").values()), timeout=30)
    got = read_all(survivor.bootstrap, "r", 3, lambda n: n >= 3000)
    check(acked, got)
    print(f"acks=all records all acknowledged {took:.1f} s after the leader's kill -9")


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "Too few in-sync replicas: NOT_ENOUGH_REPLICAS, or no acknowledgement without a quorum; writes resume when brokers return")
def test_too_few_in_sync_replicas_refuse_acks_all(cluster):
    a = AdminClient({"bootstrap.servers": cluster[0].bootstrap})
    a.create_topics([NewTopic("m", 1, 3, config={"min.insync.replicas": "3"})])["m"].result(30)
    wait_for(lambda: len(partitions(a, "m")[0][2]) == 3, timeout=20)
    leader = partitions(a, "m")[0][0]
    acked = {}
    assert not produce(cluster[0].bootstrap, "m", [b"before"], acked)
    # A follower down: once it is fenced it leaves the ISR, and acks=all is refused.
    follower = next(i for i in (1, 2, 3) if i != leader)
    cluster[follower - 1].kill()
    la = AdminClient({"bootstrap.servers": cluster[leader - 1].bootstrap})
    assert wait_for(lambda: len(partitions(la, "m")[0][2]) == 2, timeout=30)
    once = {"enable.idempotence": False, "retries": 0}
    at_leader = cluster[leader - 1].bootstrap
    la = AdminClient({"bootstrap.servers": at_leader})
    errors = produce(at_leader, "m", [b"refused"], acked, timeout=5, **once)
    assert [e.name() for e in errors] == ["NOT_ENOUGH_REPLICAS"] and b"refused" not in acked
    cluster[follower - 1].start(timeout=60)
    assert wait_for(lambda: len(partitions(la, "m")[0][2]) == 3, timeout=60)
    assert not produce(at_leader, "m", [b"after"], acked)

    # Two brokers down (the metadata quorum with them): the ISR cannot shrink, the high
    # watermark cannot move, nothing is acknowledged; back up, writes resume.
    down = [i for i in (1, 2, 3) if i != leader]
    for i in down:
        cluster[i - 1].kill()
    errors = produce(cluster[leader - 1].bootstrap, "m", [b"unacknowledged"], acked,
                     timeout=5, **once)
    assert errors and b"unacknowledged" not in acked
    for i in down:
        cluster[i - 1].start(timeout=60)
    assert not produce(cluster[leader - 1].bootstrap, "m", [b"resumed"], acked)
    got = read_all(cluster[leader - 1].bootstrap, "m", 1, lambda n: n >= 4)
    check(acked, got)
    values = [v for _, v in got[0]]
    assert values[:2] == [b"before", b"after"] and values[-1] == b"resumed", values


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "Two of three brokers down, the controllers up: exactly NOT_ENOUGH_REPLICAS, nothing acknowledged; back up: writes resume")
def test_two_of_three_brokers_down_refuse_acks_all_with_not_enough_replicas(tmp_path):
    # Three controller-only voters beside three broker-only nodes, so the quorum outlives
    # the brokers and the in-sync replicas can shrink to the leader alone.
    controllers = {i: f"127.0.0.1:{free_port()}" for i in range(1, 7)}
    voters = ",".join(f"{i}@{controllers[i]}" for i in (1, 2, 3))
    config = tmp_path / "cluster.toml"
    config.write_text('"broker.heartbeat.interval.ms" = 300\n"broker.session.timeout.ms" = 2000\n'
                      + LAG)
    nodes = {i: Broker(tmp_path / f"node{i}", ["--node-id", str(i), "--voters", voters,
                                               "--controller-listen", controllers[i],
                                               "--config", str(config), "--process-roles",
                                               "controller" if i <= 3 else "broker"])
             for i in range(1, 7)}
    try:
        for n in nodes.values():
            n.launch()
        for i in (4, 5, 6):
            nodes[i].wait_ready(timeout=60)
        a = AdminClient({"bootstrap.servers": nodes[4].bootstrap})
        assert wait_for(lambda: sorted(a.list_topics(timeout=5).brokers) == [4, 5, 6], timeout=30)
        a.create_topics([NewTopic("two", 1, 3, config={"min.insync.replicas": "2"})])["two"] \
            .result(30)
        assert wait_for(lambda: len(partitions(a, "two")[0][2]) == 3, timeout=30)
        leader = partitions(a, "two")[0][0]
        at_leader = nodes[leader].bootstrap
        acked = {}
        assert not produce(at_leader, "two", [b"before"], acked)
        down = [i for i in (4, 5, 6) if i != leader]
        for i in down:
            nodes[i].kill()
        la = AdminClient({"bootstrap.servers": at_leader})
        assert wait_for(lambda: partitions(la, "two")[0][2] == [leader], timeout=30)
        once = {"enable.idempotence": False, "retries": 0}
        errors = produce(at_leader, "two", [b"refused"], acked, timeout=10, **once)
        assert [e.name() for e in errors] == ["NOT_ENOUGH_REPLICAS"], errors
        assert b"refused" not in acked
        for i in down:
            nodes[i].start(timeout=60)
        assert wait_for(lambda: len(partitions(la, "two")[0][2]) == 3, timeout=60)
        assert not produce(at_leader, "two", [b"after"], acked)
        got = read_all(at_leader, "two", 1, lambda n: n >= 2)
        check(acked, got)
        assert [v for _, v in got[0]] == [b"before", b"after"]
    finally:
        for n in nodes.values():
            n.stop()


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "A leader's unreplicated tail: killed, replaced, back as a follower: the tail is truncated, never served")
def test_a_returning_leader_truncates_its_divergent_tail(cluster):
    import signal

    a = AdminClient({"bootstrap.servers": cluster[0].bootstrap})
    a.create_topics([NewTopic("d", 1, 3, config={"min.insync.replicas": "2"})])["d"].result(30)
    assert wait_for(lambda: len(partitions(a, "d")[0][2]) == 3, timeout=20)
    old, replicas, _ = partitions(a, "d")[0]
    acked = {}
    assert not produce(cluster[0].bootstrap, "d", [f"a{i}".encode() for i in range(100)], acked)
    # The followers pause (shorter than a broker session): the leader takes acks=1 records
    # they never fetch, then dies with them.
    followers = [i for i in replicas if i != old]
    for i in followers:
        cluster[i - 1].proc.send_signal(signal.SIGSTOP)
    # Longer than a follower's fetch waits at the leader (500 ms): no fetch is parked there
    # to carry the tail to a paused follower's socket.
    time.sleep(0.8)
    tail = Producer({"bootstrap.servers": cluster[old - 1].bootstrap, "acks": "1"})
    for i in range(20):
        tail.produce("d", value=f"tail{i}".encode())
    assert tail.flush(5) == 0
    cluster[old - 1].kill()
    for i in followers:
        cluster[i - 1].proc.send_signal(signal.SIGCONT)
    survivor = cluster[followers[0] - 1]
    sa = AdminClient({"bootstrap.servers": survivor.bootstrap})
    assert wait_for(lambda: partitions(sa, "d")[0][0] in followers, timeout=30)
    # The new leader takes new records at the offsets the dead leader's tail holds.
    assert not produce(survivor.bootstrap, "d", [f"b{i}".encode() for i in range(50)], acked)
    # The old leader returns as a follower, truncates, catches up and rejoins the ISR...
    cluster[old - 1].start(timeout=60)
    assert wait_for(lambda: len(partitions(sa, "d")[0][2]) == 3, timeout=60), partitions(sa, "d")
    text = cluster[old - 1].log()
    assert "truncating a divergent tail" in text, "the returning leader truncated nothing"
    # ...and, leading again once the current leader is gone, serves the log as acknowledged.
    returned_leader_serves(cluster, "d", old, acked)


@pytest.mark.parametrize("killed", [True, False], ids=["killed", "healed"])
@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "A leader cut off from the other brokers by the network (clients still reach it) takes acks=1 records, is replaced, then returns (killed and restarted, or the cut healed): the tail is truncated, never served")
def test_a_leader_cut_off_by_the_network_truncates_its_tail(net_cluster, killed):
    cluster, net = net_cluster
    a = AdminClient({"bootstrap.servers": ",".join(n.bootstrap for n in cluster)})
    a.create_topics([NewTopic("n", 1, 3, config={"min.insync.replicas": "2"})])["n"].result(30)
    assert wait_for(lambda: len(partitions(a, "n")[0][2]) == 3, timeout=20)
    old, replicas, _ = partitions(a, "n")[0]
    acked = {}
    assert not produce(cluster[0].bootstrap, "n", [f"a{i}".encode() for i in range(100)], acked)
    others = [i for i in (1, 2, 3) if i != old]
    net.split([old], others)
    # The cut-off leader still takes acks=1 records (as Kafka's does until it learns better);
    # acks=all ones it cannot commit without its followers.
    tail = Producer({"bootstrap.servers": cluster[old - 1].bootstrap, "acks": "1"})
    for i in range(20):
        tail.produce("n", value=f"tail{i}".encode())
    assert tail.flush(5) == 0
    stuck = produce(cluster[old - 1].bootstrap, "n", [b"never"], {}, timeout=3)
    assert stuck, "an acks=all record was acknowledged by a leader cut off from its followers"
    # The others fence it (its heartbeats no longer arrive) and elect a new leader...
    sa = AdminClient({"bootstrap.servers": ",".join(cluster[i - 1].bootstrap for i in others)})
    # Asked of a survivor itself: librdkafka may take its metadata from the cut-off leader,
    # which clients still reach and which still names itself.
    assert wait_for(lambda: leader_seen_by(cluster[others[0] - 1], "n") in others, timeout=30)
    # ...which takes new records at the offsets of the tail.
    assert not produce(",".join(cluster[i - 1].bootstrap for i in others), "n",
                       [f"b{i}".encode() for i in range(50)], acked)
    if killed:
        cluster[old - 1].kill()
    net.heal()
    if killed:
        cluster[old - 1].start(timeout=60)
    # Back: it follows, truncates, catches up and rejoins the ISR...
    # Asked of a survivor itself: the returning node's own stale metadata still lists the old
    # in-sync replicas, and librdkafka may take it from there.
    survivor = cluster[others[0] - 1]
    assert wait_for(lambda: len(isr_seen_by(survivor, "n")) == 3, timeout=60), \
        isr_seen_by(survivor, "n")
    text = cluster[old - 1].log()
    assert "truncating a divergent tail" in text, "the returning leader truncated nothing"
    # ...and serves the log as acknowledged once the current leader is gone.
    values = returned_leader_serves(cluster, "n", old, acked)
    assert b"never" not in values, "a record the cut-off leader never committed was served"


@pytest.mark.compat("kafka-python 3.0", "Replication factor 3: an idempotent producer and a consumer through a leader's kill -9")
def test_kafka_python_keeps_producing_and_consuming_through_a_leader_change(cluster):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KTopicPartition

    a = AdminClient({"bootstrap.servers": cluster[0].bootstrap})
    a.create_topics([NewTopic("kp", 1, 3, config={"min.insync.replicas": "2"})])["kp"].result(30)
    assert wait_for(lambda: len(partitions(a, "kp")[0][2]) == 3, timeout=20)
    leader = partitions(a, "kp")[0][0]
    servers = [n.bootstrap for n in cluster]
    # kafka-python's defaults for acks=all with idempotence (it retries NOT_LEADER_OR_FOLLOWER
    # and the failed connection after a metadata refresh).
    p = KafkaProducer(bootstrap_servers=servers, acks="all", enable_idempotence=True,
                      linger_ms=5, retry_backoff_ms=200, request_timeout_ms=30000)
    c = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False,
                      auto_offset_reset="earliest", consumer_timeout_ms=1000)
    tp = KTopicPartition("kp", 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    polled = []
    acked = {}

    def poll_some():
        for records in c.poll(timeout_ms=200).values():
            polled.extend((r.offset, r.value) for r in records)

    futures = [(f"k{i}".encode(), p.send("kp", value=f"k{i}".encode())) for i in range(200)]
    p.flush(60)
    poll_some()
    cluster[leader - 1].kill()
    futures += [(f"k{i}".encode(), p.send("kp", value=f"k{i}".encode())) for i in range(200, 400)]
    for value, f in futures:
        acked[value] = (0, f.get(timeout=90).offset)
    p.close()
    end = time.monotonic() + 60
    while len(polled) < 400 and time.monotonic() < end:
        poll_some()
    c.close()
    offsets = [o for o, _ in polled]
    assert offsets == sorted(set(offsets)), "the consumer's polls went back or repeated"
    check(acked, {0: polled})
    cluster[leader - 1].start(timeout=60)


@pytest.mark.compat("Java client 4.4", "Replication factor 3: an idempotent acks=all producer and a consumer through a leader's kill -9")
def test_java_client_keeps_producing_and_consuming_through_a_leader_change(cluster, java):
    a = AdminClient({"bootstrap.servers": cluster[0].bootstrap})
    a.create_topics([NewTopic("jf", 1, 3, config={"min.insync.replicas": "2"})])["jf"].result(30)
    assert wait_for(lambda: len(partitions(a, "jf")[0][2]) == 3, timeout=20)
    leader = partitions(a, "jf")[0][0]
    servers = ",".join(n.bootstrap for n in cluster)
    # 600 records at one per 10 ms; the leader dies after the first 200 are acknowledged.
    proc = subprocess.Popen(["java", f"-Dlog4j2.configurationFile={java.log4j}",
                             "-cp", java.classpath, "Failover", servers, "jf", "600", "10", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if line.startswith("acked 200"):
                break
        cluster[leader - 1].kill()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, f"the Java client failed:\n{err[-4000:]}"
    data = json.loads(out)
    assert not data["errors"], data["errors"][:5]
    assert len(data["acked"]) == 600
    acked = {v.encode(): (0, o) for v, o in data["acked"].items()}
    polled = [(o, v.encode()) for o, v in data["polled"]]
    offsets = [o for o, _ in polled]
    assert offsets == sorted(set(offsets)), "the consumer's polls went back or repeated"
    check(acked, {0: polled})
    cluster[leader - 1].start(timeout=60)


def records_out(node, topic):
    """Records node has sent to fetchers of `topic` (followers and consumers), from /metrics."""
    import urllib.request
    page = urllib.request.urlopen(f"http://{node.host}:{node.http_port}/metrics",
                                  timeout=10).read().decode()
    for line in page.splitlines():
        if line.startswith(f'fjord_topic_records_out_total{{topic="{topic}"}}'):
            return int(line.split()[-1])
    return 0


def consume(bootstrap, topic, count, **config):
    """The values of the first `count` records of partition 0, read by assignment."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{time.monotonic()}",
                  "enable.auto.commit": False, **config})
    c.assign([TopicPartition(topic, 0, 0)])
    got = []
    end = time.monotonic() + 60
    while len(got) < count and time.monotonic() < end:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append((m.offset(), m.value()))
    c.close()
    return got


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "Fetch from the closest replica (KIP-392): a consumer with client.rack reads from the in-sync follower in its rack, read_committed included")
def test_a_consumer_reads_from_the_replica_in_its_rack(rack_cluster):
    cluster = rack_cluster
    bootstrap = ",".join(n.bootstrap for n in cluster)
    a = AdminClient({"bootstrap.servers": bootstrap})
    a.create_topics([NewTopic("r", 1, 3, config={"min.insync.replicas": "2"})])["r"].result(30)
    assert wait_for(lambda: len(partitions(a, "r")[0][2]) == 3, timeout=20)
    leader, replicas, _ = partitions(a, "r")[0]
    near, far = [i for i in replicas if i != leader]
    acked = {}
    assert not produce(bootstrap, "r", [f"v{i}".encode() for i in range(200)], acked)
    # Committed and aborted transactions: a follower's last stable offset and aborted list.
    from confluent_kafka import Producer as P
    t = P({"bootstrap.servers": bootstrap, "transactional.id": "rack-tx"})
    t.init_transactions(30)
    for commit in (True, False, True):
        t.begin_transaction()
        for i in range(10):
            t.produce("r", value=f"{'c' if commit else 'x'}{i}".encode(), partition=0)
        t.flush(30)  # written before an abort (librdkafka drops unsent records)
        (t.commit_transaction if commit else t.abort_transaction)(30)
    before = {i: records_out(cluster[i - 1], "r") for i in (1, 2, 3)}
    # A consumer in the near follower's rack is sent there by the leader and reads it all.
    got = consume(bootstrap, "r", 220, **{"client.rack": f"rack{near}",
                                         "isolation.level": "read_committed"})
    values = [v for _, v in got]
    assert values[:200] == [f"v{i}".encode() for i in range(200)]
    assert values[200:] == [f"c{i}".encode() for i in range(10)] * 2, values[200:]
    after = {i: records_out(cluster[i - 1], "r") for i in (1, 2, 3)}
    assert after[near] - before[near] >= 220, (before, after)
    assert after[far] == before[far], "the other follower served nothing"
    # read_uncommitted from there sees the aborted records too; a consumer in the leader's rack,
    # or in none, reads from the leader.
    got = consume(bootstrap, "r", 230, **{"client.rack": f"rack{near}",
                                         "isolation.level": "read_uncommitted"})
    assert len(got) == 230 and got[-1][1].startswith(b"c")
    assert sorted(v for _, v in got[200:] if v.startswith(b"x")) == sorted(
        f"x{i}".encode() for i in range(10))
    before = {i: records_out(cluster[i - 1], "r") for i in (1, 2, 3)}
    assert len(consume(bootstrap, "r", 220, **{"client.rack": f"rack{leader}"})) == 220
    assert len(consume(bootstrap, "r", 220)) == 220
    after = {i: records_out(cluster[i - 1], "r") for i in (1, 2, 3)}
    assert after[near] == before[near] and after[far] == before[far], (before, after)


@pytest.mark.compat("Java client 4.4", "Fetch from the closest replica (KIP-392): a consumer with client.rack reads from the in-sync follower in its rack")
def test_the_java_consumer_reads_from_the_replica_in_its_rack(rack_cluster, java):
    cluster = rack_cluster
    bootstrap = ",".join(n.bootstrap for n in cluster)
    a = AdminClient({"bootstrap.servers": bootstrap})
    a.create_topics([NewTopic("jr", 1, 3, config={"min.insync.replicas": "2"})])["jr"].result(30)
    assert wait_for(lambda: len(partitions(a, "jr")[0][2]) == 3, timeout=20)
    leader, replicas, _ = partitions(a, "jr")[0]
    near, far = [i for i in replicas if i != leader]
    assert not produce(bootstrap, "jr", [f"j{i}".encode() for i in range(300)], {})
    before = {i: records_out(cluster[i - 1], "jr") for i in (1, 2, 3)}
    done = subprocess.run(["java", f"-Dlog4j2.configurationFile={java.log4j}", "-cp",
                           java.classpath, "RackRead", bootstrap, "jr", f"rack{near}", "300"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == [f"j{i}" for i in range(300)]
    after = {i: records_out(cluster[i - 1], "jr") for i in (1, 2, 3)}
    assert after[near] - before[near] >= 300, (before, after)
    assert after[far] == before[far], (before, after)


def quorum_leader(node):
    done = subprocess.run([FJORD_BIN, "cluster", "info", "-o", "json", "-b", node.bootstrap],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["quorum"]["leader_id"]


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "The metadata quorum's leader paused (SIGSTOP) for longer than the broker session and resumed: it fences none of the brokers whose heartbeats waited meanwhile")
def test_a_paused_controller_fences_no_one_when_it_resumes(cluster):
    leader = quorum_leader(cluster[0])
    others = [i for i in (1, 2, 3) if i != leader]
    cluster[leader - 1].proc.send_signal(signal.SIGSTOP)
    time.sleep(3.5)  # the broker session is 2 s
    cluster[leader - 1].proc.send_signal(signal.SIGCONT)
    time.sleep(3)
    for i, node in enumerate(cluster, 1):
        fenced = [line for line in node.log().splitlines()
                  if "broker fencing changed" in line and "fenced=true" in line
                  and any(f"broker={o} " in line for o in others)]
        assert not fenced, f"node {i} fenced a broker that kept heartbeating:\n" + "\n".join(fenced)


def leaders_seen_by(node, topic):
    """{partition: leader} of `topic` as Metadata from `node` describes it."""
    md = AdminClient({"bootstrap.servers": node.bootstrap}).list_topics(topic, timeout=10)
    return {p: m.leader for p, m in md.topics[topic].partitions.items()}


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "A broker stopped with SIGTERM hands its leaderships to the other in-sync replicas before it exits (controlled shutdown): producers carry on without losing or duplicating an acknowledged record")
def test_a_stopped_broker_hands_over_its_leaderships_first(cluster):
    servers = ",".join(n.bootstrap for n in cluster)
    a = AdminClient({"bootstrap.servers": servers})
    a.create_topics([NewTopic("h", 3, 3, config={"min.insync.replicas": "2"})])["h"].result(30)
    assert wait_for(lambda: all(len(isr) == 3 for _, _, isr in partitions(a, "h").values()),
                    timeout=30)
    led = partitions(a, "h")
    stopped = led[0][0]
    survivor = cluster[next(i for i in (1, 2, 3) if i != stopped) - 1]
    load = Producing(servers, "h", batch=20)
    acked, errors = load.acked, load.errors
    time.sleep(1)
    code = cluster[stopped - 1].stop()  # SIGTERM, waits for the exit
    # The moment it is gone, the survivors already name other leaders for what it led (without
    # a controlled shutdown they would wait for its broker session to expire).
    after = leaders_seen_by(survivor, "h")
    assert all(after[p] != stopped for p in after), (stopped, after)
    time.sleep(1)
    load.stop()
    assert code == 0
    assert "controlled shutdown: leaderships handed" in cluster[stopped - 1].log()
    assert not errors, errors[:5]
    cluster[stopped - 1].start(timeout=60)
    got = {}
    c = Consumer({"bootstrap.servers": servers, "group.id": "h-check", "enable.auto.commit": False})
    c.assign([TopicPartition("h", p, 0) for p in range(3)])
    end = time.monotonic() + 60
    while len(got) < len(acked) and time.monotonic() < end:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            assert m.value() not in got, f"{m.value()} read twice"
            got[m.value()] = (m.partition(), m.offset())
    c.close()
    assert got == acked
