"""Apache Kafka 4.4 beside Fjord: start, wait for and stop the reference broker from Python.

A thin wrapper over `compat/reference/kafka.sh` (which resolves Kafka from Maven Central and
runs it on free loopback ports); start, stop and wait are one call each:

    ref = KafkaReference(tmp_dir).start()        # one KRaft combined node
    ref3 = KafkaReference(tmp_dir2, nodes=3).start()
    ref.bootstrap                                # "127.0.0.1:PORT[,...]"
    ref.tool("org.apache.kafka.tools.TopicCommand", "--list")  # a Kafka tool, bootstrap added
    ref.stop()
"""

import os
import subprocess

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference", "kafka.sh")


def run_script(*args, timeout=300, check=True):
    """Runs kafka.sh with `args`; returns the completed process (stdout, stderr as text)."""
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=timeout,
                          check=check, stdin=subprocess.DEVNULL)


def classpath():
    """The reference classpath (Kafka, its tools, Connect, Streams), resolved on first use."""
    return run_script("classpath").stdout.strip()


class KafkaReference:
    """An Apache Kafka 4.4 KRaft cluster (combined broker+controller nodes) in `dir`."""

    def __init__(self, dir, nodes=1, config=None):
        self.dir = str(dir)
        self.nodes = nodes
        self.config = dict(config or {})
        self.bootstrap = None

    def start(self):
        args = ["start", self.dir, "--nodes", str(self.nodes)]
        for k, v in self.config.items():
            args += ["--config", f"{k}={v}"]
        p = run_script(*args, check=False)
        if p.returncode != 0:
            raise RuntimeError(f"reference Kafka did not start:\n{p.stderr}")
        self.bootstrap = p.stdout.strip().splitlines()[-1]
        return self

    def wait(self, timeout=60):
        run_script("wait", self.dir, str(timeout))
        return self

    def stop(self):
        run_script("stop", self.dir, check=False)

    def kill(self, node):
        run_script("kill", self.dir, str(node))

    def log(self, node=1):
        with open(os.path.join(self.dir, f"node-{node}", "server.log"), errors="replace") as f:
            return f.read()

    def tool(self, main_class, *args, bootstrap=True, timeout=120, check=True, input=None):
        """Runs one of Kafka's tools (its main class) against this cluster."""
        return run_tool(main_class, *args, bootstrap=self.bootstrap if bootstrap else None,
                        timeout=timeout, check=check, input=input)


def run_tool(main_class, *args, bootstrap=None, timeout=120, check=True, input=None):
    """Runs a Kafka tool's main class on the reference classpath, against `bootstrap`."""
    extra = ["--bootstrap-server", bootstrap] if bootstrap else []
    p = subprocess.run([SCRIPT, "run", main_class, *extra, *args], capture_output=True,
                       text=True, timeout=timeout, input=input,
                       stdin=None if input is not None else subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise RuntimeError(f"{main_class} {' '.join(args)} exited {p.returncode}:\n"
                           f"{p.stdout}\n{p.stderr}")
    return p
