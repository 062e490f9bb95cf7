"""Inbound webhook ingest: our ``POST /webhooks/{account}/inbound`` against a bare Starlette endpoint.

``python -m bench.ingest [--rounds 3] [--seconds 10] [--connections 32] [--loadgen auto|wrk|python]``

Starts a Redis-compatible server and two uvicorn processes with the same flags (one worker, uvloop,
httptools, no access log): ours (``webhooks.app:create_app``) and a bare app whose endpoint, on the
same path, reads the body and answers 200. Load: wrk ``-t1 -c32`` when wrk is on PATH, else
``bench.loadgen`` (a separate process, raw asyncio, keep-alive). Every request carries a
PrimeVox-style urlencoded body (~250 bytes) with its own ``efaxID``, so each creates a record.
Rounds alternate ours then bare. Afterwards every 200 our app answered is looked up in Redis: a
benchmark that loses data is wrong. No Celery worker runs: the wake-up messages queue up.
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
    median,
    stop_all,
    uvicorn_process,
    workdir,
)
from config.embedded import ManagedProcess, free_port, start_redis
from config.queues import INTAKE_QUEUE
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
    queued = int(client.llen(INTAKE_QUEUE))
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


def run(args: argparse.Namespace, out: IO[str]) -> int:
    loader_kind = choose_loader(args.loadgen)
    procs: list[ManagedProcess] = []
    with workdir("faxrelay-bench-ingest-") as tmp, open(tmp / "servers.log", "a") as log:
        try:
            redis_port, ours_port, bare_port = free_port(), free_port(), free_port()
            procs.append(start_redis(tmp / "redis", redis_port, sink=log))
            redis_url = f"redis://{HOST}:{redis_port}/0"
            # Nothing listens at the download host: no worker runs, so nothing fetches from it.
            download_base = f"http://{HOST}:{free_port()}"
            config = tmp / "faxrelay.toml"
            config.write_text(
                f'[accounts.{ACCOUNT}]\nprovider = "primevox"\n'
                f'base_url = "{download_base}/primevox"\nwebhook_token = "{TOKEN}"\n'
                f'auth = "{sb_primevox.VALID_AUTH}"\ncontainer_id = "{sb_primevox.VALID_CONTAINER}"\n'
                f'box_id = "{sb_primevox.VALID_BOX}"\n'
            )
            env = {
                **base_env(),
                "FAXRELAY_CONFIG": str(config),
                "FAXRELAY_REDIS_URL": redis_url,
                # Not started: the inbound path with a download URL never touches S3.
                "FAXRELAY_S3_ENDPOINT_URL": f"http://{HOST}:{free_port()}",
                "FAXRELAY_S3_BUCKET": "faxrelay-bench",
            }
            procs.append(
                uvicorn_process("ours", "webhooks.app:create_app", ours_port, env=env, sink=log)
            )
            procs.append(
                uvicorn_process(
                    "bare", "bench.ingest:create_bare_app", bare_port, env=env, sink=log
                )
            )
            # Server CPU per request: ours counts its web process and Redis, bare its process.
            # The web process comes first in each list.
            pids = {"ours": [procs[1].pid, procs[0].pid], "bare": [procs[2].pid]}
            path = f"/webhooks/{ACCOUNT}/inbound?token={TOKEN}"
            urls = {
                "ours": f"http://{HOST}:{ours_port}{path}",
                "bare": f"http://{HOST}:{bare_port}{path}",
            }
            loader = Loader(loader_kind, tmp, body_template(download_base), args.connections)
            print(
                f"ingest: uvicorn {' '.join(('1 worker', 'uvloop', 'httptools', 'no access log'))}; "
                f"load: {loader_kind} ({args.connections} connections); "
                f"{args.rounds} rounds x (ours {args.seconds:g} s, bare {args.seconds:g} s); "
                f"body {len(body_template(download_base)) + 2} bytes",
                file=out,
            )
            print(
                "note: no Celery worker runs during this benchmark; "
                "the wake-up messages queue up in Redis",
                file=out,
            )
            ids_dir = tmp / "ids"
            ids_dir.mkdir()
            results: list[RunResult] = []
            client = redis.Redis.from_url(redis_url)
            # Warm-up (not counted): imports, connection pools, the Lua script's first load.
            warm_ok = 0
            for n, target in enumerate(("ours", "bare")):
                ids_out = ids_dir / f"warm-{target}" if target == "ours" else None
                warm = loader.run(target, urls[target], args.warmup, f"1{n}", ids_out)
                warm_ok += warm.ok if target == "ours" else 0
            for r in range(args.rounds):
                for n, target in enumerate(("ours", "bare")):
                    time.sleep(0.5)
                    ids_out = ids_dir / f"r{r}-{target}" if target == "ours" else None
                    cpu_before = [cpu_seconds(p) for p in pids[target]]
                    forks_before = forks_so_far(client)
                    result = loader.run(target, urls[target], args.seconds, f"{2 + r}{n}", ids_out)
                    result.forks = forks_so_far(client) - forks_before
                    cpu = [
                        cpu_seconds(p) - b for p, b in zip(pids[target], cpu_before, strict=True)
                    ]
                    result.cpu_us = sum(cpu) / max(1, result.requests) * 1e6
                    result.web_cpu_us = cpu[0] / max(1, result.requests) * 1e6
                    results.append(result)
                    print(
                        f"  round {r + 1} {target:4}: {result.rps:8.0f} req/s  "
                        f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  "
                        f"max {result.max_ms:7.2f} ms  cpu {result.cpu_us:5.0f} us/req "
                        f"(web {result.web_cpu_us:3.0f})  redis forks {result.forks}  "
                        f"({result.requests} requests, "
                        f"{result.ok} x 200, {result.errors} errors)",
                        file=out,
                    )
            # --- did every 200 leave a record? ---------------------------------------------
            ids = collect_ids(ids_dir)
            ours_ok = sum(x.ok for x in results if x.target == "ours")
            seen, missing, records, queued = verify(client, ids)
            stats = client.info("stats")
            forks = int(stats.get("total_forks", 0))
            fork_ms = int(stats.get("latest_fork_usec", 0)) / 1000
            client.close()
        finally:
            stop_all(procs)
    ours = [x for x in results if x.target == "ours"]
    bare = [x for x in results if x.target == "bare"]
    ours_rps, bare_rps = median([x.rps for x in ours]), median([x.rps for x in bare])
    ours_p99, bare_p99 = median([x.p99_ms for x in ours]), median([x.p99_ms for x in bare])
    ratio = ours_rps / bare_rps if bare_rps else 0.0
    acknowledged = ours_ok + warm_ok
    duplicates = sum(x.duplicates for x in ours)
    errors = sum(x.errors for x in results)
    for label, runs, rps, p99 in (
        ("bare", bare, bare_rps, bare_p99),
        ("ours", ours, ours_rps, ours_p99),
    ):
        print(
            f"{label} : {rps:8.0f} req/s (median of {len(runs)})  p99 {p99:.2f} ms "
            f"(median of rounds; worst {max(x.p99_ms for x in runs):.2f} ms)  "
            f"server CPU {median([x.cpu_us for x in runs]):.0f} us/request "
            f"(web process {median([x.web_cpu_us for x in runs]):.0f})",
            file=out,
        )
    ok_ratio = ratio >= TARGET_RATIO and ours_p99 <= TARGET_P99_MS
    print(
        f"ratio ours/bare: {ratio:.3f}  (target >= {TARGET_RATIO:.2f} with p99 <= "
        f"{TARGET_P99_MS:.0f} ms: {'met' if ok_ratio else 'NOT met'})",
        file=out,
    )
    lost = missing + (acknowledged - seen)
    print(
        f"data check: {acknowledged} answered 200 by ours (warm-up included), {seen} record ids "
        f"in the answers, {missing} of them missing in Redis; {records} records in Redis, "
        f"{queued} wake-up messages queued (worker not running); {duplicates} answered as "
        f"duplicates; {errors} non-200 or socket errors -> {'OK' if lost == 0 else 'DATA LOST'}",
        file=out,
    )
    print(
        f"redis: {forks} forks (AOF rewrites) during the run; the last took {fork_ms:.1f} ms",
        file=out,
    )
    if records < acknowledged or queued != records:
        print("data check: records or queued messages fewer than acknowledged webhooks", file=out)
        return 1
    return 0 if lost == 0 and errors == 0 else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    args = parser.parse_args()
    sys.exit(run(args, sys.stdout))


if __name__ == "__main__":
    main()
