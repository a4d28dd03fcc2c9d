"""Simulated hosts: network namespaces joined by veth pairs, made and removed by the tests.

One balancer namespace and N host namespaces. Host i is reached from the balancer over its own
veth pair on 198.18.<i+1>.0/24 (RFC 2544's block for benchmark networks): the balancer's end is
.1, the host's .2. Nothing connects them to the machine's own network namespace.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
from dataclasses import dataclass
from types import TracebackType

SUBNET = "198.18.{index}.{host}"
NAME_PREFIX = "pvs"  # namespaces are named pvs<pid of the test>-<role>


@dataclass(frozen=True)
class Host:
    netns: str
    address: str  # of its eth0, as the balancer reaches it

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"


def ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def in_netns(netns: str, command: list[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *command]


def terminated_with_parent() -> None:
    """Popen preexec_fn: the child (haproxy, a load generator) gets SIGTERM when the test
    process dies, even by SIGKILL, instead of running on in a namespace nobody removes
    (Linux prctl PR_SET_PDEATHSIG; it survives the exec of `ip netns exec`)."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class Network:
    """`with Network(hosts=2) as net:` net.balancer (a namespace name), net.hosts."""

    def __init__(self, hosts: int):
        prefix = f"{NAME_PREFIX}{os.getpid()}"
        self.balancer = f"{prefix}-lb"
        self.hosts = [Host(f"{prefix}-h{i}", SUBNET.format(index=i + 1, host=2))
                      for i in range(hosts)]

    def __enter__(self) -> Network:
        remove_leftovers()
        try:
            self._create()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.remove()

    def _create(self) -> None:
        ip("netns", "add", self.balancer)
        ip("-n", self.balancer, "link", "set", "lo", "up")
        for index, host in enumerate(self.hosts):
            ip("netns", "add", host.netns)
            ip("-n", host.netns, "link", "set", "lo", "up")
            link = f"h{index}"
            ip("link", "add", link, "netns", self.balancer, "type", "veth",
               "peer", "name", "eth0", "netns", host.netns)
            ip("-n", self.balancer, "addr", "add",
               SUBNET.format(index=index + 1, host=1) + "/24", "dev", link)
            ip("-n", host.netns, "addr", "add", host.address + "/24", "dev", "eth0")
            ip("-n", self.balancer, "link", "set", link, "up")
            ip("-n", host.netns, "link", "set", "eth0", "up")

    def remove(self) -> None:
        for netns in (self.balancer, *(host.netns for host in self.hosts)):
            if netns in existing():
                ip("netns", "delete", netns)


def existing() -> list[str]:
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def remove_leftovers() -> None:
    """Namespaces of earlier test runs whose process is gone (killed before it cleaned up)."""
    for netns in existing():
        match = re.fullmatch(rf"{NAME_PREFIX}(\d+)-\w+", netns)
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            ip("netns", "delete", netns)
