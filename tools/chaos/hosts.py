"""A separate test host: a network namespace joined to this one by a veth pair.

Addresses come from 10.213.0.0/24, one /30 per harness process, and exist only on
the pair the harness creates; `tc netem` on both ends adds delay and loss (nftables
drops packets instead where the kernel has no sch_netem).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

PREFIX = "maas-chaos-"
NFT_TABLE = "maas_chaos"


class NetnsUnavailable(RuntimeError):
    """`ip netns` or `tc` cannot be used here."""


def _ip(*args: str, netns: str | None = None) -> None:
    command = ["ip", *args] if netns is None else ["ip", "netns", "exec", netns, "ip", *args]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=10)


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=10)


def remove_stale() -> None:
    """Namespaces left by harness processes that no longer exist (one killed with SIGKILL)."""
    listing = _run("ip", "netns", "list")
    for line in listing.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX):
            continue
        owner = name.removeprefix(PREFIX)
        if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
            _run("ip", "link", "del", _veth_names(int(owner))[0])
            _run("ip", "netns", "del", name)


def _veth_names(owner: int) -> tuple[str, str]:
    return f"mch{owner}", f"mcn{owner}"  # at most 15 characters


@dataclass
class NetnsHost:
    """One namespace; `address` is its end of the veth pair, `gateway` is ours."""

    name: str
    address: str
    gateway: str
    host_veth: str
    ns_veth: str

    @classmethod
    def create(cls) -> NetnsHost:
        """Set up the namespace and the pair; NetnsUnavailable if this machine cannot."""
        missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
        if missing:
            raise NetnsUnavailable(f"{' and '.join(missing)} not found (apt-get install iproute2)")
        remove_stale()
        owner = os.getpid()
        base = 4 * (owner % 64)
        host = cls(
            name=f"{PREFIX}{owner}",
            address=f"10.213.0.{base + 2}",
            gateway=f"10.213.0.{base + 1}",
            host_veth=_veth_names(owner)[0],
            ns_veth=_veth_names(owner)[1],
        )
        try:
            _ip("netns", "add", host.name)
            _ip("link", "add", host.host_veth, "type", "veth", "peer", "name", host.ns_veth)
            _ip("link", "set", host.ns_veth, "netns", host.name)
            _ip("addr", "add", f"{host.gateway}/30", "dev", host.host_veth)
            _ip("link", "set", host.host_veth, "up")
            _ip("addr", "add", f"{host.address}/30", "dev", host.ns_veth, netns=host.name)
            _ip("link", "set", host.ns_veth, "up", netns=host.name)
            _ip("link", "set", "lo", "up", netns=host.name)
        except (subprocess.CalledProcessError, OSError) as exc:
            host.remove()
            detail = getattr(exc, "stderr", "") or str(exc)
            raise NetnsUnavailable(f"ip netns setup failed: {detail.strip()}") from None
        return host

    def exec_prefix(self) -> list[str]:
        """Put before a command to run it on this host."""
        return ["ip", "netns", "exec", self.name]

    def impair(self, delay_ms: int, loss_percent: int) -> str:
        """Delay and drop packets both ways; what was applied. Loss falls back to
        nftables where the kernel has no sch_netem; NetnsUnavailable if neither works."""
        spec = [*(["delay", f"{delay_ms}ms"] if delay_ms else []), "loss", f"{loss_percent}%"]
        if self._netem(spec):
            each_way = f"{delay_ms} ms delay and " if delay_ms else ""
            return f"tc netem: {each_way}{loss_percent}% loss each way"
        rule = "drop" if loss_percent >= 100 else f"numgen random mod 100 < {loss_percent} drop"
        self._nft(rule)
        skipped = f", no {delay_ms} ms delay" if delay_ms else ""
        return f"nftables: {loss_percent}% loss each way{skipped} (kernel has no sch_netem)"

    def _netem(self, spec: list[str]) -> bool:
        for netns, dev in ((None, self.host_veth), (self.name, self.ns_veth)):
            command = ["tc", "qdisc", "replace", "dev", dev, "root", "netem", *spec]
            if netns is not None:
                command = [*self.exec_prefix(), *command]
            done = _run(*command)
            if done.returncode != 0:
                if "unknown" in done.stderr.lower():
                    return False
                raise NetnsUnavailable(f"tc netem failed: {done.stderr.strip()}")
        return True

    def _nft(self, rule: str) -> None:
        script = (
            f"table inet {NFT_TABLE} {{\n"
            f"  chain input {{ type filter hook input priority 0; {rule}; }}\n"
            f"  chain output {{ type filter hook output priority 0; {rule}; }}\n"
            "}\n"
        )
        if shutil.which("nft") is None:
            raise NetnsUnavailable(
                "no sch_netem in this kernel and no nft (apt-get install nftables)"
            )
        done = subprocess.run(
            [*self.exec_prefix(), "nft", "-f", "-"],
            input=script,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if done.returncode != 0:
            raise NetnsUnavailable(f"nft failed: {done.stderr.strip()}")

    def clear(self) -> None:
        """No delay or loss any more."""
        _run("tc", "qdisc", "del", "dev", self.host_veth, "root")
        _run(*self.exec_prefix(), "tc", "qdisc", "del", "dev", self.ns_veth, "root")
        if shutil.which("nft") is not None:
            _run(*self.exec_prefix(), "nft", "delete", "table", "inet", NFT_TABLE)

    def remove(self) -> None:
        """Delete the pair and the namespace (what runs in it should be stopped first)."""
        _run("ip", "link", "del", self.host_veth)
        _run("ip", "netns", "del", self.name)
