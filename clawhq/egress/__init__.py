"""Agents' traffic out: ClawHQ's forward proxy and the allowlists it enforces (docs/egress.md)."""
