"""A Redis Sentinel failover under load: what faxrelay acknowledged and lost, MIN_REPLICAS=1 vs 0.

``python -m bench.failover [--before 40] [--after 30] [--link-delay-ms 0 250] [--webhook-threads 6]
[--restart as-is|as-replica]``

For each replication link delay and each of FAXRELAY_REDIS_MIN_REPLICAS=1 and 0, in one run: a
fresh Valkey primary, replica and three sentinels (``tests.sentinel``: down-after 2 s), faxrelay's
web app, worker and beat configured with the sentinels only, SeaweedFS and the provider sandbox.
A provider announces faxes by webhook and a client sends faxes (``tests.failover_scenario``),
each retrying until acknowledged; once ``--before`` webhooks are acknowledged the primary is
SIGKILLed, and it is started again once the sentinels have promoted the replica: ``as-is`` as
compose's restart policy does (it comes back a primary and the sentinels turn it into a replica,
which takes them about 15 s), or ``as-replica`` of the new primary. Then every acknowledged
webhook and send is looked up on the new primary.

A SIGKILL on one machine loses nothing in flight: the kernel still delivers what the primary had
written to the replica's connection. ``--link-delay-ms`` puts a relay on the replication link that
delivers the primary's stream that much later and drops what it holds when the primary dies: a
replica lagging behind (a slow or distant link), or a primary whose host dies with writes in
flight. What is then acknowledged but lost is what MIN_REPLICAS is for.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import IO

import httpx

from bench.common import HOST, base_env, sandbox_process, stop_all, workdir
from config.embedded import ManagedProcess, SeaweedPorts, free_port, start_seaweed
from tests import failover_scenario
from tests.sentinel import SentinelCluster

BUCKET = "faxrelay-bench"


def one_run(
    tmp: Path,
    log: IO[str],
    *,
    s3_endpoint: str,
    sandbox_url: str,
    min_replicas: int,
    link_delay: float,
    args: argparse.Namespace,
) -> failover_scenario.Outcome:
    # A clean sandbox per run: its request log tells how often each destination was submitted.
    httpx.post(f"{sandbox_url}/_sandbox/reset", timeout=30).raise_for_status()
    httpx.post(
        f"{sandbox_url}/_sandbox/duration",
        json={"provider": "callerip", "seconds": 1.0},
        timeout=30,
    ).raise_for_status()
    cluster = SentinelCluster(tmp / "cluster", log, link_delay=link_delay).start()
    system: failover_scenario.SentinelSystem | None = None
    try:
        system = failover_scenario.start_system(
            tmp / "system",
            cluster,
            s3_endpoint=s3_endpoint,
            sandbox_url=sandbox_url,
            bucket=BUCKET,
            min_replicas=min_replicas,
        )
        return failover_scenario.run(
            system,
            cluster,
            before=args.before,
            after=args.after,
            restart_as_replica=args.restart == "as-replica",
            settle=120.0,
            webhook_threads=args.webhook_threads,
            log=log,
        )
    finally:
        if system is not None:
            system.stop()
        cluster.stop()


def run(args: argparse.Namespace, out: IO[str]) -> int:
    # The children (System passes this process's environment on): no FAXRELAY_* or AWS_* from
    # the caller, no proxies.
    env = base_env()
    for name in [n for n in os.environ if n not in env]:
        del os.environ[name]
    os.environ.update(env)
    procs: list[ManagedProcess] = []
    results: list[tuple[float, failover_scenario.Outcome]] = []
    with workdir("faxrelay-bench-failover-") as tmp, open(tmp / "servers.log", "a") as log:
        try:
            ports = SeaweedPorts.pick()
            procs.append(start_seaweed(tmp / "s3", ports, BUCKET, sink=log))
            sandbox_port = free_port()
            procs.append(sandbox_process(sandbox_port, sink=log))
            sandbox_url = f"http://{HOST}:{sandbox_port}"
            print(
                f"failover: kill -9 of the primary after {args.before} acknowledged webhooks; "
                f"restart {args.restart}; {args.after} acknowledgements after the kill; "
                f"sentinels down-after {SentinelCluster.down_after_ms} ms; "
                f"{args.webhook_threads} providers and one API client",
                file=out,
                flush=True,
            )
            for delay_ms in args.link_delay_ms:
                for min_replicas in (1, 0):
                    name = f"d{delay_ms}-m{min_replicas}"
                    outcome = one_run(
                        tmp / name,
                        log,
                        s3_endpoint=f"http://{HOST}:{ports.s3}",
                        sandbox_url=sandbox_url,
                        min_replicas=min_replicas,
                        link_delay=delay_ms / 1000,
                        args=args,
                    )
                    results.append((delay_ms, outcome))
                    print(f"  link delay {delay_ms} ms: {outcome.summary()}", file=out, flush=True)
        finally:
            stop_all(procs)
    print(
        "summary (acknowledged / lost; the longest time without an acknowledgement after the kill):",
        file=out,
    )
    for delay_ms, o in results:
        print(
            f"  link delay {delay_ms:3d} ms  MIN_REPLICAS={o.min_replicas}: "
            f"{o.webhooks + o.sends:4d} acknowledged, {o.lost:3d} lost "
            f"({len(o.lost_webhooks)} webhooks, {len(o.lost_sends)} sends); "
            f"{len(o.not_archived) + len(o.not_submitted)} not archived/submitted; "
            f"{len(o.submitted_twice)} submitted twice; failover {o.failover_s:.1f} s; "
            f"no acknowledgement for {o.stall_s:.1f} s; worker restarts {o.worker_restarts}",
            file=out,
        )
    safe = all(o.lost == 0 for _, o in results if o.min_replicas)
    print(f"MIN_REPLICAS=1 lost nothing acknowledged: {'yes' if safe else 'NO'}", file=out)
    return 0 if safe else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=int, default=40)
    parser.add_argument("--after", type=int, default=30)
    parser.add_argument("--link-delay-ms", type=int, nargs="+", default=[0, 250])
    parser.add_argument("--webhook-threads", type=int, default=6, help="providers at once")
    parser.add_argument("--restart", choices=("as-is", "as-replica"), default="as-is")
    args = parser.parse_args()
    sys.exit(run(args, sys.stdout))


if __name__ == "__main__":
    main()
