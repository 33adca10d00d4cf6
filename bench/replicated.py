#!/usr/bin/env python3
"""Replicated partitions on three local brokers: acks=all throughput and end-to-end latency with
replication factor 3 (min.insync.replicas 2), and the time from kill -9 of a partition leader to
the first acknowledged produce on its new leader; Fjord beside a three-node Apache Kafka 4.4
(compat/reference/kafka.sh, combined KRaft nodes) on the same machine in the same run.

Both clusters run with their defaults (9 s broker sessions in both), Kafka without fsync (its
default) and Fjord with it (its default: acks=all is answered once every in-sync replica has
the records fsynced). Load: bench/kafka-load (librdkafka, compiled) for throughput and the
failover; the Java client (bench/Latency.java, 2,000 records/s of 100 B, linger.ms=0, the
consumer positioned before the first send) for latency.

Example:
  cargo build --release -p fjord -p kafka-load
  compat/.venv/bin/python bench/replicated.py --runs 3 --dir /work
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
KAFKA_SH = os.path.join(ROOT, "compat", "reference", "kafka.sh")
sys.path.insert(0, HERE)
import suite  # noqa: E402


def log(msg):
    print(f"[replicated {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class FjordCluster:
    def __init__(self, binary, root):
        ports = {i: (suite.free_port(), suite.free_port(), suite.free_port()) for i in (1, 2, 3)}
        voters = ",".join(f"{i}@127.0.0.1:{c}" for i, (_, _, c) in ports.items())
        self.nodes = {}
        for i, (kafka, http, controller) in ports.items():
            self.nodes[i] = suite.Broker(binary, os.path.join(root, f"node{i}"), [
                "--node-id", str(i), "--voters", voters,
                "--controller-listen", f"127.0.0.1:{controller}"])
            self.nodes[i].port, self.nodes[i].http = kafka, http

    def start(self):
        threads = [threading.Thread(target=n.start) for n in self.nodes.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    @property
    def bootstrap(self):
        return ",".join(n.bootstrap for n in self.nodes.values())

    def kill(self, node):
        self.nodes[node].stop(signal.SIGKILL)

    def stop(self):
        for n in self.nodes.values():
            n.stop()


class KafkaCluster:
    def __init__(self, root):
        self.root = root
        self.bootstrap = None

    def start(self):
        env = dict(os.environ, KAFKA_HEAP_OPTS=os.environ.get("KAFKA_HEAP_OPTS", "-Xms512m -Xmx1g"))
        out = subprocess.run([KAFKA_SH, "start", self.root, "--nodes", "3"], capture_output=True,
                             text=True, timeout=600, env=env)
        if out.returncode != 0:
            sys.exit(f"Apache Kafka did not start:\n{out.stderr}")
        self.bootstrap = out.stdout.strip().splitlines()[-1]

    def kill(self, node):
        subprocess.run([KAFKA_SH, "kill", self.root, str(node)], capture_output=True, timeout=60)

    def stop(self):
        subprocess.run([KAFKA_SH, "stop", self.root], capture_output=True, timeout=180)


def create(bootstrap, topic, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 3, config={"min.insync.replicas": "2"})])[
        topic].result(120)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        md = admin.list_topics(topic, timeout=10).topics[topic]
        if len(md.partitions) == partitions and all(
                len(p.isrs) == 3 and p.leader >= 0 for p in md.partitions.values()):
            return md
        time.sleep(0.2)
    raise RuntimeError(f"{topic}: replicas never in sync")


def leader_of(bootstrap, topic):
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return md.topics[topic].partitions[0].leader


def failover_seconds(cluster, topic):
    """Produces to partition 0 every 5 ms; kill -9 of its leader; seconds from the kill to the
    first acknowledgement of a record sent after it. The leader is asked again right before
    the kill (the one named at creation may have moved), and the run counts only if the
    partition then gets another leader (a kill that missed the leader would time nothing)."""
    create(cluster.bootstrap, topic, 1)
    acks = []
    stop = threading.Event()

    def run():
        p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all",
                      "enable.idempotence": True, "linger.ms": 0,
                      "message.timeout.ms": 120000})
        while not stop.is_set():
            sent = time.monotonic()
            p.produce(topic, b"x" * 100, partition=0,
                      on_delivery=lambda e, m, sent=sent: acks.append((sent, time.monotonic()))
                      if e is None else None)
            p.poll(0.005)
        p.flush(120)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(3)
    leader = leader_of(cluster.bootstrap, topic)
    cluster.kill(leader)
    # Timed from when the kill has been sent (Kafka's goes through a script that takes tens
    # of milliseconds to start: records sent meanwhile were acknowledged by the old leader).
    killed = time.monotonic()
    deadline = killed + 120
    while time.monotonic() < deadline and not any(s > killed for s, _ in acks):
        time.sleep(0.05)
    stop.set()
    t.join(180)
    moved = None
    while time.monotonic() < deadline:
        try:
            now = leader_of(cluster.bootstrap, topic)
        except Exception:
            now = -1
        if now not in (-1, leader):
            moved = now
            break
        time.sleep(0.2)
    if moved is None:
        log(f"{topic}: leadership never left node {leader} after its kill; run not counted")
        return None, leader
    after = [a for s, a in acks if s > killed]
    return (min(after) - killed) if after else None, leader


def workloads(cluster, seconds, java):
    out = {}
    create(cluster.bootstrap, "rep100", 6)
    r = suite.load("produce", "--bootstrap", cluster.bootstrap, "--topic", "rep100", "--count",
                   1_000_000, "--size", 100, "--linger-ms", 5)
    out["100B records/s"] = 1_000_000 / r["seconds"]
    create(cluster.bootstrap, "rep1k", 6)
    r = suite.load("produce", "--bootstrap", cluster.bootstrap, "--topic", "rep1k", "--count",
                   200_000, "--size", 1024, "--linger-ms", 5)
    out["1KiB MiB/s"] = r["bytes"] / r["seconds"] / (1 << 20)
    # The Java client (bench/Latency.java), which waits for the consumer's position before
    # the first send: librdkafka's consumer found its position on a new three-node Kafka
    # topic only seconds later, and timed that.
    create(cluster.bootstrap, "latency", 1)
    p = subprocess.run([*java, cluster.bootstrap, "latency", "1", "2000", str(seconds), "100",
                        "0"], capture_output=True, text=True, timeout=seconds + 180)
    if p.returncode != 0:
        raise RuntimeError(f"bench/Latency.java failed: {p.stderr[-2000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    out["latency p50 ms"] = r["p50"]
    out["latency p99 ms"] = r["p99"]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="example: compat/.venv/bin/python bench/replicated.py "
                                        "--runs 3 --dir /work")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="where the data goes")
    ap.add_argument("--latency-seconds", type=int, default=15)
    ap.add_argument("--fjord", default=os.path.join(ROOT, "target", "release", "fjord"))
    ap.add_argument("--load", default=os.path.join(ROOT, "target", "release", "kafka-load"))
    ap.add_argument("--no-kafka", action="store_true", help="Fjord only")
    args = ap.parse_args()
    suite.LOAD = args.load
    import partitions
    java = partitions.java_latency()
    results = {"fjord": [], "kafka": []}
    for run in range(args.runs):
        systems = [("fjord", lambda d: FjordCluster(args.fjord, d))]
        if not args.no_kafka:
            systems.append(("kafka", KafkaCluster))
        for name, make in systems:
            scratch = tempfile.mkdtemp(prefix=f"repl-{name}-", dir=args.dir)
            cluster = make(scratch)
            try:
                log(f"run {run + 1}: {name}: starting three nodes")
                cluster.start()
                figures = workloads(cluster, args.latency_seconds, java)
                figures["failover s"], _ = failover_seconds(cluster, "failover")
                log(f"run {run + 1}: {name}: {figures}")
                results[name].append(figures)
            finally:
                cluster.stop()
                shutil.rmtree(scratch, ignore_errors=True)
    summary = {}
    for name, runs in results.items():
        if runs:
            summary[name] = {k: statistics.median([r[k] for r in runs if r[k] is not None]
                                                  or [float("nan")])
                             for k in runs[0]}
    print(json.dumps({"runs": results, "medians": summary}, indent=2))


if __name__ == "__main__":
    main()
