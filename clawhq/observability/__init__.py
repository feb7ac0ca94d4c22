"""Metrics and structured logs, shared by the API and the controller."""
