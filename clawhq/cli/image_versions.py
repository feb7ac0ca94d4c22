"""Image versions: ``clawhq image build … --version V`` tags and records them; ``image list``.

A rollout moves agents from one tag to another, so each build gets a tag of its own
(``clawhq-openclaw:V``); ``clawhq-openclaw:latest`` (CLAWHQ_AGENT_IMAGE) stays the default
and is not moved by a versioned build. Builds are recorded in ``image_versions`` with the
image id (digest) they had then.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

import typer
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from clawhq.cli.exits import settings_or_exit
from clawhq.cli.images import ImageKind
from clawhq.db.engine import create_db_engine, make_session_factory
from clawhq.db.models import ImageVersion
from clawhq.errors import ClawHQError, ConfigError

log = logging.getLogger(__name__)


#: Where ``--version V`` puts each image: ``clawhq-openclaw:V``, ``clawhq-test-agent:V``.
REPOSITORIES = {ImageKind.openclaw: "clawhq-openclaw", ImageKind.test_agent: "clawhq-test-agent"}
VERSION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def image_tag(kind: ImageKind, default: str, *, tag: str | None, version: str | None) -> str:
    """The tag to build: ``--tag``, or the kind's repository at ``--version``, or ``default``."""
    if version is None:
        return tag or default
    if tag is not None:
        raise ConfigError("give --tag or --version, not both")
    if not VERSION.match(version):
        raise ConfigError(
            f"--version {version!r}: letters, digits, '_', '.' and '-' only (at most 128)"
        )
    return f"{REPOSITORIES[kind]}:{version}"


def record_version(sessions: sessionmaker[Session], tag: str, image_id: str) -> None:
    """Remember that ``tag`` was built as ``image_id`` (a rebuild replaces the entry)."""
    with sessions() as session:
        session.merge(ImageVersion(tag=tag, image_id=image_id, built_at=datetime.now(UTC)))
        session.commit()


def record_build(database_url: str, runtime: object, tag: str, image_id: str) -> bool:
    """``record_version`` on ClawHQ's database, best-effort: False (and a warning) if it fails.

    The digest is the engine's for ``tag`` when the runtime can say, else the build's id.
    """
    lookup = getattr(runtime, "image_id", None)
    if callable(lookup):
        try:
            image_id = str(lookup(tag) or image_id)
        except ClawHQError as exc:
            log.debug("image id of %s: %s", tag, exc.message)
    engine = create_db_engine(database_url)
    try:
        record_version(make_session_factory(engine), tag, image_id)
    except SQLAlchemyError as exc:
        typer.echo(
            f"clawhq: warning: built {tag} but could not record it in the database "
            f"({type(exc).__name__}); run `clawhq db upgrade`",
            err=True,
        )
        return False
    finally:
        engine.dispose()
    return True


def recorded_versions(database_url: str) -> list[ImageVersion]:
    """Every image ClawHQ recorded a build of, newest first."""
    engine = create_db_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            query = select(ImageVersion).order_by(ImageVersion.built_at.desc())
            return list(session.scalars(query))
    finally:
        engine.dispose()


def list_command() -> None:
    """The image versions ClawHQ built, newest first (``*``: CLAWHQ_AGENT_IMAGE)."""
    settings = settings_or_exit()
    try:
        versions = recorded_versions(settings.resolved_database_url)
    except SQLAlchemyError as exc:
        typer.echo(
            f"clawhq: cannot read image versions ({type(exc).__name__}): check DATABASE_URL "
            "and run `clawhq db upgrade`",
            err=True,
        )
        raise typer.Exit(1) from None
    for version in versions:
        mark = "*" if version.tag == settings.agent_image else " "
        built = version.built_at.strftime("%Y-%m-%d %H:%M:%S")
        typer.echo(f"{mark} {version.tag}  {version.image_id}  built {built} UTC")
    if not versions:
        typer.echo("no image versions recorded: clawhq image build openclaw --version V")
