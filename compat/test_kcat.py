"""kcat (librdkafka 2.0 on Debian): the old-client path, produce and consume, against Apache
Kafka and against Fjord."""

import shutil
import subprocess

import pytest

from diff import unique

KCAT = shutil.which("kcat") or shutil.which("kafkacat")


def kcat(*args, stdin=None):
    assert KCAT, "kcat is not installed: apt-get install kcat (.ci/run does)"
    r = subprocess.run([KCAT, *args], input=stdin, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


@pytest.mark.compat("kcat (librdkafka 2.0)", "produce and consume, every codec")
@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_kcat_round_trip(target, codec):
    topic = unique(f"kc-{codec}")
    lines = "".join(f"key{i}:value-{i}\n" for i in range(50))
    kcat("-b", target.bootstrap, "-P", "-t", topic, "-K:", "-z", codec, stdin=lines.encode())
    out = kcat("-b", target.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e",
               "-f", "%o|%k|%s\n")
    assert out.splitlines() == [f"{i}|key{i}|value-{i}" for i in range(50)]


@pytest.mark.compat("kcat (librdkafka 2.0)", "metadata (-L)")
def test_kcat_metadata_lists_broker_and_topics(target):
    topic = unique("kc-meta")
    kcat("-b", target.bootstrap, "-P", "-t", topic, stdin=b"x\n")
    out = kcat("-b", target.bootstrap, "-L")
    assert f"broker 1 at {target.bootstrap}" in out
    assert f'topic "{topic}" with 1 partitions' in out
