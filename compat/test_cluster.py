"""A cluster of three Fjord processes (every node a voter of the metadata quorum, one replica
per partition): stock clients use it as one Kafka cluster, and the metadata survives the loss
of a node."""

import signal
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker, free_port, wait_for


@pytest.fixture
def cluster(tmp_path):
    controllers = {i: f"127.0.0.1:{free_port()}" for i in (1, 2, 3)}
    voters = ",".join(f"{i}@{a}" for i, a in controllers.items())
    # Short broker sessions, so fencing shows within seconds.
    config = tmp_path / "cluster.toml"
    config.write_text('"broker.heartbeat.interval.ms" = 300\n"broker.session.timeout.ms" = 2000\n')
    nodes = [Broker(tmp_path / f"node{i}", ["--node-id", str(i), "--voters", voters,
                                            "--controller-listen", controllers[i],
                                            "--config", str(config)])
             for i in (1, 2, 3)]
    for n in nodes:
        n.launch()
    for n in nodes:
        n.wait_ready(timeout=60)
    yield nodes
    for n in nodes:
        n.stop()
    # Whatever a test did to the cluster, no node's Raft or broker code panicked.
    for log in tmp_path.glob("fjord-*.log"):
        text = log.read_text(errors="replace")
        assert "panicked" not in text, f"{log.name}:\n{text[text.find('panicked') - 2000:][:4000]}"


def leaders(admin, topic):
    md = admin.list_topics(topic, timeout=10).topics[topic]
    return {p: md.partitions[p].leader for p in md.partitions}


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "Three-node cluster: topics spread over brokers, groups, transactions")
def test_clients_use_three_nodes_as_one_cluster(cluster):
    a = AdminClient({"bootstrap.servers": cluster[0].bootstrap})
    a.create_topics([NewTopic("spread", 6, 1)])["spread"].result(30)
    # Partitions have one replica until replication lands; more is refused, not faked.
    with pytest.raises(KafkaException) as refused:
        a.create_topics([NewTopic("replicated", 1, 3)])["replicated"].result(30)
    assert refused.value.args[0].name() == "INVALID_REPLICATION_FACTOR"
    md = a.list_topics(timeout=10)
    assert sorted(md.brokers) == [1, 2, 3]
    assert md.controller_id in (1, 2, 3)
    placed = leaders(a, "spread")
    assert sorted(placed) == list(range(6))
    assert sorted(set(placed.values())) == [1, 2, 3], placed  # two partitions per broker
    # Every broker answers metadata for the whole cluster.
    for n in cluster:
        assert leaders(AdminClient({"bootstrap.servers": n.bootstrap}), "spread") == placed

    p = Producer({"bootstrap.servers": cluster[1].bootstrap, "acks": "all"})
    for i in range(600):
        p.produce("spread", key=f"k{i}", value=f"v{i}")
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": cluster[2].bootstrap, "group.id": "across",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe(["spread"])
    seen = set()
    end = time.monotonic() + 60
    while len(seen) < 600 and time.monotonic() < end:
        m = c.poll(1)
        if m is not None and m.error() is None:
            seen.add(m.value())
    assert len(seen) == 600
    c.commit(asynchronous=False)
    committed = c.committed([TopicPartition("spread", p) for p in range(6)], timeout=10)
    assert sum(tp.offset for tp in committed) == 600
    c.close()

    # A transaction over partitions on every broker: markers reach the other brokers.
    tp = Producer({"bootstrap.servers": cluster[0].bootstrap, "transactional.id": "t-across"})
    tp.init_transactions(30)
    tp.begin_transaction()
    for part in range(6):
        tp.produce("spread", value=b"committed", partition=part)
    # Offsets committed with the transaction, to a group whose coordinator may be another
    # broker than the transaction's.
    group = Consumer({"bootstrap.servers": cluster[2].bootstrap, "group.id": "eos-group"})
    tp.send_offsets_to_transaction([TopicPartition("spread", 0, 42)],
                                   group.consumer_group_metadata(), 30)
    tp.commit_transaction(30)
    assert group.committed([TopicPartition("spread", 0)], timeout=10)[0].offset == 42
    group.close()
    tp.begin_transaction()
    for part in range(6):
        tp.produce("spread", value=b"aborted", partition=part)
    tp.abort_transaction(30)
    rc = Consumer({"bootstrap.servers": cluster[1].bootstrap, "group.id": "rc",
                   "isolation.level": "read_committed", "auto.offset.reset": "earliest"})
    rc.assign([TopicPartition("spread", part, 0) for part in range(6)])
    values = []
    end = time.monotonic() + 30
    while values.count(b"committed") < 6 and time.monotonic() < end:
        m = rc.poll(1)
        if m is not None and m.error() is None:
            values.append(m.value())
    # Nothing after the aborted batches is pending: the last stable offset passed them.
    end = time.monotonic() + 3
    while time.monotonic() < end:
        m = rc.poll(0.5)
        if m is not None and m.error() is None:
            values.append(m.value())
    rc.close()
    assert values.count(b"committed") == 6
    assert b"aborted" not in values


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "Three-node cluster: the metadata quorum survives a node's kill -9")
def test_metadata_survives_the_loss_of_a_node(cluster):
    a = AdminClient({"bootstrap.servers": cluster[0].bootstrap})
    a.create_topics([NewTopic("before", 3, 1)])["before"].result(30)
    cluster[2].kill()
    # Two voters of three are a quorum: topics are still created, from either survivor.
    b = AdminClient({"bootstrap.servers": cluster[1].bootstrap})
    b.create_topics([NewTopic("during", 1, 1)])["during"].result(30)
    for n in cluster[:2]:
        names = AdminClient({"bootstrap.servers": n.bootstrap}).list_topics(timeout=10).topics
        assert "during" in names and "before" in names
    # The node comes back with its data directory and catches up.
    cluster[2].start(timeout=60)
    back = AdminClient({"bootstrap.servers": cluster[2].bootstrap})
    assert wait_for(lambda: "during" in back.list_topics(timeout=10).topics, timeout=30)
    # Its partitions serve again: a write to each partition of "before" lands.
    p = Producer({"bootstrap.servers": cluster[2].bootstrap, "acks": "all"})
    for part in range(3):
        p.produce("before", value=b"x", partition=part)
    assert p.flush(30) == 0


def test_a_data_directory_of_another_cluster_is_refused(cluster, tmp_path):
    # A single node of its own (another cluster, node.id 3)...
    other = Broker(tmp_path / "other", ["--node-id", "3"]).start()
    try:
        other_admin = AdminClient({"bootstrap.servers": other.bootstrap})
        other_admin.create_topics([NewTopic("elsewhere", 1, 1)])["elsewhere"].result(30)
    finally:
        assert other.stop() == 0
    # ...started as node 3 of this cluster is refused, with what to do; nothing of it joins.
    node3 = cluster[2]
    node3.stop()
    intruder = Broker(tmp_path / "other", node3.extra_args)
    intruder.launch()
    assert intruder.proc.wait(timeout=60) != 0
    log = intruder.log()
    assert "belongs to" in log, log[-2000:]
    intruder.proc = None
    intruder.log_file.close()
    # Without its metadata log, the directory is still a node that ran before (meta.properties):
    # a voter that lost its log must not rejoin.
    import shutil
    shutil.rmtree(tmp_path / "other" / "__cluster_metadata-0")
    intruder.launch()
    assert intruder.proc.wait(timeout=60) != 0
    assert "cannot rejoin" in intruder.log(), intruder.log()[-2000:]
    intruder.proc = None
    intruder.log_file.close()
    names = AdminClient({"bootstrap.servers": cluster[0].bootstrap}).list_topics(timeout=10).topics
    assert "elsewhere" not in names
    node3.start(timeout=60)


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "Three-node cluster: a silent broker is fenced, and unfenced when back")
def test_a_silent_broker_is_fenced_and_returns(cluster):
    a = AdminClient({"bootstrap.servers": cluster[0].bootstrap})
    a.create_topics([NewTopic("fenced", 3, 1)])["fenced"].result(30)
    placed = leaders(a, "fenced")
    on3 = [p for p, leader in placed.items() if leader == 3]
    assert on3, placed
    cluster[2].proc.send_signal(signal.SIGSTOP)
    try:
        def fenced():
            md = a.list_topics("fenced", timeout=5)
            parts = md.topics["fenced"].partitions
            return (sorted(md.brokers) == [1, 2]
                    and all(parts[p].error is not None
                            and parts[p].error.name() == "LEADER_NOT_AVAILABLE" for p in on3)
                    and all(parts[p].error is None for p in placed if p not in on3))
        assert wait_for(fenced, timeout=30), a.list_topics("fenced", timeout=5).topics["fenced"].partitions
        # A fenced broker gets no new partitions.
        a.create_topics([NewTopic("while-fenced", 4, 1)])["while-fenced"].result(30)
        assert set(leaders(a, "while-fenced").values()) <= {1, 2}
    finally:
        cluster[2].proc.send_signal(signal.SIGCONT)
    assert wait_for(lambda: sorted(a.list_topics(timeout=5).brokers) == [1, 2, 3], timeout=30)
    p = Producer({"bootstrap.servers": cluster[0].bootstrap, "acks": "all"})
    for part in on3:
        p.produce("fenced", value=b"back", partition=part)
    assert p.flush(30) == 0
