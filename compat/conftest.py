"""Fixtures: a real `fjord serve` process on free loopback ports, with its own data dir."""

import os
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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A fjord process; restartable on the same data directory and port."""

    def __init__(self, data_dir, extra_args=()):
        self.data_dir = str(data_dir)
        self.port = free_port()
        self.http_port = free_port()
        self.extra_args = list(extra_args)
        self.proc = None
        self.log_path = os.path.join(os.path.dirname(self.data_dir), f"fjord-{self.port}.log")
        self.log_file = None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self, timeout=10.0):
        self.log_file = open(self.log_path, "ab")
        env = dict(os.environ, FJORD_LOG="info", NO_COLOR="1")
        self.proc = subprocess.Popen(
            [FJORD_BIN, "serve", "--listen", self.bootstrap,
             "--http-listen", f"127.0.0.1:{self.http_port}", "--data-dir", self.data_dir,
             *self.extra_args],
            stdout=self.log_file, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fjord exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
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
