"""Every label ClawHQ puts on engine objects. Ownership is always a label query, never a name."""

SERVICE = "clawhq.service"
SERVICE_AGENT = "openclaw-agent"
USER_ID = "clawhq.user-id"
AGENT_ID = "clawhq.agent-id"
CONFIG_HASH = "clawhq.config-hash"
#: Which start of its agent a container was made for (not part of its configuration).
START = "clawhq.start"
#: Which ClawHQ installation (database) owns the container: installations sharing one engine
#: never see, adopt or remove each other's containers.
INSTANCE = "clawhq.instance"
NETWORK = "clawhq.network"
VOLUME_OF = "clawhq.workspace-of"
#: Where in the container its secrets file goes before each start (the image reads and removes
#: it); a container without it was made by an earlier ClawHQ, with its secrets in its env.
SECRETS_FILE = "clawhq.secrets-file"
