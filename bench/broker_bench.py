#!/usr/bin/env python3
"""Broker throughput with librdkafka (confluent-kafka) as the load generator.

Starts a release `fjord serve` on free loopback ports with a scratch data directory, then per
workload produces N records (acks=all, linger.ms=5) and consumes them back from the start,
printing records/s and MiB/s. Medians of --runs runs.

Example:
  cargo build --release -p fjord
  compat/.venv/bin/python bench/broker_bench.py --runs 3
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(binary, data):
    port = free_port()
    proc = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{port}",
                             "--http-listen", f"127.0.0.1:{free_port()}", "--data-dir", data],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                sys.exit("fjord did not start; build it with: cargo build --release -p fjord")
            time.sleep(0.02)


def produce(bootstrap, topic, count, size, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})  # must outlive the future
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(10)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "batch.size": 1_000_000, "queue.buffering.max.messages": 2_000_000,
                  "queue.buffering.max.kbytes": 2_000_000})
    value = b"x" * size
    start = time.monotonic()
    for i in range(count):
        while True:
            try:
                p.produce(topic, value)
                break
            except BufferError:
                p.poll(0.01)
        if i % 10_000 == 0:
            p.poll(0)
    left = p.flush(120)
    elapsed = time.monotonic() - start
    assert left == 0, f"{left} records not delivered"
    return elapsed


def consume(bootstrap, topic, count, partitions):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench", "enable.auto.commit": False,
                  "fetch.max.bytes": 52_428_800, "max.partition.fetch.bytes": 10_485_760})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = 0
    start = time.monotonic()
    while got < count:
        msgs = c.consume(10_000, 1.0)
        got += sum(1 for m in msgs if m.error() is None)
    elapsed = time.monotonic() - start
    c.close()
    return elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "fjord"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temporary one)")
    args = ap.parse_args()
    workloads = [("1KiB x 200000, 1 partition", 200_000, 1024, 1),
                 ("100B x 1000000, 1 partition", 1_000_000, 100, 1),
                 ("1KiB x 200000, 6 partitions", 200_000, 1024, 6)]
    print("| workload | produce rec/s | produce MiB/s | consume rec/s | consume MiB/s |")
    print("|---|---|---|---|---|")
    for name, count, size, parts in workloads:
        prod, cons = [], []
        for run in range(args.runs):
            data = tempfile.mkdtemp(prefix="fjord-bench-", dir=args.dir)
            proc, bootstrap = start(args.binary, data)
            try:
                print(f"[{name}] run {run + 1}/{args.runs}: producing…", file=sys.stderr)
                prod.append(produce(bootstrap, "bench", count, size, parts))
                print(f"[{name}] run {run + 1}/{args.runs}: consuming…", file=sys.stderr)
                cons.append(consume(bootstrap, "bench", count, parts))
            finally:
                proc.terminate()
                proc.wait(30)
                shutil.rmtree(data, ignore_errors=True)
        p, c = statistics.median(prod), statistics.median(cons)
        mib = count * size / (1 << 20)
        print(f"| {name} | {count / p:,.0f} | {mib / p:,.1f} | {count / c:,.0f} | {mib / c:,.1f} |")


if __name__ == "__main__":
    main()
