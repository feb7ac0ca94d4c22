"""Stand-ins the network tests make on this machine, so that no test traffic leaves it.

``Outside`` is a network namespace of the test's own, joined to the host by a veth pair
(host 198.51.100.1/30, namespace 198.51.100.2/30: TEST-NET-2). In it one HTTP server answers on

- 203.0.113.80 (TEST-NET-3): "the internet", an LLM provider's stand-in;
- 169.254.169.254: the cloud metadata service's stand-in.

Both addresses are routed to the namespace only for traffic that comes in on the agent bridge
under test (policy routing: ``ip rule add iif <bridge> to <address>``), so the host's own
traffic, and every other bridge's, is untouched. Without ClawHQ's firewall an agent reaches
both; with it, only the first. ``HostListener`` is a server on the host itself (the kind of
service agents must not reach). Everything is removed again by ``close``.

With ``dns``, a :class:`DnsStandIn` in the namespace answers on port 53 of its addresses, and
the ``also`` addresses (the host's own resolvers, say) are routed there the same way: a lookup
an agent sends them lands in the test's stand-in, never at the real resolver.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HOST_SIDE = "198.51.100.1"
NS_SIDE = "198.51.100.2"
INTERNET = "203.0.113.80"
METADATA = "169.254.169.254"
STAND_IN_PORT = 80

# The stand-in server run inside the namespace: answers with the address it was reached on,
# and logs each hit to stdout.
_SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        local = self.connection.getsockname()[0]
        body = ("stand-in at " + local).encode()
        print("hit " + local, flush=True)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Handler).serve_forever()
"""


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed: {result.stderr.strip()}")
    return result


class Outside:
    def __init__(
        self, bridge: str, workdir: Path, *, dns: bool = False, also: tuple[str, ...] = ()
    ) -> None:
        tag = f"{os.getpid() % 100000}"
        self.bridge = bridge
        self.netns = f"clawhq-sec-{tag}"
        self.addresses = (INTERNET, METADATA, *also)
        self.dns = (
            DnsStandIn((INTERNET, NS_SIDE, *also), workdir / "outside-dns.log", self.netns)
            if dns
            else None
        )
        self.host_if = f"chqs{tag}h"
        self.ns_if = f"chqs{tag}n"
        self.table = str(31000 + os.getpid() % 700)
        self.log = workdir / "outside.log"
        self.server: subprocess.Popen[bytes] | None = None

    def open(self) -> Outside:
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def _open(self) -> None:
        ns = ("ip", "netns", "exec", self.netns)
        sh("ip", "netns", "add", self.netns)
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        sh("ip", "link", "set", self.ns_if, "netns", self.netns)
        sh("ip", "addr", "add", f"{HOST_SIDE}/30", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        sh("sysctl", "-qw", f"net.ipv4.conf.{self.host_if}.rp_filter=0")
        sh(*ns, "ip", "link", "set", "lo", "up")
        sh(*ns, "ip", "addr", "add", f"{NS_SIDE}/30", "dev", self.ns_if)
        sh(*ns, "ip", "link", "set", self.ns_if, "up")
        for address in self.addresses:
            sh(*ns, "ip", "addr", "add", f"{address}/32", "dev", "lo")
            sh("ip", "route", "add", f"{address}/32", "via", NS_SIDE, "table", self.table)
            sh("ip", "rule", "add", "iif", self.bridge, "to", f"{address}/32", "table", self.table)
        log = open(self.log, "ab")  # noqa: SIM115 - lives as long as the server
        self.server = subprocess.Popen(
            [*ns, sys.executable, "-c", _SERVER, str(STAND_IN_PORT)], stdout=log, stderr=log
        )
        if self.dns is not None:
            self.dns.start()
        for _ in range(100):
            probe = sh(*ns, "ss", "-ltn", f"sport = :{STAND_IN_PORT}", check=False)
            if f":{STAND_IN_PORT}" in probe.stdout:
                return
            time.sleep(0.05)
        raise AssertionError("the stand-in server in the namespace did not start")

    def hits(self, address: str) -> int:
        text = self.log.read_text() if self.log.exists() else ""
        return text.count(f"hit {address}\n")

    def close(self) -> None:
        if self.dns is not None:
            self.dns.close()
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            self.server.wait(timeout=10)
        for address in self.addresses:
            rule = ("ip", "rule", "del", "iif", self.bridge, "to", f"{address}/32")
            sh(*rule, "table", self.table, check=False)
        sh("ip", "route", "flush", "table", self.table, check=False)
        sh("ip", "link", "del", self.host_if, check=False)
        sh("ip", "netns", "del", self.netns, check=False)


#: What the DNS stand-in answers every A question with (TEST-NET-2: reaches nothing).
DNS_ANSWER = "198.51.100.77"

# The DNS stand-in: UDP and TCP port 53 on each address given, every A question answered with
# DNS_ANSWER (others with no answer); each query, and each TCP connection, is a line of its log:
# "<address> <udp|tcp|tcp-accept> <name> <peer>".
_DNS = """
import socket, sys, threading
ANSWER, log, addresses = socket.inet_aton(sys.argv[1]), sys.argv[2], sys.argv[3:]
lock = threading.Lock()

def note(*words):
    with lock, open(log, "a") as f:
        f.write(" ".join(words) + "\\n")

def reply(query):
    at, labels = 12, []
    while query[at]:
        labels.append(query[at + 1 : at + 1 + query[at]].decode("ascii", "replace"))
        at += 1 + query[at]
    qtype, end = query[at + 1 : at + 3], at + 5
    answer = qtype == b"\\x00\\x01"
    head = query[:2] + b"\\x81\\x80\\x00\\x01" + (b"\\x00\\x01" if answer else b"\\x00\\x00")
    head += b"\\x00\\x00\\x00\\x00"
    record = b"\\xc0\\x0c\\x00\\x01\\x00\\x01\\x00\\x00\\x00\\x3c\\x00\\x04" + ANSWER
    return ".".join(labels), head + query[12:end] + (record if answer else b"")

def udp(address, s):
    while True:
        query, peer = s.recvfrom(4096)
        try:
            name, answer = reply(query)
        except IndexError:
            continue
        note(address, "udp", name, peer[0])
        s.sendto(answer, peer)

def tcp(address, s):
    while True:
        conn, peer = s.accept()
        note(address, "tcp-accept", "-", peer[0])
        conn.settimeout(3)
        try:
            size = int.from_bytes(conn.recv(2), "big")
            name, answer = reply(conn.recv(size))
            note(address, "tcp", name, peer[0])
            conn.sendall(len(answer).to_bytes(2, "big") + answer)
        except (OSError, IndexError):
            pass
        conn.close()

for address in addresses:  # bound before "ready": a port that is taken fails the start
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((address, 53))
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((address, 53))
    t.listen()
    threading.Thread(target=udp, args=(address, u), daemon=True).start()
    threading.Thread(target=tcp, args=(address, t), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""


class DnsStandIn:
    """A DNS server on port 53 (UDP and TCP) of ``addresses``, on the host or in ``netns``,
    that answers every A question with :data:`DNS_ANSWER` and keeps a line per query."""

    def __init__(self, addresses: tuple[str, ...], log: Path, netns: str | None = None) -> None:
        self.addresses, self.log, self.netns = addresses, log, netns
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> DnsStandIn:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-c", _DNS, DNS_ANSWER, str(self.log), *self.addresses],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.close()
            raise AssertionError(f"the DNS stand-in did not start: {line}")
        return self

    def queries(self, address: str | None = None) -> list[str]:
        """Its log lines (those of ``address`` only, if given)."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [line for line in lines if address is None or line.split()[0] == address]

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


class HostListener:
    """An HTTP server on the host, counting the requests it gets."""

    def __init__(self, address: str) -> None:
        listener = self
        self.hits = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                listener.hits += 1
                self.send_response(200)
                self.send_header("Content-Length", "4")
                self.end_headers()
                self.wfile.write(b"host")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((address, 0), Handler)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def tear_down(
    docker_runtime: Any,
    env: dict[str, str],
    user_id: str | None,
    stack: list[Any],
    networks: tuple[str, ...],
) -> None:
    """Undo a firewall test's world: the user's agents, then what it started (last first: a
    ``Served`` is stopped, anything else closed), the firewall rules, and its networks."""
    from clawhq.runtime import labels
    from tests.conftest import remove_user_containers
    from tests.integration.helpers import sdk
    from tests.integration.served import Served, cli

    if user_id:
        remove_user_containers(docker_runtime, [user_id])
    for thing in reversed(stack):
        if isinstance(thing, Served):
            thing.stop()
        else:
            thing.close()
    teardown = cli(env, "network", "teardown")
    assert teardown.returncode == 0, teardown.stderr
    if not docker_runtime.list_managed({labels.USER_ID: user_id or "-"}):
        for name in networks:
            with contextlib.suppress(Exception):
                sdk().networks.get(name).remove()
