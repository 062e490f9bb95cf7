"""Inbound webhook ingest: our ``POST /webhooks/{account}/inbound`` against a bare Starlette endpoint.

``python -m bench.ingest [--rounds 3] [--seconds 10] [--connections 32] [--loadgen auto|wrk|python]
[--fsync always|everysec|both] [--replica] [--web 2]``

Starts a Redis-compatible server and two uvicorn processes with the same flags (one worker, uvloop,
httptools, no access log): ours (``webhooks.app:create_app``) and a bare app whose endpoint, on the
same path, reads the body and answers 200. Load: wrk ``-t1 -c32`` when wrk is on PATH, else
``bench.loadgen`` (a separate process, raw asyncio, keep-alive). Every request carries a
PrimeVox-style urlencoded body (~250 bytes) with its own ``efaxID``, so each creates a record.
Rounds alternate ours then bare. Afterwards every 200 our app answered is looked up in Redis: a
benchmark that loses data is wrong. No Celery worker runs: the wake-up messages queue up.

Redis runs with ``appendfsync always`` (faxrelay's default) unless ``--fsync`` says otherwise;
``--fsync both`` runs two of ours, one per policy, in the same rounds, and prints what ``always``
costs against ``everysec``.

``--replica`` gives each of ours' Redis a replica and runs each of ours twice, in the same rounds:
with FAXRELAY_REDIS_MIN_REPLICAS=0 and with 1 (``+wait``: every 200 waits for the replica, one
``WAIT`` per group-commit batch), and prints what waiting costs.

``--web N`` adds one more of ours, in the same rounds: N web processes (uvicorn ``--workers N``,
the kernel spreading the connections over them) in front of one Redis, each process with its own
group commit and metrics; it prints what N processes take against one. On this 2-core machine
the load generator and Redis share the cores with them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlencode

import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.common import (
    HOST,
    base_env,
    cpu_seconds,
    descendants,
    median,
    stop_all,
    uvicorn_process,
    workdir,
)
from config.embedded import ManagedProcess, free_port, start_redis, wait_until
from config.queues import HANDLE_INBOUND
from sandbox import primevox as sb_primevox
from worker.store import keys

TOKEN = "bench-webhook-token-5e0a"
ACCOUNT = "pv"
TARGET_RATIO = 0.30
TARGET_P99_MS = 25.0


# --- the baseline ----------------------------------------------------------------------------
def create_bare_app() -> Starlette:
    """The floor: route on the same path, read the whole body, answer 200."""

    async def inbound(request: Request) -> Response:
        await request.body()
        return Response(b"", status_code=200)

    async def healthz(request: Request) -> Response:
        return Response(b"ok")

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/webhooks/{account}/inbound", inbound, methods=["POST"]),
        ]
    )


# --- the request -----------------------------------------------------------------------------
def body_template(download_base: str) -> str:
    """A PrimeVox inbound webhook body (the sandbox's default variant); ``__ID__`` is the efaxID."""
    url = f"{download_base}/primevox/efax/fax_download.php?" + urlencode(
        {"efaxID": "__ID__", "key": "Zk3q9vTTc1oR2mXy8bWl4A"}
    )
    return urlencode(
        {
            "containerId": sb_primevox.VALID_CONTAINER,
            "boxId": sb_primevox.VALID_BOX,
            "efaxID": "__ID__",
            "callerIdNum": "5551230000",
            "did": "5559870000",
            "pages": "3",
            "receivedAt": "2025-06-01 12:00:00",
            "fileUrl": url,
        }
    )


WRK_SCRIPT = r"""
-- args: prefix, body template (__ID__ → a fresh id), ids file ('' = do not collect)
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

ok, dup = 0, 0  -- globals: done() reads them with thread:get
local counter = 0
local prefix, template, ids
local headers = {["Content-Type"] = "application/x-www-form-urlencoded"}

function init(args)
  prefix = args[1] .. tostring(tid)
  template = args[2]
  if args[3] ~= nil and args[3] ~= "" then ids = io.open(args[3] .. "." .. tid, "w") end
end

function request()
  counter = counter + 1
  local body = string.gsub(template, "__ID__", prefix .. string.format("%09d", counter))
  return wrk.format("POST", nil, headers, body)
end

function response(status, hdrs, body)
  if status == 200 then
    ok = ok + 1
    if ids then
      local id = hdrs["faxrelay-fax-id"]
      if id then ids:write(id, "\n") end
      if hdrs["faxrelay-outcome"] == "duplicate" then dup = dup + 1 end
      if ok % 256 == 0 then ids:flush() end
    end
  end
end

function done(summary, latency, requests)
  local oks, dups = 0, 0
  for _, t in ipairs(threads) do
    oks = oks + t:get("ok")
    dups = dups + t:get("dup")
  end
  local e = summary.errors
  io.write(string.format(
    "BENCHJSON {\"requests\": %d, \"ok\": %d, \"duplicates\": %d, \"duration_s\": %f, " ..
    "\"non2xx\": %d, \"errors\": %d, \"p50_ms\": %f, \"p99_ms\": %f, \"max_ms\": %f}\n",
    summary.requests, oks, dups, summary.duration / 1e6, e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
"""


@dataclass
class RunResult:
    target: str
    requests: int
    ok: int
    duplicates: int
    errors: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_us: float = 0.0  # server CPU (web process, plus Redis for ours) per request
    web_cpu_us: float = 0.0  # the web process alone
    forks: int = 0  # Redis forks (AOF rewrites) that started during the round

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


class Loader:
    """Runs one timed load against a URL with wrk or with bench.loadgen."""

    def __init__(self, kind: str, tmp: Path, template: str, connections: int) -> None:
        self.kind = kind
        self.tmp = tmp
        self.template = template
        self.connections = connections
        self.script = tmp / "ingest.lua"
        self.script.write_text(WRK_SCRIPT)

    def run(
        self, target: str, url: str, seconds: float, prefix: str, ids_out: Path | None
    ) -> RunResult:
        if self.kind == "wrk":
            argv = [
                "wrk", "-t1", f"-c{self.connections}", f"-d{seconds:g}s", "--timeout", "10s",
                "-s", str(self.script), url, "--", prefix, self.template,
                str(ids_out) if ids_out else "",
            ]  # fmt: skip
            marker = "BENCHJSON "
        else:
            argv = [
                sys.executable, "-m", "bench.loadgen", "--url", url, "--template", self.template,
                "--prefix", prefix, "--connections", str(self.connections),
                "--duration", str(seconds), "--ids-out", str(ids_out) if ids_out else "",
            ]  # fmt: skip
            marker = "{"
        done = subprocess.run(
            argv, capture_output=True, text=True, env=base_env(), timeout=seconds + 60, check=False
        )
        line = next((x for x in done.stdout.splitlines() if x.startswith(marker)), None)
        if done.returncode != 0 or line is None:
            raise RuntimeError(
                f"{argv[0]} failed ({done.returncode}): {done.stderr or done.stdout}"
            )
        data = json.loads(line.removeprefix("BENCHJSON "))
        errors = int(data.get("errors", 0)) + int(data.get("non2xx", 0))
        if "statuses" in data:
            errors += sum(v for k, v in data["statuses"].items() if k != "200")
        return RunResult(
            target,
            int(data["requests"]),
            int(data["ok"]),
            int(data.get("duplicates", 0)),
            errors,
            float(data["duration_s"]),
            float(data["p50_ms"]),
            float(data["p99_ms"]),
            float(data["max_ms"]),
        )


def collect_ids(ids_dir: Path) -> list[str]:
    """The record ids of our 200 answers (wrk writes one file per thread)."""
    return [i for path in sorted(ids_dir.iterdir()) for i in path.read_text().split()]


def verify(client: redis.Redis, ids: list[str]) -> tuple[int, int, int, int]:
    """(ids seen in answers, of those missing in Redis, records in Redis, wake-ups queued)."""
    missing = 0
    for start in range(0, len(ids), 2000):
        pipe = client.pipeline(transaction=False)
        for fax_id in ids[start : start + 2000]:
            pipe.exists(keys.fax_key(fax_id))
        missing += sum(1 for found in pipe.execute() if not found)
    records = int(client.zcard(keys.INDEX_ALL))
    queued = int(client.llen(HANDLE_INBOUND.queue))
    return len(ids), missing, records, queued


def forks_so_far(client: redis.Redis) -> int:
    """Redis's fork count: each AOF rewrite forks, and the pause shows in ours' tail latency."""
    return int(client.info("stats").get("total_forks", 0))


def choose_loader(wanted: str) -> str:
    if wanted == "wrk" and shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH (apt-get install -y wrk), or use --loadgen python")
    if wanted == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    return wanted


def start_replica(
    data_dir: Path, primary_port: int, appendfsync: str, sink: IO[str]
) -> ManagedProcess:
    """A replica of the server on ``primary_port``, in sync when this returns (``--replica``)."""
    port = free_port()
    proc = start_redis(data_dir, port, appendfsync=appendfsync, sink=sink)
    client = redis.Redis(host=HOST, port=port, socket_timeout=2)
    try:
        client.replicaof(HOST, primary_port)
        wait_until(
            lambda: client.info("replication").get("master_link_status") == "up",
            30,
            "the replica",
            proc,
        )
    finally:
        client.close()
    return proc


def policies(wanted: str) -> list[str]:
    """The AOF fsync policies ours runs with: one, or both side by side (``--fsync both``)."""
    return ["always", "everysec"] if wanted == "both" else [wanted]


def run(args: argparse.Namespace, out: IO[str]) -> int:
    loader_kind = choose_loader(args.loadgen)
    procs: list[ManagedProcess] = []
    fsyncs = policies(args.fsync)
    # One Redis and one web process of ours per policy: "ours" alone, or "ours-always" and
    # "ours-everysec", each against the same bare endpoint in the same rounds.
    base_names = ["ours"] if len(fsyncs) == 1 else [f"ours-{p}" for p in fsyncs]
    # --replica: each of ours runs twice, MIN_REPLICAS 0 and 1 ("+wait"), each with its Redis and
    # that Redis's replica.
    waits = [0, 1] if args.replica else [0]
    variants = [
        (f"{base}+wait" if wait else base, policy, wait)
        for base, policy in zip(base_names, fsyncs, strict=True)
        for wait in waits
    ]
    # --web N: one more of ours with N web processes (the first policy, no replica wait).
    webs = {f"ours-{args.web}web": args.web} if args.web > 1 else {}
    variants += [(name, fsyncs[0], 0) for name in webs]
    ours_names = [name for name, _, _ in variants]
    targets = [*ours_names, "bare"]
    width = max(len(t) for t in targets)
    with workdir("faxrelay-bench-ingest-") as tmp, open(tmp / "servers.log", "a") as log:
        try:
            # Nothing listens at the download host: no worker runs, so nothing fetches from it.
            download_base = f"http://{HOST}:{free_port()}"
            config = tmp / "faxrelay.toml"
            config.write_text(
                f'[accounts.{ACCOUNT}]\nprovider = "primevox"\n'
                f'base_url = "{download_base}/primevox"\nwebhook_token = "{TOKEN}"\n'
                f'auth = "{sb_primevox.VALID_AUTH}"\ncontainer_id = "{sb_primevox.VALID_CONTAINER}"\n'
                f'box_id = "{sb_primevox.VALID_BOX}"\n'
            )
            path = f"/webhooks/{ACCOUNT}/inbound?token={TOKEN}"
            urls: dict[str, str] = {}
            # Server CPU per request: ours counts its web process and its Redis, bare its
            # process. The web process comes first in each list.
            pids: dict[str, list[int]] = {}
            clients: dict[str, redis.Redis] = {}
            for name, policy, wait in variants:
                redis_port, port = free_port(), free_port()
                server = start_redis(
                    tmp / f"redis-{name}", redis_port, appendfsync=policy, sink=log
                )
                procs.append(server)
                if args.replica:
                    procs.append(start_replica(tmp / f"replica-{name}", redis_port, policy, log))
                redis_url = f"redis://{HOST}:{redis_port}/0"
                env = {
                    **base_env(),
                    "FAXRELAY_CONFIG": str(config),
                    "FAXRELAY_REDIS_URL": redis_url,
                    # Not started: the inbound path with a download URL never touches S3.
                    "FAXRELAY_S3_ENDPOINT_URL": f"http://{HOST}:{free_port()}",
                    "FAXRELAY_S3_BUCKET": "faxrelay-bench",
                    "FAXRELAY_REDIS_MIN_REPLICAS": str(wait),
                }
                web = uvicorn_process(
                    name,
                    "webhooks.app:create_app",
                    port,
                    env=env,
                    sink=log,
                    workers=webs.get(name, 1),
                )
                procs.append(web)
                pids[name] = [web.pid, *descendants(web.pid), server.pid]
                urls[name] = f"http://{HOST}:{port}{path}"
                clients[name] = redis.Redis.from_url(redis_url)
            bare_port = free_port()
            bare = uvicorn_process(
                "bare", "bench.ingest:create_bare_app", bare_port, env=base_env(), sink=log
            )
            procs.append(bare)
            pids["bare"] = [bare.pid]
            urls["bare"] = f"http://{HOST}:{bare_port}{path}"
            loader = Loader(loader_kind, tmp, body_template(download_base), args.connections)
            print(
                f"ingest: uvicorn {' '.join(('1 worker', 'uvloop', 'httptools', 'no access log'))}; "
                f"load: {loader_kind} ({args.connections} connections); "
                f"{args.rounds} rounds x ({', '.join(targets)}: {args.seconds:g} s each); "
                f"body {len(body_template(download_base)) + 2} bytes; "
                f"Redis AOF appendfsync {' and '.join(fsyncs)}",
                file=out,
            )
            print(
                "note: no Celery worker runs during this benchmark; "
                "the wake-up messages queue up in Redis",
                file=out,
            )
            ids_dirs = {name: tmp / f"ids-{name}" for name in ours_names}
            for directory in ids_dirs.values():
                directory.mkdir()
            results: list[RunResult] = []
            # Warm-up (not counted): imports, connection pools, the Lua script's first load.
            warm_ok: dict[str, int] = dict.fromkeys(ours_names, 0)
            for n, target in enumerate(targets):
                ids_out = ids_dirs[target] / "warm" if target in ids_dirs else None
                warm = loader.run(target, urls[target], args.warmup, f"1{n}", ids_out)
                if target in warm_ok:
                    warm_ok[target] = warm.ok
            for r in range(args.rounds):
                for n, target in enumerate(targets):
                    time.sleep(0.5)
                    ids_out = ids_dirs[target] / f"r{r}" if target in ids_dirs else None
                    cpu_before = [cpu_seconds(p) for p in pids[target]]
                    client = clients.get(target)
                    forks_before = forks_so_far(client) if client else 0
                    result = loader.run(target, urls[target], args.seconds, f"{2 + r}{n}", ids_out)
                    result.forks = forks_so_far(client) - forks_before if client else 0
                    cpu = [
                        cpu_seconds(p) - b for p, b in zip(pids[target], cpu_before, strict=True)
                    ]
                    result.cpu_us = sum(cpu) / max(1, result.requests) * 1e6
                    web_cpu = sum(cpu[:-1]) if target in clients else cpu[0]  # ours: + Redis
                    result.web_cpu_us = web_cpu / max(1, result.requests) * 1e6
                    results.append(result)
                    print(
                        f"  round {r + 1} {target:{width}}: {result.rps:8.0f} req/s  "
                        f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  "
                        f"max {result.max_ms:7.2f} ms  cpu {result.cpu_us:5.0f} us/req "
                        f"(web {result.web_cpu_us:3.0f})  redis forks {result.forks}  "
                        f"({result.requests} requests, "
                        f"{result.ok} x 200, {result.errors} errors)",
                        file=out,
                    )
            # --- did every 200 leave a record? ---------------------------------------------
            checks = {}
            for name in ours_names:
                ids = collect_ids(ids_dirs[name])
                client = clients[name]
                seen, missing, records, queued = verify(client, ids)
                stats = client.info("stats")
                checks[name] = (
                    seen,
                    missing,
                    records,
                    queued,
                    int(stats.get("total_forks", 0)),
                    int(stats.get("latest_fork_usec", 0)) / 1000,
                )
                client.close()
        finally:
            stop_all(procs)
    return report(results, ours_names, checks, warm_ok, out)


def report(
    results: list[RunResult],
    ours_names: list[str],
    checks: dict[str, tuple[int, int, int, int, int, float]],
    warm_ok: dict[str, int],
    out: IO[str],
) -> int:
    """The figures of each target, the ratios, the data checks; the exit status."""
    runs = {t: [x for x in results if x.target == t] for t in [*ours_names, "bare"]}
    rps = {t: median([x.rps for x in r]) for t, r in runs.items()}
    p99 = {t: median([x.p99_ms for x in r]) for t, r in runs.items()}
    width = max(len(t) for t in runs)
    for label in ["bare", *ours_names]:
        print(
            f"{label:{width}} : {rps[label]:8.0f} req/s (median of {len(runs[label])})  "
            f"p99 {p99[label]:.2f} ms (median of rounds; worst "
            f"{max(x.p99_ms for x in runs[label]):.2f} ms)  server CPU "
            f"{median([x.cpu_us for x in runs[label]]):.0f} us/request (web process "
            f"{median([x.web_cpu_us for x in runs[label]]):.0f})",
            file=out,
        )
    status = 0
    for name in ours_names:
        ratio = rps[name] / rps["bare"] if rps["bare"] else 0.0
        ok_ratio = ratio >= TARGET_RATIO and p99[name] <= TARGET_P99_MS
        print(
            f"ratio {name}/bare: {ratio:.3f}  (target >= {TARGET_RATIO:.2f} with p99 <= "
            f"{TARGET_P99_MS:.0f} ms: {'met' if ok_ratio else 'NOT met'})",
            file=out,
        )
    for name in ours_names:
        if name.endswith("+wait") and rps[name.removesuffix("+wait")]:
            without = name.removesuffix("+wait")
            print(
                f"MIN_REPLICAS=1 vs 0 ({name} vs {without}, each with a replica): "
                f"{rps[name] / rps[without]:.3f} of the req/s; p50 "
                f"{median([x.p50_ms for x in runs[name]]):.2f} vs "
                f"{median([x.p50_ms for x in runs[without]]):.2f} ms, p99 {p99[name]:.2f} vs "
                f"{p99[without]:.2f} ms",
                file=out,
            )
    for name in ours_names:
        if name.endswith("web") and rps[ours_names[0]]:
            print(
                f"{name} vs {ours_names[0]} (several web processes vs one, same Redis policy): "
                f"{rps[name] / rps[ours_names[0]]:.2f}x the req/s; p99 {p99[name]:.2f} vs "
                f"{p99[ours_names[0]]:.2f} ms",
                file=out,
            )
    fsync_pair = [
        n for n in ours_names if n.startswith("ours-") and not n.endswith(("+wait", "web"))
    ]
    if len(fsync_pair) == 2:
        always, everysec = fsync_pair
        cost = 1 - rps[always] / rps[everysec] if rps[everysec] else 0.0
        print(
            f"appendfsync always vs everysec: {rps[always] / max(rps[everysec], 1e-9):.3f} of "
            f"the req/s (always costs {cost:.1%}); p99 {p99[always]:.2f} vs "
            f"{p99[everysec]:.2f} ms",
            file=out,
        )
    for name in ours_names:
        seen, missing, records, queued, forks, fork_ms = checks[name]
        acknowledged = sum(x.ok for x in runs[name]) + warm_ok[name]
        duplicates = sum(x.duplicates for x in runs[name])
        errors = sum(x.errors for x in runs[name])
        lost = missing + (acknowledged - seen)
        print(
            f"data check {name}: {acknowledged} answered 200 (warm-up included), {seen} record "
            f"ids in the answers, {missing} of them missing in Redis; {records} records in "
            f"Redis, {queued} wake-up messages queued (worker not running); {duplicates} "
            f"answered as duplicates; {errors} non-200 or socket errors -> "
            f"{'OK' if lost == 0 else 'DATA LOST'}",
            file=out,
        )
        print(
            f"redis {name}: {forks} forks (AOF rewrites) during the run; the last took "
            f"{fork_ms:.1f} ms",
            file=out,
        )
        if records < acknowledged or queued != records:
            print("data check: records or queued messages fewer than acknowledged", file=out)
            status = 1
        if lost or errors:
            status = 1
    if sum(x.errors for x in runs["bare"]):
        status = 1
    return status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--web", type=int, default=1, help="also run ours with this many web processes"
    )
    parser.add_argument(
        "--fsync",
        choices=("always", "everysec", "both"),
        default="always",
        help="Redis AOF appendfsync for ours (both: one of ours per policy, side by side)",
    )
    parser.add_argument(
        "--replica",
        action="store_true",
        help="give ours' Redis a replica; run ours with MIN_REPLICAS=0 and 1 side by side",
    )
    args = parser.parse_args()
    sys.exit(run(args, sys.stdout))


if __name__ == "__main__":
    main()
