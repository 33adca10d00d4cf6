"""Network faults between Fjord nodes: every node in a network namespace of its own, joined by a
bridge on which the clients (in the test's own namespace) reach every node.

A link is delayed by routing one node's packets for another into a TUN device whose reader
(a small process in that namespace) writes each packet back after the delay; the namespace
forwards it on (this kernel has no netem). A link is cut by routing one node's packets for
another into an `ifb` device (which silently drops whatever tc did not redirect to it): a cut is a real partition (connects hang, sent bytes vanish, the peer's packets still
arrive for a one-way cut), not a refused connection. Needs root (CAP_NET_ADMIN) and `ip`; the
namespaces, bridge and routes are the test's own and are removed when it ends.
"""

import itertools
import os
import subprocess
import sys
import time

_made = itertools.count()


# The delaying reader: creates TUN device argv[1] and writes every packet read from it back
# argv[2] milliseconds later, in order (the namespace then forwards it to its destination).
DELAYER = r"""
import fcntl, heapq, os, struct, sys, threading, time
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", sys.argv[1].encode(), 0x0001 | 0x1000))
delay = float(sys.argv[2]) / 1000
queue, cond = [], threading.Condition()
def write():
    while True:
        with cond:
            while not queue:
                cond.wait()
            due = queue[0][0]
            if due > time.monotonic():
                cond.wait(due - time.monotonic())
                continue
            packet = heapq.heappop(queue)[2]
        os.write(fd, packet)
threading.Thread(target=write, daemon=True).start()
print("ready", flush=True)
n = 0
while True:
    packet = os.read(fd, 65536)
    n += 1
    with cond:
        heapq.heappush(queue, (time.monotonic() + delay, n, packet))
        cond.notify()
"""


def available():
    """Whether this process may make network namespaces (root with `ip`)."""
    return os.geteuid() == 0 and subprocess.run(["ip", "-V"], capture_output=True).returncode == 0


def ip(*args, ns=None):
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")


class Net:
    """Nodes 1..n, node i at address `host(i)` inside namespace `ns[i]`; clients at `client`
    (`host(0)`: links to node 0 are a node's links to the clients)."""

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
        self.cut_ports = set()  # (from, to, port): from's TCP packets for to's port are dropped
        self.slow_links = set()  # (from, to): from's packets for to are delayed
        self.delayers = {}  # node -> (its delaying process, the delay in ms)
        self.made = []
        try:
            self._build()
        except Exception:
            self.remove()
            raise

    def host(self, i):
        return self.client if i == 0 else f"{self.subnet}.{i}"

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

    def cut_port(self, a, b, port):
        """Drops a's TCP packets for b's `port` only (one way; b's other ports, such as its
        controller listener, still get them)."""
        if (a, b, port) in self.cut_ports:
            return
        table = str(200 + b)
        ns = self.ns[a]
        if not any(x == a and y == b for x, y, _ in self.cut_ports):
            ip("route", "add", f"{self.host(b)}/32", "dev", "sink", "table", table, ns=ns)
        ip("rule", "add", "to", f"{self.host(b)}/32", "ipproto", "tcp", "dport", str(port),
           "lookup", table, "priority", "50", ns=ns)
        self.cut_ports.add((a, b, port))

    def delay(self, a, b, ms):
        """Delays a's packets for b by `ms` milliseconds (one way; one delay per node a)."""
        ns = self.ns[a]
        running = self.delayers.get(a)
        if running and running[1] != ms:
            self._stop_delayer(a)
            running = None
        if not running:
            proc = subprocess.Popen([*self.prefix(a), sys.executable, "-c", DELAYER, "slow",
                                     str(ms)], stdout=subprocess.PIPE, text=True)
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"the delaying process of node {a} did not start")
            self.delayers[a] = (proc, ms)
            ip("link", "set", "slow", "up", ns=ns)
            # Packets written back come in on `slow` with this node's own source address:
            # accepted, and forwarded by the main table's subnet route (not into `slow`).
            for key, value in (("net/ipv4/ip_forward", "1"),
                               ("net/ipv4/conf/slow/accept_local", "1"),
                               ("net/ipv4/conf/slow/rp_filter", "0")):
                subprocess.run([*self.prefix(a), "sh", "-c", f"echo {value} > /proc/sys/{key}"],
                               check=True)
            subprocess.run(["ip", "-n", ns, "rule", "del", "iif", "slow", "lookup", "100"],
                           capture_output=True)
            ip("rule", "add", "iif", "slow", "lookup", "100", "priority", "100", ns=ns)
            ip("route", "replace", f"{self.subnet}.0/24", "dev", "eth0", "table", "100", ns=ns)
        ip("route", "add", f"{self.host(b)}/32", "dev", "slow", ns=ns)
        self.slow_links.add((a, b))

    def _stop_delayer(self, a):
        proc, _ = self.delayers.pop(a)
        proc.kill()
        proc.wait()
        # Its device, and the routes into it, go with it.
        self.slow_links = {(x, y) for x, y in self.slow_links if x != a}
        for _ in range(50):
            if subprocess.run(["ip", "-n", self.ns[a], "link", "show", "slow"],
                              capture_output=True).returncode != 0:
                return
            time.sleep(0.02)

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
        for a, b, port in sorted(self.cut_ports):
            ip("rule", "del", "to", f"{self.host(b)}/32", "ipproto", "tcp", "dport", str(port),
               "lookup", str(200 + b), "priority", "50", ns=self.ns[a])
        for a, b in sorted({(a, b) for a, b, _ in self.cut_ports}):
            ip("route", "del", f"{self.host(b)}/32", "dev", "sink", "table", str(200 + b),
               ns=self.ns[a])
        self.cut_ports.clear()
        for a in list(self.delayers):
            self._stop_delayer(a)
        self.slow_links.clear()

    def remove(self):
        """Deletes the namespaces and the bridge (stop the processes inside first)."""
        for a in list(self.delayers):
            self._stop_delayer(a)
        for kind, name in reversed(self.made):
            if kind == "netns":
                subprocess.run(["ip", "netns", "del", name], capture_output=True)
            else:
                subprocess.run(["ip", "link", "del", name], capture_output=True)
        self.made.clear()
