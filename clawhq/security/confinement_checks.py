"""CIS items on what a container may do to the kernel: its user, capabilities, privileges,
AppArmor, seccomp, root filesystem and the host namespaces it shares.
"""

from __future__ import annotations

from clawhq.runtime.security import ContainerSecurity
from clawhq.security.findings import Finding, Outcome, pass_or_fail


def _is_root(user: str) -> bool:
    name = user.split(":", 1)[0].strip()
    return name in ("", "root", "0")


def check_user(c: ContainerSecurity) -> Finding:
    return pass_or_fail(
        "4.1",
        "runs as a non-root user",
        not _is_root(c.user),
        f"user {c.user}",
        "runs as root (no USER in the image and no --user): "
        "a process that escapes the container is root on the host's kernel",
    )


def check_apparmor(c: ContainerSecurity) -> Finding:
    profile = c.security_options.get("apparmor", c.apparmor_profile)
    if profile == "unconfined":
        return Finding("5.1", "AppArmor profile", Outcome.FAIL, "AppArmor is disabled (unconfined)")
    if not profile:
        return Finding(
            "5.1", "AppArmor profile", Outcome.INFO, "no AppArmor on this host (not enforced)"
        )
    return Finding("5.1", "AppArmor profile", Outcome.PASS, f"profile {profile}")


def check_capabilities(c: ContainerSecurity) -> Finding:
    drops_all = any(cap.upper() in ("ALL", "CAP_ALL") for cap in c.cap_drop)
    problems = []
    if not drops_all:
        problems.append("CapDrop does not contain ALL")
    if c.cap_add:
        problems.append(f"CapAdd adds {', '.join(c.cap_add)}")
    return pass_or_fail(
        "5.3",
        "capabilities dropped",
        not problems,
        "CapDrop ALL, nothing added",
        "; ".join(problems) + " (the container keeps kernel privileges it does not need)",
    )


def check_privileged(c: ContainerSecurity) -> Finding:
    return pass_or_fail(
        "5.4",
        "not privileged",
        not c.privileged,
        "not privileged",
        "privileged: every capability, every device, no seccomp or AppArmor (root on the host)",
    )


def check_read_only_rootfs(c: ContainerSecurity) -> Finding:
    return pass_or_fail(
        "5.12",
        "read-only root filesystem",
        c.read_only_rootfs,
        "root filesystem is read-only",
        "root filesystem is writable: a compromised agent can change its own programs",
    )


def check_seccomp(c: ContainerSecurity) -> Finding:
    profile = c.security_options.get("seccomp", "")
    return pass_or_fail(
        "5.21",
        "seccomp enabled",
        profile != "unconfined",
        f"seccomp profile {'custom' if profile else 'default'}",
        "seccomp is disabled (seccomp=unconfined): every system call is open to it",
    )


def check_no_new_privileges(c: ContainerSecurity) -> Finding:
    value = c.security_options.get("no-new-privileges")
    ok = value is not None and value.lower() in ("", "true")
    return pass_or_fail(
        "5.25",
        "no-new-privileges",
        ok,
        "no-new-privileges is set",
        "no-new-privileges is not set: setuid programs can raise privileges",
    )


def check_host_network(c: ContainerSecurity) -> Finding:
    return pass_or_fail(
        "5.9",
        "host network namespace not shared",
        c.network_mode != "host",
        f"network {c.network_mode or 'default'}",
        "shares the host's network namespace (--network host): it reaches every host service "
        "and no firewall rule on the agent bridge applies",
    )


def check_host_pid(c: ContainerSecurity) -> Finding:
    return pass_or_fail(
        "5.15",
        "host PID namespace not shared",
        c.pid_mode != "host",
        "own PID namespace",
        "shares the host's PID namespace: it sees and can signal host processes",
    )


def check_host_ipc(c: ContainerSecurity) -> Finding:
    return pass_or_fail(
        "5.16",
        "host IPC namespace not shared",
        c.ipc_mode != "host",
        f"IPC {c.ipc_mode or 'private'}",
        "shares the host's IPC namespace (shared memory of host processes)",
    )


def check_host_uts(c: ContainerSecurity) -> Finding:
    return pass_or_fail(
        "5.20",
        "host UTS namespace not shared",
        c.uts_mode != "host",
        "own UTS namespace",
        "shares the host's UTS namespace (it can change the host name)",
    )


def check_host_userns(c: ContainerSecurity) -> Finding:
    return pass_or_fail(
        "5.30",
        "host user namespace not shared",
        c.userns_mode != "host",
        "user namespace not shared with the host",
        "shares the host's user namespace (--userns host)",
    )
