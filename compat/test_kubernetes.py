"""The Kubernetes manifests (deploy/kubernetes/fjord.yaml) run on loopback processes: each pod
of the StatefulSet is the container's own command with the manifest's environment (Kubernetes'
`$(VAR)` references expanded), only its network addresses and data directory replaced by
loopback ones; its readiness and liveness probes are asked as the kubelet asks them, and a
rolling restart is done the way the StatefulSet controller does it (highest ordinal first,
SIGTERM with the termination grace period, the next pod only once this one is ready again)
under idempotent acks=all load: nothing acknowledged is lost."""

import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import yaml
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import FJORD_BIN, free_port, wait_for
from test_replication import Producing, check, read_all

MANIFEST = os.path.join(os.path.dirname(__file__), "..", "deploy", "kubernetes", "fjord.yaml")


def manifest():
    with open(MANIFEST) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def expand(env, pod_name):
    """The container's environment as the kubelet makes it: fieldRefs, then `$(VAR)`
    references to variables defined before."""
    out = {}
    for e in env:
        if "valueFrom" in e:
            assert e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", e
            out[e["name"]] = pod_name
        else:
            out[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: out.get(m.group(1), m.group(0)),
                                    e["value"])
    return out


class Pod:
    def __init__(self, ordinal, container, env, grace, root):
        self.ordinal, self.container, self.env, self.grace = ordinal, container, env, grace
        self.log_path = root / f"fjord-{ordinal}.log"
        self.proc = None

    @property
    def bootstrap(self):
        return self.env["FJORD_ADVERTISE"]

    def start(self):
        path = os.path.dirname(os.path.abspath(FJORD_BIN))
        env = {**os.environ, **self.env, "PATH": f"{path}:{os.environ['PATH']}"}
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([*self.container["command"], *self.container["args"]],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def probe(self, kind):
        """The probe's HTTP status (None: no answer), as the kubelet asks it."""
        get = self.container[kind]["httpGet"]
        port = self.env["FJORD_HTTP_LISTEN"].rsplit(":", 1)[1]
        assert str(get["port"]) == self.env_port_in_manifest
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{get['path']}", timeout=2) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return None

    def stop(self):
        """SIGTERM, then SIGKILL after the termination grace period (the kubelet's way)."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=self.grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        self.log.close()
        return code


@pytest.fixture
def pods(tmp_path):
    m = manifest()
    sts = m[("StatefulSet", "fjord")]
    spec = sts["spec"]["template"]["spec"]
    container = spec["containers"][0]
    config = tmp_path / "fjord.toml"
    config.write_text(m[("ConfigMap", "fjord")]["data"]["fjord.toml"])
    n = sts["spec"]["replicas"]
    ports = {i: (free_port(), free_port(), free_port()) for i in range(n)}
    # The voters as the manifest names them, each pod's stable name mapped to loopback.
    voters = expand(container["env"], "fjord-0")["FJORD_VOTERS"]
    for i in range(n):
        voters = voters.replace(f"fjord-{i}.fjord-headless:9093", f"127.0.0.1:{ports[i][1]}")
    out = []
    for i in range(n):
        env = expand(container["env"], f"fjord-{i}")
        assert env["FJORD_ADVERTISE"] == f"fjord-{i}.fjord-headless:9092"
        assert env["FJORD_CONTROLLER_LISTEN"] == f"fjord-{i}.fjord-headless:9093"
        # What the cluster provides: addresses and a volume, and the ConfigMap's file.
        env.update(FJORD_LISTEN=f"127.0.0.1:{ports[i][0]}",
                   FJORD_ADVERTISE=f"127.0.0.1:{ports[i][0]}",
                   FJORD_CONTROLLER_LISTEN=f"127.0.0.1:{ports[i][1]}",
                   FJORD_VOTERS=voters,
                   FJORD_HTTP_LISTEN=f"127.0.0.1:{ports[i][2]}",
                   FJORD_DATA_DIR=str(tmp_path / f"data-{i}"),
                   FJORD_CONFIG=str(config))
        pod = Pod(i, container, env, spec["terminationGracePeriodSeconds"], tmp_path)
        pod.env_port_in_manifest = str(container["ports"][2]["containerPort"])
        out.append(pod)
    # podManagementPolicy Parallel: all at once.
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    for pod in out:
        pod.start()
    yield out
    for pod in out:
        pod.stop()
    for pod in out:
        text = pod.log_path.read_text(errors="replace")
        assert "panicked" not in text, text[text.find("panicked") - 2000:][:4000]


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "The Kubernetes StatefulSet's pods on loopback: the container's command and environment form a three-node cluster, the readiness and liveness probes answer, and a rolling restart in the StatefulSet's order under acks=all load loses nothing")
def test_the_statefulset_rolls_without_losing_anything(pods):
    m = manifest()
    assert m[("PodDisruptionBudget", "fjord")]["spec"]["maxUnavailable"] == 1
    assert m[("Service", "fjord-headless")]["spec"]["publishNotReadyAddresses"] is True
    for pod in pods:
        assert wait_for(lambda: pod.probe("readinessProbe") == 200, timeout=60), pod.ordinal
        assert pod.probe("livenessProbe") == 200
    servers = ",".join(p.bootstrap for p in pods)
    admin = AdminClient({"bootstrap.servers": servers})
    # The ConfigMap's defaults: three replicas, two in sync.
    admin.create_topics([NewTopic("k", 3)])["k"].result(30)
    md = admin.list_topics("k", timeout=10).topics["k"]
    assert all(len(p.replicas) == 3 for p in md.partitions.values())
    load = Producing(servers, "k")
    acked, errors = load.acked, load.errors
    # The StatefulSet controller's rolling update: highest ordinal first, one at a time, the
    # next only once this one is ready; the others stay ready meanwhile (the budget).
    for pod in sorted(pods, key=lambda p: -p.ordinal):
        time.sleep(1)
        assert pod.stop() == 0, "the pod stopped within its grace period, cleanly"
        assert all(p.probe("readinessProbe") == 200 for p in pods if p is not pod)
        pod.start()
        assert wait_for(lambda: pod.probe("readinessProbe") == 200, timeout=60), pod.ordinal
    time.sleep(1)
    load.stop()
    assert not errors, errors[:5]
    assert len(acked) > 100
    check(acked, read_all(servers, "k", 3, lambda n: n >= len(acked)))
