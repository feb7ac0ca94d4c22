"""``clawhq doctor --security``: every agent container against the CIS Docker Benchmark, the
agent network, the daemon, and the host firewall rules."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from clawhq.errors import ClawHQError
from clawhq.runtime import Runtime
from clawhq.runtime.security import NetworkFacts, SecurityInspector
from clawhq.security.benchmark import check_agent_network, check_container, check_daemon
from clawhq.security.findings import Finding, Outcome
from clawhq.settings import Settings


@dataclass
class Section:
    """A heading (one container, the network, the daemon, the firewall) and its findings."""

    title: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(f.failed for f in self.findings)


@dataclass
class SecurityReport:
    sections: list[Section]

    @property
    def failed(self) -> bool:
        return any(s.failed for s in self.sections)

    def lines(self) -> Iterator[str]:
        marks = {
            Outcome.PASS: "ok  ",
            Outcome.FAIL: "FAIL",
            Outcome.EXCEPTION: "exc ",
            Outcome.INFO: "info",
        }
        for section in self.sections:
            yield section.title
            for f in section.findings:
                ref = f"CIS {f.ref}" if f.ref[0].isdigit() else f.ref
                yield f"  [{marks[f.outcome]}] {ref} {f.title}: {f.detail}"
        failed = [s.title for s in self.sections if s.failed]
        yield (
            f"{len(failed)} section(s) failed: {'; '.join(failed)}"
            if failed
            else "every check passed (exc: a documented exception; info: for your information)"
        )


def _firewall_section(settings: Settings, inspector: SecurityInspector) -> Section:
    from clawhq.cli.network import current_plans, verify_all

    # Titled by the agent network alone: the egress network's rules are checked with it.
    section = Section(f"host firewall for {settings.agent_network}")
    plans = []
    try:
        plans = current_plans(settings, inspector)
        problems = verify_all(plans)
    except ClawHQError as exc:
        problems = [exc.message]
    if problems:
        section.findings.append(
            Finding(
                "ClawHQ",
                "agents kept from the host and private networks",
                Outcome.FAIL,
                "; ".join(problems) + " (run `clawhq network setup` as root)",
            )
        )
    else:
        inputs = plans[0].inputs
        section.findings.append(
            Finding(
                "ClawHQ",
                "agents kept from the host and private networks",
                Outcome.PASS,
                f"on {inputs.bridge}: host reachable only on port {inputs.webhook_port}; "
                f"rejected: {', '.join(str(n) for n in inputs.denied)}; on "
                f"{plans[1].inputs.bridge}: ClawHQ's ports only, no direct connection out",
            )
        )
    return section


def security_report(
    settings: Settings, runtime: Runtime, inspector: SecurityInspector
) -> SecurityReport:
    """Inspect every managed container, the agent network, the daemon and the firewall."""
    networks: dict[str, NetworkFacts | None] = {}

    def network(name: str) -> NetworkFacts | None:
        if name not in networks:
            networks[name] = inspector.network_facts(name)
        return networks[name]

    sections: list[Section] = []
    for container in sorted(runtime.list_managed(), key=lambda c: c.name):
        facts = inspector.security_facts(container.id)
        if facts is None:  # removed while we looked
            continue
        seen = {name: network(name) for name in facts.networks or (facts.network_mode,)}
        agent = facts.labels.get("clawhq.agent-id", "?")
        title = f"container {facts.name} ({facts.id[:12]}, agent {agent})"
        sections.append(Section(title, check_container(facts, seen)))
    if not sections:
        sections.append(
            Section(
                "agent containers",
                [Finding("ClawHQ", "containers", Outcome.INFO, "no ClawHQ agent container")],
            )
        )
    agent_network = settings.agent_network
    sections.append(
        Section(
            f"agent network {agent_network}",
            check_agent_network(agent_network, network(agent_network)),
        )
    )
    sections.append(
        Section("Docker daemon", check_daemon(inspector.daemon_facts(), network("bridge")))
    )
    sections.append(_firewall_section(settings, inspector))
    return SecurityReport(sections)
