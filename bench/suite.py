#!/usr/bin/env python3
"""Fjord's benchmark suite: the broker under librdkafka load, against the machine's limits.

Each run measures, on this machine and in this run, the limits the broker is compared with:
sequential disk write at the broker's fsync cadence (1 MiB write + fdatasync), fsync latency
(4 KiB write + fdatasync), and loopback TCP bandwidth. Then, each on a fresh broker and data
directory, the workloads: produce (acks=all, linger.ms=5) and consume back from the start,
1M x 100 B and 200k x 1 KiB, to 1 and to 6 partitions; end-to-end latency at a fixed rate with
linger.ms=0; 16 producers with keyed records over 64 partitions; a consumer catching up on a
backlog evicted from the page cache while producers run; retention deleting segments during
a produce run; start-up time on an empty and on a large data directory, and recovery after
SIGKILL with it; 10,000 partitions on one node (creation, descriptors and memory per
partition, produce and consume over all of them, start-up, recovery). Alongside: broker CPU
seconds per GB in and out, idle and peak RSS; and the throughput workloads again driven by
`fjord perf`, Fjord's own client.

Every figure is the median of --runs runs, and broker figures are reported as ratios to the
machine's limits. The load generator is confluent-kafka (librdkafka) on the same machine.

Examples:
  cargo build --release -p fjord
  compat/.venv/bin/python bench/suite.py --runs 3 --dir /work --append BENCHMARKS.md
  compat/.venv/bin/python bench/suite.py --smoke          # seconds; what CI runs
"""

import argparse
import datetime
import json
import multiprocessing as mp
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

MIB = 1 << 20
# The compiled load generator (bench/kafka-load); None: confluent-kafka from this process.
LOAD = None


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def publish(text, append=None):
    """Prints a report and, with `append`, adds it to that markdown file (BENCHMARKS.md)."""
    print(text)
    if append:
        with open(append, "a") as f:
            f.write("\n" + text)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- machine limits

def disk_write_mib_s(directory, total_mib, chunk=MIB):
    """Sequential write with an fdatasync after every chunk (the broker's acks=all cadence)."""
    path = os.path.join(directory, "disk-baseline.tmp")
    buf = os.urandom(chunk)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        start = time.monotonic()
        for _ in range(max(1, total_mib * MIB // chunk)):
            os.write(fd, buf)
            os.fdatasync(fd)
        elapsed = time.monotonic() - start
    finally:
        os.close(fd)
        os.unlink(path)
    return total_mib / elapsed


def fsync_latency_ms(directory, count):
    path = os.path.join(directory, "fsync-baseline.tmp")
    buf = b"x" * 4096
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    samples = []
    try:
        for _ in range(count):
            t = time.perf_counter()
            os.write(fd, buf)
            os.fdatasync(fd)
            samples.append((time.perf_counter() - t) * 1000)
    finally:
        os.close(fd)
        os.unlink(path)
    samples.sort()
    return {"p50": pct(samples, 50), "p99": pct(samples, 99)}


def _sink(port, ready, total):
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", port))
        srv.listen(1)
        ready.set()
        conn, _ = srv.accept()
        with conn:
            got = 0
            buf = bytearray(4 * MIB)
            while got < total:
                n = conn.recv_into(buf)
                if n == 0:
                    break
                got += n


def loopback_mib_s(total_mib):
    """One TCP stream over loopback, 1 MiB sends (what iperf3 -c 127.0.0.1 measures)."""
    port = free_port()
    ready = mp.Event()
    sink = mp.Process(target=_sink, args=(port, ready, total_mib * MIB))
    sink.start()
    ready.wait(10)
    buf = b"\0" * MIB
    with socket.create_connection(("127.0.0.1", port)) as s:
        start = time.monotonic()
        for _ in range(total_mib):
            s.sendall(buf)
        s.shutdown(socket.SHUT_WR)
        sink.join(60)
        elapsed = time.monotonic() - start
    return total_mib / elapsed


# ---------------------------------------------------------------- the broker process

class Broker:
    def __init__(self, binary, data, extra=()):
        self.binary, self.data, self.extra = binary, data, list(extra)
        self.port = free_port()
        self.http = free_port()
        self.proc = None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self, timeout=600):
        """Starts the broker; returns seconds until it answers an ApiVersions request (the
        listening socket is bound before the data directory is opened, so a TCP connect alone
        would say nothing)."""
        t = time.monotonic()
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--listen", self.bootstrap, "--http-listen",
             f"127.0.0.1:{self.http}", "--data-dir", self.data, *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = b"bench"
        body = (18).to_bytes(2, "big") + (0).to_bytes(2, "big") + (1).to_bytes(4, "big") \
            + len(client).to_bytes(2, "big") + client
        request = len(body).to_bytes(4, "big") + body
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
                    s.sendall(request)
                    if len(s.recv(4)) == 4:
                        return time.monotonic() - t
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() - t > timeout:
                sys.exit("fjord did not start (build it: cargo build --release -p fjord)")
            time.sleep(0.002)

    def stop(self, sig=signal.SIGTERM):
        if self.proc:
            self.proc.send_signal(sig)
            self.proc.wait(120)
            self.proc = None

    def cpu_seconds(self):
        return cpu_seconds(self.proc.pid)

    def open_files(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def rss_mib(self, key):
        return rss_mib(self.proc.pid, key)


def cpu_seconds(pid):
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid, key):
    """A process's VmRSS (now) or VmHWM (peak) in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


class KafkaBroker:
    """Apache Kafka 4.4 (one KRaft combined node, compat/reference/kafka.sh) in `data`, with the
    same process figures as `Broker`. `config`: broker settings (e.g. flush after every
    message, the durability of Fjord's default)."""

    SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "compat",
                          "reference", "kafka.sh")

    def __init__(self, data, config=None):
        self.data, self.config = data, dict(config or {})
        self.bootstrap = None

    def start(self):
        args = [self.SCRIPT, "start", self.data]
        for k, v in self.config.items():
            args += ["--config", f"{k}={v}"]
        env = dict(os.environ, KAFKA_HEAP_OPTS=os.environ.get("KAFKA_HEAP_OPTS", "-Xms1g -Xmx1g"))
        out = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
        if out.returncode != 0:
            sys.exit(f"Apache Kafka did not start (compat/reference/kafka.sh):\n{out.stderr}")
        self.bootstrap = out.stdout.strip().splitlines()[-1]
        with open(os.path.join(self.data, "node-1", "pid")) as f:
            self.pid = int(f.read())

    def stop(self):
        subprocess.run([self.SCRIPT, "stop", self.data], capture_output=True, timeout=120)

    def cpu_seconds(self):
        return cpu_seconds(self.pid)

    def rss_mib(self, key):
        return rss_mib(self.pid, key)


def create_topic(bootstrap, topic, partitions, config=None):
    """Creates the topic and, for up to 64 partitions, waits until every partition answers
    ListOffsets: Kafka publishes a new partition to its broker a moment after CreateTopics
    answers, and a workload started before that would time the producer's retries."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    f = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                      config=config or {})])[topic]
    f.result(300)
    if partitions > 64:
        return
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-ready"})
    deadline = time.monotonic() + 60
    for p in range(partitions):
        while True:
            try:
                c.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    c.close()


def load(*args):
    out = subprocess.run([LOAD, *map(str, args)], capture_output=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"kafka-load {args[0]} failed: {out.stderr.decode()}")
    return json.loads(out.stdout)


def produce(bootstrap, topic, count, size, partitions=None, linger=5, keyed=False,
            producers=1):
    """acks=all; returns (seconds, bytes). With `producers` > 1, that many producer instances
    share the records round-robin."""
    if LOAD:
        extra = ["--keyed"] if keyed else []
        r = load("produce", "--bootstrap", bootstrap, "--topic", topic, "--count", count,
                 "--size", size, "--linger-ms", linger, "--producers", producers, *extra)
        return r["seconds"], r["bytes"]
    conf = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": linger,
            "batch.size": 1_000_000, "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 2_000_000, "enable.idempotence": False}
    ps = [Producer(conf) for _ in range(producers)]
    value = b"x" * size
    start = time.monotonic()
    for i in range(count):
        p = ps[i % producers]
        key = str(i % 100_003).encode() if keyed else None
        while True:
            try:
                p.produce(topic, value, key=key)
                break
            except BufferError:
                p.poll(0.005)
        if i % 10_000 == 0:
            for q in ps:
                q.poll(0)
    for q in ps:
        assert q.flush(300) == 0, "records not delivered"
    return time.monotonic() - start, count * size


def consume(bootstrap, topic, count, partitions):
    if LOAD:
        return load("consume", "--bootstrap", bootstrap, "--topic", topic, "--count", count,
                    "--partitions", partitions)["seconds"]
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench", "enable.auto.commit": False,
                  "fetch.max.bytes": 52_428_800, "max.partition.fetch.bytes": 10_485_760,
                  "queued.min.messages": 1_000_000, "queued.max.messages.kbytes": 1_048_576,
                  "fetch.queue.backoff.ms": 0})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = 0
    start = time.monotonic()
    deadline = start + 600
    while got < count and time.monotonic() < deadline:
        msgs = c.consume(min(10_000, count - got), 1.0)
        got += sum(1 for m in msgs if m.error() is None)
    elapsed = time.monotonic() - start
    c.close()
    assert got >= count, f"consumed {got} of {count}"
    return elapsed


def pct(sorted_samples, p):
    if not sorted_samples:
        return float("nan")
    i = min(len(sorted_samples) - 1, int(round(p / 100 * (len(sorted_samples) - 1))))
    return sorted_samples[i]


def _latency_consumer(bootstrap, topic, expected, seconds, out):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "lat", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 100, "fetch.min.bytes": 1})
    c.assign([TopicPartition(topic, 0, 0)])
    lat = []
    deadline = time.monotonic() + seconds + 30
    while len(lat) < expected and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        now = time.time() * 1000
        lat.append(now - float(m.value()[:20]))
    c.close()
    out.put(lat)


def latency(bootstrap, rate, seconds):
    """Produce at `rate` records/s with linger.ms=0; latency from the producer's clock at send
    to the consumer's poll (separate processes, same host clock)."""
    topic = "latency"
    create_topic(bootstrap, topic, 1)
    if LOAD:
        return load("latency", "--bootstrap", bootstrap, "--topic", topic, "--rate", rate,
                    "--seconds", seconds)
    total = rate * seconds
    out = mp.Queue()
    cons = mp.Process(target=_latency_consumer, args=(bootstrap, topic, total, seconds, out))
    cons.start()
    time.sleep(1.0)  # the consumer is assigned and polling
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                  "enable.idempotence": False})
    start = time.monotonic()
    for i in range(total):
        target = start + i / rate
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        p.produce(topic, f"{time.time() * 1000:20.3f}".encode() + b"x" * 80)
        p.poll(0)
    p.flush(30)
    lat = sorted(out.get(timeout=seconds + 60))
    cons.join(10)
    assert len(lat) >= total, f"latency run received {len(lat)} of {total}"
    return {"p50": pct(lat, 50), "p99": pct(lat, 99), "p99.9": pct(lat, 99.9), "max": lat[-1]}


def fjord_perf(binary, bootstrap, topic, count, size, partitions):
    """Fjord's own client (`fjord perf`): 8 connections, each with one acks=all request of ~512
    KiB in flight (about what librdkafka's linger builds here; with 4 the producer's round
    trips, not the broker, set the rate); then one connection per partition reads, 1 MiB per
    partition per fetch (Kafka consumers' default), like a group with a member per partition."""
    def run(*a):
        out = subprocess.run([binary, "perf", *map(str, a), "-b", bootstrap, "-o", "json"],
                             capture_output=True, timeout=900)
        if out.returncode != 0:
            raise RuntimeError(f"fjord perf {a[0]} failed: {out.stderr.decode()}")
        return json.loads(out.stdout)
    p = run("produce", topic, "--count", count, "--size", size,
            "--batch-records", max(1, 512 * 1024 // size), "--connections", 8)
    c = run("consume", topic, "--count", count, "--connections", partitions)
    return {"produce_rec_s": p["records_per_sec"], "produce_mib_s": p["mib_per_sec"],
            "consume_rec_s": c["records_per_sec"], "consume_mib_s": c["mib_per_sec"]}


def evict(directory):
    """Drops a directory's files from the page cache (what a backlog larger than memory means
    for the reader), without needing root to drop every cache."""
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                fd = os.open(os.path.join(root, name), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def fill(bootstrap, topic, gib, partitions):
    create_topic(bootstrap, topic, partitions)
    count = int(gib * (1 << 30) / 1024)
    produce(bootstrap, topic, count, 1024)
    return count


# ---------------------------------------------------------------- one run

THROUGHPUT = [("100B x{n}, 1 partition", 1_000_000, 100, 1),
              ("100B x{n}, 6 partitions", 1_000_000, 100, 6),
              ("1KiB x{n}, 1 partition", 200_000, 1024, 1),
              ("1KiB x{n}, 6 partitions", 200_000, 1024, 6)]


def throughput(b, s, perf_binary=None):
    """The throughput workloads on broker `b` (Fjord's or Kafka's): produce acks=all, then
    consume from the start, with the broker's CPU per GB; with `perf_binary`, again with
    `fjord perf`."""
    tp = {}
    for name, count, size, parts in THROUGHPUT:
        count = int(count * s)
        label = name.format(n=f"{count:,}")
        topic = f"t{size}-{parts}"
        log(f"{label}: produce")
        create_topic(b.bootstrap, topic, parts)
        cpu0 = b.cpu_seconds()
        secs, nbytes = produce(b.bootstrap, topic, count, size)
        cpu_in = b.cpu_seconds() - cpu0
        log(f"{label}: consume")
        cpu0 = b.cpu_seconds()
        csecs = consume(b.bootstrap, topic, count, parts)
        cpu_out = b.cpu_seconds() - cpu0
        gb = nbytes / 1e9
        tp[label] = {"produce_rec_s": count / secs, "produce_mib_s": nbytes / MIB / secs,
                     "consume_rec_s": count / csecs, "consume_mib_s": nbytes / MIB / csecs,
                     "cpu_s_per_gb_in": cpu_in / gb, "cpu_s_per_gb_out": cpu_out / gb}
        if perf_binary:
            log(f"{label}: the same with fjord perf")
            create_topic(b.bootstrap, topic + "-perf", parts)
            tp[label]["fjord_perf"] = fjord_perf(perf_binary, b.bootstrap, topic + "-perf", count,
                                                 size, parts)
    return tp


def keyed(b, s):
    n = int(400_000 * s)
    create_topic(b.bootstrap, "keyed", 64)
    secs, nbytes = produce(b.bootstrap, "keyed", n, 100, keyed=True, producers=16)
    return {"produce_rec_s": n / secs, "produce_mib_s": nbytes / MIB / secs}


def kafka_workloads(args, scratch, config):
    """The throughput, keyed and latency workloads on Apache Kafka 4.4, each on a fresh node
    in the scratch directory (the same disk as Fjord's)."""
    s = args.scale
    out = {}
    k = KafkaBroker(tempfile.mkdtemp(prefix="kafka-bench-", dir=scratch), config)
    k.start()
    out["idle_rss_mib"] = k.rss_mib("VmRSS")
    out["throughput"] = throughput(k, s)
    log("Kafka: 16 producers, keyed records over 64 partitions")
    out["keyed_16x64"] = keyed(k, s)
    out["peak_rss_mib"] = k.rss_mib("VmHWM")
    k.stop()
    shutil.rmtree(k.data, ignore_errors=True)
    log(f"Kafka: end-to-end latency at {args.rate} records/s for {args.latency_seconds} s")
    k = KafkaBroker(tempfile.mkdtemp(prefix="kafka-bench-", dir=scratch), config)
    k.start()
    out["latency_ms"] = latency(k.bootstrap, args.rate, args.latency_seconds)
    k.stop()
    shutil.rmtree(k.data, ignore_errors=True)
    return out


def run_once(args, scratch):
    s = args.scale
    r = {}
    log("machine limits: disk write at fsync cadence, fsync latency, loopback TCP")
    r["disk_write_mib_s"] = disk_write_mib_s(scratch, max(16, int(256 * s)))
    r["fsync_ms"] = fsync_latency_ms(scratch, max(20, int(200 * s)))
    r["loopback_mib_s"] = loopback_mib_s(max(64, int(4096 * s)))

    def fresh(extra=()):
        data = tempfile.mkdtemp(prefix="fjord-bench-", dir=scratch)
        return Broker(args.binary, data, extra)

    b = fresh()
    r["startup_empty_ms"] = b.start() * 1000
    time.sleep(0.5)
    r["idle_rss_mib"] = b.rss_mib("VmRSS")
    tp = throughput(b, s, perf_binary=args.binary)
    r["throughput"] = tp
    log("16 producers, keyed records over 64 partitions")
    r["keyed_16x64"] = keyed(b, s)
    r["peak_rss_mib"] = b.rss_mib("VmHWM")
    b.stop()
    shutil.rmtree(b.data, ignore_errors=True)

    # On a broker of its own, so the throughput runs' data and descriptors do not weigh on it.
    log(f"end-to-end latency at {args.rate} records/s for {args.latency_seconds} s")
    b = fresh()
    b.start()
    r["latency_ms"] = latency(b.bootstrap, args.rate, args.latency_seconds)
    b.stop()
    shutil.rmtree(b.data, ignore_errors=True)

    if args.kafka:
        log("Apache Kafka 4.4 with its defaults (page cache, no fsync)")
        r["kafka"] = kafka_workloads(args, scratch, {})
        log("Apache Kafka 4.4 with log.flush.interval.messages=1 (Fjord's durability)")
        r["kafka_flush"] = kafka_workloads(args, scratch, {"log.flush.interval.messages": 1})
    if args.compare_only:
        return r

    log("backlog catch-up from disk while producers run")
    b = fresh()
    b.start()
    backlog = fill(b.bootstrap, "backlog", args.backlog_gib * s, 1)
    evict(b.data)
    create_topic(b.bootstrap, "live", 1)
    stop = threading.Event()

    def live():
        while not stop.is_set():
            produce(b.bootstrap, "live", 20_000, 1024)

    t = threading.Thread(target=live)
    t.start()
    csecs = consume(b.bootstrap, "backlog", backlog, 1)
    stop.set()
    t.join()
    r["backlog_catchup_mib_s"] = backlog * 1024 / MIB / csecs
    b.stop()
    shutil.rmtree(b.data, ignore_errors=True)

    log("retention deleting segments during a produce run")
    cfg = os.path.join(scratch, "retention.toml")
    with open(cfg, "w") as f:
        f.write('"log.retention.check.interval.ms" = 500\n')
    b = fresh(["--config", cfg])
    b.start()
    segment = max(64 * 1024, int(8 * MIB * s))
    create_topic(b.bootstrap, "retained", 1, {"internal.segment.bytes": str(segment),
                                              "retention.bytes": str(4 * segment)})
    n = int(200_000 * s)
    secs, nbytes = produce(b.bootstrap, "retained", n, 1024)
    r["retention_produce_mib_s"] = nbytes / MIB / secs
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "wm"})
    deadline = time.monotonic() + 15
    low = 0
    while low == 0 and time.monotonic() < deadline:
        low = c.get_watermark_offsets(TopicPartition("retained", 0), timeout=10, cached=False)[0]
        time.sleep(0.1)
    c.close()
    assert low > 0, "retention deleted no segment"
    b.stop()
    shutil.rmtree(b.data, ignore_errors=True)

    n_parts = max(100, int(args.partitions * s))
    log(f"{n_parts:,} partitions on one node")
    b = fresh()
    b.start()
    rss0 = b.rss_mib("VmRSS")
    fds0 = b.open_files()
    t = time.monotonic()
    create_topic(b.bootstrap, "wide", n_parts)
    wide = {"create_s": time.monotonic() - t}
    wide["fds_per_partition"] = (b.open_files() - fds0) / n_parts
    wide["kib_per_partition"] = (b.rss_mib("VmRSS") - rss0) * 1024 / n_parts
    n = int(200_000 * s)
    secs, _ = produce(b.bootstrap, "wide", n, 100, keyed=True, producers=4)
    wide["produce_rec_s"] = n / secs
    wide["consume_rec_s"] = n / consume(b.bootstrap, "wide", n, n_parts)
    b.stop()
    wide["startup_ms"] = b.start() * 1000
    b.stop(signal.SIGKILL)
    wide["recovery_ms"] = b.start() * 1000
    b.stop()
    r["wide"] = wide
    shutil.rmtree(b.data, ignore_errors=True)

    log(f"start-up and SIGKILL recovery with {args.big_gib * s:.2f} GiB of data")
    b = fresh()
    b.start()
    fill(b.bootstrap, "big", args.big_gib * s, 4)
    b.stop()
    r["startup_big_ms"] = b.start() * 1000
    produce(b.bootstrap, "big", 1000, 1024)
    b.stop(signal.SIGKILL)
    r["recovery_big_ms"] = b.start() * 1000
    b.stop()
    shutil.rmtree(b.data, ignore_errors=True)
    return r


def median_of(runs, path):
    vals = []
    for r in runs:
        v = r
        for k in path:
            v = v[k]
        vals.append(v)
    return statistics.median(vals)


def report(runs, args):
    m = lambda *p: median_of(runs, p)  # noqa: E731
    disk, loop = m("disk_write_mib_s"), m("loopback_mib_s")
    lines = []
    w = lines.append
    w(f"### {datetime.date.today()} ({'smoke' if args.smoke else 'full'}, {len(runs)} runs, medians)")
    w("")
    w(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}. "
      f"Load: {'kafka-load (librdkafka, compiled)' if LOAD else 'confluent-kafka from Python'}. "
      f"Command: `{' '.join(sys.argv)}`.")
    w("")
    w("| machine limit | value |")
    w("|---|---|")
    w(f"| disk write, 1 MiB + fdatasync | {disk:,.0f} MiB/s |")
    w(f"| fsync latency (4 KiB) p50 / p99 | {m('fsync_ms', 'p50'):.2f} / {m('fsync_ms', 'p99'):.2f} ms |")
    w(f"| loopback TCP, one stream | {loop:,.0f} MiB/s |")
    w("")
    w("| workload | produce rec/s | MiB/s | of disk | consume rec/s | MiB/s | of loopback | CPU s/GB in | CPU s/GB out |")
    w("|---|---|---|---|---|---|---|---|---|")
    for label in runs[0]["throughput"]:
        t = lambda k: m("throughput", label, k)  # noqa: E731
        w(f"| {label} | {t('produce_rec_s'):,.0f} | {t('produce_mib_s'):,.1f} | "
          f"{t('produce_mib_s') / disk:.0%} | {t('consume_rec_s'):,.0f} | {t('consume_mib_s'):,.1f} | "
          f"{t('consume_mib_s') / loop:.0%} | {t('cpu_s_per_gb_in'):.1f} | {t('cpu_s_per_gb_out'):.1f} |")
    w("")
    w("Beside them, the same workloads driven by `fjord perf` (Fjord's own client: 8 connections "
      "produce, one connection per partition consumes):")
    w("")
    w("| workload | produce rec/s | MiB/s | of disk | consume rec/s | MiB/s | of loopback |")
    w("|---|---|---|---|---|---|---|")
    for label in runs[0]["throughput"]:
        t = lambda k: m("throughput", label, "fjord_perf", k)  # noqa: E731
        w(f"| {label} | {t('produce_rec_s'):,.0f} | {t('produce_mib_s'):,.1f} | "
          f"{t('produce_mib_s') / disk:.0%} | {t('consume_rec_s'):,.0f} | {t('consume_mib_s'):,.1f} | "
          f"{t('consume_mib_s') / loop:.0%} |")
    w("")
    w("| other | value | target |")
    w("|---|---|---|")
    w(f"| 16 producers, keyed, 64 partitions | {m('keyed_16x64', 'produce_rec_s'):,.0f} rec/s | |")
    w(f"| end-to-end latency at {args.rate}/s, p50 / p99 / p99.9 / max | "
      f"{m('latency_ms', 'p50'):.1f} / {m('latency_ms', 'p99'):.1f} / {m('latency_ms', 'p99.9'):.1f} / "
      f"{m('latency_ms', 'max'):.1f} ms | p99 < 5, p99.9 < 20 |")
    full = "wide" in runs[0]
    if full:
        w(f"| backlog catch-up from disk, producers running | {m('backlog_catchup_mib_s'):,.0f} MiB/s | |")
        w(f"| produce while retention deletes segments | {m('retention_produce_mib_s'):,.0f} MiB/s | |")
    w(f"| start-up, empty data dir | {m('startup_empty_ms'):.0f} ms | < 100 |")
    if full:
        w(f"| start-up, {args.big_gib * args.scale:.2f} GiB data dir | {m('startup_big_ms'):.0f} ms | |")
        w(f"| recovery after SIGKILL, same data | {m('recovery_big_ms'):.0f} ms | |")
    w(f"| idle RSS / peak RSS | {m('idle_rss_mib'):.0f} / {m('peak_rss_mib'):.0f} MiB | idle < 50 |")
    if full:
        n_parts = max(100, int(args.partitions * args.scale))
        wm = lambda k: m("wide", k)  # noqa: E731
        w(f"| {n_parts:,} partitions: create / start-up / recovery after SIGKILL | "
          f"{wm('create_s'):.1f} s / {wm('startup_ms') / 1000:.1f} s / {wm('recovery_ms') / 1000:.1f} s | |")
        w(f"| {n_parts:,} partitions: descriptors and memory per partition | "
          f"{wm('fds_per_partition'):.2f} / {wm('kib_per_partition'):.1f} KiB | |")
        w(f"| {n_parts:,} partitions: 4 keyed producers / one consumer of all | "
          f"{wm('produce_rec_s'):,.0f} / {wm('consume_rec_s'):,.0f} rec/s | |")
    if "kafka" in runs[0]:
        lines.extend(kafka_report(runs, args))
    return "\n".join(lines) + "\n"


def kafka_report(runs, args):
    """Fjord beside Apache Kafka 4.4 on the same workloads, load generator and disk: Kafka
    with its defaults (no fsync) and with log.flush.interval.messages=1 (Fjord's durability)."""
    m = lambda *p: median_of(runs, p)  # noqa: E731
    out = ["", "Beside Apache Kafka 4.4 (same load generator, same disk, same run; Kafka: JVM "
           "heap 1 GiB, its defaults, i.e. page cache and no fsync; \"Kafka fsync\": "
           "log.flush.interval.messages=1, the durability of Fjord's default). Ratios are "
           "Fjord / Kafka:", "",
           "| workload | Fjord produce rec/s | Kafka | Kafka fsync | Fjord/Kafka | Fjord/Kafka fsync "
           "| Fjord consume rec/s | Kafka | Kafka fsync | Fjord/Kafka |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    w = out.append
    for label in runs[0]["throughput"]:
        f = lambda k: m("throughput", label, k)  # noqa: E731
        k = lambda k: m("kafka", "throughput", label, k)  # noqa: E731
        kf = lambda k: m("kafka_flush", "throughput", label, k)  # noqa: E731
        w(f"| {label} | {f('produce_rec_s'):,.0f} | {k('produce_rec_s'):,.0f} | "
          f"{kf('produce_rec_s'):,.0f} | {f('produce_rec_s') / k('produce_rec_s'):.2f} | "
          f"{f('produce_rec_s') / kf('produce_rec_s'):.2f} | {f('consume_rec_s'):,.0f} | "
          f"{k('consume_rec_s'):,.0f} | {kf('consume_rec_s'):,.0f} | "
          f"{f('consume_rec_s') / k('consume_rec_s'):.2f} |")
    fk, kk, kkf = (m("keyed_16x64", "produce_rec_s"), m("kafka", "keyed_16x64", "produce_rec_s"),
                   m("kafka_flush", "keyed_16x64", "produce_rec_s"))
    w(f"| 16 producers, keyed, 64 partitions | {fk:,.0f} | {kk:,.0f} | {kkf:,.0f} | "
      f"{fk / kk:.2f} | {fk / kkf:.2f} | | | | |")
    w("")
    w("| broker figure | Fjord | Kafka | Kafka fsync |")
    w("|---|---|---|---|")
    for label in runs[0]["throughput"]:
        for key, name in (("cpu_s_per_gb_in", "CPU s/GB in"), ("cpu_s_per_gb_out", "CPU s/GB out")):
            w(f"| {label}: {name} | {m('throughput', label, key):.1f} | "
              f"{m('kafka', 'throughput', label, key):.1f} | "
              f"{m('kafka_flush', 'throughput', label, key):.1f} |")
    w(f"| latency at {args.rate}/s p50 / p99 / p99.9 (ms) | "
      + " | ".join(f"{m(*pre, 'latency_ms', 'p50'):.1f} / {m(*pre, 'latency_ms', 'p99'):.1f} / "
                   f"{m(*pre, 'latency_ms', 'p99.9'):.1f}"
                   for pre in ((), ("kafka",), ("kafka_flush",))) + " |")
    w(f"| idle RSS / peak RSS (MiB) | {m('idle_rss_mib'):.0f} / {m('peak_rss_mib'):.0f} | "
      f"{m('kafka', 'idle_rss_mib'):.0f} / {m('kafka', 'peak_rss_mib'):.0f} | "
      f"{m('kafka_flush', 'idle_rss_mib'):.0f} / {m('kafka_flush', 'peak_rss_mib'):.0f} |")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", "target",
                                                     "release", "fjord"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=None, help="scratch directory on the disk to measure")
    ap.add_argument("--rate", type=int, default=5000, help="latency test records/s")
    ap.add_argument("--latency-seconds", type=int, default=30)
    ap.add_argument("--backlog-gib", type=float, default=2.0)
    ap.add_argument("--big-gib", type=float, default=10.0)
    ap.add_argument("--partitions", type=int, default=10_000,
                    help="partitions of the many-partitions workload")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny counts, one run: checks the suite works (CI)")
    ap.add_argument("--load", default=os.path.join(os.path.dirname(__file__), "..", "target",
                                                   "release", "kafka-load"),
                    help="the compiled load generator (cargo build --release -p kafka-load); "
                         "'python' drives confluent-kafka from this process instead")
    ap.add_argument("--no-kafka", dest="kafka", action="store_false",
                    help="skip Apache Kafka 4.4 beside Fjord (compat/reference/kafka.sh; needs a "
                         "JDK and Maven)")
    ap.add_argument("--compare-only", action="store_true",
                    help="only the workloads run on both brokers (throughput, keyed, latency)")
    ap.add_argument("--append", metavar="FILE", help="append the results to this markdown file")
    ap.add_argument("--json", action="store_true", help="print every run's raw figures as JSON")
    args = ap.parse_args()
    args.scale = 1.0
    if args.smoke:
        args.runs, args.scale, args.latency_seconds, args.rate = 1, 0.01, 2, 500
    global LOAD
    if args.load != "python":
        if not os.access(args.load, os.X_OK):
            sys.exit(f"{args.load} not found; build it with: cargo build --release -p kafka-load "
                     "(or pass --load python)")
        LOAD = args.load
    if not os.access(args.binary, os.X_OK):
        sys.exit(f"{args.binary} not found; build it with: cargo build --release -p fjord")
    scratch = tempfile.mkdtemp(prefix="fjord-suite-", dir=args.dir)
    try:
        runs = []
        for i in range(args.runs):
            log(f"run {i + 1}/{args.runs}")
            runs.append(run_once(args, scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    text = report(runs, args)
    publish(text, args.append)
    if args.json:
        print(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
