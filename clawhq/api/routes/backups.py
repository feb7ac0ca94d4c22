"""``/api/agents/{id}/backups``: an owner's backups of their agent's workspace (docs/backups.md).

Taking and restoring a backup are jobs of the controller's (202, then poll the backup);
downloads and imports stream, never holding an archive in memory. The import takes the
archive as the raw request body, so the 64 KiB body limit does not apply to it
(:func:`is_import`): ``CLAWHQ_BACKUP_MAX_UPLOAD`` caps it as it arrives.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated

import anyio
import anyio.from_thread
import anyio.to_thread
from fastapi import APIRouter, Path, Request, Response, status
from fastapi.responses import StreamingResponse
from starlette.convertors import Convertor, register_url_convertor

from clawhq.api.audit import Audit
from clawhq.api.deps import Context, CurrentUser, Ops
from clawhq.api.problems import problem_responses
from clawhq.api.routes.agents import AgentId, new_agent, public
from clawhq.api.schemas import AgentCreate, AgentPublic
from clawhq.api.schemas_backups import BackupList, BackupPublic
from clawhq.db.backups import AgentBackup
from clawhq.errors import ArchiveTooLarge, ClawHQError
from clawhq.services import agents

router = APIRouter(
    prefix="/api/agents", tags=["backups"], responses=problem_responses(400, 401, 404, 422, 503)
)


class _BackupIdConvertor(Convertor[str]):
    """A backup id (32 hex digits) in a path: ``…/backups/import`` is then no backup's path,
    so the router neither routes nor advertises (``Allow``) a backup's methods there."""

    regex = "[0-9a-f]{32}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("backup_id", _BackupIdConvertor())
BackupId = Annotated[str, Path(min_length=32, max_length=32, pattern=r"^[0-9a-f]{32}$")]
#: The path segment of one backup.
ONE = "/{agent_id}/backups/{backup_id:backup_id}"
_IMPORT = re.compile(r"^/api/agents/[^/]+/backups/import$")
GZIP = "application/gzip"


def is_import(path: str) -> bool:
    """Whether ``path`` is the import route (its body streams, capped by its own setting)."""
    return _IMPORT.match(path) is not None


def shown(row: AgentBackup) -> BackupPublic:
    return BackupPublic.model_validate(row)


@router.post(
    "/{agent_id}/backups",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BackupPublic,
    responses=problem_responses(409),
)
def create_backup(
    agent_id: AgentId, user: CurrentUser, context: Context, audit: Audit
) -> BackupPublic:
    """Take a backup: the agent is stopped briefly if it runs, its workspace sealed into the
    backup store, and the agent started again. The backup is ``CREATING`` until it is
    ``READY`` (or ``FAILED``, with nothing stored): poll it."""
    with audit.action("backup.create", agent_id=agent_id):
        return shown(context.backups.create(agent_id, user.id))


@router.get("/{agent_id}/backups", response_model=BackupList)
def list_backups(agent_id: AgentId, user: CurrentUser, context: Context) -> BackupList:
    """The agent's backups, newest first."""
    return BackupList(backups=[shown(r) for r in context.backups.of_agent(agent_id, user.id)])


@router.get(ONE, response_model=BackupPublic)
def get_backup(
    agent_id: AgentId, backup_id: BackupId, user: CurrentUser, context: Context
) -> BackupPublic:
    return shown(context.backups.get(agent_id, backup_id, user.id))


@router.delete(
    ONE,
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(409),
)
def delete_backup(
    agent_id: AgentId, backup_id: BackupId, user: CurrentUser, context: Context, audit: Audit
) -> Response:
    """Delete the stored backup and its record (409 ``backup_busy`` while a job uses it)."""
    with audit.action("backup.delete", agent_id=agent_id):
        context.backups.delete(agent_id, backup_id, user.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    ONE + "/restore",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BackupPublic,
    responses=problem_responses(409),
)
def restore_backup(
    agent_id: AgentId, backup_id: BackupId, user: CurrentUser, context: Context, audit: Audit
) -> BackupPublic:
    """Replace the agent's workspace by this backup's: the backup is verified, the agent
    stopped, its current workspace saved as a ``pre_restore`` backup, the workspace replaced
    and the agent started again if it ran, health-gated. On any failure the previous
    workspace is put back. ``restoreStatus`` is ``RESTORING`` until ``RESTORED`` or
    ``FAILED``: poll the backup."""
    with audit.action("backup.restore", agent_id=agent_id):
        return shown(context.backups.restore(agent_id, backup_id, user.id))


@router.get(
    ONE + "/download",
    response_class=StreamingResponse,
    responses={
        200: {"content": {GZIP: {"schema": {"type": "string", "format": "binary"}}}},
        **problem_responses(409),
    },
)
def download_backup(
    agent_id: AgentId, backup_id: BackupId, user: CurrentUser, context: Context
) -> StreamingResponse:
    """The workspace as a plain ``.tar.gz``, checked as it streams. The first chunk (1 MiB,
    or the whole of a smaller backup, trailer and SHA-256 included) is checked before
    anything is sent, so a backup that fails there is 409 ``backup_corrupt``; damage further
    on ends the download early, before the archive's end."""
    download = context.backups.download(agent_id, backup_id, user.id)
    chunks = iter(download)
    try:
        first = next(chunks, b"")
    except BaseException:
        download.close()
        raise

    def body() -> Iterator[bytes]:
        yield first
        yield from chunks

    name = f"clawhq-{agent_id}-{backup_id}.tar.gz"
    return StreamingResponse(
        body(),
        media_type=GZIP,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.post(
    "/{agent_id}/backups/import",
    status_code=status.HTTP_201_CREATED,
    response_model=BackupPublic,
    responses=problem_responses(409, 413),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {GZIP: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def import_backup(
    agent_id: AgentId, request: Request, user: CurrentUser, context: Context, audit: Audit
) -> BackupPublic:
    """Upload a workspace ``.tar.gz`` (the raw body) as a new ``READY`` backup of kind
    ``import``, to restore or clone. It is checked as it arrives: over
    ``CLAWHQ_BACKUP_MAX_UPLOAD`` is 413 ``archive_too_large``; absolute paths, ``..``, links,
    devices, setuid bits are 400 ``archive_invalid``, and nothing is kept."""
    limit = context.settings.backup_max_upload
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ArchiveTooLarge(f"the archive is over {limit} bytes (CLAWHQ_BACKUP_MAX_UPLOAD)")
    chunks = request.stream()

    async def next_chunk() -> bytes | None:
        try:
            return await anext(chunks)
        except StopAsyncIteration:
            return None

    def upload() -> Iterator[bytes]:
        while (chunk := anyio.from_thread.run(next_chunk)) is not None:
            if chunk:
                yield chunk

    with audit.action("backup.import", agent_id=agent_id):
        row = await anyio.to_thread.run_sync(
            lambda: context.backups.import_archive(agent_id, user.id, upload())
        )
    return shown(row)


@router.post(
    ONE + "/clone",
    status_code=status.HTTP_201_CREATED,
    response_model=AgentPublic,
    responses=problem_responses(403, 409),
)
def clone_backup(
    agent_id: AgentId,
    backup_id: BackupId,
    body: AgentCreate,
    user: CurrentUser,
    context: Context,
    ops: Ops,
    audit: Audit,
) -> AgentPublic:
    """A new agent of the caller's (the body as for ``POST /api/agents``) whose workspace
    starts as this backup's; it is ``STOPPED``, ready to deploy. If the workspace cannot be
    written, the new agent is removed again."""
    context.backups.ready(agent_id, backup_id, user.id)
    try:
        with context.sessions() as session:
            agent = agents.create_agent(session, context.keyring, user, new_agent(body))
    except ClawHQError as exc:
        audit.record("backup.clone", f"error:{exc.code}", agent_id=agent_id, detail=exc.message)
        raise
    with audit.action("backup.clone", agent_id=agent.id):
        try:
            context.backups.seed(agent_id, backup_id, user.id, agent.id)
        except BaseException:
            ops.destroy(agent.id, user.id, keep_workspace=False)
            raise
    return public(agent, context.views, user.plan)
