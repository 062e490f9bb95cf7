"""Helpers shared by the benchmarks: uvicorn processes with one set of flags, the sandbox as its own
process, percentiles, and a temporary directory that is removed at the end.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import httpx

from config.embedded import ManagedProcess, wait_until

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # every server the benchmarks start listens here, and nothing else is reached

# The same uvicorn settings for every HTTP server a benchmark compares.
UVICORN_FLAGS = (
    "--host", HOST,
    "--workers", "1",
    "--loop", "uvloop",
    "--http", "httptools",
    "--no-access-log",
    "--log-level", "warning",
)  # fmt: skip


def uvicorn_process(
    name: str,
    factory: str,
    port: int,
    *,
    env: dict[str, str],
    sink: IO[str],
    ready_path: str = "/healthz",
    ready_status: Sequence[int] = (200,),
    workers: int = 1,
) -> ManagedProcess:
    """``uvicorn --factory FACTORY`` on ``HOST:port``; returns once ``ready_path`` answers.
    ``workers``: web processes sharing the port (uvicorn's ``--workers``)."""
    flags = list(UVICORN_FLAGS)
    flags[flags.index("--workers") + 1] = str(workers)
    proc = ManagedProcess(
        name,
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            factory,
            "--port",
            str(port),
            *flags,
        ],
        sink=sink,
        env=env,
        cwd=str(ROOT),
    ).start()
    url = f"http://{HOST}:{port}{ready_path}"
    try:
        wait_until(lambda: httpx.get(url, timeout=2).status_code in ready_status, 30, name, proc)
    except Exception:
        proc.stop()
        raise
    return proc


def sandbox_process(port: int, *, sink: IO[str]) -> ManagedProcess:
    """The provider sandbox as its own process, so it competes with no benchmark for the GIL."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return uvicorn_process(
        "sandbox",
        "sandbox.app:create_app",
        port,
        env=env,
        sink=sink,
        ready_path="/_sandbox/jobs",
    )


def base_env() -> dict[str, str]:
    """The environment for child processes: no ``FAXRELAY_*`` leaking in from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAXRELAY_")}
    env["PYTHONPATH"] = str(ROOT)
    # No S3 credentials: faxrelay's s3_client then uses a placeholder pair, which the embedded
    # SeaweedFS accepts; and SeaweedFS itself, given AWS_* keys, would refuse anonymous access.
    for name in list(env):
        if name.startswith("AWS_"):
            del env[name]
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        env.pop(name, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc; 0 when it cannot be read)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (uvicorn's worker processes, a pool's children)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found.extend(sorted(frontier))
    return found


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``pct`` % of values at or below it
    (0 for no values). The one percentile function of every benchmark."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(pct / 100 * len(ordered)) - 1))
    return float(ordered[rank])


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def stop_all(procs: list[ManagedProcess]) -> None:
    """Stop in reverse start order; one failing to stop does not keep the others running."""
    for proc in reversed(procs):
        with contextlib.suppress(Exception):
            proc.stop()
    procs.clear()
