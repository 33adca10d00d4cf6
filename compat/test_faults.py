"""Short seeded runs of the fault harness (compat/faults.py): a three-node cluster, replication
factor 3, idempotent acks=all producers and a reader, under kill -9 and pauses of nodes and
partition leaders, and under network partitions. Nothing acknowledged may be lost, duplicated or
moved. Long runs by hand: `compat/.venv/bin/python compat/faults.py --seed N --duration 600`."""

import pytest

import faults
import netns


def checked(report):
    print({k: v for k, v in report.items() if k not in ("problems", "panics")})
    assert not report["panics"], report["panics"][0]
    assert not report["problems"], report["problems"]
    assert report["acknowledged"] > 1000, report
    assert report["lost"] == 0 and report["duplicated"] == 0
    return {kind for _, kind, _ in report["schedule"]}


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "Fault harness (seeded): kill -9 and pauses of nodes and leaders under acks=all load, RF 3")
def test_seeded_faults_lose_nothing_acknowledged(tmp_path):
    # Seed 2 draws a kill, a pause, a kill and a kill of a partition leader.
    kinds = checked(faults.run(seed=2, duration=40, root=str(tmp_path)))
    assert {"kill", "pause"} <= kinds, kinds


@pytest.mark.skipif(not netns.available(), reason="network faults need root (a network namespace per node)")
@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "Fault harness (seeded): network partitions (a leader cut off, a minority cut off, a one-way link) under acks=all load, RF 3")
def test_seeded_network_faults_lose_nothing_acknowledged(tmp_path):
    # Seed 6 draws a partition leader cut off, a one-way link, a minority cut off, a leader
    # cut off again.
    kinds = checked(faults.run(seed=6, duration=40, root=str(tmp_path),
                               nemeses=("isolate-leader", "halves", "one-way")))
    assert {"isolate-leader", "halves", "one-way"} <= kinds, kinds
