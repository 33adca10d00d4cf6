#!/usr/bin/env python3
"""Moving data between brokers while producers write: three local Fjord nodes; a topic of
`--gib` GiB on broker 1 alone (replication factor 1, 8 partitions) is moved to brokers 2 and 3
(AlterPartitionReassignments through `fjord topic reassign`) while a replicated topic (factor
3, acks=all) takes produce load. Figures: acks=all produce throughput before and during the
move, the move's duration and rate; with `--throttle` the same with a replication throttle on
the moving partitions (Kafka's kafka-reassign-partitions --throttle settings).

Example:
  cargo build --release -p fjord -p kafka-load
  compat/.venv/bin/python bench/rebalance.py --gib 2 --runs 3 --dir /work
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewTopic, ResourceType)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import replicated  # noqa: E402
import suite  # noqa: E402

ROOT = os.path.dirname(HERE)
PARTITIONS = 8


def log(msg):
    print(f"[rebalance {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fill(bootstrap, gib):
    """Creates `bulk` on broker 1 alone and writes `gib` GiB of 1 KiB records into it."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("bulk", PARTITIONS, replica_assignment=[[1]] * PARTITIONS)])[
        "bulk"].result(60)
    count = int(gib * (1 << 30) / 1024)
    suite.load("produce", "--bootstrap", bootstrap, "--topic", "bulk", "--count", count,
               "--size", 1024, "--linger-ms", 5)


def produce_rate(bootstrap, count):
    """acks=all MiB/s of `count` 1 KiB records into the replicated topic."""
    r = suite.load("produce", "--bootstrap", bootstrap, "--topic", "live", "--count", count,
                   "--size", 1024, "--linger-ms", 5)
    return r["bytes"] / r["seconds"] / (1 << 20)


def throttle(bootstrap, rate):
    """kafka-reassign-partitions' throttle: the rate on every broker, every bulk replica
    throttled on both sides."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for broker in (1, 2, 3):
        res = ConfigResource(ResourceType.BROKER, str(broker), incremental_configs=[
            ConfigEntry(k, str(rate), incremental_operation=AlterConfigOpType.SET)
            for k in ("leader.replication.throttled.rate", "follower.replication.throttled.rate")])
        admin.incremental_alter_configs([res])[res].result(30)
    res = ConfigResource(ResourceType.TOPIC, "bulk", incremental_configs=[
        ConfigEntry(k, "*", incremental_operation=AlterConfigOpType.SET)
        for k in ("leader.replication.throttled.replicas",
                  "follower.replication.throttled.replicas")])
    admin.incremental_alter_configs([res])[res].result(30)


def move(fjord, node):
    """Moves every bulk partition to broker 2 or 3 (alternately); returns the seconds until no
    move is in progress."""
    started = time.monotonic()
    for p in range(PARTITIONS):
        subprocess.run([fjord, "topic", "reassign", "bulk", "--partition", str(p), "--replicas",
                        str(2 + p % 2), "-b", node], check=True, capture_output=True, timeout=60)
    while True:
        out = subprocess.run([fjord, "topic", "reassign", "--list", "-o", "json", "-b", node],
                             check=True, capture_output=True, text=True, timeout=60)
        if not json.loads(out.stdout):
            return time.monotonic() - started
        time.sleep(0.2)


def one_run(args, scratch):
    cluster = replicated.FjordCluster(args.fjord, scratch)
    cluster.start()
    try:
        replicated.create(cluster.bootstrap, "live", 6)
        log(f"writing {args.gib} GiB to broker 1")
        fill(cluster.bootstrap, args.gib)
        # The fill's dirty pages written out first: the kernel's writeback of gigabytes would
        # otherwise land in the measurements (acks=all waits for fsync).
        log("syncing the fill to disk")
        os.sync()
        out = {"before MiB/s": produce_rate(cluster.bootstrap, args.count)}
        if args.throttle:
            throttle(cluster.bootstrap, args.throttle)
        node = cluster.nodes[2].bootstrap
        moved = {}
        mover = threading.Thread(target=lambda: moved.update(s=move(args.fjord, node)))
        mover.start()
        time.sleep(0.5)
        out["during MiB/s"] = produce_rate(cluster.bootstrap, args.count)
        # Whether the whole measurement ran while data moved (else "during" is partly after).
        out["overlapped"] = mover.is_alive()
        mover.join()
        out["move s"] = moved["s"]
        out["moved MiB/s"] = args.gib * 1024 / moved["s"]
        return out
    finally:
        cluster.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="example: compat/.venv/bin/python bench/rebalance.py "
                                        "--gib 2 --runs 3 --dir /work")
    ap.add_argument("--gib", type=float, default=2.0, help="GiB to move (default 2)")
    ap.add_argument("--count", type=int, default=150_000,
                    help="1 KiB records per throughput measurement (default 150,000)")
    ap.add_argument("--throttle", type=int, default=0,
                    help="a replication throttle in bytes/s on the moving partitions")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="where the data goes")
    ap.add_argument("--fjord", default=os.path.join(ROOT, "target", "release", "fjord"))
    ap.add_argument("--load", default=os.path.join(ROOT, "target", "release", "kafka-load"))
    args = ap.parse_args()
    suite.LOAD = args.load
    runs = []
    for run in range(args.runs):
        scratch = tempfile.mkdtemp(prefix="rebalance-", dir=args.dir)
        try:
            figures = one_run(args, scratch)
            log(f"run {run + 1}: {figures}")
            runs.append(figures)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    medians = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "overlapped"}
    print(json.dumps({"runs": runs, "medians": medians}, indent=2))


if __name__ == "__main__":
    main()
