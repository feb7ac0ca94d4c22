"""ClawHQ's benchmarks, measured against the raw Docker Engine on the same machine, same run.

    python -m bench            # everything, full sizes (several minutes)
    python -m bench --quick    # smaller sizes, for a smoke run
    python -m bench --only 1,4

Prints a table and writes bench/results/latest.json. Not part of the test suite: tests assert
behaviour, this measures speed.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.harness import (
    Database,
    RawDocker,
    Server,
    deploy_running,
    ensure_network,
    healthy,
    median,
    percentile,
    process_cpu_seconds,
    process_rss_bytes,
    remove_bench_containers,
    wait_until,
    workdir,
)
from bench.llm import concurrent_llm_streams, first_token, stream_cpu, stream_throughput
from bench.proxy import chat_completion, concurrent_streams, websocket_round_trip
from bench.real_gateway import real_gateway
from clawhq.controller.health import http_probe

RESULTS = Path(__file__).with_name("results")
Row = dict[str, object]


def deploy_latency(quick: bool) -> list[Row]:
    """1. Deploy -> RUNNING through the API vs docker run -> first healthy answer."""
    rounds = 5 if quick else 15
    raw, api = RawDocker(), []
    raw_times: list[float] = []
    with workdir() as tmp, Database.create("sqlite", Path(tmp)) as db, Server(db, Path(tmp)) as s:
        _, headers = s.user()
        agents = [s.agent(headers) for _ in range(rounds)]
        probe = httpx.Client()
        for agent_id in agents:
            started = time.perf_counter()
            _, url = raw.run()
            wait_until(lambda url=url: healthy(url, probe), 30, "raw container")
            raw_times.append(time.perf_counter() - started)
            raw.cleanup()

            started = time.perf_counter()
            deploy_running(s.client, agent_id, headers)
            api.append(time.perf_counter() - started)
            s.client.delete(f"/api/agents/{agent_id}", headers=headers)
    return [
        {
            "benchmark": "deploy -> RUNNING (median)",
            "clawhq": f"{median(api) * 1000:.0f} ms",
            "raw docker": f"{median(raw_times) * 1000:.0f} ms",
            "ratio": round(median(api) / median(raw_times), 2),
            "target": "<= 1.25",
            "n": rounds,
        }
    ]


def concurrent_deploys(quick: bool) -> list[Row]:
    """2. N agents deployed at once through the API vs N parallel docker runs."""
    count = 20 if quick else 50
    raw = RawDocker()
    with workdir() as tmp, Database.create("sqlite", Path(tmp)) as db, Server(db, Path(tmp)) as s:
        _, headers = s.user()
        agents = [s.agent(headers) for _ in range(count)]
        probe = httpx.Client(limits=httpx.Limits(max_connections=count))

        def raw_one(_: int) -> None:
            _, url = raw.run()
            wait_until(lambda: healthy(url, probe), 120, "raw container", every=0.05)

        started = time.perf_counter()
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(raw_one, range(count)))
        raw_time = time.perf_counter() - started
        raw.cleanup()

        client = httpx.Client(
            base_url=s.base, timeout=60, limits=httpx.Limits(max_connections=count)
        )

        def api_one(agent_id: str) -> None:
            deploy_running(client, agent_id, headers, timeout=120, every=0.05)

        started = time.perf_counter()
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(api_one, agents))
        api_time = time.perf_counter() - started
    return [
        {
            "benchmark": f"{count} concurrent deploys, all healthy",
            "clawhq": f"{api_time:.2f} s",
            "raw docker": f"{raw_time:.2f} s",
            "ratio": round(api_time / raw_time, 2),
            "target": "<= 1.3",
            "n": count,
        }
    ]


def _load(
    url: str, headers: dict[str, str], seconds: float, workers: int
) -> tuple[float, list[float]]:
    """Requests per second and latencies of ``workers`` clients hammering ``url``."""
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        mine: list[float] = []
        with httpx.Client(headers=headers, timeout=10) as client:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                client.get(url).raise_for_status()
                mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies) / (time.perf_counter() - started), latencies


def api_throughput(quick: bool) -> list[Row]:
    """3. Authenticated GET /api/agents/{id} with 10,000 agents vs a bare endpoint.

    The target compares with a bare ``def`` endpoint (FastAPI's hello world; it runs on the
    thread pool). A bare ``async def`` endpoint, which does not, is measured for reference. A
    GET of a running agent answers its container's state from the controller's observed
    cache (no engine call), so it has the same kind of target. The load
    generator shares the two cores and caps every figure near the bare endpoint's, so the
    server's CPU time per request is printed too: it shows the cost that the cap hides.
    """
    count, seconds, workers = (2_000, 5, 8) if quick else (10_000, 15, 8)
    rows: list[Row] = []
    for kind in ("sqlite", "postgresql"):
        with (
            workdir() as tmp,
            Database.create(kind, Path(tmp)) as db,
            Server(db, Path(tmp), supervise="false", stats_interval="0") as s,
        ):
            user_id, headers = s.user()
            ids = db.add_agents(user_id, count)
            target = random.choice(ids)
            running = s.agent(headers)
            deploy_running(s.client, running, headers, timeout=60)

            def load(path: str, auth: dict[str, str], pid: int = s.pid) -> Load:
                cpu = process_cpu_seconds(pid)
                rps, latencies = _load(f"{s.base}{path}", auth, seconds, workers)
                return Load(rps, latencies, process_cpu_seconds(pid) - cpu)

            load("/bench/bare", {})  # warm up
            bare = load("/bench/bare", {})
            async_bare = load("/bench/bare-async", {})
            api = load(f"/api/agents/{target}", headers)
            live = load(f"/api/agents/{running}", headers)
        name = f"GET /api/agents/{{id}}, {count} agents, {kind}"
        rows += [
            _throughput_row(name, api, "bare endpoint", bare, ">= 0.5"),
            _throughput_row(f"{name}, vs async bare", api, "async bare", async_bare),
            _throughput_row(f"{name}, a running agent", live, "bare endpoint", bare, ">= 0.8"),
        ]
    return rows


@dataclass(frozen=True)
class Load:
    rps: float
    latencies: list[float]
    server_cpu_seconds: float

    def __str__(self) -> str:
        p50, p99 = percentile(self.latencies, 0.5) * 1000, percentile(self.latencies, 0.99) * 1000
        cpu = self.server_cpu_seconds / len(self.latencies) * 1e6
        return f"{self.rps:.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms, CPU {cpu:.0f} µs/req"


def _throughput_row(
    name: str, measured: Load, baseline_name: str, baseline: Load, target: str = "reference"
) -> Row:
    return {
        "benchmark": name,
        "clawhq": str(measured),
        "raw docker": f"{baseline_name} {baseline}",
        "ratio": round(measured.rps / baseline.rps, 2),
        "target": target,
        "n": len(measured.latencies),
    }


def crash_detection(quick: bool) -> list[Row]:
    """4. docker kill -> the API no longer says RUNNING."""
    rounds = 5 if quick else 10
    times: list[float] = []
    with (
        workdir() as tmp,
        Database.create("sqlite", Path(tmp)) as db,
        Server(db, Path(tmp), restart_backoff_initial="30") as s,
    ):
        _, headers = s.user()
        raw = RawDocker()
        for _ in range(rounds):
            agent_id = s.agent(headers)
            container_id = deploy_running(s.client, agent_id, headers)["containerId"]
            started = time.perf_counter()
            raw.client.api.kill(container_id)
            wait_until(
                lambda a=agent_id: s.status(a, headers)["status"] != "RUNNING", 10, "detection"
            )
            times.append(time.perf_counter() - started)
            s.client.delete(f"/api/agents/{agent_id}", headers=headers)
    return [
        {
            "benchmark": "crash detection (docker kill -> not RUNNING)",
            "clawhq": f"median {median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms",
            "raw docker": "-",
            "ratio": "-",
            "target": "<= 1 s",
            "n": rounds,
        }
    ]


def supervision_cost(quick: bool) -> list[Row]:
    """5. CPU and RSS of ClawHQ supervising N running agents; one full health sweep."""
    count, seconds = (40, 20) if quick else (200, 60)
    with workdir() as tmp, Database.create("sqlite", Path(tmp)) as db, Server(db, Path(tmp)) as s:
        _, headers = s.user()
        agents = [s.agent(headers) for _ in range(count)]
        client = httpx.Client(base_url=s.base, timeout=60, limits=httpx.Limits(max_connections=20))

        def deploy(agent_id: str) -> int:
            body = deploy_running(client, agent_id, headers, timeout=300, every=0.2)
            return int(body["containerPort"])

        with ThreadPoolExecutor(20) as pool:
            ports = list(pool.map(deploy, agents))
        time.sleep(5)  # let the deploy burst settle
        cpu_before, started = process_cpu_seconds(s.pid), time.perf_counter()
        time.sleep(seconds)
        cpu = (process_cpu_seconds(s.pid) - cpu_before) / (time.perf_counter() - started) * 100
        rss = process_rss_bytes(s.pid)
        urls = [f"http://127.0.0.1:{p}/healthz" for p in ports]
        sweep_started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:  # the supervisor's own pool size and probe
            results = list(pool.map(http_probe, urls))
        sweep = time.perf_counter() - sweep_started
        assert all(results), "some agents were not healthy during the sweep"
    return [
        {
            "benchmark": f"supervising {count} running agents over {seconds} s",
            "clawhq": f"CPU {cpu:.1f}% of a core, RSS {rss / 2**20:.0f} MiB, "
            f"full health sweep {sweep * 1000:.0f} ms",
            "raw docker": "-",
            "ratio": "-",
            "target": "CPU <= 5%, RSS <= 150 MB",
            "n": count,
        }
    ]


BENCHMARKS: dict[int, Callable[[bool], list[Row]]] = {
    1: deploy_latency,
    2: concurrent_deploys,
    3: api_throughput,
    4: crash_detection,
    5: supervision_cost,
    6: chat_completion,
    7: websocket_round_trip,
    8: concurrent_streams,
    9: real_gateway,
    10: first_token,
    11: stream_throughput,
    12: stream_cpu,
    13: concurrent_llm_streams,
}


def print_table(rows: list[Row]) -> None:
    columns = ["benchmark", "clawhq", "raw docker", "ratio", "target", "n"]
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    line = " | ".join(c.ljust(widths[c]) for c in columns)
    print(line)
    print("-+-".join("-" * widths[c] for c in columns))
    for row in rows:
        print(" | ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--only", default="", help="comma-separated benchmark numbers")
    args = parser.parse_args()
    chosen = [int(n) for n in args.only.split(",") if n] or sorted(BENCHMARKS)
    ensure_network()
    rows: list[Row] = []
    try:
        for number in chosen:
            title = (BENCHMARKS[number].__doc__ or "").splitlines()[0].split(". ", 1)[-1]
            print(f"[bench] {number}. {title}", flush=True)
            rows += BENCHMARKS[number](args.quick)
            remove_bench_containers()
    finally:
        remove_bench_containers()
    print()
    print_table(rows)
    RESULTS.mkdir(exist_ok=True)
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform()},
        "quick": args.quick,
        "results": rows,
    }
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {RESULTS / 'latest.json'}")


if __name__ == "__main__":
    main()
