"""ClawHQ's secrets reach an agent's container as a file written into it before each start.

Never in its env: the env is in ``docker inspect``, in the container's config on the host's
disk, and in ``/proc/<pid>/environ`` of its init processes, which every process of the agent's
uid reads. The file goes on the workspace volume (the root is read-only), mode 0400 and the
agent's own, at the path the container's ``clawhq.secrets-file`` label names; the image's
entrypoint reads it and removes it before any agent code runs. Each start gets new secrets,
recorded (as digests, the proxy identity sealed) just before the file is written: the previous
start's are refused from then on. The container's restart policy is ``no``: every start is
ClawHQ's, so none misses its file.
"""

from __future__ import annotations

from clawhq.controller import transitions as t
from clawhq.controller.secrets import fresh_secrets
from clawhq.controller.spec import AGENT_UID_GID, AgentSecrets, secrets_file
from clawhq.credentials import hash_token
from clawhq.crypto import Keyring
from clawhq.db.models import Agent
from clawhq.runtime import AgentRuntime, Container, labels

#: The file's mode: the agent's uid reads it (its entrypoint) and removes it (the volume's
#: folder is the uid's); nothing else of the container needs it.
SECRETS_FILE_MODE = 0o400


def token_hashes(secrets: AgentSecrets) -> tuple[str, str]:
    """What the database keeps of the tokens: the webhook's digest, the LLM token's."""
    return hash_token(secrets.webhook_token), hash_token(secrets.llm_token)


def takes_secrets_file(container: Container) -> bool:
    """Whether the container takes its secrets by file (one made by an earlier ClawHQ has them
    in its env, and would leave a file it does not read on the volume)."""
    return bool(container.labels.get(labels.SECRETS_FILE))


def rotate(agent: Agent, keyring: Keyring) -> bytes:
    """New secrets for the next start of the agent's container, recorded on its row (in the
    caller's transaction); the secrets file that hands them over."""
    secrets = fresh_secrets(agent, keyring)
    identity = keyring.seal(secrets.proxy_identity, agent.proxy_identity_context)
    t.secrets_rotated(agent, token_hashes(secrets), identity)
    return secrets_file(agent, secrets)


def hand_over(runtime: AgentRuntime, container: Container, content: bytes) -> None:
    """Write the secrets file into the container, which is created or stopped (not running)."""
    path = container.labels[labels.SECRETS_FILE]
    runtime.put_file(container.id, path, content, owner=AGENT_UID_GID, mode=SECRETS_FILE_MODE)
