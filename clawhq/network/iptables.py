"""Installing, checking and removing a :class:`~clawhq.network.firewall.FirewallPlan` with iptables.

Only chains named ``CLAWHQ-…`` and the jumps to them are ever changed: setup replaces a
network's two chains in one ``iptables-restore --noflush`` transaction and puts one jump at the
top of ``INPUT`` and of ``DOCKER-USER``; teardown removes exactly those. Needs root (or
``CAP_NET_ADMIN``).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from clawhq.errors import FirewallError
from clawhq.network.firewall import (
    CHAIN_PREFIX,
    DOCKER_USER,
    INPUT,
    Chain,
    FirewallPlan,
    chain_names,
)

Runner = Callable[[Sequence[str], str | None], subprocess.CompletedProcess[str]]
WAIT = ("-w", "10")  # wait for the xtables lock rather than fail when another tool holds it


def run_command(args: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(  # noqa: S603 - ClawHQ's own arguments, no shell
            list(args), input=stdin, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise FirewallError(f"cannot run {args[0]}: {exc}") from None


def _stderr(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if not line.startswith("# Warning")]
    return " ".join(lines).strip() or f"exit code {result.returncode}"


@dataclass(frozen=True)
class Jump:
    """A jump to one of ClawHQ's chains, as ``iptables -S`` lists it, with its position."""

    position: int
    line: str

    def delete_args(self) -> list[str]:
        return ["-D", *shlex.split(self.line)[1:]]


class Iptables:
    """The ``filter`` table through the ``iptables`` command (iptables-nft or legacy)."""

    def __init__(self, binary: str = "iptables", runner: Runner = run_command) -> None:
        self.binary = binary
        self._run = runner

    def _call(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = self._run([self.binary, *WAIT, *args], None)
        if check and result.returncode != 0:
            raise FirewallError(f"{self.binary} {shlex.join(args)}: {_stderr(result)}")
        return result

    def check_usable(self) -> None:
        """Raise ``FirewallError`` saying why the firewall cannot be read or changed here."""
        if shutil.which(self.binary) is None:
            raise FirewallError(f"{self.binary} is not installed (apt-get install -y iptables)")
        result = self._call("-S", INPUT, check=False)
        if result.returncode != 0:
            raise FirewallError(f"cannot read the firewall: {_stderr(result)} (run as root)")

    def chain_exists(self, chain: str) -> bool:
        return self._call("-S", chain, check=False).returncode == 0

    def rules(self, chain: str) -> list[str]:
        """The ``-A`` lines of a chain, in order (position n is element n-1)."""
        out = self._call("-S", chain).stdout
        return [line for line in out.splitlines() if line.startswith("-A ")]

    def jumps(self, parent: str, target: str) -> list[Jump]:
        return [
            Jump(index, line)
            for index, line in enumerate(self.rules(parent), start=1)
            if line.endswith(f"-j {target}")
        ]

    def leads(self, parent: str, position: int) -> bool:
        """Whether only ClawHQ's jumps come before rule ``position`` of ``parent``: each
        matches its own bridge, so none of them decides another network's traffic."""
        above = self.rules(parent)[: position - 1]
        return all(f"-j {CHAIN_PREFIX}" in line for line in above)

    def _has(self, chain: str, args: Sequence[str]) -> bool:
        return self._call("-C", chain, *args, check=False).returncode == 0

    # -- setup ------------------------------------------------------------------------------

    def apply(self, plan: FirewallPlan) -> None:
        """Install or replace the plan's chains; make each jump the first rule of its parent."""
        self.check_usable()
        if not self.chain_exists(DOCKER_USER):
            raise FirewallError(
                "the DOCKER-USER chain is missing: Docker creates it when it manages iptables "
                '(start dockerd, and do not set "iptables": false)'
            )
        result = self._run([f"{self.binary}-restore", *WAIT, "--noflush"], plan.restore_script())
        if result.returncode != 0:
            raise FirewallError(f"{self.binary}-restore failed: {_stderr(result)}")
        for chain in plan.chains:
            self._ensure_first_jump(chain)

    def _ensure_first_jump(self, chain: Chain) -> None:
        wanted = chain.jump()
        current = [
            j for j in self.jumps(chain.parent, chain.name) if f"-i {chain.bridge} " in j.line
        ]
        if not current or not self.leads(chain.parent, current[0].position):
            self._call("-I", chain.parent, "1", *wanted)
        # Anything else jumping here is a leftover: an old bridge of a recreated network, or
        # the same jump further down. Remove by number, from the bottom up.
        for jump in reversed(self.jumps(chain.parent, chain.name)[1:]):
            self._call("-D", chain.parent, str(jump.position))
        if not self._has(chain.parent, wanted):
            raise FirewallError(f"the jump to {chain.name} did not stick in {chain.parent}")

    # -- teardown ---------------------------------------------------------------------------

    def remove(self, network: str) -> list[str]:
        """Remove the network's chains and every jump to them; return what was removed."""
        self.check_usable()
        removed: list[str] = []
        for name, parent in zip(chain_names(network), (INPUT, DOCKER_USER), strict=True):
            if self.chain_exists(parent):
                for jump in reversed(self.jumps(parent, name)):
                    self._call(*jump.delete_args())
                    removed.append(jump.line)
            if self.chain_exists(name):
                self._call("-F", name)
                self._call("-X", name)
                removed.append(f"-X {name}")
        return removed

    # -- verification -----------------------------------------------------------------------

    def verify(self, plan: FirewallPlan) -> list[str]:
        """What differs from the plan, in words; an empty list when the rules are in place."""
        self.check_usable()
        problems: list[str] = []
        for chain in plan.chains:
            if not self.chain_exists(chain.name):
                problems.append(f"chain {chain.name} is missing")
                continue
            jumps = [
                j for j in self.jumps(chain.parent, chain.name) if f"-i {chain.bridge} " in j.line
            ]
            if not jumps:
                problems.append(f"{chain.parent} does not send {chain.bridge}'s traffic to it")
            elif not self.leads(chain.parent, jumps[0].position):
                problems.append(
                    f"the jump to {chain.name} is rule {jumps[0].position} of {chain.parent}, "
                    "below rules not ClawHQ's: one of them may let agents' traffic through"
                )
            missing = [rule.why for rule in chain.rules if not self._has(chain.name, rule.args())]
            if missing:
                problems.append(f"{chain.name} lacks: {'; '.join(missing)}")
            extra = len(self.rules(chain.name)) - len(chain.rules)
            if extra > 0:
                problems.append(f"{chain.name} has {extra} rule(s) setup did not put there")
        return problems
