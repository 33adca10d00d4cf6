#!/usr/bin/env python3
"""Fjord's memory and start-up as the data it keeps and the partitions it holds grow.

Two parts, each on a new data directory in --dir, Fjord's default settings:
  retained: one partition written with 4,000-byte records, one per batch (about one index
    entry per 8 KiB, near the densest the default index.interval.bytes of 4 KiB gives), first
    1 GB, then up to --gb GB; after each, everything is read back from the start, and the
    broker's resident memory (VmRSS) is taken. Then a clean restart: start-up time, RSS after
    it and after reading everything back once more. The size of the index files on disk says
    what a broker that holds every index in memory would hold.
  partitions: an empty broker's RSS; then --partitions partitions, written by 16 librdkafka
    producers (bench/kafka-load, keyed, acks=all) when the broker is killed with SIGKILL
    mid-load. Start-up after the kill (until it answers ApiVersions: it listens once every
    partition is open), RSS after it, and the same after a clean restart; memory per
    partition is (RSS with the partitions - empty RSS) / partitions.
Progress goes to stderr; the tables to stdout (and --append FILE).

Examples:
  cargo build --release -p fjord -p kafka-load
  compat/.venv/bin/python bench/footprint.py --dir target --gb 50 --append BENCHMARKS.md
  compat/.venv/bin/python bench/footprint.py --smoke --binary target/debug/fjord \\
      --load target/debug/kafka-load   # seconds: what CI runs
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import suite
from suite import Broker, log

RECORD = 4000
GB = 1_000_000_000


def fjord(args, *cmd, timeout=3600):
    out = subprocess.run([args.binary, *map(str, cmd)], capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"fjord {' '.join(map(str, cmd))} failed:\n{out.stderr[-2000:]}")
    return out.stdout


def dir_bytes(path, suffixes):
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files
                     if f.endswith(suffixes))
    return total


def settled_rss(b):
    """VmRSS once the broker has had a moment to release what the last request held."""
    time.sleep(1)
    return b.rss_mib("VmRSS")


def read_back(args, b, topic):
    t = time.monotonic()
    fjord(args, "perf", "consume", topic, "-b", b.bootstrap, "-o", "json")
    return time.monotonic() - t


def retained(args, scratch):
    data = tempfile.mkdtemp(prefix="retained-", dir=scratch)
    b = Broker(args.binary, data)
    r = {}
    try:
        b.start()
        suite.create_topic(b.bootstrap, "retained", 1)
        written = 0
        step = int(args.step_gb * GB)

        def write_to(target):
            nonlocal written
            while written < target:
                n = max(1, int(min(step, target - written) // (RECORD + 70)))
                fjord(args, "perf", "produce", "retained", "-b", b.bootstrap, "--count", n,
                      "--size", RECORD, "--batch-records", 1, "--acks", 1, "--connections", 8,
                      "-o", "json")
                written += n * (RECORD + 70)
                log(f"retained: {written / GB:,.1f} of {target / GB:,.1f} GB written, "
                    f"RSS {b.rss_mib('VmRSS'):,.1f} MiB")

        write_to(step)
        read_back(args, b, "retained")
        r["rss_first"] = settled_rss(b)
        r["first_gb"] = dir_bytes(data, (".log",)) / GB
        log(f"retained: {r['first_gb']:,.2f} GB kept, read back: RSS {r['rss_first']:,.1f} MiB")
        write_to(args.gb * GB)
        r["read_s"] = read_back(args, b, "retained")
        r["rss_all"] = settled_rss(b)
        r["all_gb"] = dir_bytes(data, (".log",)) / GB
        r["index_mib"] = dir_bytes(data, (".index", ".timeindex")) / (1 << 20)
        r["peak"] = b.rss_mib("VmHWM")
        log(f"retained: {r['all_gb']:,.2f} GB kept, read back in {r['read_s']:,.1f} s: "
            f"RSS {r['rss_all']:,.1f} MiB (index files {r['index_mib']:,.1f} MiB)")
        b.stop()
        r["restart_s"] = b.start()
        r["rss_restart"] = settled_rss(b)
        read_back(args, b, "retained")
        r["rss_restart_read"] = settled_rss(b)
        log(f"retained: clean restart in {r['restart_s']:,.2f} s, RSS {r['rss_restart']:,.1f} "
            f"MiB, after reading back {r['rss_restart_read']:,.1f} MiB")
    finally:
        b.stop()
        shutil.rmtree(data, ignore_errors=True)
    return r


def partitions(args, scratch):
    r = {}
    data = tempfile.mkdtemp(prefix="partitions-", dir=scratch)
    b = Broker(args.binary, data)
    load = None
    try:
        b.start()
        r["rss_empty"] = settled_rss(b)
        suite.create_topic(b.bootstrap, "many", args.partitions)
        # At least two million 1-KiB records: still under way when the kill comes.
        count = max(args.partitions * args.records_per_partition, 2_000_000)
        log(f"partitions: {args.partitions:,} partitions, {count:,} records under way; "
            f"SIGKILL in {args.kill_after} s")
        load = subprocess.Popen([suite.LOAD, "produce", "--bootstrap", b.bootstrap, "--topic",
                                 "many", "--count", str(count), "--size", "1024",
                                 "--producers", "16", "--keyed"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(args.kill_after)
        if load.poll() is not None:
            raise RuntimeError("the load ended before the kill: raise --records-per-partition")
        b.stop(signal.SIGKILL)
        load.kill()
        load.wait()
        r["kept_mb"] = dir_bytes(data, (".log",)) / 1e6
        r["crash_start_s"] = b.start()
        r["rss_crash"] = settled_rss(b)
        log(f"partitions: started after SIGKILL in {r['crash_start_s']:,.2f} s "
            f"({r['kept_mb']:,.0f} MB kept), RSS {r['rss_crash']:,.1f} MiB")
        b.stop()
        r["clean_start_s"] = b.start()
        r["rss_clean"] = settled_rss(b)
        log(f"partitions: clean restart in {r['clean_start_s']:,.2f} s, "
            f"RSS {r['rss_clean']:,.1f} MiB")
    finally:
        if load and load.poll() is None:
            load.kill()
        b.stop()
        shutil.rmtree(data, ignore_errors=True)
    return r


def report(args, ret, parts):
    lines = [f"### {datetime.date.today()}: memory and start-up ({'smoke' if args.smoke else 'full'}, "
             f"{platform.node() or 'this machine'}, {os.cpu_count()} cores)", ""]
    w = lines.append
    w(f"Command: `compat/.venv/bin/python bench/footprint.py --gb {args.gb:g} "
      f"--partitions {args.partitions}` (one run: each figure is a state, not a rate).")
    w("")
    w(f"One partition, {RECORD:,}-byte records one per batch (index files "
      f"{ret['index_mib']:,.1f} MiB at the end), everything read back before each figure:")
    w("")
    w("| kept | broker RSS (MiB) |")
    w("|---|---|")
    w(f"| {ret['first_gb']:,.2f} GB | {ret['rss_first']:,.1f} |")
    w(f"| {ret['all_gb']:,.2f} GB | {ret['rss_all']:,.1f} (peak {ret['peak']:,.1f}) |")
    w(f"| {ret['all_gb']:,.2f} GB, after a clean restart ({ret['restart_s']:,.2f} s) | "
      f"{ret['rss_restart']:,.1f}; after reading back {ret['rss_restart_read']:,.1f} |")
    w("")
    per = (parts["rss_crash"] - parts["rss_empty"]) * 1024 / args.partitions
    w(f"{args.partitions:,} partitions, killed with SIGKILL while 16 producers wrote to all "
      f"of them ({parts['kept_mb']:,.0f} MB kept); empty broker {parts['rss_empty']:,.1f} MiB:")
    w("")
    w("| start | start-up (s) | RSS (MiB) | per partition (KiB) |")
    w("|---|---|---|---|")
    w(f"| after SIGKILL | {parts['crash_start_s']:,.2f} | {parts['rss_crash']:,.1f} | {per:,.0f} |")
    per = (parts["rss_clean"] - parts["rss_empty"]) * 1024 / args.partitions
    w(f"| clean | {parts['clean_start_s']:,.2f} | {parts['rss_clean']:,.1f} | {per:,.0f} |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--binary", default=os.path.join(here, "..", "target", "release", "fjord"))
    ap.add_argument("--load", default=os.path.join(here, "..", "target", "release", "kafka-load"))
    ap.add_argument("--dir", default=None, help="scratch directory on the disk to measure")
    ap.add_argument("--gb", type=float, default=50, help="data kept in the end (GB)")
    ap.add_argument("--step-gb", type=float, default=1, help="the first figure's data (GB)")
    ap.add_argument("--partitions", type=int, default=1000)
    ap.add_argument("--records-per-partition", type=int, default=2000)
    ap.add_argument("--kill-after", type=float, default=5, help="seconds of load before SIGKILL")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes: checks the script works (the figures mean nothing)")
    ap.add_argument("--append", metavar="FILE", help="append the results to this markdown file")
    args = ap.parse_args()
    if args.smoke:
        args.gb, args.step_gb, args.partitions, args.kill_after = 0.06, 0.02, 50, 1
    for path in (args.binary, args.load):
        if not os.access(path, os.X_OK):
            sys.exit(f"{path} not found; build it: cargo build --release -p fjord -p kafka-load")
    free = shutil.disk_usage(args.dir or tempfile.gettempdir()).free
    if free < args.gb * GB * 1.2:
        sys.exit(f"--gb {args.gb:g} needs {args.gb * 1.2:,.0f} GB free in --dir; "
                 f"{free / GB:,.0f} GB are: pass a smaller --gb or another --dir")
    suite.LOAD = args.load
    scratch = tempfile.mkdtemp(prefix="fjord-footprint-", dir=args.dir)
    try:
        ret = retained(args, scratch)
        parts = partitions(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    suite.publish(report(args, ret, parts), args.append)


if __name__ == "__main__":
    main()
