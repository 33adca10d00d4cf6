"""Operating a cluster of three Fjord processes: leader elections (Kafka's
kafka-leader-election tool and the Admin API), leaders returning to their preferred replica by
themselves, a stopped metadata leader handing its leadership over, and a rolling restart of
every node under acks=all load."""

import json
import os
import subprocess
import time

import pytest
from confluent_kafka import ElectionType, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import FJORD_BIN, Broker, free_port, three_nodes, wait_for
from reference import run_tool
from test_replication import Producing, check, produce, read_all

LEADER_ELECTION = "org.apache.kafka.tools.LeaderElectionCommand"
UNKNOWN_TOPIC_OR_PARTITION, ELECTION_NOT_NEEDED = 3, 84
LAG = '"replica.lag.time.max.ms" = 4000\n'


@pytest.fixture
def cluster(tmp_path):
    """Three nodes that leave leaders where failover put them (no automatic balancing)."""
    yield from three_nodes(tmp_path, LAG + '"auto.leader.rebalance.enable" = false\n')


@pytest.fixture
def balancing_cluster(tmp_path):
    """Three nodes that give leaderships back to preferred replicas every second."""
    yield from three_nodes(tmp_path, LAG + '"leader.imbalance.check.interval.seconds" = 1\n')


def placement(admin, topic):
    """{partition: (leader, replicas in order, in-sync replicas)}."""
    md = admin.list_topics(topic, timeout=10).topics[topic]
    return {p: (m.leader, list(m.replicas), sorted(m.isrs)) for p, m in md.partitions.items()}


def in_sync(admin, topic):
    return all(len(isr) == 3 for _, _, isr in placement(admin, topic).values())


def preferred_lead(admin, topic):
    return all(leader == replicas[0] for leader, replicas, _ in placement(admin, topic).values())


def knock_leaders_off(cluster, admin, topic):
    """Stops (SIGTERM) and restarts the preferred leader of partition 0: its leaderships move
    to other in-sync replicas and stay there once it is back in sync. Returns it."""
    broker = placement(admin, topic)[0][1][0]
    assert cluster[broker - 1].stop() == 0
    cluster[broker - 1].start(timeout=60)
    assert wait_for(lambda: in_sync(admin, topic), timeout=60), placement(admin, topic)
    return broker


def create(admin, topic, partitions=3):
    admin.create_topics([NewTopic(topic, partitions, 3)])[topic].result(30)
    assert wait_for(lambda: in_sync(admin, topic), timeout=30)


@pytest.mark.compat("kafka-leader-election 4.4, confluent-kafka 2.16", "ElectLeaders on three nodes: preferred elections give leaderships back (the tool and the Admin API), unclean ones are refused where a leader exists, unknown partitions named")
def test_preferred_leaders_are_elected_back(cluster):
    servers = ",".join(n.bootstrap for n in cluster)
    admin = AdminClient({"bootstrap.servers": servers})
    create(admin, "e")
    broker = knock_leaders_off(cluster, admin, "e")
    before = placement(admin, "e")
    moved = sorted(p for p, (leader, replicas, _) in before.items() if leader != replicas[0])
    assert moved and all(before[p][1][0] == broker for p in moved), before
    # Kafka's tool, through a node that is not the quorum's leader as often as not.
    out = run_tool(LEADER_ELECTION, "--election-type", "preferred", "--all-topic-partitions",
                   bootstrap=cluster[0].bootstrap).stdout
    assert "Successfully completed leader election (PREFERRED) for partitions " + \
        ", ".join(f"e-{p}" for p in moved) in out, out
    assert wait_for(lambda: preferred_lead(admin, "e")), placement(admin, "e")
    # Nothing left to do.
    out = run_tool(LEADER_ELECTION, "--election-type", "preferred", "--topic", "e",
                   "--partition", "0", bootstrap=cluster[1].bootstrap).stdout
    assert "Valid replica already elected for partitions e-0" in out, out
    # The Admin API: unclean where a leader exists is not needed; unknown partitions named.
    result = admin.elect_leaders(ElectionType.UNCLEAN, [
        TopicPartition("e", 0), TopicPartition("e", 9), TopicPartition("nope", 0)]).result(30)

    def code(e):
        return None if e is None else (e.args[0] if isinstance(e, KafkaException) else e).code()
    assert {(tp.topic, tp.partition): code(e) for tp, e in result.items()} == {
        ("e", 0): ELECTION_NOT_NEEDED, ("e", 9): UNKNOWN_TOPIC_OR_PARTITION,
        ("nope", 0): UNKNOWN_TOPIC_OR_PARTITION}, result
    done = subprocess.run([FJORD_BIN, "topic", "elect-leaders", "nope",
                           "-b", cluster[0].bootstrap], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0 and "fjord topic list" in done.stderr, done.stderr
    # Fjord's CLI: the same election, table and JSON.
    knock_leaders_off(cluster, admin, "e")
    done = subprocess.run([FJORD_BIN, "topic", "elect-leaders", "e", "-o", "json",
                           "-b", cluster[1].bootstrap], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    results = {r["partition"]: r["result"] for r in json.loads(done.stdout)}
    assert set(results.values()) <= {"elected", "not needed"} and "elected" in results.values()
    assert wait_for(lambda: preferred_lead(admin, "e")), placement(admin, "e")


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "auto.leader.rebalance.enable: leaderships moved by a broker's restart return to their preferred replicas by themselves")
def test_leaders_return_to_their_preferred_replicas_by_themselves(balancing_cluster):
    cluster = balancing_cluster
    admin = AdminClient({"bootstrap.servers": ",".join(n.bootstrap for n in cluster)})
    create(admin, "b", partitions=6)
    broker = placement(admin, "b")[0][1][0]
    cluster[broker - 1].kill()
    assert wait_for(lambda: placement(admin, "b")[0][0] not in (broker, -1), timeout=30)
    cluster[broker - 1].start(timeout=60)
    # Back in sync, the broker gets its leaderships back within a check or two.
    assert wait_for(lambda: preferred_lead(admin, "b"), timeout=60), placement(admin, "b")
    assert "gave partitions back to their preferred leaders" in "".join(n.log() for n in cluster)


def quorum_leader(node):
    done = subprocess.run([FJORD_BIN, "cluster", "info", "-o", "json", "-b", node.bootstrap],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return None
    return json.loads(done.stdout)["quorum"]["leader_id"]


@pytest.mark.compat("fjord CLI", "The metadata quorum's leader stopped with SIGTERM hands its Raft leadership to another voter before it exits: the others name a new leader at once")
def test_a_stopped_quorum_leader_hands_its_leadership_over(cluster):
    leader = quorum_leader(cluster[0])
    assert leader in (1, 2, 3)
    survivor = cluster[next(i for i in (1, 2, 3) if i != leader) - 1]
    assert cluster[leader - 1].stop() == 0
    log = cluster[leader - 1].log()
    assert "handed the metadata leadership over" in log, log[-3000:]
    # The moment it has exited, a survivor already knows another leader (without the hand-over
    # it would wait an election timeout and the old leader's lease).
    now = quorum_leader(survivor)
    assert now not in (None, leader), now
    cluster[leader - 1].start(timeout=60)


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "A rolling restart (SIGTERM, start, back in sync) of every node of three under idempotent acks=all load: nothing acknowledged lost or duplicated, no delivery error")
def test_a_rolling_restart_loses_nothing(cluster):
    servers = ",".join(n.bootstrap for n in cluster)
    admin = AdminClient({"bootstrap.servers": servers})
    admin.create_topics([NewTopic("r", 3, 3, config={"min.insync.replicas": "2"})])["r"].result(30)
    assert wait_for(lambda: in_sync(admin, "r"), timeout=30)
    load = Producing(servers, "r")
    acked, errors = load.acked, load.errors
    for node in cluster:
        time.sleep(1)
        assert node.stop() == 0
        node.start(timeout=60)
        assert wait_for(lambda: in_sync(admin, "r"), timeout=60), placement(admin, "r")
    time.sleep(1)
    load.stop()
    assert not errors, errors[:5]
    assert len(acked) > 100
    check(acked, read_all(servers, "r", 3, lambda n: n >= len(acked)))


REASSIGN = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand"


def plan(tmp_path, name, moves):
    """A reassignment file for kafka-reassign-partitions: {(topic, partition): replicas}."""
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": t, "partition": p, "replicas": r} for (t, p), r in moves.items()]}))
    return str(path)


@pytest.mark.compat("kafka-reassign-partitions 4.4", "A partition moved from broker 1 to brokers 2 and 3 under idempotent acks=all load (--execute, --verify, --list): the new replicas catch up and take over, broker 1 drops its copy, nothing acknowledged lost")
def test_a_partition_moves_to_other_brokers_under_load(cluster, tmp_path):
    servers = ",".join(n.bootstrap for n in cluster)
    admin = AdminClient({"bootstrap.servers": servers})
    admin.create_topics([NewTopic("m", 1, replica_assignment=[[1]])])["m"].result(30)
    load = Producing(servers, "m")
    acked, errors = load.acked, load.errors
    assert wait_for(lambda: len(acked) > 100, timeout=30)
    move = plan(tmp_path, "move", {("m", 0): [2, 3]})
    out = run_tool(REASSIGN, "--reassignment-json-file", move, "--execute",
                   bootstrap=cluster[0].bootstrap).stdout
    assert "Successfully started partition reassignment for m-0" in out, out

    def verified():
        return run_tool(REASSIGN, "--reassignment-json-file", move, "--verify",
                        bootstrap=cluster[1].bootstrap).stdout
    assert wait_for(lambda: "Reassignment of partition m-0 is completed." in verified(),
                    timeout=60, step=1), verified()
    def moved():
        leader, replicas, isr = placement(admin, "m")[0]
        return (replicas, isr) == ([2, 3], [2, 3]) and leader in (2, 3)
    assert wait_for(moved), placement(admin, "m")
    assert "No partition reassignments found." in run_tool(
        REASSIGN, "--list", bootstrap=cluster[2].bootstrap).stdout
    # Broker 1 no longer holds a copy.
    assert wait_for(lambda: not os.path.exists(os.path.join(cluster[0].data_dir, "m-0")),
                    timeout=30)
    time.sleep(1)
    load.stop()
    assert not errors, errors[:5]
    check(acked, read_all(servers, "m", 1, lambda n: n >= len(acked)))


@pytest.mark.compat("kafka-reassign-partitions 4.4", "A reassignment held back by a replication throttle is listed (--list, --verify) and cancelled (--cancel, which clears the throttles): the partition keeps its original replica")
def test_a_slow_reassignment_is_listed_and_cancelled(cluster, tmp_path):
    servers = ",".join(n.bootstrap for n in cluster)
    admin = AdminClient({"bootstrap.servers": servers})
    admin.create_topics([NewTopic("c", 1, replica_assignment=[[1]])])["c"].result(30)
    acked = {}
    assert not produce(servers, "c", [b"%06d" % i + b"x" * 10_000 for i in range(40)], acked)
    # 400 kB at 20 kB/s: the copy takes about 20 s.
    move = plan(tmp_path, "slow", {("c", 0): [3]})
    out = run_tool(REASSIGN, "--reassignment-json-file", move, "--execute",
                   "--throttle", "20000", bootstrap=cluster[0].bootstrap).stdout
    assert "Successfully started partition reassignment for c-0" in out, out
    listed = run_tool(REASSIGN, "--list", bootstrap=cluster[1].bootstrap).stdout
    assert "c-0: replicas: 3,1. adding: 3. removing: 1." in listed, listed
    assert "Reassignment of partition c-0 is still in progress." in run_tool(
        REASSIGN, "--reassignment-json-file", move, "--verify", "--preserve-throttles",
        bootstrap=cluster[0].bootstrap).stdout
    out = run_tool(REASSIGN, "--reassignment-json-file", move, "--cancel",
                   bootstrap=cluster[0].bootstrap).stdout
    assert "Successfully cancelled partition reassignment for: c-0" in out, out
    assert wait_for(lambda: placement(admin, "c")[0] == (1, [1], [1])), placement(admin, "c")
    assert broker_config(cluster[2], 3, "follower.replication.throttled.rate") is None
    check(acked, read_all(servers, "c", 1, lambda n: n >= len(acked)))


def broker_config(node, broker, key):
    """A broker config's (value, source) as DescribeConfigs of `broker` from `node` gives it."""
    from confluent_kafka.admin import ConfigResource, ResourceType
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    res = ConfigResource(ResourceType.BROKER, str(broker))
    entry = admin.describe_configs([res])[res].result(30).get(key)
    return entry and (entry.value, entry.source)


@pytest.mark.compat("kafka-reassign-partitions 4.4", "A move with --throttle: the replication throttles (broker rates, topic replica lists) slow the copy to the rate asked, and --verify clears them once done")
def test_a_throttled_move_copies_at_the_rate_asked(cluster, tmp_path):
    servers = ",".join(n.bootstrap for n in cluster)
    admin = AdminClient({"bootstrap.servers": servers})
    admin.create_topics([NewTopic("t", 1, replica_assignment=[[1]])])["t"].result(30)
    # About 3 MB to copy.
    acked = {}
    assert not produce(servers, "t", [b"%06d" % i + b"x" * 10_000 for i in range(300)], acked)
    move = plan(tmp_path, "throttled", {("t", 0): [2]})
    out = run_tool(REASSIGN, "--reassignment-json-file", move, "--execute",
                   "--throttle", "300000", bootstrap=cluster[0].bootstrap).stdout
    assert "The inter-broker throttle limit was set to 300000 B/s" in out, out
    assert broker_config(cluster[1], 2, "follower.replication.throttled.rate") == ("300000", 2)
    # At 300 kB/s the copy takes about ten seconds: not done after three.
    time.sleep(3)
    verify = ["--reassignment-json-file", move, "--verify"]
    assert "Reassignment of partition t-0 is still in progress." in run_tool(
        REASSIGN, *verify, "--preserve-throttles", bootstrap=cluster[1].bootstrap).stdout
    assert wait_for(lambda: "is completed" in run_tool(
        REASSIGN, *verify, "--preserve-throttles", bootstrap=cluster[1].bootstrap).stdout,
        timeout=60, step=1)
    # Done: --verify clears every throttle it set.
    out = run_tool(REASSIGN, *verify, bootstrap=cluster[1].bootstrap).stdout
    assert "Clearing broker-level throttles on brokers" in out, out
    assert broker_config(cluster[1], 2, "follower.replication.throttled.rate") is None
    assert wait_for(lambda: placement(admin, "t")[0] == (2, [2], [2])), placement(admin, "t")
    check(acked, read_all(servers, "t", 1, lambda n: n >= len(acked)))


def metric(node, name):
    """A metric's value on `node`'s /metrics (Prometheus text), parsed by prometheus_client."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(f"http://127.0.0.1:{node.http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} not in the metrics of {node.bootstrap}")


@pytest.mark.compat("Prometheus parser", "Replication and controller metrics on three nodes: a killed follower makes its leader's partition under-replicated, its return expands the in-sync replicas; the active controller counts topics, partitions and brokers")
def test_replication_metrics_follow_a_followers_absence(cluster):
    admin = AdminClient({"bootstrap.servers": ",".join(n.bootstrap for n in cluster)})
    create(admin, "u", partitions=1)
    leader, replicas, _ = placement(admin, "u")[0]
    follower = next(b for b in replicas if b != leader)
    lead = cluster[leader - 1]
    assert metric(lead, "fjord_under_replicated_partitions") == 0
    cluster[follower - 1].kill()
    # (Its fencing takes it out of the in-sync replicas: a controller's change, not counted
    # as the leader's shrink, as in Kafka.)
    assert wait_for(lambda: metric(lead, "fjord_under_replicated_partitions") == 1, timeout=30)
    expands = metric(lead, "fjord_isr_expands_total")
    cluster[follower - 1].start(timeout=60)
    assert wait_for(lambda: metric(lead, "fjord_under_replicated_partitions") == 0, timeout=60)
    assert metric(lead, "fjord_isr_expands_total") == expands + 1
    controller = [n for n in cluster if metric(n, "fjord_controller_active") == 1]
    assert len(controller) == 1
    c = controller[0]
    assert metric(c, "fjord_global_topics") >= 1 and metric(c, "fjord_active_brokers") == 3
    assert metric(c, "fjord_offline_partitions") == 0


CLUSTER_TOOL = "org.apache.kafka.tools.ClusterTool"


@pytest.mark.compat("kafka-cluster 4.4 (unregister)", "UnregisterBroker: refused while the broker runs or holds a partition's only copy (with what to do), done once it is stopped and nothing depends on it alone; the broker registers again when it starts")
def test_a_stopped_broker_is_unregistered_once_nothing_depends_on_it(cluster):
    servers = ",".join(n.bootstrap for n in cluster)
    admin = AdminClient({"bootstrap.servers": servers})
    admin.create_topics([NewTopic("only3", 1, replica_assignment=[[3]]),
                         NewTopic("all3", 1, 3)])["all3"].result(30)
    assert wait_for(lambda: in_sync(admin, "all3"), timeout=30)

    def unregister(node, broker):
        p = run_tool(CLUSTER_TOOL, "unregister", "--bootstrap-server", node.bootstrap,
                     "--id", str(broker), check=False)
        return p.returncode, p.stdout + p.stderr
    code, out = unregister(cluster[0], 3)
    assert code != 0 and "broker 3 is running (not fenced): stop it first" in out, out
    assert cluster[2].stop() == 0
    code, out = unregister(cluster[1], 3)
    assert code != 0 and "holds the only copy (or the only in-sync one) of 1 partition(s): only3-0" in out, out
    # Asked of a running node (a client that last took metadata from node 3 may still send
    # admin requests there).
    alive = AdminClient({"bootstrap.servers": cluster[0].bootstrap})
    alive.delete_topics(["only3"])["only3"].result(30)
    assert wait_for(lambda: unregister(cluster[0], 3)[0] == 0, timeout=30)
    brokers = lambda: sorted(AdminClient({"bootstrap.servers": cluster[0].bootstrap})  # noqa: E731
                             .list_topics(timeout=10).brokers)
    assert wait_for(lambda: brokers() == [1, 2]), brokers()
    assert wait_for(lambda: placement(admin, "all3")[0][2] == [1, 2]), placement(admin, "all3")
    code, out = unregister(cluster[0], 9)
    assert code != 0 and "BrokerIdNotRegisteredException" in out, out
    # Back, it registers again and catches up.
    cluster[2].start(timeout=60)
    assert wait_for(lambda: brokers() == [1, 2, 3], timeout=30), brokers()
    assert wait_for(lambda: in_sync(admin, "all3"), timeout=60), placement(admin, "all3")


def broker_only(cluster, tmp_path, node_id, roles="broker"):
    """A node joining `cluster` as an observer of its quorum (not among its voters), started."""
    voters = cluster[0].extra_args[cluster[0].extra_args.index("--voters") + 1]
    config = cluster[0].extra_args[cluster[0].extra_args.index("--config") + 1]
    node = Broker(tmp_path / f"node{node_id}", [
        "--node-id", str(node_id), "--voters", voters, "--process-roles", roles,
        "--controller-listen", f"127.0.0.1:{free_port()}", "--config", config])
    return node.start(timeout=60)


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "Scaling out from three brokers to five: fjord cluster rebalance (dry run, then --execute) moves replicas onto the new brokers under idempotent acks=all load, evens out replicas and leaderships, nothing acknowledged lost; --drain empties a broker")
def test_scaling_out_and_rebalancing_under_load(cluster, tmp_path):
    servers = ",".join(n.bootstrap for n in cluster)
    admin = AdminClient({"bootstrap.servers": servers})
    create(admin, "s", partitions=6)
    load = Producing(servers, "s")
    acked, errors = load.acked, load.errors
    extra = [broker_only(cluster, tmp_path, 4), broker_only(cluster, tmp_path, 5)]
    try:
        assert wait_for(lambda: len(admin.list_topics(timeout=10).brokers) == 5, timeout=30)
        rebalance = [FJORD_BIN, "cluster", "rebalance", "-b", cluster[0].bootstrap]
        before = {p: r for p, (_, r, _) in placement(admin, "s").items()}
        dry = subprocess.run([*rebalance, "-o", "json"], capture_output=True, text=True,
                             timeout=60)
        assert dry.returncode == 0, dry.stderr
        planned = json.loads(dry.stdout)
        assert planned["moves"] and not planned["executed"], planned
        # A dry run moves nothing.
        assert {p: r for p, (_, r, _) in placement(admin, "s").items()} == before
        run = subprocess.run([*rebalance, "--execute", "--max-moving-bytes", "1"],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        assert "moves done" in run.stdout and "rebalanced:" in run.stdout, run.stdout

        def spread():
            placed = placement(admin, "s").values()
            replicas, leaders = {}, {}
            for leader, r, isr in placed:
                for b in r:
                    replicas[b] = replicas.get(b, 0) + 1
                leaders[leader] = leaders.get(leader, 0) + 1
            return replicas, leaders
        assert wait_for(lambda: sorted(spread()[0]) == [1, 2, 3, 4, 5]
                        and max(spread()[0].values()) - min(spread()[0].values()) <= 1
                        and max(spread()[1].values()) <= 2, timeout=30), spread()
        assert wait_for(lambda: in_sync(admin, "s"), timeout=60), placement(admin, "s")
        # fjord cluster brokers shows the same load.
        shown = subprocess.run([FJORD_BIN, "cluster", "brokers", "-o", "json",
                                "-b", cluster[1].bootstrap], capture_output=True, text=True,
                               timeout=60)
        assert shown.returncode == 0, shown.stderr
        held = {b["id"]: b["replicas"] for b in json.loads(shown.stdout)}
        internal = {b: n - spread()[0].get(b, 0) for b, n in held.items()}
        assert sorted(held) == [1, 2, 3, 4, 5] and all(n >= 0 for n in internal.values()), held
        # Broker 5 drained: nothing stays on it.
        drain = subprocess.run([*rebalance, "--drain", "5", "--execute"], capture_output=True,
                               text=True, timeout=300)
        assert drain.returncode == 0, drain.stderr
        assert wait_for(lambda: all(5 not in r for _, r, _ in placement(admin, "s").values()),
                        timeout=30), placement(admin, "s")
        time.sleep(1)
        load.stop()
        assert not errors, errors[:5]
        check(acked, read_all(servers, "s", 6, lambda n: n >= len(acked)))
    finally:
        load.stop()
        for node in extra:
            node.stop()


METADATA_QUORUM = "org.apache.kafka.tools.MetadataQuorumCommand"


def quorum_of(node):
    """(voters, observers, leader) as fjord cluster info shows them."""
    done = subprocess.run([FJORD_BIN, "cluster", "info", "-o", "json", "-b", node.bootstrap],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    q = json.loads(done.stdout)["quorum"]
    return sorted(q["voters"]), sorted(q["observers"]), q["leader_id"]


def controller_of(node):
    return node.extra_args[node.extra_args.index("--controller-listen") + 1]


def directory_id(node):
    with open(os.path.join(node.data_dir, "meta.properties")) as f:
        return next(line.split("=", 1)[1].strip() for line in f
                    if line.startswith("directory.id="))


@pytest.mark.compat("kafka-metadata-quorum 4.4, fjord CLI", "Voters changed online (KIP-853): an observer added with kafka-metadata-quorum add-controller, the quorum's leader removed with remove-controller (it hands over, stays an observer), Kafka's errors for a duplicate or unknown voter; fjord cluster remove-voter refuses a removal that would lose the quorum and removes a stopped voter, add-voter adds one back; an added voter restarts a voter")
def test_voters_are_added_and_removed_online(cluster, tmp_path):
    node4 = broker_only(cluster, tmp_path, 4, roles="broker,controller")
    nodes = {1: cluster[0], 2: cluster[1], 3: cluster[2], 4: node4}
    try:
        assert wait_for(lambda: quorum_of(cluster[0])[1] == [4], timeout=30)
        # Kafka's tool adds it from its own configuration (as it reads a controller's).
        props = tmp_path / "node4.properties"
        props.write_text(f"node.id=4\nprocess.roles=broker,controller\n"
                         f"controller.listener.names=CONTROLLER\n"
                         f"listeners=CONTROLLER://{controller_of(node4)}\n"
                         f"log.dirs={node4.data_dir}\n")
        added = run_tool(METADATA_QUORUM, "--command-config", str(props), "add-controller",
                         bootstrap=cluster[1].bootstrap).stdout
        assert f"Added controller 4 with directory id {directory_id(node4)}" in added, added
        voters, observers, leader = quorum_of(node4)
        assert voters == [1, 2, 3, 4] and observers == [], (voters, observers)
        again = run_tool(METADATA_QUORUM, "--command-config", str(props), "add-controller",
                         bootstrap=cluster[1].bootstrap, check=False)
        assert again.returncode != 0 and "DuplicateVoterException" in again.stdout + again.stderr
        unknown = run_tool(METADATA_QUORUM, "remove-controller", "--controller-id", "9",
                           "--controller-directory-id", directory_id(node4),
                           bootstrap=cluster[1].bootstrap, check=False)
        assert unknown.returncode != 0 and "VoterNotFoundException" in \
            unknown.stdout + unknown.stderr, unknown.stdout + unknown.stderr
        # The quorum's leader removed: it hands over first and stays on as an observer.
        removed = run_tool(METADATA_QUORUM, "remove-controller", "--controller-id", str(leader),
                           "--controller-directory-id", directory_id(nodes[leader]),
                           bootstrap=node4.bootstrap).stdout
        assert f"Removed KRaft controller {leader}" in removed, removed
        voters, observers, now = quorum_of(node4)
        left = sorted({1, 2, 3, 4} - {leader})
        assert voters == left and now != leader, (voters, now)
        assert wait_for(lambda: quorum_of(node4)[1] == [leader], timeout=10), quorum_of(node4)

        # A voter stopped: removing another running one would leave no majority running.
        stopped = next(v for v in left if v not in (now, 4))
        other = next(v for v in left if v not in (now, stopped))
        assert nodes[stopped].stop() == 0
        time.sleep(1)
        fjord = [FJORD_BIN, "cluster", "-b", nodes[now].bootstrap]
        refused = subprocess.run([*fjord, "remove-voter", "--node", str(other)],
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and f"start voters {{{stopped}}} again" in \
            refused.stderr, refused.stderr
        gone = subprocess.run([*fjord, "remove-voter", "--node", str(stopped), "-o", "json"],
                              capture_output=True, text=True, timeout=60)
        assert gone.returncode == 0, gone.stderr
        assert json.loads(gone.stdout)["voters"] == sorted([now, other]), gone.stdout
        back = subprocess.run([*fjord, "add-voter", "--node", str(leader),
                               "--address", controller_of(nodes[leader])],
                              capture_output=True, text=True, timeout=60)
        assert back.returncode == 0, back.stderr
        assert "voters now" in back.stdout, back.stdout
        assert quorum_of(node4)[0] == sorted([now, other, leader])
        # The removed voter restarts as an observer; node 4 restarts a voter (the metadata
        # log's voters, not those it was started with), and the cluster takes changes.
        nodes[stopped].start(timeout=60)
        node4.stop()
        node4.start(timeout=60)
        assert wait_for(lambda: quorum_of(nodes[stopped])[1] == [stopped], timeout=30), \
            quorum_of(nodes[stopped])
        assert quorum_of(node4)[0] == sorted([now, other, leader])
        admin = AdminClient({"bootstrap.servers": node4.bootstrap})
        create(admin, "after-voter-changes", partitions=1)
    finally:
        node4.stop()
