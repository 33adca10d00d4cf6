"""Coordinators that survive their broker: on three Fjord nodes `__consumer_offsets` and
`__transaction_state` are replicated; when the broker coordinating a group or a transactional
id is killed, the new leader of its partition loads the shard and clients carry on with no more
than a retry: committed offsets intact, no record skipped, transactions exact."""

import json
import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import (FJORD_BIN, coordinator_partition, three_nodes,
                      three_nodes_in_namespaces, wait_for)


@pytest.fixture
def cluster(tmp_path):
    yield from three_nodes(tmp_path, '"replica.lag.time.max.ms" = 4000\n')


@pytest.fixture
def net_cluster(tmp_path):
    yield from three_nodes_in_namespaces(tmp_path, '"replica.lag.time.max.ms" = 4000\n')


def bootstrap(cluster):
    return ",".join(n.bootstrap for n in cluster)


def internal_replicas(admin, topic):
    md = admin.list_topics(topic, timeout=10).topics[topic]
    return {len(p.replicas) for p in md.partitions.values()}, {len(p.isrs) for p in md.partitions.values()}


def group_coordinator(admin, group):
    d = admin.describe_consumer_groups([group])[group].result(10)
    return d.coordinator.id


def group_coordinator_now(admin, group):
    """The group's coordinator, or None while it cannot be described (moving, loading)."""
    try:
        return group_coordinator(admin, group)
    except (KafkaException, TimeoutError):
        return None


def partition_for(key, partitions):
    """The coordinator partition of `key` (a wrong guess fails the tests: the coordinator epoch
    would not move)."""
    return coordinator_partition(key, partitions)


def run_transaction(p, produce, commit=True):
    """One transaction, handled as librdkafka asks: a retriable error retries the same call, an
    abortable one aborts and runs the transaction again."""
    while True:
        p.begin_transaction()
        produce()
        while True:
            try:
                (p.commit_transaction if commit else p.abort_transaction)(60)
                return
            except KafkaException as e:
                err = e.args[0]
                if err.txn_requires_abort():
                    p.abort_transaction(60)
                    break
                if not err.retriable():
                    raise
                time.sleep(0.5)


def marker_epochs(node, topic):
    """The coordinator epochs of the last markers each partition of `topic` took, per
    producer (DescribeProducers, through the fjord CLI)."""
    done = subprocess.run([FJORD_BIN, "txn", "producers", topic, "-o", "json",
                           "-b", node.bootstrap], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    return {(p["partition"], p["producer_id"]): p["coordinator_epoch"] for p in json.loads(out)}


def produce_values(servers, topic, values):
    p = Producer({"bootstrap.servers": servers, "acks": "all", "enable.idempotence": True})
    for v in values:
        p.produce(topic, value=v, key=v)
        p.poll(0)
    assert p.flush(60) == 0


def group_scenario(cluster, topic, partitions, records, group, protocol):
    """A replicated topic holding `records` values and the config of a consumer of `group`
    committing by hand: (servers, admin, values, config)."""
    servers = bootstrap(cluster)
    admin = AdminClient({"bootstrap.servers": servers})
    admin.create_topics([NewTopic(topic, partitions, 3, config={"min.insync.replicas": "2"})]
                        )[topic].result(30)
    values = [f"v{i}".encode() for i in range(records)]
    produce_values(servers, topic, values)
    config = {"bootstrap.servers": servers, "group.id": group, "enable.auto.commit": False,
              "auto.offset.reset": "earliest", "group.protocol": protocol}
    if protocol == "classic":
        config["session.timeout.ms"] = 10000
    return servers, admin, values, config


# Errors of a commit whose partition moved to another member meanwhile.
MOVED = (KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION,
         KafkaError.UNKNOWN_MEMBER_ID, KafkaError.STALE_MEMBER_EPOCH,
         KafkaError.FENCED_MEMBER_EPOCH)
# Errors of a commit sent while the coordinator moves or loads (retried).
MOVING = (KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.NOT_COORDINATOR,
          KafkaError.COORDINATOR_NOT_AVAILABLE)


def commit_exactly(c, m, committed, moved_ok=False):
    """A synchronous commit of `m`'s next offset, retried while retriable, noted in `committed`
    once done (the committed offsets are exact); with `moved_ok`, a partition that moved to
    another member is no longer this one's to commit."""
    while True:
        try:
            c.commit(message=m, asynchronous=False)
            committed[m.partition()] = m.offset() + 1
            return
        except KafkaException as e:
            code = e.args[0].code()
            if moved_ok and code in MOVED:
                return
            if not e.args[0].retriable() and code not in MOVING:
                raise
            time.sleep(0.2)


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "A consumer group's coordinator killed during steady consumption: the group resumes on the new leader of its __consumer_offsets partition, committed offsets intact, nothing skipped")
def test_a_group_survives_the_loss_of_its_coordinator(cluster, protocol):
    group = f"cg-{protocol}"
    servers, admin, values, config = group_scenario(cluster, "g", 3, 600, group, protocol)
    c = Consumer(config)
    c.subscribe(["g"])
    seen = []
    committed_before = {}

    def poll_some(n, timeout=60):
        got = 0
        end = time.monotonic() + timeout
        while got < n and time.monotonic() < end:
            m = c.poll(0.5)
            if m is None or m.error() is not None:
                continue
            seen.append((m.partition(), m.offset(), m.value()))
            got += 1
            commit_exactly(c, m, committed_before)
        return got

    assert poll_some(200) == 200
    # __consumer_offsets has three replicas, all in sync.
    assert wait_for(lambda: internal_replicas(admin, "__consumer_offsets") == ({3}, {3}),
                    timeout=30), internal_replicas(admin, "__consumer_offsets")
    coordinator = group_coordinator(admin, group)
    cluster[coordinator - 1].kill()
    survivors = ",".join(n.bootstrap for i, n in enumerate(cluster, 1) if i != coordinator)
    sa = AdminClient({"bootstrap.servers": survivors})
    # The rest arrives: the group carries on with its committed offsets on the new coordinator.
    assert poll_some(400, timeout=120) == 400, f"{len(seen)} read"
    c.close()
    assert sorted(v for _, _, v in seen) == sorted(values), "records skipped or read twice"
    assert wait_for(lambda: group_coordinator_now(sa, group) not in (None, coordinator),
                    timeout=30)
    # What was committed is what the new coordinator has.
    check = Consumer({"bootstrap.servers": survivors, "group.id": group,
                      "group.protocol": protocol})
    offsets = check.committed([TopicPartition("g", p) for p in range(3)], timeout=20)
    check.close()
    assert {tp.partition: tp.offset for tp in offsets} == committed_before
    cluster[coordinator - 1].start(timeout=60)


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "A transaction coordinator killed between transactions: the producer carries on with the new leader of its __transaction_state partition; read_committed sees every committed record once, no aborted one")
def test_transactions_survive_the_loss_of_their_coordinator(cluster):
    servers = bootstrap(cluster)
    admin = AdminClient({"bootstrap.servers": servers})
    admin.create_topics([NewTopic("t", 2, 3, config={"min.insync.replicas": "2"})])["t"].result(30)
    p = Producer({"bootstrap.servers": servers, "transactional.id": "tx-failover",
                  "transaction.timeout.ms": 60000})
    p.init_transactions(60)

    def transaction(prefix, commit):
        def produce():
            for i in range(50):
                p.produce("t", value=f"{prefix}-{i}".encode(), partition=i % 2)
            assert p.flush(60) == 0

        run_transaction(p, produce, commit)

    transaction("a", True)
    transaction("x", False)
    assert wait_for(lambda: internal_replicas(admin, "__transaction_state") == ({3}, {3}),
                    timeout=30), internal_replicas(admin, "__transaction_state")
    # The transaction coordinator: the leader of the id's __transaction_state partition.
    md = admin.list_topics("__transaction_state", timeout=10).topics["__transaction_state"]
    coordinator = md.partitions[partition_for("tx-failover", len(md.partitions))].leader
    survivor = next(n for i, n in enumerate(cluster, 1) if i != coordinator)
    before = marker_epochs(survivor, "t")
    cluster[coordinator - 1].kill()
    transaction("b", True)
    transaction("y", False)
    transaction("c", True)
    c = Consumer({"bootstrap.servers": servers, "group.id": "tx-check",
                  "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                  # Nothing to commit at close to a group coordinator that may be down.
                  "enable.auto.commit": False})
    c.assign([TopicPartition("t", q, 0) for q in range(2)])
    got = []
    end = time.monotonic() + 60
    while len(got) < 150 and time.monotonic() < end:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value().decode())
    time.sleep(1)
    m = c.poll(1)
    assert m is None or m.error() is not None, f"more than the committed records: {m.value()}"
    c.close()
    expected = [f"{prefix}-{i}" for prefix in "abc" for i in range(50)]
    assert sorted(got) == sorted(expected)
    # The new coordinator's markers carry its epoch (its partition's leader epoch), above the
    # old one's: a late marker of the deposed coordinator would be fenced.
    after = marker_epochs(survivor, "t")
    assert before.keys() == after.keys() and all(after[k] > before[k] for k in before), (before, after)
    cluster[coordinator - 1].start(timeout=60)


def txn_state(node, transactional_id):
    """The state of a transactional id's transaction, as its coordinator describes it (through
    the fjord CLI, which finds the coordinator as Kafka's Admin does)."""
    done = subprocess.run([FJORD_BIN, "txn", "describe", transactional_id, "-o", "json",
                           "-b", node.bootstrap, "--timeout-ms", "5000"],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return None
    return json.loads(done.stdout)["state"]


@pytest.mark.parametrize("ending", ["killed", "healed"])
@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "A transaction coordinator that cannot reach one partition's leader answers commit once PrepareCommit is stored; the marker follows when the link heals, or from the next coordinator when it is killed; read_committed sees every committed record once")
def test_a_transaction_left_in_prepare_is_completed(net_cluster, ending):
    cluster, net = net_cluster
    servers = bootstrap(cluster)
    admin = AdminClient({"bootstrap.servers": servers})
    p = Producer({"bootstrap.servers": servers, "transactional.id": "tx-prepare",
                  "transaction.timeout.ms": 60000})
    p.init_transactions(60)
    assert wait_for(lambda: internal_replicas(admin, "__transaction_state") == ({3}, {3}),
                    timeout=30), internal_replicas(admin, "__transaction_state")
    md = admin.list_topics("__transaction_state", timeout=10).topics["__transaction_state"]
    coordinator = md.partitions[partition_for("tx-prepare", len(md.partitions))].leader
    far = coordinator % 3 + 1  # the broker the coordinator will not reach
    other = next(i for i in (1, 2, 3) if i not in (coordinator, far))
    admin.create_topics([NewTopic("far", 1, replica_assignment=[[far]]),
                         NewTopic("near", 1, 3, config={"min.insync.replicas": "2"})])
    assert wait_for(lambda: {"far", "near"} <= set(admin.list_topics(timeout=10).topics), timeout=30)

    def produce(prefix):
        def run():
            for topic in ("far", "near"):
                for i in range(10):
                    p.produce(topic, value=f"{prefix}-{i}".encode())
            assert p.flush(60) == 0
        return run

    run_transaction(p, produce("a"))
    before = marker_epochs(cluster[other - 1], "far")

    p.begin_transaction()
    produce("b")()
    # The coordinator's requests no longer reach `far`'s Kafka listener (its Raft and
    # heartbeats still do): its marker there cannot be written.
    net.cut_port(coordinator, far, cluster[far - 1].port)
    started = time.monotonic()
    p.commit_transaction(30)
    assert time.monotonic() - started < 10, "the commit waited for a marker it could not write"
    time.sleep(1)
    assert txn_state(cluster[other - 1], "tx-prepare") == "PrepareCommit"
    if ending == "killed":
        # The coordinator dies with the marker unwritten: the next leader of its
        # __transaction_state partition finds the transaction in PrepareCommit and completes it.
        cluster[coordinator - 1].kill()
    else:
        # The link heals: the coordinator's next round writes the marker.
        net.heal()
    assert wait_for(lambda: txn_state(cluster[other - 1], "tx-prepare") == "CompleteCommit",
                    timeout=60), txn_state(cluster[other - 1], "tx-prepare")
    after = marker_epochs(cluster[other - 1], "far")
    assert before.keys() == after.keys()
    if ending == "killed":
        # Written by the new coordinator, in its epoch.
        assert all(after[k] > before[k] for k in before), (before, after)
    else:
        assert after == before, "the same coordinator wrote both markers"

    # The producer carries on (with the new coordinator, if it moved).
    run_transaction(p, produce("c"))
    c = Consumer({"bootstrap.servers": servers, "group.id": "tx-prepare-check",
                  "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.assign([TopicPartition("far", 0, 0), TopicPartition("near", 0, 0)])
    got = []
    end = time.monotonic() + 60
    while len(got) < 60 and time.monotonic() < end:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append((m.topic(), m.value().decode()))
    time.sleep(1)
    m = c.poll(1)
    assert m is None or m.error() is not None, f"more than the committed records: {m.value()}"
    c.close()
    expected = [(t, f"{prefix}-{i}") for t in ("far", "near") for prefix in "abc" for i in range(10)]
    assert sorted(got) == sorted(expected)
    net.heal()
    if ending == "killed":
        cluster[coordinator - 1].start(timeout=60)


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "Static members (group.instance.id) keep their partitions through the kill -9 of their group coordinator and through a restart of one of them")
def test_static_members_keep_their_partitions(cluster, protocol):
    servers = bootstrap(cluster)
    admin = AdminClient({"bootstrap.servers": servers})
    admin.create_topics([NewTopic("s", 4, 3)])["s"].result(30)
    group = f"static-{protocol}"

    def member(instance):
        config = {"bootstrap.servers": servers, "group.id": group, "group.instance.id": instance,
                  "group.protocol": protocol, "auto.offset.reset": "earliest"}
        if protocol == "classic":
            config["session.timeout.ms"] = 30000
        c = Consumer(config)
        c.subscribe(["s"])
        return c

    def assignments(consumers, rounds=1):
        for _ in range(rounds):
            for c in consumers:
                c.poll(0.2)
        return [sorted(tp.partition for tp in c.assignment()) for c in consumers]

    members = [member("i1"), member("i2")]
    assert wait_for(lambda: sorted(sum(assignments(members), [])) == [0, 1, 2, 3]
                    and all(assignments(members)), timeout=60), assignments(members)
    settled = assignments(members, rounds=10)
    assert sorted(sum(settled, [])) == [0, 1, 2, 3], settled

    coordinator = group_coordinator(admin, group)
    cluster[coordinator - 1].kill()
    survivors = ",".join(n.bootstrap for i, n in enumerate(cluster, 1) if i != coordinator)
    sa = AdminClient({"bootstrap.servers": survivors})
    # The group comes back on the new coordinator with its static members and their partitions.
    assert wait_for(lambda: group_coordinator_now(sa, group) not in (None, coordinator), timeout=60)
    end = time.monotonic() + 4
    while time.monotonic() < end:
        assert assignments(members) == settled, "a static member's partitions moved"

    # One restarts with its instance id: while it is away it stays a member (nothing is
    # rebalanced: the other keeps its partitions), and back it gets its own again.
    members[0].close()
    end = time.monotonic() + 2
    while time.monotonic() < end:
        assert assignments(members[1:]) == settled[1:], "the other member's partitions moved"
    described = sa.describe_consumer_groups([group])[group].result(10)
    assert sorted(m.group_instance_id for m in described.members) == ["i1", "i2"]
    members[0] = member("i1")
    assert wait_for(lambda: assignments(members) == settled, timeout=60), assignments(members)
    end = time.monotonic() + 2
    while time.monotonic() < end:
        assert assignments(members) == settled
    for c in members:
        c.close()
    cluster[coordinator - 1].start(timeout=60)


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "A consumer group's coordinator killed during a rebalance (a second member joining): the rebalance completes on the new coordinator, committed offsets intact, nothing skipped")
def test_a_group_rebalancing_when_its_coordinator_dies_completes(cluster, protocol):
    group = f"rebalance-{protocol}"
    servers, admin, values, config = group_scenario(cluster, "r", 4, 800, group, protocol)
    seen = []
    committed = {}

    def poll(c, n):
        got = 0
        for _ in range(n):
            m = c.poll(0.1)
            if m is None or m.error() is not None:
                continue
            seen.append((m.partition(), m.offset(), m.value()))
            got += 1
            commit_exactly(c, m, committed, moved_ok=True)
        return got

    first = Consumer(config)
    first.subscribe(["r"])
    assert wait_for(lambda: poll(first, 5) > 0 and len(seen) >= 100, timeout=60)
    coordinator = group_coordinator(admin, group)
    # A second member joins: the group rebalances, and its coordinator dies meanwhile.
    second = Consumer(config)
    second.subscribe(["r"])
    poll(second, 3)
    poll(first, 1)
    cluster[coordinator - 1].kill()
    members = [first, second]
    end = time.monotonic() + 120
    while len({v for _, _, v in seen}) < len(values) and time.monotonic() < end:
        for c in members:
            poll(c, 5)
    survivors = ",".join(n.bootstrap for i, n in enumerate(cluster, 1) if i != coordinator)
    sa = AdminClient({"bootstrap.servers": survivors})
    # Both members hold partitions on the new coordinator, and every record was delivered.
    assert wait_for(lambda: [poll(c, 1) for c in members] and all(c.assignment() for c in members),
                    timeout=60), [c.assignment() for c in members]
    missing = sorted(set(values) - {v for _, _, v in seen})
    if missing:
        # Where the missing records are, and what each partition delivered, for the report.
        where = {}
        probe = Consumer({"bootstrap.servers": survivors, "group.id": "probe-" + group,
                          "enable.auto.commit": False})
        probe.assign([TopicPartition("r", q, 0) for q in range(4)])
        end = time.monotonic() + 20
        while len(where) < len(values) and time.monotonic() < end:
            m = probe.poll(0.5)
            if m is not None and m.error() is None:
                where[m.value()] = (m.partition(), m.offset())
        probe.close()
        delivered = {q: sorted(o for p, o, _ in seen if p == q) for q in range(4)}
        raise AssertionError(f"records skipped: {[(v, where.get(v)) for v in missing[:10]]}; "
                             f"delivered per partition (first, last, count): "
                             f"{ {q: (d[:1], d[-1:], len(d)) for q, d in delivered.items()} }; "
                             f"committed {committed}")
    assert wait_for(lambda: group_coordinator_now(sa, group) not in (None, coordinator),
                    timeout=30)
    for c in members:
        c.close()
    # What was committed last is what the new coordinator has.
    check = Consumer({"bootstrap.servers": survivors, "group.id": group, "group.protocol": protocol})
    offsets = check.committed([TopicPartition("r", p) for p in range(4)], timeout=20)
    check.close()
    assert {tp.partition: tp.offset for tp in offsets} == committed
    cluster[coordinator - 1].start(timeout=60)
