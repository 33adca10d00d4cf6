"""The fault harness: a Fjord cluster under a seeded schedule of faults while real clients write
and read, and a checker over everything they saw.

Nodes are `fjord serve` processes on loopback (every node a voter of the metadata quorum). The
workload is librdkafka (confluent-kafka): idempotent acks=all producers writing unique values
to a topic with replication factor 3 and min.insync.replicas 2, recording every send and ack,
a consumer reading the partitions by assignment, recording every poll, and a member of a
consumer group (its coordinator's partition replicated too) committing what it reads. Nemeses,
drawn from
the seed: kill -9 of a node (the partition leaders' node or any) and its restart, SIGSTOP of a
node (a pause: the node is cut off from everyone) and SIGCONT; and, with every node in a network
namespace of its own (compat/netns.py, root only), network partitions: a node or a partition
leader cut off from the other nodes (clients still reach it), a minority of the nodes cut off
from the majority, one node's packets to another dropped (one way), a node's (or a leader's)
packets to and from the other nodes delayed, a node's packets to the clients dropped or
delayed. One fault at a time, healed
before the next, so a majority of the voters is always up and connected. After the schedule
every node is healed and the whole topic is read back from offset 0.

The checker finds: acknowledged records lost; records read twice (duplicates under
idempotence); records read at another offset than their acknowledgement gave; a consumer's
polls going backwards or skipping within a partition; different records at one offset on
different reads; acknowledged records the group never delivered (it may read again after a
rebalance or a coordinator's loss, never skip). The report names the seed, the schedule and
the figures (acknowledged, lost,
duplicated, longest time without an acknowledgement).

Run by hand (long runs), from the repository root after `cargo build -p fjord`:

    compat/.venv/bin/python compat/faults.py --seed 7 --duration 600 --report run.json

CI runs a short seeded run (compat/test_faults.py).
"""

import argparse
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
from conftest import Broker, free_port, wait_for  # noqa: E402

TOPIC = "faults"
# Network nemeses need every node in a network namespace of its own (root).
NETWORK = {"isolate", "isolate-leader", "halves", "one-way", "slow", "slow-leader",
           "clients-cut", "clients-slow"}
NEMESES = ("kill", "kill-leader", "pause", "isolate", "isolate-leader", "halves", "one-way",
           "slow", "slow-leader", "clients-cut", "clients-slow")


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
        self.paused = set()
        self.killed = set()

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
        return self.paused | self.killed | {i for link in links for i in link if i}

    def heal(self):
        if self.net:
            self.net.heal()
        for i in sorted(self.paused):
            self.nodes[i].proc.send_signal(signal.SIGCONT)
        self.paused.clear()
        for i in sorted(self.killed):
            self.nodes[i].start(timeout=60)
        self.killed.clear()

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


class Workload:
    """Producers writing unique values and a consumer reading by assignment, both recording."""

    def __init__(self, bootstrap, partitions, producers):
        self.bootstrap = bootstrap
        self.partitions = partitions
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.acked = {}  # value -> (partition, offset)
        self.failed = {}  # value -> error name
        self.ack_times = []
        self.polls = {p: [] for p in range(partitions)}  # partition -> [(offset, value)]
        # What the group's member polled (a re-read after a rebalance or a coordinator's loss
        # is allowed: offsets are committed after delivery), and when it has drained.
        self.group_polls = []  # [(partition, offset, value)]
        self.produced = threading.Event()  # every producer flushed: `acked` is complete
        self.drained = threading.Event()
        self.producing = [threading.Thread(target=self.produce, args=(i,), daemon=True)
                          for i in range(producers)]
        self.threads = self.producing + [threading.Thread(target=self.consume, daemon=True),
                                         threading.Thread(target=self.consume_group, daemon=True)]

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
        self.drained.wait(drain_timeout)
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
                    self.ack_times.append(time.monotonic())
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
            if self.produced.is_set():
                with self.lock:
                    if all(v in seen for v in self.acked):
                        self.drained.set()
        c.close()


def read_back(bootstrap, partitions, timeout=120):
    """Every record of the topic from offset 0, up to each partition's high watermark."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"faults-check-{time.time()}",
                  "enable.auto.commit": False})
    ends = {}
    deadline = time.monotonic() + timeout
    for p in range(partitions):
        while True:
            try:
                ends[p] = c.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=5)[1]
                break
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    c.assign([TopicPartition(TOPIC, p, 0) for p in range(partitions)])
    got = {p: [] for p in range(partitions)}
    done = lambda: all((got[p][-1][0] + 1 if got[p] else 0) >= ends[p] for p in got)  # noqa: E731
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


def run(seed, duration, nodes=3, partitions=3, producers=2, interval=(3.0, 8.0),
        nemeses=("kill", "kill-leader", "pause"), root=None, log=print):
    rng = random.Random(seed)
    own = root is None
    root = root or tempfile.mkdtemp(prefix="fjord-faults-")
    unknown = set(nemeses) - set(NEMESES)
    if unknown:
        raise ValueError(f"unknown nemeses {sorted(unknown)}; choose from {', '.join(NEMESES)}")
    cluster = Cluster(root, nodes, net=bool(set(nemeses) & NETWORK))
    schedule = []
    report = {"seed": seed, "duration_s": duration, "nodes": nodes, "partitions": partitions,
              "nemeses": list(nemeses), "schedule": schedule, "data": root}
    try:
        cluster.start()
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap()})
        admin.create_topics([NewTopic(TOPIC, partitions, 3,
                                      config={"min.insync.replicas": "2"})])[TOPIC].result(30)
        if not wait_for(lambda: in_sync(cluster.bootstrap(), partitions, 3), timeout=30):
            raise RuntimeError("the topic's replicas never got in sync")
        work = Workload(cluster.bootstrap(), partitions, producers)
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
            node = cluster.nodes[target]
            others = [i for i in cluster.nodes if i != target]
            if kind == "pause":
                node.proc.send_signal(signal.SIGSTOP)
                cluster.paused.add(target)
            elif kind in ("kill", "kill-leader"):
                node.kill()
                cluster.killed.add(target)
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
    parser.add_argument("--report", help="write the report as JSON here")
    args = parser.parse_args()
    report = run(args.seed, args.duration, args.nodes, args.partitions, args.producers,
                 nemeses=tuple(args.nemeses.split(",")))
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
