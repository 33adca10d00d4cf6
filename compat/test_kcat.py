"""kcat (librdkafka 2.0 on Debian): the old-client path, produce and consume."""

import shutil
import subprocess

import pytest

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat is not installed (.ci/run installs it)")


def kcat(*args, stdin=None):
    r = subprocess.run([KCAT, *args], input=stdin, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_kcat_round_trip(broker, codec):
    lines = "".join(f"key{i}:value-{i}\n" for i in range(50))
    kcat("-b", broker.bootstrap, "-P", "-t", f"kc-{codec}", "-K:", "-z", codec, stdin=lines.encode())
    out = kcat("-b", broker.bootstrap, "-C", "-t", f"kc-{codec}", "-o", "beginning", "-e",
               "-f", "%o|%k|%s\n")
    assert out.splitlines() == [f"{i}|key{i}|value-{i}" for i in range(50)]


def test_kcat_metadata_lists_broker_and_topics(broker):
    kcat("-b", broker.bootstrap, "-P", "-t", "kc-meta", stdin=b"x\n")
    out = kcat("-b", broker.bootstrap, "-L")
    assert f"broker 1 at {broker.bootstrap}" in out
    assert 'topic "kc-meta" with 1 partitions' in out
