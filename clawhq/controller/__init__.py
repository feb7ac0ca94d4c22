"""The controller: the one place that decides and carries out what happens to an agent.

Read in this order: ``desired`` (what operations and rollouts may ask), ``planner`` (every
rule, pure), ``transitions`` (every status write, pure), ``sync`` and ``steps`` (carrying a
plan out), ``controller`` (the work queue and its workers), ``sources`` (engine events and
full resyncs), ``probes`` (health), ``operations`` (the API's entry), ``rollouts``.
"""
