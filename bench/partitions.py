#!/usr/bin/env python3
"""Durable writes over many partitions: Fjord beside Apache Kafka 4.4 on the same machine.

Workloads, acks=all, keyed records, linger.ms=5, every one on a new topic (deleted after it):
  producers {16, 64} x partitions {64, 1,000} x record size {100 B, 1 KiB} x load shape
    - threaded: one thread per producer instance, each sending its share as fast as it can
      (large batches);
    - round-robin: one thread feeding the instances in turn (bench/kafka-load's default), so
      every produce request carries small batches for many partitions;
  and an OpenMessaging-Benchmark-style workload: one topic of 100 partitions, 1 KiB records:
    each broker's maximum rate (16 threaded producers), then end-to-end latency percentiles
    (bench/Latency.java: the Java client, as the OpenMessaging Benchmark's Kafka driver uses
    it; linger.ms=1, one producer at a fixed rate, a consumer of every partition; after a
    warm-up at that rate that is not measured, as the OpenMessaging Benchmark does) at half of
    Kafka's maximum rate, capped at --latency-rate-cap, on every broker that reaches that
    rate; the table gives the rate the producer achieved and the producer's own time to the
    acknowledgement beside the end-to-end figures.
Brokers: Fjord (its default: fsynced before acks=all is answered), Kafka with its defaults
(page cache, no fsync) and Kafka with log.flush.interval.messages=1 (Fjord's durability; a
sixteenth of the records: it is slow). The load generator is bench/kafka-load (librdkafka).
Each run starts every broker once, on a data directory in --dir; figures are medians of --runs.

Targets (the durable-writes issue): Fjord, durable, at least Kafka's throughput without fsync
on every workload here, and a p99 end-to-end latency below 5 ms at half of Kafka's maximum rate.

Examples:
  cargo build --release -p fjord -p kafka-load
  compat/.venv/bin/python bench/partitions.py --runs 3 --dir target --append BENCHMARKS.md
  compat/.venv/bin/python bench/partitions.py --latency-only --runs 3 --dir target
  compat/.venv/bin/python bench/partitions.py --smoke --binary target/debug/fjord \\
      --load target/debug/kafka-load   # seconds, Fjord only: what CI runs
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import suite
from suite import Broker, KafkaBroker, log

HERE = os.path.dirname(os.path.abspath(__file__))
SHAPES = ("threaded", "round-robin")
BROKERS = ("fjord", "kafka", "kafka_fsync")
NAMES = {"fjord": "Fjord", "kafka": "Kafka", "kafka_fsync": "Kafka fsync"}
OMB_PARTITIONS, OMB_SIZE, OMB_PRODUCERS = 100, 1024, 16


def workloads(smoke, latency_only=False):
    if latency_only:
        return []
    if smoke:
        return [(16, 64, 100, shape) for shape in SHAPES]
    return [(producers, partitions, size, shape)
            for producers in (16, 64) for partitions in (64, 1000)
            for size in (100, 1024) for shape in SHAPES]


def label(w):
    producers, partitions, size, shape = w
    return f"{producers} producers, {partitions:,} partitions, {'1 KiB' if size == 1024 else '100 B'}, {shape}"


def records(size, scale):
    return max(2_000, int((300_000 if size == 100 else 100_000) * scale))


def create_ready(bootstrap, topic, partitions):
    """Creates the topic and waits until every partition has a leader and a sample of them
    answers ListOffsets, so no workload times a producer's retries on a partition the broker
    has not published yet."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions,
                                  replication_factor=1)])[topic].result(300)
    deadline = time.monotonic() + 120
    while True:
        md = admin.list_topics(topic, timeout=10).topics.get(topic)
        if md and not md.error and len(md.partitions) == partitions \
                and all(p.leader >= 0 for p in md.partitions.values()):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{topic}: partitions without a leader after 120 s")
        time.sleep(0.1)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-ready"})
    for p in sorted({0, partitions // 3, partitions // 2, partitions - 1}):
        while True:
            try:
                c.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    c.close()


def delete(bootstrap, topic):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([topic])[topic].result(120)


def produce(bootstrap, topic, count, size, producers, shape):
    extra = ["--threaded"] if shape == "threaded" else []
    r = suite.load("produce", "--bootstrap", bootstrap, "--topic", topic, "--count", count,
                   "--size", size, "--linger-ms", 5, "--producers", producers, "--keyed", *extra)
    return count / r["seconds"]


def run_broker(kind, broker, args):
    """Every workload on one running broker; returns {label: rec/s, "omb_max": rec/s}."""
    out = {}
    share = 16 if kind == "kafka_fsync" else 1
    for i, w in enumerate(workloads(args.smoke, args.latency_only)):
        producers, partitions, size, shape = w
        topic = f"w{i}"
        create_ready(broker.bootstrap, topic, partitions)
        n = records(size, args.scale) // share
        out[label(w)] = produce(broker.bootstrap, topic, n, size, producers, shape)
        log(f"{NAMES[kind]}: {label(w)}: {out[label(w)]:,.0f} rec/s")
        delete(broker.bootstrap, topic)
    create_ready(broker.bootstrap, "omb-max", OMB_PARTITIONS)
    n = max(2_000, int(200_000 * args.scale)) // share
    out["omb_max"] = produce(broker.bootstrap, "omb-max", n, OMB_SIZE, OMB_PRODUCERS, "threaded")
    log(f"{NAMES[kind]}: OMB maximum rate {out['omb_max']:,.0f} rec/s")
    delete(broker.bootstrap, "omb-max")
    return out


def java_latency():
    """Compiles bench/Latency.java (the Java client, as the OpenMessaging Benchmark's Kafka
    driver uses it) against the reference Kafka's classpath; returns the java command."""
    sys.path.insert(0, os.path.join(HERE, "..", "compat"))
    from reference import classpath
    cp = classpath()
    out = tempfile.mkdtemp(prefix="latency-java-")
    subprocess.run(["javac", "-d", out, "-cp", cp, os.path.join(HERE, "Latency.java")],
                   check=True, capture_output=True)
    log4j = os.path.join(HERE, "..", "compat", "reference", "log4j2-tools.properties")
    return ["java", f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{out}:{cp}", "Latency"]


def latency(broker, rate, seconds, warmup, kind, java):
    create_ready(broker.bootstrap, "omb", OMB_PARTITIONS)
    p = subprocess.run([*java, broker.bootstrap, "omb", str(OMB_PARTITIONS), str(rate),
                        str(seconds), str(OMB_SIZE), "1", str(warmup)],
                       capture_output=True, text=True, timeout=warmup + seconds + 180)
    if p.returncode != 0:
        raise RuntimeError(f"bench/Latency.java failed on {NAMES[kind]}: {p.stderr[-2000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    # A producer that fell behind its schedule (the broker slowed its sends, or the machine's
    # cores were busy) measured a lower rate: the table gives the rate it achieved.
    log(f"{NAMES[kind]}: OMB latency at {rate:,}/s (sent {r['sent_per_s']:,.0f}/s): "
        f"p50 {r['p50']:.1f} p99 {r['p99']:.1f} ms (acknowledged: p50 {r['ack_p50']:.1f} "
        f"p99 {r['ack_p99']:.1f} ms)")
    delete(broker.bootstrap, "omb")
    return r


def start(kind, args, scratch):
    data = tempfile.mkdtemp(prefix=f"{kind}-", dir=scratch)
    if kind == "fjord":
        b = Broker(args.binary, data)
    else:
        b = KafkaBroker(data, {"log.flush.interval.messages": 1} if kind == "kafka_fsync" else {})
    b.start()
    return b


def run_once(args, scratch):
    kinds = ("fjord",) if args.smoke or not args.kafka else BROKERS
    r = {}
    # Kafka first: its maximum rate sets the latency workload's rate.
    for kind in sorted(kinds, key=lambda k: k != "kafka"):
        b = start(kind, args, scratch)
        try:
            r[kind] = run_broker(kind, b, args)
        finally:
            b.stop()
            shutil.rmtree(b.data, ignore_errors=True)
    base = r["kafka"]["omb_max"] if "kafka" in r else r["fjord"]["omb_max"]
    rate = max(100, min(int(base / 2), args.latency_rate_cap))
    if args.smoke:
        # A debug broker and a cold JVM on a 2-s run: a low rate checks the script, not the speed.
        rate = min(rate, 500)
    r["omb_rate"] = rate
    for kind in kinds:
        if r[kind]["omb_max"] < rate:
            log(f"{NAMES[kind]}: its maximum rate is below {rate:,}/s; no latency run")
            continue
        b = start(kind, args, scratch)
        try:
            r[kind]["omb_latency"] = latency(b, rate, args.latency_seconds, args.latency_warmup,
                                             kind, args.java)
        finally:
            b.stop()
            shutil.rmtree(b.data, ignore_errors=True)
    return r


def report(runs, args):
    kinds = [k for k in BROKERS if k in runs[0]]
    m = lambda *path: statistics.median(  # noqa: E731
        _get(r, path) for r in runs)
    lines = [f"### {datetime.date.today()}: many partitions ({'smoke' if args.smoke else 'latency only' if args.latency_only else 'full'}, "
             f"{len(runs)} runs, medians)", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}. "
             f"Command: `{' '.join(sys.argv)}`. acks=all, keyed, linger.ms=5; records per "
             f"workload: {records(100, args.scale):,} of 100 B or {records(1024, args.scale):,} "
             "of 1 KiB (Kafka fsync: a sixteenth).", ""]
    w = lines.append
    head = " | ".join(NAMES[k] + " rec/s" for k in kinds)
    ratios = " | ".join(f"Fjord/{NAMES[k]}" for k in kinds if k != "fjord")
    w(f"| workload | {head} |" + (f" {ratios} |" if ratios else ""))
    w("|---" * (1 + len(kinds) + len(kinds) - 1) + "|")
    for wl in workloads(args.smoke, args.latency_only):
        vals = [m(k, label(wl)) for k in kinds]
        cells = " | ".join(f"{v:,.0f}" for v in vals)
        rs = " | ".join(f"{vals[0] / v:.2f}" for v in vals[1:])
        w(f"| {label(wl)} | {cells} |" + (f" {rs} |" if rs else ""))
    vals = [m(k, "omb_max") for k in kinds]
    w(f"| OMB: 100 partitions, 1 KiB, 16 threaded producers (maximum rate) | "
      + " | ".join(f"{v:,.0f}" for v in vals) + " |"
      + (" " + " | ".join(f"{vals[0] / v:.2f}" for v in vals[1:]) + " |" if len(vals) > 1 else ""))
    w("")
    basis = ("a smoke run's fixed rate" if args.smoke
             else f"half of {'Kafka' if 'kafka' in kinds else 'Fjord'}'s maximum rate")
    w(f"End-to-end latency, OpenMessaging-Benchmark style (one topic of 100 partitions, 1 KiB "
      f"records, keyed, the Java client, linger.ms=1, one producer at a fixed rate, a consumer "
      f"of every partition): at {basis} (at most --latency-rate-cap), "
      f"{m('omb_rate'):,.0f} records/s ({m('omb_rate') * OMB_SIZE / (1 << 20):,.0f} MiB/s), "
      f"{args.latency_seconds} s measured per run after a {args.latency_warmup}-s warm-up.")
    w("")
    w("| broker | sent (records/s) | p50 | p99 | p99.9 | max (ms) | acknowledged p50 / p99 |")
    w("|---|---|---|---|---|---|---|")
    for k in kinds:
        if not all("omb_latency" in r[k] for r in runs):
            w(f"| {NAMES[k]} | its maximum rate is below this rate | | | | | |")
            continue
        w(f"| {NAMES[k]} | {m(k, 'omb_latency', 'sent_per_s'):,.0f} | "
          + " | ".join(f"{m(k, 'omb_latency', q):.1f}" for q in ("p50", "p99", "p99.9", "max"))
          + f" | {m(k, 'omb_latency', 'ack_p50'):.1f} / {m(k, 'omb_latency', 'ack_p99'):.1f} |")
    return "\n".join(lines) + "\n"


def _get(r, path):
    for k in path:
        r = r[k]
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--binary", default=os.path.join(here, "..", "target", "release", "fjord"))
    ap.add_argument("--load", default=os.path.join(here, "..", "target", "release", "kafka-load"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=None, help="scratch directory on the disk to measure")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies the record counts")
    ap.add_argument("--latency-seconds", type=int, default=20)
    ap.add_argument("--latency-warmup", type=int, default=10,
                    help="seconds sent at the latency run's rate before it is measured")
    ap.add_argument("--latency-rate-cap", type=int, default=60_000,
                    help="the latency run's rate at most (records/s): one Java producer beside "
                         "the broker on a 2-core machine sends about 55,000/s at most")
    ap.add_argument("--latency-only", action="store_true",
                    help="only the OpenMessaging-style workload: each broker's maximum rate, "
                         "then the latency run")
    ap.add_argument("--no-kafka", dest="kafka", action="store_false",
                    help="Fjord only (Kafka needs a JDK and Maven: compat/reference/kafka.sh)")
    ap.add_argument("--smoke", action="store_true",
                    help="one run, tiny counts, two workloads, Fjord only: checks the script works")
    ap.add_argument("--append", metavar="FILE", help="append the results to this markdown file")
    args = ap.parse_args()
    if args.smoke:
        args.runs, args.scale, args.latency_seconds, args.latency_warmup = 1, 0.01, 2, 1
    for path in (args.binary, args.load):
        if not os.access(path, os.X_OK):
            sys.exit(f"{path} not found; build it: cargo build --release -p fjord -p kafka-load")
    suite.LOAD = args.load
    args.java = java_latency()
    scratch = tempfile.mkdtemp(prefix="fjord-partitions-", dir=args.dir)
    try:
        runs = []
        for i in range(args.runs):
            log(f"run {i + 1}/{args.runs}")
            runs.append(run_once(args, scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    suite.publish(report(runs, args), args.append)


if __name__ == "__main__":
    main()
