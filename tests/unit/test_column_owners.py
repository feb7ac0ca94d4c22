"""Each column of an agent, a plan, a rollout, a backup and an LLM budget reservation has one
owner: the module that writes it.

The syntax tree of every module in clawhq/ is read for writes — ``row.column = …`` (also
augmented and in tuples), ``setattr(row, "column", …)`` and ``update(Model).values(column=…)``
— and each one must be in the column's owning module. Users write desired state (through
:mod:`clawhq.controller.desired`), the controller writes status (:mod:`~.transitions`), a
rollout's progress has its own transitions module: a write anywhere else fails here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from clawhq.db.backups import AgentBackup
from clawhq.db.budgets import LlmMonth, LlmReservation
from clawhq.db.models import Agent, Plan, Rollout, RolloutAgent

PACKAGE = Path(__file__).resolve().parents[2] / "clawhq"

DESIRED = "controller/desired.py"
TRANSITIONS = "controller/transitions.py"
ROLLOUTS = "controller/rollout_transitions.py"
AGENTS = "services/agents.py"
BACKUPS = "controller/backup_rows.py"

#: (table, column) -> the modules (relative to clawhq/) that may write it.
OWNERS: dict[tuple[str, str], set[str]] = {
    **{
        ("agents", c): {DESIRED}
        for c in ("desired_state", "generation", "recreate_generation", "keep_workspace", "image")
    },
    **{
        ("agents", c): {TRANSITIONS}
        for c in (
            "status",
            "status_changed_at",
            "last_error",
            "last_exit_code",
            "oom_killed",
            "restart_count",
            "backoff_step",
            "next_restart_at",
            "start_deadline_at",
            "handled_generation",
            "start_generation",
            "container_id",
            "container_port",
            "applied_config",
            "deployed_at",
            "last_healthy_at",
            "webhook_token_hash",
            "llm_token_hash",
        )
    },
    **{
        ("agents", c): {TRANSITIONS, "services/keys.py"}
        for c in ("proxy_identity_ciphertext", "proxy_identity_key_id")
    },
    ("agents", "rollout_id"): {ROLLOUTS},
    # A reservation is taken and renewed by its module; the ledger writer only deletes it.
    **{("llm_reservations", c): {"llm/reservations.py"} for c in ("tokens", "expires_at")},
    # Kept in step with the ledger's rows by a trigger (migration 0013): no module writes it.
    ("llm_months", "tokens"): {"<the database's trigger>"},
    # Sealed secrets: set by their owner, re-sealed by a key rotation (services/keys.py).
    **{
        ("agents", c): {AGENTS, "services/keys.py"}
        for c in (
            "api_key_ciphertext",
            "api_key_key_id",
            "channel_secrets_ciphertext",
            "channel_secrets_key_id",
        )
    },
    ("agents", "last_heartbeat"): {"services/webhooks.py"},
    ("agents", "total_messages"): {"services/webhooks.py"},
    ("agents", "total_tokens"): {"llm/ledger.py"},
    ("agents", "last_active_at"): {"services/webhooks.py", "llm/ledger.py", "proxy/activity.py"},
    ("agents", "id"): {"db/history.py"},  # given before the INSERT, for the history row
    **{("rollouts", c): {ROLLOUTS} for c in ("state", "failures", "message", "finished_at")},
    **{
        ("rollout_agents", c): {ROLLOUTS}
        for c in (
            "state",
            "reason",
            "generation",
            "previous_image",
            "previous_pin",
            "started_at",
            "finished_at",
        )
    },
    # A backup's row: its taking and its restore (the jobs of controller/backup_jobs.py).
    **{("agent_backups", c.key): {BACKUPS} for c in AgentBackup.__table__.columns},
    **{
        ("plans", c): {"services/plans.py"}
        for c in (
            "image",
            "egress_policy",
            "agent_disk",
            "monthly_token_budget",
            "budget_own_keys",
            "llm_requests_per_minute",
            "llm_tokens_per_minute",
            "backup_schedule",
            "backup_keep",
        )
    },
}
OWNED = (Agent, Plan, Rollout, RolloutAgent, AgentBackup, LlmReservation, LlmMonth)
MODELS = {m.__name__: m.__table__.name for m in OWNED}
#: Modules whose ``setattr`` computes the name, and why that is within their ownership.
DYNAMIC = {
    "services/plans.py": "the plan's model terms, from its own list",
    "services/keys.py": "re-sealing the sealed columns under the current key (rotation)",
    "llm/wires.py": "a Usage record's counters",
}
#: Attribute writes that look like columns but are of other objects: (module, attribute).
NOT_ROWS = {
    ("llm/metering.py", "model"),  # a Usage record
    ("llm/wires.py", "model"),  # a Usage record
    ("api/sessions.py", "user_id"),  # the request's state
    ("backups/archive.py", "size"),  # a TarInfo
    ("runtime/docker_files.py", "size"),  # a TarInfo
}


def columns() -> dict[str, set[str]]:
    """Column name -> the tables that have it (of the tables owned here)."""
    found: dict[str, set[str]] = {}
    for table in MODELS.values():
        model = next(m for m in OWNED if m.__tablename__ == table)
        for column in model.__table__.columns:
            found.setdefault(column.key, set()).add(table)
    return found


def writes(tree: ast.AST) -> Iterator[tuple[str, set[str] | None, int]]:
    """(column, its tables when the code names them, line) for every write in ``tree``."""
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            for one in target.elts if isinstance(target, ast.Tuple) else [target]:
                base = one.value if isinstance(one, ast.Attribute) else None
                if isinstance(base, ast.Name) and base.id in ("self", "cls"):
                    continue  # an object's own attribute, never a row's
                if isinstance(one, ast.Attribute):
                    yield one.attr, None, one.lineno
        if isinstance(node, ast.Call):
            func = node.func
            if (
                isinstance(func, ast.Name)
                and func.id == "setattr"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
            ):
                yield node.args[1].value, None, node.lineno
            elif isinstance(func, ast.Name) and func.id == "setattr":
                yield "<dynamic setattr>", None, node.lineno
            if isinstance(func, ast.Attribute) and func.attr == "values":
                table = _updated_table(func.value)
                if table is not None:
                    for keyword in node.keywords:
                        if keyword.arg:
                            yield keyword.arg, {table}, node.lineno


def _updated_table(expr: ast.expr) -> str | None:
    """The table of the ``update(Model)`` a ``.values`` call chains on, if any."""
    while isinstance(expr, ast.Call | ast.Attribute):
        if (
            isinstance(expr, ast.Call)
            and isinstance(expr.func, ast.Name)
            and expr.func.id == "update"
            and expr.args
            and isinstance(expr.args[0], ast.Name)
        ):
            return MODELS.get(expr.args[0].id)
        expr = expr.func if isinstance(expr, ast.Call) else expr.value
    return None


def test_every_column_is_written_by_its_owner_only() -> None:
    names = columns()
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        if module.startswith("db/migrations/"):
            continue
        for column, tables, line in writes(ast.parse(path.read_text())):
            if column == "<dynamic setattr>":
                if module not in DYNAMIC:
                    wrong.append(f"{module}:{line}: setattr with a computed name")
                continue
            if column not in names or (module, column) in NOT_ROWS:
                continue
            # A name several tables have: the write is fine if the module owns it in one.
            candidates = tables or names[column]
            owners = set().union(*(OWNERS.get((t, column), set()) for t in candidates))
            if owners and module not in owners:
                where = "/".join(sorted(candidates))
                wrong.append(f"{module}:{line}: writes {where}.{column} (owners: {owners})")
    assert not wrong, "columns written outside their owner:\n" + "\n".join(wrong)


def test_the_check_sees_a_write_outside_the_owner() -> None:
    """The check itself: a status write from a route would be found."""
    tree = ast.parse("agent.status = 'RUNNING'\nagent.last_error, agent.image = None, 'x'")
    assert [(c, line) for c, _, line in writes(tree)] == [
        ("status", 1),
        ("last_error", 2),
        ("image", 2),
    ]
    tree = ast.parse("session.execute(update(Agent).where(x).values(status='RUNNING'))")
    assert list(writes(tree)) == [("status", {"agents"}, 1)]
    tree = ast.parse("session.execute(update(LlmReservation).values(expires_at=later))")
    assert list(writes(tree)) == [("expires_at", {"llm_reservations"}, 1)]
