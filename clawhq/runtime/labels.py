"""Every label ClawHQ puts on engine objects. Ownership is always a label query, never a name."""

SERVICE = "clawhq.service"
SERVICE_AGENT = "openclaw-agent"
USER_ID = "clawhq.user-id"
AGENT_ID = "clawhq.agent-id"
CONFIG_HASH = "clawhq.config-hash"
NETWORK = "clawhq.network"
VOLUME_OF = "clawhq.workspace-of"
