"""Fixtures: a real `fjord serve` process on free loopback ports, with its own data dir; Apache
Kafka beside it for the differential tests; and the compatibility table those tests produce."""

import os
import random
import signal
import socket
import subprocess
import time

import pytest

FJORD_BIN = os.environ.get("FJORD_BIN", "target/debug/fjord")


def wait_for(cond, timeout=30, step=0.1):
    """Polls `cond` until it holds or `timeout` seconds pass; returns whether it held."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return False


_handed_out = set()
_port_choice = random.Random()  # its own: harness runs seed the module's generator


def free_port():
    """A loopback port nothing listens on, below the kernel's ephemeral range: a port from that
    range (what binding port 0 gives) can be taken by some outgoing connection before the broker
    binds it, which made a node fail to start about one CI run in ten."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    low = 10000 if ephemeral_low > 12000 else 1024
    while True:
        port = _port_choice.randrange(low, ephemeral_low)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


def coordinator_partition(key, partitions):
    """Fjord's coordinator partition of a group or transactional id: Java's String.hashCode
    with the sign bit cleared, modulo the partition count (Kafka takes the absolute value:
    docs/compatibility.md)."""
    h = 0
    for unit in key.encode("utf-16-be").hex(" ", 2).split():
        h = (31 * h + int(unit, 16)) & 0xFFFFFFFF
    return (h & 0x7FFFFFFF) % partitions


class Broker:
    """A fjord process; restartable on the same data directory and port."""

    def __init__(self, data_dir, extra_args=(), host="127.0.0.1", prefix=()):
        """`host`: the address it listens on; `prefix`: a command it runs under (a network
        namespace's `ip netns exec`)."""
        self.data_dir = str(data_dir)
        self.host = host
        self.prefix = list(prefix)
        self.port = free_port()
        self.http_port = free_port()
        self.extra_args = list(extra_args)
        self.proc = None
        self.log_path = os.path.join(os.path.dirname(self.data_dir), f"fjord-{self.port}.log")
        self.log_file = None

    @property
    def bootstrap(self):
        return f"{self.host}:{self.port}"

    def start(self, timeout=10.0):
        return self.launch().wait_ready(timeout)

    def launch(self):
        """Starts the process without waiting for it (members of a cluster wait for each
        other before they listen)."""
        self.log_file = open(self.log_path, "ab")
        env = dict(os.environ, FJORD_LOG="info", NO_COLOR="1")
        self.proc = subprocess.Popen(
            [*self.prefix, FJORD_BIN, "serve", "--listen", self.bootstrap,
             "--http-listen", f"{self.host}:{self.http_port}", "--data-dir", self.data_dir,
             *self.extra_args],
            stdout=self.log_file, stderr=subprocess.STDOUT, env=env)
        return self

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fjord exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"fjord not ready after {timeout}s:\n{self.log()}")

    def stop(self, sig=signal.SIGTERM, timeout=20.0):
        if self.proc is None:
            return None
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        self.log_file.close()
        return code

    def kill(self):
        return self.stop(signal.SIGKILL)

    def restart(self):
        self.stop()
        return self.start()

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")


def three_nodes(tmp_path, extra_config="", net=None, node_args=None):
    """Three Fjord nodes, every one a voter, with short broker sessions (fencing shows within
    seconds) and `extra_config` (TOML lines) in their config file; yields the started nodes,
    stops them after, and fails if any node's log shows a panic. For cluster fixtures. With
    `net` (a `netns.Net` of three nodes) each node runs in its namespace, at its address;
    `node_args` ({node: [flags]}) adds flags of one node's own (its rack)."""
    host = net.host if net else (lambda i: "127.0.0.1")
    controllers = {i: f"{host(i)}:{free_port()}" for i in (1, 2, 3)}
    voters = ",".join(f"{i}@{a}" for i, a in controllers.items())
    config = tmp_path / "cluster.toml"
    config.write_text('"broker.heartbeat.interval.ms" = 300\n"broker.session.timeout.ms" = 2000\n'
                      + extra_config)
    nodes = [Broker(tmp_path / f"node{i}", ["--node-id", str(i), "--voters", voters,
                                            "--controller-listen", controllers[i],
                                            "--config", str(config),
                                            *(node_args or {}).get(i, [])],
                    host=host(i), prefix=net.prefix(i) if net else ())
             for i in (1, 2, 3)]
    for n in nodes:
        n.launch()
    for n in nodes:
        n.wait_ready(timeout=60)
    yield nodes
    for n in nodes:
        n.stop()
    # Whatever a test did to the cluster, no node's Raft or broker code panicked.
    for log in tmp_path.glob("fjord-*.log"):
        text = log.read_text(errors="replace")
        assert "panicked" not in text, f"{log.name}:\n{text[text.find('panicked') - 2000:][:4000]}"


def three_nodes_in_namespaces(tmp_path, extra_config=""):
    """`three_nodes`, each node in a network namespace of its own: yields (nodes, net), the
    `netns.Net` that cuts and delays their links; skips without root."""
    import netns

    if not netns.available():
        pytest.skip("network faults need root: each node runs in a network namespace")
    net = netns.Net(3)
    try:
        for nodes in three_nodes(tmp_path, extra_config, net=net):
            yield nodes, net
            net.heal()
    finally:
        net.remove()


@pytest.fixture
def broker_factory(tmp_path):
    made = []

    def make(extra_args=()):
        b = Broker(tmp_path / f"data{len(made)}", extra_args)
        made.append(b)
        return b.start()

    yield make
    for b in made:
        code = b.stop()
        log = b.log()
        # A clean run logs no ERROR lines and stops with exit code 0.
        errors = [line for line in log.splitlines() if " ERROR " in line]
        assert not errors, "broker logged errors:\n" + "\n".join(errors)
        assert code in (0, None), f"broker exited with {code}:\n{log[-3000:]}"


@pytest.fixture
def broker(broker_factory):
    return broker_factory()


# ---- Apache Kafka beside Fjord (the differential suite, test_diff_*.py and client tests) ----

from reference import KafkaReference  # noqa: E402


@pytest.fixture(scope="session")
def kafka_ref(tmp_path_factory):
    """One Apache Kafka 4.4 node for the whole session (each test uses its own topic names)."""
    ref = KafkaReference(tmp_path_factory.mktemp("kafka"))
    ref.start()
    yield ref
    ref.stop()


@pytest.fixture(scope="session")
def fjord_shared(tmp_path_factory):
    """One fjord process for the whole session, beside `kafka_ref`."""
    b = Broker(tmp_path_factory.mktemp("fjord") / "data")
    b.start()
    yield b
    code = b.stop()
    errors = [line for line in b.log().splitlines() if " ERROR " in line]
    assert not errors, "broker logged errors:\n" + "\n".join(errors)
    assert code in (0, None), f"broker exited with {code}"


class Target:
    """A broker a scenario runs against: its name ("kafka" or "fjord") and bootstrap."""

    def __init__(self, name, bootstrap):
        self.name = name
        self.bootstrap = bootstrap

    def __repr__(self):
        return self.name


@pytest.fixture
def both(kafka_ref, fjord_shared):
    """(kafka, fjord): the same scenario is run against each and the results compared."""
    return Target("kafka", kafka_ref.bootstrap), Target("fjord", fjord_shared.bootstrap)


@pytest.fixture(params=["kafka", "fjord"])
def target(request):
    """Each client test runs against Apache Kafka and against Fjord."""
    if request.param == "kafka":
        return Target("kafka", request.getfixturevalue("kafka_ref").bootstrap)
    return Target("fjord", request.getfixturevalue("fjord_shared").bootstrap)


@pytest.fixture(scope="session")
def java(tmp_path_factory):
    """Runs a scenario of compat/java/Scenarios.java (the Java client, kafka-clients 4.4)
    against a target; returns what it printed as data, with the run's name prefix as "<p>".
    Every compat/java/*.java is compiled once per session."""
    import json
    import uuid

    from reference import classpath

    out = tmp_path_factory.mktemp("java-classes")
    src = os.path.join(os.path.dirname(__file__), "java")
    cp = classpath()
    sources = sorted(os.path.join(src, f) for f in os.listdir(src) if f.endswith(".java"))
    subprocess.run(["javac", "-d", str(out), "-cp", cp, *sources], check=True,
                   capture_output=True)
    log4j = os.path.join(os.path.dirname(__file__), "reference", "log4j2-tools.properties")

    def run(target, scenario, timeout=180):
        prefix = f"j{uuid.uuid4().hex[:8]}"
        p = subprocess.run(["java", f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{out}:{cp}",
                            "Scenarios", scenario, target.bootstrap, prefix],
                           capture_output=True, text=True, timeout=timeout)
        assert p.returncode == 0, f"Java scenario {scenario} failed on {target}:\n{p.stderr[-4000:]}"
        return json.loads(p.stdout.replace(prefix, "<p>"))

    # For tests that run their own Java programs (compat/java/*.java) on the same classpath.
    run.classpath = f"{out}:{cp}"
    run.log4j = log4j
    return run


# ---- The compatibility table (docs/compatibility.md) ----
#
# A test marked `@pytest.mark.compat(client, feature)` counts for that row: a differential
# test (`compare`) for both columns (Kafka: the scenario ran; Fjord: it ran and matched Kafka,
# documented differences aside), a test with the `target` fixture for its target's column,
# a marker with `columns=(...)` for those columns, any other test for Fjord's. With FJORD_COMPAT_TABLE=path the table in that file (between
# its markers) is rewritten at the end of the run.

_TABLE = {}


def pytest_configure(config):
    config.addinivalue_line("markers", "compat(client, feature): a row of the compatibility table")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("compat")
    if marker is None or report.when not in ("setup", "call"):
        return
    if report.when == "setup" and report.passed:
        return
    import diff
    row = _TABLE.setdefault(tuple(marker.args), {})
    seen = diff.OUTCOMES.get(item.nodeid)
    if "columns" in marker.kwargs:
        for name in marker.kwargs["columns"]:
            row.setdefault(name, []).append(report.passed)
    elif seen is not None:
        for name, ok in seen.items():
            row.setdefault(name, []).append(ok and (name == "kafka" or report.passed))
    elif hasattr(item, "callspec") and "target" in item.callspec.params:
        row.setdefault(item.callspec.params["target"], []).append(report.passed)
    else:
        row.setdefault("fjord", []).append(report.passed)


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("FJORD_COMPAT_TABLE")
    # Only a run of the whole suite rewrites the table (a partial run would drop rows): options
    # such as -q may be given, test paths may not.
    chosen = [a for a in session.config.invocation_params.args if not str(a).startswith("-")]
    if not path or not _TABLE or chosen:
        return
    def cell(results):
        if not results:
            return "not run"
        return "pass" if all(results) else "FAIL"
    rows = ["| client / tool | feature | Apache Kafka 4.4 | Fjord |", "|---|---|---|---|"]
    for (client, feature), row in sorted(_TABLE.items()):
        rows.append(f"| {client} | {feature} | {cell(row.get('kafka'))} | {cell(row.get('fjord'))} |")
    start, end = "<!-- compat-table:start -->", "<!-- compat-table:end -->"
    with open(path) as f:
        text = f.read()
    if start not in text or end not in text:
        return
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(head + start + "\n" + "\n".join(rows) + "\n" + end + tail)


@pytest.fixture(scope="session")
def franz_go(tmp_path_factory):
    """Runs a scenario of compat/go/cmd/scenarios (franz-go: kgo and kadm) against a target;
    returns what it printed as data, with the run's name prefix as "<p>"."""
    import json
    import uuid

    binary = tmp_path_factory.mktemp("go") / "scenarios"
    src = os.path.join(os.path.dirname(__file__), "go")
    subprocess.run(["go", "build", "-o", str(binary), "./cmd/scenarios"], cwd=src, check=True,
                   capture_output=True)

    def run(target, scenario, timeout=180):
        prefix = f"g{uuid.uuid4().hex[:8]}"
        p = subprocess.run([str(binary), scenario, target.bootstrap, prefix],
                           capture_output=True, text=True, timeout=timeout)
        assert p.returncode == 0, f"franz-go scenario {scenario} failed on {target}:\n{p.stderr[-4000:]}"
        return json.loads(p.stdout.replace(prefix, "<p>"))

    return run


@pytest.fixture(scope="session")
def kafkajs():
    """Runs a scenario of compat/js/scenarios.mjs (kafkajs) against a target; returns what it
    printed as data, with the run's name prefix as "<p>". Installs kafkajs with `npm ci`
    (package-lock.json) on first use."""
    import json
    import uuid

    src = os.path.join(os.path.dirname(__file__), "js")
    if not os.path.isdir(os.path.join(src, "node_modules", "kafkajs")):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=src, check=True,
                       capture_output=True)

    def run(target, scenario, timeout=180):
        prefix = f"n{uuid.uuid4().hex[:8]}"
        p = subprocess.run(["node", "scenarios.mjs", scenario, target.bootstrap, prefix], cwd=src,
                           capture_output=True, text=True, timeout=timeout)
        assert p.returncode == 0, f"kafkajs scenario {scenario} failed on {target}:\n{p.stderr[-4000:]}"
        return json.loads(p.stdout.replace(prefix, "<p>"))

    return run
