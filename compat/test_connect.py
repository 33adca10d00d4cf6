"""Kafka Connect (a distributed worker, 4.3.1: compat/reference/connect-pom.xml says why not
4.4) on Kafka and on Fjord: its config, offset and status topics, the FileStream source and
sink moving a file through the broker, a worker restart resuming from the committed offsets,
and exactly-once source support
(`exactly.once.source.support=enabled`: the source task's records and offsets are written in
transactions, zombie workers fenced with Admin.fenceProducers)."""

import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest

from conftest import free_port, wait_for
from diff import compare, unique
from reference import SCRIPT

CONNECT = "org.apache.kafka.connect.cli.ConnectDistributed"


class Worker:
    def __init__(self, tmp, bootstrap, prefix):
        self.port = free_port()
        self.props = tmp / f"{prefix}-worker.properties"
        self.log = tmp / f"{prefix}-worker.log"
        settings = {
            "bootstrap.servers": bootstrap,
            "group.id": f"{prefix}-connect",
            "config.storage.topic": f"{prefix}-configs",
            "offset.storage.topic": f"{prefix}-offsets",
            "status.storage.topic": f"{prefix}-status",
            "config.storage.replication.factor": 1,
            "offset.storage.replication.factor": 1,
            "status.storage.replication.factor": 1,
            "offset.storage.partitions": 5,
            "status.storage.partitions": 3,
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "org.apache.kafka.connect.storage.StringConverter",
            "listeners": f"http://127.0.0.1:{self.port}",
            "offset.flush.interval.ms": 500,
            "exactly.once.source.support": "enabled",
            "plugin.discovery": "only_scan",
        }
        self.props.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        self.proc = None

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def request(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url(path), data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read()
            return json.loads(text) if text else None

    def start(self):
        log = open(self.log, "ab")
        env = dict(os.environ, KAFKA_JVM_OPTS="-Xmx512m")
        self.proc = subprocess.Popen([SCRIPT, "run-connect", CONNECT, str(self.props)], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

        def ready():
            assert self.proc.poll() is None, f"worker exited:\n{self.log.read_text()[-3000:]}"
            try:
                return self.request("GET", "/connectors") is not None
            except OSError:
                return False
        assert wait_for(ready, timeout=120, step=0.5), "Connect worker not ready"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def lines_of(path):
    return path.read_text().splitlines() if path.exists() else []


def connect_scenario(t, tmp):
    prefix = unique(f"c{t.name}")
    topic = f"{prefix}-lines"
    source, sink = tmp / f"{prefix}-in.txt", tmp / f"{prefix}-out.txt"
    source.write_text("".join(f"line {i}\n" for i in range(100)))
    w = Worker(tmp, t.bootstrap, prefix)
    out = {}
    try:
        w.start()
        w.request("POST", "/connectors", {"name": "source", "config": {
            "connector.class": "org.apache.kafka.connect.file.FileStreamSourceConnector",
            "file": str(source), "topic": topic, "tasks.max": "1",
            "exactly.once.support": "required", "transaction.boundary": "poll"}})
        w.request("POST", "/connectors", {"name": "sink", "config": {
            "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
            "file": str(sink), "topics": topic, "tasks.max": "1"}})
        assert wait_for(lambda: len(lines_of(sink)) >= 100, timeout=120, step=0.5), \
            f"sink has {len(lines_of(sink))} of 100 lines:\n{w.log.read_text()[-3000:]}"

        def states():
            return {name: (s["connector"]["state"], [task["state"] for task in s["tasks"]])
                    for name in ("source", "sink")
                    for s in [w.request("GET", f"/connectors/{name}/status")]}
        assert wait_for(lambda: all(c == "RUNNING" and tasks == ["RUNNING"]
                                    for c, tasks in states().values()), timeout=60, step=0.5)
        out["status"] = states()
        out["connectors"] = sorted(w.request("GET", "/connectors"))
        # A restart resumes where the committed offsets say: the next lines once, no repeats.
        w.stop()
        with open(source, "a") as f:
            f.write("".join(f"line {i}\n" for i in range(100, 150)))
        w.start()
        assert wait_for(lambda: len(lines_of(sink)) >= 150, timeout=120, step=0.5), \
            f"after restart the sink has {len(lines_of(sink))} of 150 lines"
        time.sleep(2)  # anything duplicated would arrive now
        out["sink"] = lines_of(sink)
        out["source_offsets"] = w.request("GET", "/connectors/source/offsets")
        out["source_offsets"]["offsets"][0]["partition"]["filename"] = "<in>"
    finally:
        w.stop()
    return out


@pytest.mark.compat("Kafka Connect 4.3.1 (distributed worker)",
                    "FileStream source and sink, restart resumes, exactly-once source")
def test_connect_file_stream_through_the_broker(both, tmp_path):
    kafka, fjord = compare(both, connect_scenario, tmp_path)
    assert kafka["sink"] == [f"line {i}" for i in range(150)]
