"""A backfill started over the API (``POST /v1/backfills``): the ``faxrelay backfill`` command
for an operator who has only a token.

``start`` writes the job (``keys.backfill_key``, a week's TTL) and queues the ``faxrelay.backfill``
task; the task (``run``) lists what the provider holds from the range, records each fax (the
same dedup as webhooks and reconcile, so a rerun or a redelivered task makes no second record)
and wakes the new and unfinished ones for the workers to archive. ``progress`` reads the job and
its faxes' records: what is archived, failed, or tried once and waiting for a retry.

The local command archives inline instead; both report the same counts.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import redis

from faxrelay_client.models import Backfill
from worker.domain import FaxRecord, State, iso_at
from worker.pipeline.inbound import create_inbound
from worker.providers.base import ProviderError
from worker.runtime import INBOUND_TASK, Runtime
from worker.store import keys

MAX_FAXES = 10_000  # one job's cap (its JSON, its progress reads): a longer range is split
SAVE_EVERY = 50  # faxes recorded between progress writes while the job runs


class BackfillRefused(Exception):
    """The backfill cannot be started (the message says why)."""


def utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def start(
    runtime: Runtime, account: str, since: datetime, until: datetime | None, wake: bool
) -> Backfill:
    """Record the job and queue its task; BackfillRefused when the account cannot be backfilled."""
    if account not in runtime.settings.accounts:
        known = ", ".join(sorted(runtime.settings.accounts)) or "none"
        raise BackfillRefused(f"no account named {account!r} (accounts: {known})")
    provider = runtime.provider(account)
    if not provider.capabilities.list_inbound:
        raise BackfillRefused(
            f"account {account!r} ({provider.name}): {provider.name} has no call that lists "
            "received faxes, so it cannot be backfilled; its faxes arrive by webhook only"
        )
    now = iso_at(time.time()) or ""
    job: dict[str, Any] = {
        "id": f"bf_{secrets.token_hex(8)}",
        "account": account,
        "since": utc(since).isoformat(),
        "until": utc(until).isoformat() if until else None,
        "wake": wake,
        "state": "listing",
        "error": "",
        "total": 0,
        "created_at": now,
        "updated_at": now,
        "faxes": [],  # [record id, label, what it was before: new | archived | failed | open]
    }
    _save(runtime.store.redis, job)
    runtime.send_task(*_route(), [job["id"]])
    return progress(runtime.store.redis, job["id"]) or _model(job, [])


def _route() -> tuple[str, str]:
    from config.queues import BACKFILL

    return BACKFILL.task, BACKFILL.queue


def run(runtime: Runtime, job_id: str) -> None:
    """The task: list, record, wake. A job already past listing is left alone (a redelivery)."""
    client = runtime.store.redis
    job = _load(client, job_id)
    if job is None or job["state"] != "listing":
        return
    since = datetime.fromisoformat(job["since"])
    until = datetime.fromisoformat(job["until"]) if job["until"] else None
    try:
        listed = runtime.provider(job["account"]).list_inbound(since)
    except ProviderError as exc:
        _finish(client, job, "failed", f"listing received faxes failed: {exc}")
        return
    faxes = [
        fax
        for fax in listed
        if fax.provider_fax_id
        and (fax.received_at is None or utc(fax.received_at) >= since)
        and (until is None or fax.received_at is None or utc(fax.received_at) < until)
    ]
    if len(faxes) > MAX_FAXES:
        _finish(
            client, job, "failed",
            f"{len(faxes)} faxes in the range, over {MAX_FAXES}: backfill shorter ranges",
        )  # fmt: skip
        return
    job["total"], job["faxes"] = len(faxes), []
    for number, fax in enumerate(faxes, start=1):
        created = create_inbound(runtime, job["account"], fax)
        record = created.record
        label = f"{fax.provider_fax_id} ({record.id})"
        if created.created:
            before = "new"
        elif record.state == State.ARCHIVED:
            before = "archived"
        elif record.final:
            before, label = "failed", f"{label}: {record.reason}: {record.reason_detail} (earlier)"
        else:
            before = "open"
        if before in ("new", "open"):
            runtime.send_task(INBOUND_TASK.task, INBOUND_TASK.queue, [record.id])
        job["faxes"].append([record.id, label, before])
        if number % SAVE_EVERY == 0:
            _save(client, job)
    _finish(client, job, "running", "")


def progress(client: redis.Redis, job_id: str) -> Backfill | None:
    """The job with its faxes' current states; None when there is no such job (or it expired)."""
    job = _load(client, job_id)
    if job is None:
        return None
    ids = [entry[0] for entry in job["faxes"]]
    records: list[FaxRecord | None] = []
    for start_at in range(0, len(ids), 500):
        chunk = ids[start_at : start_at + 500]
        for raw in client.mget([keys.fax_key(i) for i in chunk]):
            records.append(FaxRecord.from_json(orjson.loads(raw)) if raw is not None else None)
    return _model(job, records)


def _model(job: dict[str, Any], records: list[FaxRecord | None]) -> Backfill:
    report = Backfill(
        id=job["id"], account=job["account"], since=job["since"], until=job["until"],
        wake=job["wake"], state=job["state"], error=job["error"], total=job["total"],
        created_at=job["created_at"], updated_at=job["updated_at"],
    )  # fmt: skip
    for (_, label, before), record in zip(job["faxes"], records, strict=True):
        settled = True
        if before == "archived":
            report.already += 1
        elif before == "failed":
            report.failed.append(label)
        elif job["wake"]:
            report.queued += 1
        elif record is None:
            report.pending.append(f"{label}: no longer in Redis")
        elif record.state == State.ARCHIVED:
            report.archived += 1
        elif record.state == State.FAILED:
            report.failed.append(f"{label}: {record.reason}: {record.reason_detail}")
        elif record.attempts.get("download", 0) >= 1:
            why = record.work.get("last_error") or "a worker holds it"
            report.pending.append(f"{label}: {record.state}: {why}")
        else:
            settled = False
        report.settled += settled
    if report.state == "running" and report.settled == report.total:
        report.state = "done"
    return report


def _finish(client: redis.Redis, job: dict[str, Any], state: str, error: str) -> None:
    job["state"], job["error"] = state, error
    _save(client, job)


def _save(client: redis.Redis, job: dict[str, Any]) -> None:
    job["updated_at"] = iso_at(time.time()) or ""
    client.set(keys.backfill_key(job["id"]), orjson.dumps(job), ex=keys.BACKFILL_TTL)


def _load(client: redis.Redis, job_id: str) -> dict[str, Any] | None:
    raw = client.get(keys.backfill_key(job_id))
    return dict(orjson.loads(raw)) if raw is not None else None
