"""Network faults between Fjord nodes: every node in a network namespace of its own, joined by a
bridge on which the clients (in the test's own namespace) reach every node.

A link is cut by routing one node's packets for another into an `ifb` device (which silently
drops whatever tc did not redirect to it): a cut is a real partition (connects hang, sent bytes vanish, the peer's packets still
arrive for a one-way cut), not a refused connection. Needs root (CAP_NET_ADMIN) and `ip`; the
namespaces, bridge and routes are the test's own and are removed when it ends.
"""

import itertools
import os
import subprocess

_made = itertools.count()


def available():
    """Whether this process may make network namespaces (root with `ip`)."""
    return os.geteuid() == 0 and subprocess.run(["ip", "-V"], capture_output=True).returncode == 0


def ip(*args, ns=None):
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")


class Net:
    """Nodes 1..n, node i at address `host(i)` inside namespace `ns[i]`; clients at `client`."""

    def __init__(self, n):
        # Names and subnet unique to this process and instance: a namespace's devices may
        # outlive `ip netns del` for a moment.
        number = os.getpid() * 10 + next(_made) % 10
        tag = number % 1000000
        self.subnet = f"10.213.{number % 250}"
        self.bridge = f"fjb{tag}"
        self.ns = {i: f"fj{tag}n{i}" for i in range(1, n + 1)}
        self.client = f"{self.subnet}.254"
        self.cut_links = set()  # (from, to): from's packets for to are dropped
        self.made = []
        try:
            self._build()
        except Exception:
            self.remove()
            raise

    def host(self, i):
        return f"{self.subnet}.{i}"

    def prefix(self, i):
        """The command prefix that runs a program inside node i's namespace."""
        return ["ip", "netns", "exec", self.ns[i]]

    def _build(self):
        ip("link", "add", self.bridge, "type", "bridge")
        self.made.append(("link", self.bridge))
        ip("addr", "add", f"{self.client}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for i, ns in self.ns.items():
            ip("netns", "add", ns)
            self.made.append(("netns", ns))
            outer = f"{self.bridge}v{i}"
            ip("link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self.made.append(("link", outer))
            ip("link", "set", outer, "master", self.bridge, "up")
            ip("addr", "add", f"{self.host(i)}/24", "dev", "eth0", ns=ns)
            ip("link", "set", "eth0", "up", ns=ns)
            ip("link", "set", "lo", "up", ns=ns)
            ip("link", "add", "sink", "type", "ifb", ns=ns)
            ip("link", "set", "sink", "up", ns=ns)

    def cut(self, a, b):
        """Drops a's packets for b (one way: b's still reach a)."""
        if (a, b) not in self.cut_links:
            ip("route", "add", f"{self.host(b)}/32", "dev", "sink", ns=self.ns[a])
            self.cut_links.add((a, b))

    def split(self, *groups):
        """Cuts every link between nodes of different groups, both ways."""
        for g in groups:
            for h in groups:
                if g is not h:
                    for a in g:
                        for b in h:
                            self.cut(a, b)

    def heal(self):
        for a, b in sorted(self.cut_links):
            ip("route", "del", f"{self.host(b)}/32", "dev", "sink", ns=self.ns[a])
        self.cut_links.clear()

    def remove(self):
        """Deletes the namespaces and the bridge (stop the processes inside first)."""
        for kind, name in reversed(self.made):
            if kind == "netns":
                subprocess.run(["ip", "netns", "del", name], capture_output=True)
            else:
                subprocess.run(["ip", "link", "del", name], capture_output=True)
        self.made.clear()
