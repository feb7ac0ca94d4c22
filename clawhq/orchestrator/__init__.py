"""The orchestrator: owns every agent's lifecycle (deploy, start, stop, destroy)."""
