"""CIS items on a container's limits and supervision: memory, CPU, PIDs, restart policy and
health check.
"""

from __future__ import annotations

from clawhq.runtime.security import ContainerSecurity
from clawhq.security.findings import Finding, Outcome, pass_or_fail


def check_memory(c: ContainerSecurity) -> Finding:
    if c.memory_bytes <= 0:
        return Finding("5.10", "memory limited", Outcome.FAIL, "no memory limit")
    swap = (
        "no swap beyond it"
        if c.memory_swap_bytes == c.memory_bytes
        else f"swap limit {c.memory_swap_bytes}"
    )
    return Finding(
        "5.10", "memory limited", Outcome.PASS, f"{c.memory_bytes // 1024**2} MiB, {swap}"
    )


def check_cpu(c: ContainerSecurity) -> Finding:
    if c.nano_cpus > 0:
        return Finding("5.11", "CPU limited", Outcome.PASS, f"{c.nano_cpus / 1e9:g} CPUs")
    if c.cpu_quota > 0:
        period = c.cpu_period or 100_000
        return Finding(
            "5.11", "CPU limited", Outcome.PASS, f"quota {c.cpu_quota}/{period} µs per period"
        )
    return Finding("5.11", "CPU limited", Outcome.FAIL, "no CPU quota: it can take every core")


def check_pids_limit(c: ContainerSecurity) -> Finding:
    return pass_or_fail(
        "5.28",
        "PIDs limited",
        c.pids_limit is not None,
        f"at most {c.pids_limit} processes",
        "no PIDs limit: a fork bomb takes the host down",
    )


def check_restart_policy(c: ContainerSecurity) -> Finding:
    title = "restart policy"
    if c.restart_policy in ("", "no"):
        return Finding(
            "5.14",
            title,
            Outcome.EXCEPTION,
            'policy "no", by design: ClawHQ\'s supervisor restarts agents itself with a '
            "backoff (10 s doubling to 5 min) and records why; a Docker restart policy would "
            "race it, skip the backoff and hide crashes from the agent's status",
        )
    if c.restart_policy == "on-failure" and 0 < c.restart_max_retries <= 5:
        return Finding(
            "5.14", title, Outcome.PASS, f"on-failure, at most {c.restart_max_retries} retries"
        )
    return Finding(
        "5.14",
        title,
        Outcome.FAIL,
        f"policy {c.restart_policy!r} restarts without bound "
        '(CIS: on-failure with at most 5 retries; ClawHQ agents use "no")',
    )


def check_healthcheck(c: ContainerSecurity) -> Finding:
    title = "health checked at runtime"
    if c.healthcheck is not None:
        source = "the image's HEALTHCHECK" if c.healthcheck == c.image_healthcheck else "a check"
        status = f", status {c.health_status}" if c.health_status else ""
        return Finding(
            "5.26",
            title,
            Outcome.PASS,
            f"Docker runs {source}{status}; ClawHQ's supervisor also probes the health path",
        )
    note = (
        " (the image defines a HEALTHCHECK but the container disables it)"
        if c.image_healthcheck is not None
        else ""
    )
    return Finding(
        "5.26",
        title,
        Outcome.EXCEPTION,
        "no Docker HEALTHCHECK, by design: ClawHQ's supervisor probes each agent's health path "
        'itself (every CLAWHQ_HEALTH_INTERVAL, only a JSON {"ok": true} counts) and restarts '
        f"it after CLAWHQ_HEALTH_FAILURE_THRESHOLD failures{note}",
    )
