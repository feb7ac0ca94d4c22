"""Prometheus metrics, in a registry per application (so tests can build several apps).

Counters and histograms are updated where things happen; gauges about the database (agents
by status, the port pool) and about the engine (per-user CPU and memory, sampled in the
background) are read when Prometheus scrapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

DEPLOY_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.deploy_seconds = Histogram(
            "clawhq_deploy_duration_seconds",
            "From a deploy, start or restart to a healthy agent (or to its failure).",
            ["kind", "outcome"],
            buckets=DEPLOY_BUCKETS,
            registry=r,
        )
        self.health_failures = Counter(
            "clawhq_health_check_failures_total", "Health probes that did not say ok.", registry=r
        )
        self.restarts = Counter(
            "clawhq_agent_restarts_total", "Restarts done by the supervisor.", registry=r
        )
        self.containers_created = Counter(
            "clawhq_containers_created_total", "Agent containers created.", registry=r
        )
        self.containers_removed = Counter(
            "clawhq_containers_removed_total", "Agent containers removed.", registry=r
        )
        self.requests = Counter(
            "clawhq_http_requests_total",
            "API requests by route and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "clawhq_http_request_duration_seconds",
            "API request latency by route.",
            ["method", "route"],
            registry=r,
        )

        self.llm_tokens = Counter(
            "clawhq_llm_tokens",
            "Model tokens metered by the LLM gateway, by kind (input, output, cache_read, "
            "cache_write).",
            ["provider", "model", "plan", "kind"],
            registry=r,
        )
        self.llm_calls = Counter(
            "clawhq_llm_calls",
            "Model calls through the LLM gateway, by outcome (ok, error, client_gone, broken, "
            "refused).",
            ["provider", "plan", "outcome"],
            registry=r,
        )
        self.llm_tool_uses = Counter(
            "clawhq_llm_tool_uses",
            "Provider-side tool uses the providers reported in their answers (web_search, "
            "web_fetch…): billed by the provider besides the tokens.",
            ["provider", "plan", "tool"],
            registry=r,
        )
        self.llm_unmetered_calls = Counter(
            "clawhq_llm_unmetered_calls",
            "Successful model calls whose answer reported no usage: charged their worst case.",
            ["provider", "plan"],
            registry=r,
        )
        self.llm_first_byte_seconds = Histogram(
            "clawhq_llm_first_byte_seconds",
            "From an agent's call to the provider's first answer byte.",
            ["provider"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.egress_connections = Counter(
            "clawhq_egress_connections",
            "Connections agents asked ClawHQ's forward proxy for, by verdict (allowed, or the "
            "reason it refused).",
            ["verdict"],
            registry=r,
        )

    def add_collector(self, collector: Collector) -> None:
        self.registry.register(collector)


class StateCollector(Collector):
    """Gauges read at scrape time through callables (agents by status, port pool, usage)."""

    def __init__(
        self,
        agents_by_status: Callable[[], Mapping[str, int]],
        ports: Callable[[], tuple[int, int]],
        usage: Callable[[], Iterable[tuple[str, float, int]]],
        disks: Callable[[], Iterable[tuple[str, str, int, int]]] = list,
        engine_up: Callable[[], bool] | None = None,
    ) -> None:
        self._engine_up = engine_up
        self._agents_by_status = agents_by_status
        self._ports = ports
        self._usage = usage
        self._disks = disks

    def collect(self) -> Iterable[Metric]:
        agents = GaugeMetricFamily("clawhq_agents", "Agents by status.", labels=["status"])
        for status, count in sorted(self._agents_by_status().items()):
            agents.add_metric([status], count)
        yield agents
        in_use, free = self._ports()
        pool = GaugeMetricFamily("clawhq_port_pool_ports", "Host ports by state.", labels=["state"])
        pool.add_metric(["in_use"], in_use)
        pool.add_metric(["free"], free)
        yield pool
        cpu = GaugeMetricFamily(
            "clawhq_user_cpu_percent",
            "CPU of a user's agents (100 = one core).",
            labels=["user_id"],
        )
        memory = GaugeMetricFamily(
            "clawhq_user_memory_bytes", "Memory used by a user's agents.", labels=["user_id"]
        )
        for user, cpu_percent, memory_bytes in self._usage():
            cpu.add_metric([user], cpu_percent)
            memory.add_metric([user], memory_bytes)
        yield cpu
        yield memory
        used = GaugeMetricFamily(
            "clawhq_agent_disk_used_bytes",
            "Bytes used on an agent's capped workspace disk.",
            labels=["user_id", "agent_id"],
        )
        size = GaugeMetricFamily(
            "clawhq_agent_disk_size_bytes",
            "The size of an agent's capped workspace disk (writes past it fail).",
            labels=["user_id", "agent_id"],
        )
        for user, agent, used_bytes, size_bytes in self._disks():
            used.add_metric([user, agent], used_bytes)
            size.add_metric([user, agent], size_bytes)
        yield used
        yield size
        if self._engine_up is not None:
            yield GaugeMetricFamily(
                "clawhq_engine_up",
                "1 while ClawHQ follows the container engine (its last listing or event stream "
                "worked), else 0: agents cannot be deployed, started or watched.",
                value=1 if self._engine_up() else 0,
            )

    def describe(self) -> Iterable[Metric]:
        return []
