"""The fault harness: a Fjord cluster under a seeded schedule of faults while real clients write
and read, and a checker over everything they saw.

Nodes are `fjord serve` processes on loopback (every node a voter of the metadata quorum). The
workload is librdkafka (confluent-kafka): idempotent acks=all producers writing unique values
to a topic with replication factor 3 and min.insync.replicas 2, recording every send and ack,
a consumer reading the partitions by assignment, recording every poll, and a member of a
consumer group (its coordinator's partition replicated too) committing what it reads. Nemeses,
drawn from
the seed: kill -9 of a node (the partition leaders' node or any) and its restart, a
controlled restart (SIGTERM and start: a rolling restart's step), a partition's replicas
moved to three nodes drawn from all (reassign), a voter of the metadata quorum removed (the
quorum's leader as often as any; added back at the heal: voters), SIGSTOP of a
node (a pause: the node is cut off from everyone) and SIGCONT; and, with every node in a network
namespace of its own (compat/netns.py, root only), network partitions: a node or a partition
leader cut off from the other nodes (clients still reach it), a minority of the nodes cut off
from the majority, one node's packets to another dropped (one way), a node's (or a leader's)
packets to and from the other nodes delayed, a node's packets to the clients dropped or
delayed. One fault at a time, healed
before the next, so a majority of the voters is always up and connected. After the schedule
every node is healed and the whole topic is read back from offset 0.

With `--eos` a consume-transform-produce copier (read_committed input, a transactional producer
sending its consumer's offsets with each batch) copies the topic to another, and the
`kill-coordinator` nemesis kills its transaction or group coordinator's node.

The checker finds: acknowledged records lost; records read twice (duplicates under
idempotence); records read at another offset than their acknowledgement gave; a consumer's
polls going backwards or skipping within a partition; different records at one offset on
different reads; acknowledged records the group never delivered (it may read again after a
rebalance or a coordinator's loss, never skip); with the copier, output records written twice,
acknowledged input never copied, records of committed transactions missing. The report names the seed, the schedule and
the figures (acknowledged, lost,
duplicated, longest time without an acknowledgement, and for each fault the longest any
partition then went without one).

Run by hand (long runs), from the repository root after `cargo build -p fjord`:

    compat/.venv/bin/python compat/faults.py --seed 7 --duration 600 --report run.json

CI runs a short seeded run (compat/test_faults.py).
"""

import argparse
import bisect
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import netns  # noqa: E402
from conftest import FJORD_BIN, Broker, coordinator_partition, free_port, wait_for  # noqa: E402

TOPIC = "faults"
# The exactly-once copier: what it writes, its transactional id and its consumer group.
OUTPUT = "faults-out"
EOS_ID = "faults-eos-copier"
EOS_GROUP = "faults-eos"
# Network nemeses need every node in a network namespace of its own (root).
NETWORK = {"isolate", "isolate-leader", "halves", "one-way", "slow", "slow-leader",
           "clients-cut", "clients-slow"}
NEMESES = ("kill", "kill-leader", "kill-coordinator", "restart", "reassign", "voters", "pause",
           "isolate",
           "isolate-leader", "halves", "one-way", "slow", "slow-leader", "clients-cut",
           "clients-slow")


class Cluster:
    """`n` Fjord nodes, all voters, with short broker sessions so faults show in seconds; on
    loopback, or each in a network namespace of its own when `net` (network faults)."""

    def __init__(self, root, n, net=False):
        self.net = netns.Net(n) if net else None
        host = self.net.host if net else (lambda i: "127.0.0.1")
        controllers = {i: f"{host(i)}:{free_port()}" for i in range(1, n + 1)}
        voters = ",".join(f"{i}@{a}" for i, a in controllers.items())
        config = os.path.join(root, "cluster.toml")
        with open(config, "w") as f:
            f.write('"broker.heartbeat.interval.ms" = 300\n"broker.session.timeout.ms" = 2000\n'
                    '"replica.lag.time.max.ms" = 5000\n"default.replication.factor" = 3\n')
        self.nodes = {i: Broker(os.path.join(root, f"node{i}"),
                                ["--node-id", str(i), "--voters", voters,
                                 "--controller-listen", controllers[i], "--config", config],
                                host=host(i), prefix=self.net.prefix(i) if net else ())
                      for i in controllers}
        self.controllers = controllers
        self.paused = set()
        self.killed = set()
        # Voters removed from the metadata quorum (observers until the heal adds them back).
        self.removed = set()

    def start(self):
        for node in self.nodes.values():
            node.launch()
        for node in self.nodes.values():
            node.wait_ready(timeout=60)

    def bootstrap(self):
        return ",".join(n.bootstrap for n in self.nodes.values())

    def running(self):
        return [i for i in self.nodes if i not in self.paused and i not in self.killed]

    def faulty(self):
        """The nodes a fault holds now (paused, killed or cut off)."""
        links = (self.net.cut_links | self.net.slow_links) if self.net else set()
        # Node 0 stands for the clients.
        return (self.paused | self.killed | self.removed
                | {i for link in links for i in link if i})

    def heal(self):
        if self.net:
            self.net.heal()
        for i in sorted(self.paused):
            self.nodes[i].proc.send_signal(signal.SIGCONT)
        self.paused.clear()
        for i in sorted(self.killed):
            self.nodes[i].start(timeout=60)
        self.killed.clear()
        removed, self.removed = sorted(self.removed), set()
        for i in removed:
            error = self.change_voters("add-voter", i)
            if error:
                raise RuntimeError(f"voter {i} could not be added back: {error}")

    def voters(self):
        """The voters of the metadata quorum now (all, when it cannot be told)."""
        via = self.nodes[self.running()[0]]
        done = subprocess.run([FJORD_BIN, "cluster", "info", "-o", "json", "-b", via.bootstrap],
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            return set(self.nodes)
        return set(json.loads(done.stdout)["quorum"].get("voters", self.nodes))

    def change_voters(self, what, node):
        """`fjord cluster add-voter|remove-voter` for `node`, retried while the quorum is busy
        (a change in flight, an observer still catching up); returns fjord's error if it never
        took."""
        args = ["--node", str(node)]
        if what == "add-voter":
            args += ["--address", self.controllers[node]]
        error = None
        for _ in range(20):
            via = self.nodes[[i for i in self.running() if i != node][0]]
            done = subprocess.run([FJORD_BIN, "cluster", what, *args, "-b", via.bootstrap],
                                  capture_output=True, text=True, timeout=60)
            if done.returncode == 0:
                return None
            error = done.stderr.strip()[:300]
            time.sleep(0.5)
        return error

    def stop(self):
        try:
            self.heal()
            for node in self.nodes.values():
                node.stop()
        finally:
            if self.net:
                self.net.remove()

    def panics(self):
        found = []
        for node in self.nodes.values():
            text = node.log()
            if "panicked" in text:
                found.append(text[text.find("panicked") - 1000:][:3000])
        return found


def leaders(bootstrap):
    """{partition: leader} from Metadata (None if it cannot be read now)."""
    try:
        md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(TOPIC, timeout=5)
        return {p: m.leader for p, m in md.topics[TOPIC].partitions.items()}
    except KafkaException:
        return None


def in_sync(bootstrap, partitions, replicas):
    try:
        md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(TOPIC, timeout=5)
        parts = md.topics[TOPIC].partitions
        return len(parts) == partitions and all(len(p.isrs) == replicas for p in parts.values())
    except KafkaException:
        return False


def coordinator_of(bootstrap, internal_topic, key):
    """The node coordinating `key`: the leader of its partition of `internal_topic`
    (`__transaction_state` for a transactional id, `__consumer_offsets` for a group)."""
    try:
        md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(internal_topic, timeout=5)
        parts = md.topics[internal_topic].partitions
        return parts[coordinator_partition(key, len(parts))].leader if parts else None
    except (KafkaException, KeyError):
        return None


class Workload:
    """Producers writing unique values, a consumer reading by assignment and a group member,
    all recording; with `eos`, a consume-transform-produce copier too (exactly once)."""

    def __init__(self, bootstrap, partitions, producers, eos=False):
        self.bootstrap = bootstrap
        self.partitions = partitions
        self.eos = eos
        # What the copier's committed transactions hold, and how its transactions went.
        self.copy_committed = set()
        self.copy_counts = {"committed": 0, "aborted": 0, "producers": 0, "client_stuck": 0}
        self.copy_times = []  # when each of its transactions committed
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.acked = {}  # value -> (partition, offset)
        self.failed = {}  # value -> error name
        self.ack_times = []
        self.ack_times_by_partition = {p: [] for p in range(partitions)}
        self.polls = {p: [] for p in range(partitions)}  # partition -> [(offset, value)]
        # What the group's member polled (a re-read after a rebalance or a coordinator's loss
        # is allowed: offsets are committed after delivery), and when it has drained.
        self.group_polls = []  # [(partition, offset, value)]
        self.produced = threading.Event()  # every producer flushed: `acked` is complete
        # The group's member, and the copier, have seen every acknowledged record.
        self.group_caught_up = threading.Event()
        self.copy_caught_up = threading.Event()
        if not eos:
            self.copy_caught_up.set()
        self.drained = threading.Event()  # the readers stop
        self.producing = [threading.Thread(target=self.produce, args=(i,), daemon=True)
                          for i in range(producers)]
        self.threads = self.producing + [threading.Thread(target=self.consume, daemon=True),
                                         threading.Thread(target=self.consume_group, daemon=True)]
        if eos:
            self.threads.append(threading.Thread(target=self.copy, daemon=True))

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self, drain_timeout=90):
        """Stops the producers, then lets the group's member read on until it has seen every
        acknowledged record (or `drain_timeout` seconds pass), then stops the readers."""
        self.stop.set()
        for t in self.producing:
            t.join(120)
        self.produced.set()
        end = time.monotonic() + drain_timeout
        self.group_caught_up.wait(drain_timeout)
        self.copy_caught_up.wait(max(0.0, end - time.monotonic()))
        self.drained.set()
        for t in self.threads:
            t.join(120)

    def produce(self, who):
        p = Producer({"bootstrap.servers": self.bootstrap, "acks": "all",
                      "enable.idempotence": True, "message.timeout.ms": 60000,
                      "linger.ms": 5})

        def done(err, msg):
            with self.lock:
                if err is None:
                    self.acked[msg.value()] = (msg.partition(), msg.offset())
                    now = time.monotonic()
                    self.ack_times.append(now)
                    self.ack_times_by_partition[msg.partition()].append(now)
                else:
                    self.failed[msg.value()] = err.name()

        seq = 0
        while not self.stop.is_set():
            value = f"p{who}-{seq}".encode()
            try:
                p.produce(TOPIC, value=value, key=value, on_delivery=done)
                seq += 1
                with self.lock:
                    self.sent += 1
            except BufferError:
                pass
            p.poll(0.005)
        p.flush(90)

    def consume(self):
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "faults-reader",
                      "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        c.assign([TopicPartition(TOPIC, p, 0) for p in range(self.partitions)])
        while not self.stop.is_set():
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                with self.lock:
                    self.polls[m.partition()].append((m.offset(), m.value()))
        c.close()


    def consume_group(self):
        """A member of a consumer group subscribed to the topic, committing what it was given
        (auto commit): through a coordinator's loss it may read again, never skip."""
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "faults-group",
                      "auto.offset.reset": "earliest", "enable.auto.commit": True,
                      "auto.commit.interval.ms": 500, "session.timeout.ms": 10000})
        c.subscribe([TOPIC])
        seen = set()
        while not self.drained.is_set():
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                seen.add(m.value())
                with self.lock:
                    self.group_polls.append((m.partition(), m.offset(), m.value()))
            if self.produced.is_set() and not self.group_caught_up.is_set():
                with self.lock:
                    if all(v in seen for v in self.acked):
                        self.group_caught_up.set()
        c.close()

    def copy(self):
        """A consume-transform-produce loop with exactly-once semantics, as a Kafka Streams or
        Connect task runs one: read_committed input from the group EOS_GROUP, each batch
        written to OUTPUT with its offsets in one transaction. An abortable error aborts and
        rewinds to the committed offsets; a fatal one (fenced, or the producer lost) starts a
        new producer with the same transactional id, which fences the old one."""
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": EOS_GROUP,
                      "isolation.level": "read_committed", "enable.auto.commit": False,
                      "auto.offset.reset": "earliest", "session.timeout.ms": 10000})
        c.subscribe([TOPIC])
        p = None
        while not self.drained.is_set():
            if p is None:
                p = Producer({"bootstrap.servers": self.bootstrap, "transactional.id": EOS_ID,
                              "transaction.timeout.ms": 20000})
                try:
                    p.init_transactions(30)
                except KafkaException:
                    p = None
                    time.sleep(0.5)
                    continue
                with self.lock:
                    self.copy_counts["producers"] += 1
                c = self.rewind(c)
            msgs = [m for m in c.consume(1000, 0.3) if m.error() is None]
            if not msgs:
                if self.produced.is_set() and not self.copy_caught_up.is_set():
                    with self.lock:
                        if all(v in self.copy_committed for v in self.acked):
                            self.copy_caught_up.set()
                continue
            try:
                p.begin_transaction()
                for m in msgs:
                    p.produce(OUTPUT, key=m.value(), value=m.value(), partition=m.partition())
                offsets, group = c.position(c.assignment()), c.consumer_group_metadata()
                bounded(lambda: p.send_offsets_to_transaction(offsets, group, 30), 45)
                bounded(lambda: self.commit(p), 105)
                with self.lock:
                    self.copy_committed.update(m.value() for m in msgs)
                    self.copy_counts["committed"] += 1
                    self.copy_times.append(time.monotonic())
            except ClientStuck:
                # librdkafka can block past its own timeout when the group coordinator's
                # broker left the metadata (confluentinc/librdkafka#5511, #5456): the producer
                # is abandoned; a new one fences it and aborts its transaction.
                with self.lock:
                    self.copy_counts["client_stuck"] += 1
                p = None
                c = self.rewind(c)
            except KafkaException as e:
                with self.lock:
                    self.copy_counts["aborted"] += 1
                if e.args[0].txn_requires_abort():
                    try:
                        bounded(lambda: p.abort_transaction(30), 45)
                    except (KafkaException, ClientStuck):
                        p = None
                else:
                    p = None  # fatal: a new producer fences this one
                c = self.rewind(c)
        c.close()

    @staticmethod
    def commit(p, timeout=90):
        """commit_transaction, the call retried while its error is retriable (as librdkafka
        asks; a new transaction would be refused)."""
        end = time.monotonic() + timeout
        while True:
            try:
                p.commit_transaction(30)
                return
            except KafkaException as e:
                if not e.args[0].retriable() or time.monotonic() > end:
                    raise
                time.sleep(0.2)

    def rewind(self, c):
        """Puts the copier's consumer back at its group's committed offsets (what the last
        committed transaction recorded); a new consumer if they cannot be read now."""
        assigned = c.assignment()
        if not assigned:
            return c
        try:
            for tp in c.committed(assigned, timeout=10):
                offset = tp.offset if tp.offset >= 0 else 0
                c.seek(TopicPartition(tp.topic, tp.partition, offset))
            return c
        except KafkaException:
            c.close()
            fresh = Consumer({"bootstrap.servers": self.bootstrap, "group.id": EOS_GROUP,
                              "isolation.level": "read_committed", "enable.auto.commit": False,
                              "auto.offset.reset": "earliest", "session.timeout.ms": 10000})
            fresh.subscribe([TOPIC])
            return fresh


class ClientStuck(Exception):
    """A client call still blocked well past its own timeout."""


def bounded(call, seconds):
    """Runs `call` on a thread of its own and returns its result, or raises what it raised;
    raises ClientStuck if it is still running after `seconds` (the call is left behind)."""
    out = {}

    def run():
        try:
            out["value"] = call()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise ClientStuck(f"still blocked after {seconds} s")
    if "error" in out:
        raise out["error"]
    return out.get("value")


def read_back(bootstrap, partitions, timeout=120, topic=TOPIC, committed=False):
    """Every record of `topic` from offset 0, up to each partition's high watermark (its last
    stable offset for a `committed` read)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"faults-check-{time.time()}",
                  "enable.auto.commit": False,
                  "isolation.level": "read_committed" if committed else "read_uncommitted"})
    ends = {}
    deadline = time.monotonic() + timeout
    for p in range(partitions):
        while True:
            try:
                ends[p] = c.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
                break
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = {p: [] for p in range(partitions)}
    def done():
        if committed:
            # Markers end a transactional log: the position passes them, no record does.
            positions = c.position([TopicPartition(topic, p) for p in range(partitions)])
            return all(tp.offset >= ends[tp.partition] for tp in positions)
        return all((got[p][-1][0] + 1 if got[p] else 0) >= ends[p] for p in got)

    while not done() and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got[m.partition()].append((m.offset(), m.value()))
    c.close()
    return got, ends


def check(workload, final):
    """The anomalies in what the clients saw; an empty dict when there are none."""
    problems = {}
    at = {}  # (partition, offset) -> value, from every read
    where = {}  # value -> (partition, offset) in the final read
    for part, records in final.items():
        offsets = [o for o, _ in records]
        if offsets != sorted(set(offsets)):
            problems.setdefault("final read not in offset order", []).append(part)
        for o, v in records:
            if v in where:
                problems.setdefault("duplicates", []).append((v.decode(), where[v], (part, o)))
            where[v] = (part, o)
            at[(part, o)] = v
    for value, place in workload.acked.items():
        if value not in where:
            problems.setdefault("lost acknowledged", []).append((value.decode(), place))
        elif where[value] != place:
            problems.setdefault("acknowledged at another offset",
                                []).append((value.decode(), place, where[value]))
    group_seen = set()
    for part, o, v in workload.group_polls:
        group_seen.add(v)
        if (part, o) in at and at[(part, o)] != v:
            problems.setdefault("group member read a different record at an offset",
                                []).append((part, o, v.decode(), at[(part, o)].decode()))
    for v in workload.acked:
        if v not in group_seen:
            part, o = where.get(v, workload.acked[v])
            # What the member read of that partition around it, in poll order.
            near = [po for p, po, _ in workload.group_polls if p == part and abs(po - o) <= 3]
            problems.setdefault("acknowledged records the group never delivered",
                                []).append((v.decode(), (part, o), near))
    if workload.eos:
        problems.update(check_copy(workload, final, workload.output))
    for part, polls in workload.polls.items():
        last = -1
        for o, v in polls:
            if o <= last:
                problems.setdefault("polls went backwards", []).append((part, last, o))
            elif last >= 0 and o != last + 1 and (part, last + 1) in at:
                # A gap is fine only where the log has no record (markers, compaction).
                problems.setdefault("polls skipped records", []).append((part, last, o))
            last = max(last, o)
            if (part, o) in at and at[(part, o)] != v:
                problems.setdefault("different records at one offset",
                                    []).append((part, o, v.decode(), at[(part, o)].decode()))
    return problems


def check_copy(workload, final, output):
    """The exactly-once copier's anomalies: an output record written twice, an acknowledged
    input record never written, or written outside its partition, a committed transaction's
    record missing, a record nobody produced."""
    problems = {}
    inputs = {v: part for part, records in final.items() for _, v in records}
    copies = {}
    for part, records in output.items():
        for o, v in records:
            copies.setdefault(v, []).append((part, o))
    for v, places in copies.items():
        if len(places) > 1:
            problems.setdefault("copied more than once", []).append((v.decode(), places))
        if v not in inputs:
            problems.setdefault("copied a record never produced", []).append((v.decode(), places))
        elif any(part != inputs[v] for part, _ in places):
            problems.setdefault("copied to another partition", []).append((v.decode(), places))
    for v in workload.acked:
        if v not in copies:
            problems.setdefault("acknowledged records never copied", []).append(v.decode())
    for v in workload.copy_committed:
        if v not in copies:
            problems.setdefault("records of committed transactions missing",
                                []).append(v.decode())
    return problems


def run(seed, duration, nodes=3, partitions=3, producers=2, interval=(3.0, 8.0),
        nemeses=("kill", "kill-leader", "pause"), root=None, log=print, eos=False):
    rng = random.Random(seed)
    own = root is None
    root = root or tempfile.mkdtemp(prefix="fjord-faults-")
    unknown = set(nemeses) - set(NEMESES)
    if unknown:
        raise ValueError(f"unknown nemeses {sorted(unknown)}; choose from {', '.join(NEMESES)}")
    cluster = Cluster(root, nodes, net=bool(set(nemeses) & NETWORK))
    schedule = []
    report = {"seed": seed, "duration_s": duration, "nodes": nodes, "partitions": partitions,
              "nemeses": list(nemeses), "eos": eos, "schedule": schedule, "data": root}
    try:
        cluster.start()
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap()})
        topics = [TOPIC, OUTPUT] if eos else [TOPIC]
        created = admin.create_topics([NewTopic(t, partitions, 3,
                                                config={"min.insync.replicas": "2"})
                                       for t in topics])
        for t in topics:
            created[t].result(30)
        if not wait_for(lambda: in_sync(cluster.bootstrap(), partitions, 3), timeout=30):
            raise RuntimeError("the topic's replicas never got in sync")
        work = Workload(cluster.bootstrap(), partitions, producers, eos=eos)
        work.start()
        started = time.monotonic()
        end = started + duration
        while time.monotonic() < end:
            time.sleep(min(rng.uniform(*interval), max(0.0, end - time.monotonic())))
            if time.monotonic() >= end:
                break
            # Heal what an earlier fault did before the next one (one fault at a time keeps a
            # majority of the voters up and connected).
            if cluster.faulty():
                schedule.append((round(time.monotonic() - started, 1), "heal",
                                 sorted(cluster.faulty())))
                log(f"[{schedule[-1][0]:7.1f}s] heal {schedule[-1][2]}")
                cluster.heal()
                continue
            kind = rng.choice(nemeses)
            running = cluster.running()
            target = rng.choice(running)
            if kind in ("kill-leader", "isolate-leader", "slow-leader"):
                led = leaders(cluster.bootstrap()) or {}
                candidates = [lead for lead in led.values() if lead in running]
                if candidates:
                    target = rng.choice(sorted(candidates))
            elif kind == "kill-coordinator":
                # The copier's transaction or group coordinator (the reader group's without
                # the copier).
                which = [("__transaction_state", EOS_ID), ("__consumer_offsets", EOS_GROUP)]
                topic, key = rng.choice(which if eos else [("__consumer_offsets",
                                                            "faults-group")])
                found = coordinator_of(cluster.bootstrap(), topic, key)
                if found in running:
                    target = found
            node = cluster.nodes[target]
            others = [i for i in cluster.nodes if i != target]
            if kind == "pause":
                node.proc.send_signal(signal.SIGSTOP)
                cluster.paused.add(target)
            elif kind in ("kill", "kill-leader", "kill-coordinator"):
                node.kill()
                cluster.killed.add(target)
            elif kind == "reassign":
                # A partition moved to three nodes drawn from all (a new order of the same
                # three on a three-node cluster): the new replicas copy it while the load and
                # the next faults go on. Not held: it completes by itself.
                partition = rng.randrange(partitions)
                replicas = rng.sample(sorted(cluster.nodes), 3)
                target = (partition, replicas)
                done = subprocess.run(
                    [FJORD_BIN, "topic", "reassign", TOPIC, "--partition", str(partition),
                     "--replicas", ",".join(map(str, replicas)),
                     "-b", cluster.nodes[rng.choice(running)].bootstrap],
                    capture_output=True, text=True, timeout=60)
                if done.returncode != 0:
                    target = (partition, replicas, done.stderr.strip()[:200])
            elif kind == "voters":
                # A voter leaves the metadata quorum (it stays an observer; a leader hands its
                # leadership over first); the heal adds it back.
                error = cluster.change_voters("remove-voter", target)
                # Added back at the heal if it is no voter now (an answer lost on the way
                # included).
                if not error or target not in cluster.voters():
                    cluster.removed.add(target)
                if error:
                    target = (target, error)
            elif kind == "restart":
                # A controlled restart (SIGTERM, then start at once): one step of a rolling
                # restart. The node hands its leaderships over before it stops.
                node.stop()
                node.start(timeout=60)
            elif kind in ("isolate", "isolate-leader"):
                # Cut off from the other nodes; clients still reach it.
                cluster.net.split([target], others)
            elif kind == "halves":
                shuffled = sorted(cluster.nodes)
                rng.shuffle(shuffled)
                minority = shuffled[:(len(shuffled) - 1) // 2]
                target = (sorted(minority), sorted(shuffled[len(minority):]))
                cluster.net.split(*target)
            elif kind in ("slow", "slow-leader"):
                # Every packet between it and the other nodes late by the same delay, both
                # ways (clients' packets are not).
                ms = rng.choice((50, 150, 400))
                for other in others:
                    cluster.net.delay(target, other, ms)
                    cluster.net.delay(other, target, ms)
                target = (target, f"{ms} ms")
            elif kind == "clients-cut":
                # Its packets to the clients dropped; the other nodes still reach it.
                cluster.net.cut(target, 0)
            elif kind == "clients-slow":
                ms = rng.choice((50, 150, 400))
                cluster.net.delay(target, 0, ms)
                target = (target, f"{ms} ms")
            elif kind == "one-way":
                # target's packets for one other node are dropped; that node's still arrive.
                target = (target, rng.choice(others))
                cluster.net.cut(*target)
            else:
                raise ValueError(f"unknown nemesis {kind}")
            schedule.append((round(time.monotonic() - started, 1), kind, target))
            log(f"[{schedule[-1][0]:7.1f}s] {kind} {target}")
        cluster.heal()
        schedule.append((round(time.monotonic() - started, 1), "heal all", None))
        work.finish()
        wait_for(lambda: in_sync(cluster.bootstrap(), partitions, 3), timeout=60)
        final, ends = read_back(cluster.bootstrap(), partitions)
        if eos:
            work.output, _ = read_back(cluster.bootstrap(), partitions, topic=OUTPUT,
                                       committed=True)
        problems = check(work, final)
        gaps = [b - a for a, b in zip(sorted(work.ack_times), sorted(work.ack_times)[1:])]
        report.update({
            "sent": work.sent,
            "acknowledged": len(work.acked),
            "failed": len(work.failed),
            "failed_by_error": {e: list(work.failed.values()).count(e)
                                for e in set(work.failed.values())},
            "read_back": sum(len(r) for r in final.values()),
            "high_watermarks": ends,
            "polled": sum(len(p) for p in work.polls.values()),
            "group_polled": len(work.group_polls),
            "group_reread": len(work.group_polls) - len({v for _, _, v in work.group_polls}),
            "longest_without_ack_s": round(max(gaps, default=0.0), 2),
            "unavailable_s": unavailability(work, schedule, started),
            "copier": dict(work.copy_counts, copied=len(work.copy_committed),
                           output=sum(len(r) for r in getattr(work, "output", {}).values()),
                           longest_without_commit_s=round(max(
                               (b - a for a, b in zip(work.copy_times, work.copy_times[1:])),
                               default=0.0), 2),
                           commits_at_s=[round(t - started, 1) for t in work.copy_times][::10])
            if eos else None,
            "lost": len(problems.get("lost acknowledged", [])),
            "duplicated": len(problems.get("duplicates", [])),
            "problems": {k: v[:20] for k, v in problems.items()},
            "panics": cluster.panics(),
        })
        return report
    finally:
        cluster.stop()
        if own and not report.get("problems") and not report.get("panics"):
            shutil.rmtree(root, ignore_errors=True)


def unavailability(work, schedule, started):
    """For each fault of the schedule, the longest time any partition went without an
    acknowledged write from the fault until the next fault (None: one never had one again):
    the unavailability that fault caused, its heal included."""
    times = {p: sorted(ts) for p, ts in work.ack_times_by_partition.items()}
    faults = [(at, kind, target) for at, kind, target in schedule if not kind.startswith("heal")]
    out = []
    for n, (at, kind, target) in enumerate(faults):
        fault = started + at
        until = started + faults[n + 1][0] if n + 1 < len(faults) else float("inf")
        worst = 0.0
        for ts in times.values():
            i = bisect.bisect_left(ts, fault)
            if i == len(ts):
                worst = None
                break
            j = bisect.bisect_left(ts, until)
            # The gaps from the fault to the first acknowledgement after the window's start,
            # and between acknowledgements inside it (the one after the window closes it).
            points = [fault] + ts[i:min(j + 1, len(ts))]
            worst = max(worst, max(b - a for a, b in zip(points, points[1:])))
        out.append((at, kind, target, None if worst is None else round(worst, 2)))
    return out


def main():
    parser = argparse.ArgumentParser(
        description="Run a Fjord cluster under seeded faults with real clients and check that "
                    "nothing acknowledged is lost, duplicated or moved.",
        epilog="example: compat/.venv/bin/python compat/faults.py --seed 7 --duration 600 "
               "--report run.json   (build first: cargo build -p fjord; FJORD_BIN picks "
               "another binary)")
    parser.add_argument("--seed", type=int, default=1, help="the schedule's seed (default 1)")
    parser.add_argument("--duration", type=float, default=60,
                        help="seconds of faults (default 60)")
    parser.add_argument("--nodes", type=int, default=3, choices=(3, 5),
                        help="cluster size (default 3)")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--nemeses", default="kill,kill-leader,pause",
                        help="comma-separated from " + ", ".join(NEMESES) + " (the network "
                             "ones, isolate to one-way, need root: each node gets a network "
                             "namespace of its own)")
    parser.add_argument("--eos", action="store_true",
                        help="also run an exactly-once consume-transform-produce copier and "
                             "check its output (pair with the kill-coordinator nemesis)")
    parser.add_argument("--report", help="write the report as JSON here")
    args = parser.parse_args()
    report = run(args.seed, args.duration, args.nodes, args.partitions, args.producers,
                 nemeses=tuple(args.nemeses.split(",")), eos=args.eos)
    text = json.dumps(report, indent=2, default=str)
    if args.report:
        with open(args.report, "w") as f:
            f.write(text)
    print(text)
    bad = report["problems"] or report["panics"]
    if bad:
        print(f"FAILED: anomalies found; data kept in {report['data']}", file=sys.stderr)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
