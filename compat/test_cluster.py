"""A cluster of three Fjord processes (every node a voter of the metadata quorum, one replica
per partition): stock clients use it as one Kafka cluster, and the metadata survives the loss
of a node."""

import json
import os
import signal
import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import FJORD_BIN, Broker, free_port, three_nodes, wait_for
from reference import run_tool

QUORUM = "org.apache.kafka.tools.MetadataQuorumCommand"


@pytest.fixture
def cluster(tmp_path):
    yield from three_nodes(tmp_path)


def distinct_values(consumer, count, timeout):
    """The distinct record values `consumer` polls until it has `count` or `timeout` passes."""
    seen = set()
    end = time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < end:
        m = consumer.poll(1)
        if m is not None and m.error() is None:
            seen.add(m.value())
    return seen


def leaders(admin, topic):
    md = admin.list_topics(topic, timeout=10).topics[topic]
    return {p: md.partitions[p].leader for p in md.partitions}


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "Three-node cluster: topics spread over brokers, groups, transactions")
def test_clients_use_three_nodes_as_one_cluster(cluster):
    # Created through broker 2 (any broker takes admin requests).
    a = AdminClient({"bootstrap.servers": cluster[1].bootstrap})
    a.create_topics([NewTopic("spread", 6, 1)])["spread"].result(30)
    # More replicas than brokers is refused, as Kafka refuses it.
    with pytest.raises(KafkaException) as refused:
        a.create_topics([NewTopic("replicated", 1, 4)])["replicated"].result(30)
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
    seen = distinct_values(c, 600, 60)
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


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "Three-node cluster: the metadata quorum survives its leader's kill -9")
def test_metadata_survives_the_loss_of_the_controller(cluster):
    a = AdminClient({"bootstrap.servers": cluster[0].bootstrap})
    a.create_topics([NewTopic("before", 3, 1)])["before"].result(30)
    # The Raft leader (the controller) is killed.
    leader = cluster_info(cluster[0])["quorum"]["leader_id"]
    gone = cluster[leader - 1]
    left = [n for n in cluster if n is not gone]
    gone.kill()
    killed = time.monotonic()

    def new_controller():
        try:
            q = cluster_info(left[0])["quorum"]
        except subprocess.CalledProcessError:
            return False
        return q.get("leader_id") not in (None, leader)
    assert wait_for(new_controller, timeout=15)
    elected = time.monotonic() - killed
    assert elected < 10, f"a new controller took {elected:.1f}s"
    # Two voters of three are a quorum: topics are still created, from either survivor, and
    # nothing committed before is lost.
    b = AdminClient({"bootstrap.servers": left[1].bootstrap})
    b.create_topics([NewTopic("during", 1, 1)])["during"].result(30)
    for n in left:
        names = AdminClient({"bootstrap.servers": n.bootstrap}).list_topics(timeout=10).topics
        assert "during" in names and "before" in names
    # The node comes back with its data directory and catches up.
    gone.start(timeout=60)
    back = AdminClient({"bootstrap.servers": gone.bootstrap})
    assert wait_for(lambda: "during" in back.list_topics(timeout=10).topics, timeout=30)
    # Its partitions serve again: a write to each partition of "before" lands.
    p = Producer({"bootstrap.servers": gone.bootstrap, "acks": "all"})
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
            # As a three-node Kafka 4.4 answers: no leader, the fenced replica out of the ISR.
            return (sorted(md.brokers) == [1, 2]
                    and all(parts[p].error is not None
                            and parts[p].error.name() == "LEADER_NOT_AVAILABLE"
                            and parts[p].leader == -1 and parts[p].isrs == []
                            and parts[p].replicas == [3] for p in on3)
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


def http(node, path):
    """(status, body) of an HTTP GET on the node's HTTP listener; None when it does not answer."""
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{node.http_port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return None


def directory_id(node):
    with open(os.path.join(node.data_dir, "meta.properties")) as f:
        return next(line.split("=", 1)[1].strip() for line in f
                    if line.startswith("directory.id="))


def cluster_info(node):
    out = subprocess.run([FJORD_BIN, "cluster", "info", "-b", node.bootstrap, "-o", "json"],
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


@pytest.mark.compat("Kafka tools 4.4", "Three-node cluster: DescribeQuorum (kafka-metadata-quorum), fenced brokers in DescribeCluster, fjord cluster info")
def test_the_quorum_and_the_brokers_are_described(cluster):
    controllers = {i: n.extra_args[n.extra_args.index("--controller-listen") + 1]
                   for i, n in enumerate(cluster, 1)}
    # Kafka's own tool, through any broker (a broker that does not lead asks the leader).
    for n in cluster:
        status = run_tool(QUORUM, "describe", "--status", bootstrap=n.bootstrap).stdout
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        assert int(fields["LeaderId"]) in (1, 2, 3), status
        voters = json.loads(fields["CurrentVoters"])
        assert {v["id"]: v["endpoints"] for v in voters} == {
            i: [f"CONTROLLER://{a}"] for i, a in controllers.items()}, status
        # Each voter's directory id, as its meta.properties has it (KIP-853's directory.id).
        assert {v["id"]: v.get("directoryId") for v in voters} == {
            i: directory_id(node) for i, node in enumerate(cluster, 1)}, status
        assert json.loads(fields["CurrentObservers"]) == []

    def replication():
        out = run_tool(QUORUM, "describe", "--replication", bootstrap=cluster[1].bootstrap).stdout
        rows = [line.split() for line in out.splitlines()[1:] if line.strip()]
        return {int(r[0]): (int(r[2]), int(r[3]), r[-1]) for r in rows}
    assert wait_for(lambda: all(lag == 0 for _, lag, _ in replication().values()), timeout=30)
    rows = replication()
    assert sorted(rows) == [1, 2, 3]
    assert sorted(status for _, _, status in rows.values()) == ["Follower", "Follower", "Leader"]

    info = cluster_info(cluster[0])
    assert info["quorum"]["voters"] == [1, 2, 3]
    assert info["controller_id"] == info["quorum"]["leader_id"]
    assert [(n["id"], n["broker"]) for n in info["nodes"]] == [
        (1, "registered"), (2, "registered"), (3, "registered")]
    assert [n["address"] for n in info["nodes"]] == [n.bootstrap for n in cluster]
    # A silent broker shows fenced (DescribeCluster v2 lists fenced brokers when asked) and
    # behind the quorum; the others keep answering.
    cluster[2].proc.send_signal(signal.SIGSTOP)
    try:
        def fenced():
            nodes = {n["id"]: n for n in cluster_info(cluster[0])["nodes"]}
            return nodes[3]["broker"] == "fenced" and nodes[1]["broker"] == "registered"
        assert wait_for(fenced, timeout=30), cluster_info(cluster[0])
        a = AdminClient({"bootstrap.servers": cluster[0].bootstrap})
        a.create_topics([NewTopic("moves-the-log", 1, 1)])["moves-the-log"].result(30)
        nodes = {n["id"]: n for n in cluster_info(cluster[1])["nodes"]}
        # Behind, or unknown to a leader elected since (when node 3 led).
        assert nodes[3]["metadata_lag"] is None or nodes[3]["metadata_lag"] > 0, nodes
    finally:
        cluster[2].proc.send_signal(signal.SIGCONT)
    assert wait_for(lambda: all(n["broker"] == "registered" and n["metadata_lag"] == 0
                                for n in cluster_info(cluster[2])["nodes"]), timeout=30)
    # The table for people names every node.
    table = subprocess.run([FJORD_BIN, "cluster", "info", "-b", cluster[1].bootstrap],
                           capture_output=True, text=True, timeout=60, check=True).stdout
    assert "controller:" in table and all(n.bootstrap in table for n in cluster), table


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "Three-node cluster: a whole-cluster restart keeps topics, leaders, configs and records; /health says when a node is not ready")
def test_the_whole_cluster_restarts(cluster):
    a = AdminClient({"bootstrap.servers": cluster[0].bootstrap})
    a.create_topics([NewTopic("kept", 6, 1, config={"retention.ms": "123456789"})])["kept"].result(30)
    placed = leaders(a, "kept")
    p = Producer({"bootstrap.servers": cluster[1].bootstrap, "acks": "all"})
    for i in range(300):
        p.produce("kept", value=f"v{i}".encode(), partition=i % 6)
    assert p.flush(30) == 0
    for n in cluster:
        assert http(n, "/health") == (200, "ok\n")
        n.stop()
    # One node alone waits for a majority of the voters: its /health says it is starting.
    cluster[0].launch()
    assert wait_for(lambda: http(cluster[0], "/health") is not None, timeout=30)
    status, body = http(cluster[0], "/health")
    assert status == 503 and body.startswith("starting"), body
    for n in cluster[1:]:
        n.launch()
    for n in cluster:
        n.wait_ready(timeout=60)
        assert http(n, "/health") == (200, "ok\n")
    a = AdminClient({"bootstrap.servers": cluster[2].bootstrap})
    assert leaders(a, "kept") == placed
    from confluent_kafka.admin import ConfigResource
    resource = ConfigResource(ConfigResource.Type.TOPIC, "kept")
    configs = a.describe_configs([resource])[resource].result(30)
    assert configs["retention.ms"].value == "123456789"
    c = Consumer({"bootstrap.servers": cluster[0].bootstrap, "group.id": "after-restart",
                  "auto.offset.reset": "earliest"})
    c.subscribe(["kept"])
    seen = distinct_values(c, 300, 60)
    c.close()
    assert len(seen) == 300
    # A node whose heartbeats no controller takes (the two others are gone) says so.
    cluster[1].kill()
    cluster[2].kill()
    assert wait_for(lambda: http(cluster[0], "/health")[0] == 503, timeout=30)
    status, body = http(cluster[0], "/health")
    assert "heartbeats" in body, body
    cluster[1].launch()
    cluster[2].launch()
    for n in cluster[1:]:
        n.wait_ready(timeout=60)
    assert wait_for(lambda: http(cluster[0], "/health") == (200, "ok\n"), timeout=30)


@pytest.mark.compat("kafka-python 3.0", "Three-node cluster: produce, consume in a group, commit")
def test_kafka_python_on_the_cluster(cluster):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic as PyNewTopic
    admin = KafkaAdminClient(bootstrap_servers=cluster[2].bootstrap)
    admin.create_topics([PyNewTopic("py-spread", 6, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=cluster[1].bootstrap, acks="all")
    for i in range(120):
        producer.send("py-spread", value=f"p{i}".encode(), partition=i % 6)
    producer.flush(30)
    producer.close()
    consumer = KafkaConsumer("py-spread", bootstrap_servers=cluster[0].bootstrap,
                             group_id="py-across", auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=20000)
    seen = set()
    for m in consumer:
        seen.add(m.value)
        if len(seen) == 120:
            break
    consumer.commit()
    committed = sum(consumer.committed(tp) or 0 for tp in consumer.assignment())
    consumer.close()
    assert len(seen) == 120
    assert committed == 120


@pytest.mark.compat("Java client 4.4", "Three-node cluster: records, consumer groups (both protocols) and transactions")
def test_java_client_on_the_cluster(cluster, java, fjord_shared):
    from conftest import Target
    one = Target("fjord", fjord_shared.bootstrap)
    for node in (0, 2):
        many = Target("fjord-cluster", cluster[node].bootstrap)
        for scenario in ("records", "group-consumer", "group-classic", "transactions"):
            assert java(many, scenario) == java(one, scenario), scenario


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "Three voters and a broker-only node: it observes the quorum, leads partitions, survives a kill -9")
def test_a_broker_only_node_joins_the_cluster(cluster, tmp_path):
    voters_arg = cluster[0].extra_args[cluster[0].extra_args.index("--voters") + 1]
    config = cluster[0].extra_args[cluster[0].extra_args.index("--config") + 1]
    args = ["--node-id", "4", "--voters", voters_arg,
            "--controller-listen", f"127.0.0.1:{free_port()}", "--config", config]
    # A node outside the voters must say it is a broker only (a mistyped voter id is refused).
    mistyped = Broker(tmp_path / "mistyped", args)
    mistyped.launch()
    assert mistyped.proc.wait(timeout=30) != 0
    assert "--process-roles broker" in mistyped.log(), mistyped.log()[-2000:]
    mistyped.proc = None
    mistyped.log_file.close()
    four = Broker(tmp_path / "node4", [*args, "--process-roles", "broker"])
    four.start(timeout=60)
    try:
        info = cluster_info(four)
        assert info["quorum"]["voters"] == [1, 2, 3]
        assert info["quorum"]["observers"] == [4]
        node4 = [n for n in info["nodes"] if n["id"] == 4][0]
        assert node4["broker"] == "registered" and node4["quorum"] == "observer", info
        status = run_tool(QUORUM, "describe", "--status", bootstrap=cluster[0].bootstrap).stdout
        observers = json.loads(dict(line.split(":", 1) for line in status.splitlines()
                                    if ":" in line)["CurrentObservers"])
        assert [o["id"] for o in observers] == [4], status
        a = AdminClient({"bootstrap.servers": four.bootstrap})
        a.create_topics([NewTopic("on-four", 8, 1)])["on-four"].result(30)
        placed = leaders(a, "on-four")
        on4 = [p for p, leader in placed.items() if leader == 4]
        assert on4 and sorted(set(placed.values())) == [1, 2, 3, 4], placed
        p = Producer({"bootstrap.servers": four.bootstrap, "acks": "all"})
        for i in range(80):
            p.produce("on-four", value=f"r{i}".encode(), partition=i % 8)
        assert p.flush(30) == 0
        # kill -9 and back: it rejoins from its data directory; its partitions keep their records.
        four.kill()
        four.start(timeout=60)
        assert wait_for(lambda: sorted(a.list_topics(timeout=5).brokers) == [1, 2, 3, 4], timeout=30)
        c = Consumer({"bootstrap.servers": cluster[1].bootstrap, "group.id": "reads-four",
                      "auto.offset.reset": "earliest"})
        c.assign([TopicPartition("on-four", part, 0) for part in on4])
        seen = distinct_values(c, 10 * len(on4), 30)
        c.close()
        assert len(seen) == 10 * len(on4)
    finally:
        four.stop()
    text = open(four.log_path, errors="replace").read()
    assert "panicked" not in text, text[-4000:]


def test_a_voter_cannot_start_as_a_broker_only_node(cluster, tmp_path):
    voters_arg = cluster[0].extra_args[cluster[0].extra_args.index("--voters") + 1]
    roles = tmp_path / "roles.toml"
    roles.write_text('"process.roles" = "broker"\n')
    node = Broker(tmp_path / "voter-as-broker", ["--node-id", "2", "--voters", voters_arg,
                                                "--controller-listen", f"127.0.0.1:{free_port()}",
                                                "--config", str(roles)])
    node.launch()
    assert node.proc.wait(timeout=30) != 0
    assert "a voter is a controller too" in node.log(), node.log()[-2000:]
    node.proc = None
    node.log_file.close()


def fjord_cli(node, *args, input=None):
    return subprocess.run([FJORD_BIN, *args, "-b", node.bootstrap], input=input,
                          capture_output=True, text=True, timeout=60, check=True).stdout


def test_the_fjord_cli_routes_to_partition_leaders(cluster):
    fjord_cli(cluster[0], "topic", "create", "cli-spread", "--partitions", "6")
    lines = "".join(f"k{i}:v{i}\n" for i in range(60))
    fjord_cli(cluster[1], "produce", "cli-spread", "--key-separator", ":", input=lines)
    # Partitions led by every broker, all reached from one bootstrap broker.
    a = AdminClient({"bootstrap.servers": cluster[0].bootstrap})
    assert sorted(set(leaders(a, "cli-spread").values())) == [1, 2, 3]
    out = fjord_cli(cluster[2], "consume", "cli-spread", "--from-beginning", "--exit",
                    "-o", "json")
    records = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["value"] for r in records) == sorted(f"v{i}" for i in range(60))
    described = json.loads(fjord_cli(cluster[0], "topic", "describe", "cli-spread", "-o", "json"))
    assert sum(p["records"] for p in described["partitions"]) == 60


def test_a_controller_only_voter_holds_no_partitions(tmp_path):
    controllers = {i: f"127.0.0.1:{free_port()}" for i in (1, 2, 3)}
    voters = ",".join(f"{i}@{a}" for i, a in controllers.items())
    config = tmp_path / "cluster.toml"
    config.write_text('"broker.heartbeat.interval.ms" = 300\n"broker.session.timeout.ms" = 2000\n')
    nodes = [Broker(tmp_path / f"node{i}", ["--node-id", str(i), "--voters", voters,
                                            "--controller-listen", controllers[i],
                                            "--config", str(config)]
                    + (["--process-roles", "controller"] if i == 3 else []))
             for i in (1, 2, 3)]
    try:
        for n in nodes:
            n.launch()
        for n in nodes[:2]:
            n.wait_ready(timeout=60)
        # The controller only answers /health (ready once it knows the quorum's leader) and
        # no Kafka clients.
        assert wait_for(lambda: http(nodes[2], "/health") == (200, "ok\n"), timeout=60)
        import socket
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", nodes[2].port), timeout=1).close()
        a = AdminClient({"bootstrap.servers": nodes[0].bootstrap})
        assert sorted(a.list_topics(timeout=10).brokers) == [1, 2]
        a.create_topics([NewTopic("on-brokers", 6, 1)])["on-brokers"].result(30)
        assert sorted(set(leaders(a, "on-brokers").values())) == [1, 2]
        info = cluster_info(nodes[0])
        assert info["quorum"]["voters"] == [1, 2, 3]
        node3 = [n for n in info["nodes"] if n["id"] == 3][0]
        assert node3["broker"] is None and node3["quorum"] in ("voter", "leader"), info
        # It votes: with node 1 gone, nodes 2 and 3 are a majority: node 1 is fenced and
        # topics are created, on the broker left.
        nodes[0].kill()
        b = AdminClient({"bootstrap.servers": nodes[1].bootstrap})
        assert wait_for(lambda: sorted(b.list_topics(timeout=5).brokers) == [2], timeout=30)
        b.create_topics([NewTopic("after-a-loss", 1, 1)])["after-a-loss"].result(30)
        assert leaders(b, "after-a-loss") == {0: 2}
        # Node 1 leads partitions: it may not come back as a controller only (they would be
        # stranded); the message says what to do.
        nodes[0].extra_args += ["--process-roles", "controller"]
        nodes[0].launch()
        assert nodes[0].proc.wait(timeout=60) != 0
        assert "places partitions on it" in nodes[0].log(), nodes[0].log()[-2000:]
        nodes[0].proc = None
        nodes[0].log_file.close()
    finally:
        for n in nodes:
            n.stop()
    for log in tmp_path.glob("fjord-*.log"):
        text = log.read_text(errors="replace")
        assert "panicked" not in text, f"{log.name}:\n{text[-4000:]}"


def test_a_partition_that_cannot_be_opened_is_offline_until_it_can(cluster):
    # Node 3 cannot create the partitions' directories (a file is in the way, as a disk
    # that refuses them): they are answered KAFKA_STORAGE_ERROR, and served once it can.
    node3 = cluster[2]
    blockers = [os.path.join(node3.data_dir, f"blocked-{i}") for i in range(6)]
    for path in blockers:
        with open(path, "w") as f:
            f.write("in the way")
    a = AdminClient({"bootstrap.servers": cluster[0].bootstrap})
    a.create_topics([NewTopic("blocked", 6, 1)])["blocked"].result(30)
    on3 = [p for p, leader in leaders(a, "blocked").items() if leader == 3]
    assert on3
    refused = subprocess.run([FJORD_BIN, "produce", "blocked", "-p", str(on3[0]),
                              "-b", cluster[0].bootstrap], input="x\n", capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode != 0 and "KAFKA_STORAGE_ERROR" in refused.stderr, refused.stderr
    for path in blockers:
        os.remove(path)

    def served():
        p = subprocess.run([FJORD_BIN, "produce", "blocked", "-p", str(on3[0]),
                            "-b", cluster[0].bootstrap], input="x\n", capture_output=True,
                           text=True, timeout=60)
        return p.returncode == 0
    assert wait_for(served, timeout=30)
    described = json.loads(fjord_cli(cluster[0], "topic", "describe", "blocked", "-o", "json"))
    assert sum(p["records"] for p in described["partitions"]) >= 1


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "Three-node cluster: group coordinators on every broker, offsets read through any")
def test_group_coordinators_are_spread_over_the_brokers(cluster):
    a = AdminClient({"bootstrap.servers": cluster[0].bootstrap})
    a.create_topics([NewTopic("coord", 1, 1)])["coord"].result(30)
    groups = [f"coord-{g}" for g in range(12)]
    for i, g in enumerate(groups):
        c = Consumer({"bootstrap.servers": cluster[i % 3].bootstrap, "group.id": g,
                      "enable.auto.commit": False})
        c.commit(offsets=[TopicPartition("coord", 0, i + 1)], asynchronous=False)
        c.close()
    described = a.describe_consumer_groups(groups)
    coordinators = {g: described[g].result(30).coordinator.id for g in groups}
    # A coordinator is the leader of the group's __consumer_offsets partition: with twelve
    # groups, more than one broker coordinates.
    assert len(set(coordinators.values())) > 1, coordinators
    for n in cluster:
        for i, g in enumerate(groups):
            c = Consumer({"bootstrap.servers": n.bootstrap, "group.id": g})
            assert c.committed([TopicPartition("coord", 0)], timeout=10)[0].offset == i + 1
            c.close()


def test_a_voter_that_lost_its_whole_data_directory_is_refused(cluster):
    a = AdminClient({"bootstrap.servers": cluster[0].bootstrap})
    a.create_topics([NewTopic("kept-safe", 3, 1)])["kept-safe"].result(30)
    node3 = cluster[2]
    node3.stop()
    import shutil
    saved = node3.data_dir + ".saved"
    shutil.move(node3.data_dir, saved)
    # A new, empty directory (a replaced disk): the other voters know node 3 by its old
    # directory id and refuse it, at once, with what to do.
    node3.launch()
    assert node3.proc.wait(timeout=60) != 0
    assert "data directory changed" in node3.log(), node3.log()[-2000:]
    node3.proc = None
    node3.log_file.close()
    # The quorum is unharmed; the restored directory is welcome back.
    a.create_topics([NewTopic("while-refused", 1, 1)])["while-refused"].result(30)
    shutil.rmtree(node3.data_dir)
    shutil.move(saved, node3.data_dir)
    node3.start(timeout=60)
    back = AdminClient({"bootstrap.servers": node3.bootstrap})
    assert wait_for(lambda: "while-refused" in back.list_topics(timeout=10).topics, timeout=30)
