"""Short seeded runs of the fault harness (compat/faults.py): a three-node cluster, replication
factor 3, idempotent acks=all producers and a reader, under kill -9 and pauses of nodes and
partition leaders, and under network partitions. Nothing acknowledged may be lost, duplicated or
moved. Long runs by hand: `compat/.venv/bin/python compat/faults.py --seed N --duration 600`."""

import subprocess
import sys

import pytest

import faults
import netns

# An echo server on argv[1]:argv[2], one byte per connection; prints "ready" once listening.
ECHO = r"""
import socket, sys, threading
s = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
def serve(c):
    with c:
        c.sendall(c.recv(1))
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""
# Milliseconds for a connect and one echoed byte to argv[1]:argv[2]; -1 if it takes longer than
# argv[3] seconds.
ROUND_TRIP = r"""
import socket, sys, time
start = time.monotonic()
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])) as c:
        c.sendall(b"x")
        assert c.recv(1) == b"x"
    print((time.monotonic() - start) * 1000)
except OSError:
    print(-1)
"""


@pytest.mark.skipif(not netns.available(), reason="network faults need root (a network namespace per node)")
def test_the_network_faults_do_what_they_say():
    """The harness's own tools, without Fjord: a delayed link is late by its delay, a cut
    link (either way) is silent, and healing restores both."""
    net = netns.Net(2)
    server = None
    try:
        server = subprocess.Popen([*net.prefix(2), sys.executable, "-c", ECHO, net.host(2), "7000"],
                                  stdout=subprocess.PIPE, text=True)
        assert server.stdout.readline().strip() == "ready"

        def round_trip(timeout=2.0):
            done = subprocess.run([*net.prefix(1), sys.executable, "-c", ROUND_TRIP, net.host(2),
                                   "7000", str(timeout)], capture_output=True, text=True, timeout=30)
            return float(done.stdout)

        assert 0 <= round_trip() < 100
        # Node 1's packets to node 2 late by 300 ms: the SYN, then the byte.
        net.delay(1, 2, 300)
        assert 550 <= round_trip() < 1500
        net.heal()
        assert 0 <= round_trip() < 100
        net.cut(1, 2)
        assert round_trip() == -1, "a cut link answered"
        net.heal()
        # One way: node 2's answers to node 1 are lost; 1's packets still arrive.
        net.cut(2, 1)
        assert round_trip() == -1, "a link cut one way answered"
        net.heal()
        assert 0 <= round_trip() < 100

        # The clients' link (node 0): node 2's packets to the clients lost, then late.
        def from_clients(timeout=2.0):
            done = subprocess.run([sys.executable, "-c", ROUND_TRIP, net.host(2), "7000",
                                   str(timeout)], capture_output=True, text=True, timeout=30)
            return float(done.stdout)

        assert 0 <= from_clients() < 100
        net.cut(2, 0)
        assert from_clients() == -1, "a node cut from the clients answered them"
        assert 0 <= round_trip() < 100, "the other nodes still reach it"
        net.heal()
        net.delay(2, 0, 200)
        assert 350 <= from_clients() < 1500
        net.heal()
        assert 0 <= from_clients() < 100
    finally:
        if server:
            server.kill()
            server.wait()
        net.remove()


def checked(report):
    print({k: v for k, v in report.items() if k not in ("problems", "panics")})
    assert not report["panics"], report["panics"][0]
    assert not report["problems"], report["problems"]
    assert report["acknowledged"] > 1000, report
    assert report["lost"] == 0 and report["duplicated"] == 0
    # A fault costs seconds: every partition takes writes again (the harness's sessions are
    # short, a failover takes a few seconds).
    slow = [f for f in report["unavailable_s"] if f[3] is None or f[3] > 30]
    assert not slow, slow
    return {kind for _, kind, _ in report["schedule"]}


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "Fault harness (seeded): kill -9 and pauses of nodes and leaders, a voter removed from the metadata quorum and added back, under acks=all load, RF 3")
def test_seeded_faults_lose_nothing_acknowledged(tmp_path):
    # Seed 50 draws a pause, a voter's removal and a kill within its 30 s (asserted below).
    report = faults.run(seed=50, duration=30, root=str(tmp_path),
                        nemeses=("kill", "kill-leader", "pause", "voters"))
    kinds = checked(report)
    assert {"kill", "pause", "voters"} <= kinds, kinds
    # The voter was removed (an error would stand beside its id).
    assert all(isinstance(target, int) for _, kind, target in report["schedule"]
               if kind == "voters"), report["schedule"]


@pytest.mark.skipif(not netns.available(), reason="network faults need root (a network namespace per node)")
@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "Fault harness (seeded): network partitions (a leader cut off, a minority cut off, a one-way link) under acks=all load, RF 3")
def test_seeded_network_faults_lose_nothing_acknowledged(tmp_path):
    # Seed 6 draws a partition leader cut off, a one-way link, a minority cut off, a leader
    # cut off again.
    kinds = checked(faults.run(seed=6, duration=40, root=str(tmp_path),
                               nemeses=("isolate-leader", "halves", "one-way")))
    assert {"isolate-leader", "halves", "one-way"} <= kinds, kinds


@pytest.mark.skipif(not netns.available(), reason="network faults need root (a network namespace per node)")
@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "Fault harness (seeded): slow links (a node's or a leader's packets to and from the other nodes delayed 50 to 400 ms) under acks=all load, RF 3")
def test_seeded_slow_links_lose_nothing_acknowledged(tmp_path):
    # Seed 8 draws a leader slowed by 400 ms, a node by 400 ms, a leader by 50 ms.
    kinds = checked(faults.run(seed=8, duration=30, root=str(tmp_path),
                               nemeses=("slow", "slow-leader")))
    assert {"slow", "slow-leader"} <= kinds, kinds


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "Fault harness (seeded): an exactly-once consume-transform-produce copier while its transaction and group coordinators and partition leaders are killed: every acknowledged record copied once")
def test_seeded_coordinator_kills_keep_an_exactly_once_copy_exact(tmp_path):
    """A consume-transform-produce copier with exactly-once semantics while its transaction
    and group coordinators' nodes, and partition leaders, are killed: every acknowledged input
    record is in the output once, nothing else is."""
    report = faults.run(seed=3, duration=30, root=str(tmp_path), eos=True,
                        nemeses=("kill-coordinator", "kill-leader"))
    kinds = checked(report)
    assert "kill-coordinator" in kinds, report["schedule"]
    copier = report["copier"]
    assert copier["committed"] > 0 and copier["output"] >= report["acknowledged"], copier
