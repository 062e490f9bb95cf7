"""What the chaos soak can see from outside faxrelay: its API, the sandbox's books (the jobs it
took and the documents they carried), the bucket, the broker's queues and the system's log.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import httpx
import redis

from config.queues import QUEUES
from worker.acceptor import queue_lists
from worker.store import keys

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

BUSY_STATES = ("received", "fetching", "queued", "submitted", "sending")


@dataclass
class Snapshot:
    records: list[dict[str, Any]]
    jobs: list[dict[str, Any]]
    events: set[tuple[str, str]]
    objects: dict[str, str] | None = None  # inbound PDF key -> sha256 of its bytes
    # Queue-driven sends without a record: task id -> (where its message is, what happened).
    messages: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Events faxrelay still holds in its outbox: (fax id, type) -> attempts and last error.
    outbox: dict[tuple[str, str], str] = field(default_factory=dict)
    queues: dict[str, int] = field(default_factory=dict)  # broker list lengths, and "unacked"


def api_records(web_url: str, token: str, **filters: str) -> Iterator[dict[str, Any]]:
    """Every record the API lists (newest first), page by page."""
    cursor = ""
    with httpx.Client(
        base_url=web_url, headers={"authorization": f"Bearer {token}"}, timeout=120
    ) as http:
        while True:
            params = {**filters, "limit": "500", **({"cursor": cursor} if cursor else {})}
            answer = http.get("/v1/faxes", params=params)
            answer.raise_for_status()
            page = answer.json()
            yield from page["items"]
            cursor = page.get("next_cursor") or ""
            if not cursor or not page["items"]:
                return


def api_record(web_url: str, token: str, fax_id: str) -> dict[str, Any] | None:
    """One record by id (None: the API knows no such fax)."""
    answer = httpx.get(
        f"{web_url}/v1/faxes/{fax_id}", headers={"authorization": f"Bearer {token}"}, timeout=60
    )
    if answer.status_code == 404:
        return None
    answer.raise_for_status()
    record: dict[str, Any] = answer.json()
    return record


def stored_fax_id(trail: tuple[str, str]) -> str:
    """The fax id a ``send_fax`` task returned, from ``message_trail``'s words ('' if none)."""
    _, said = trail
    prefix = "stored result SUCCESS: "
    return said[len(prefix) :].strip() if said.startswith(prefix) else ""


def busy(web_url: str, token: str) -> bool:
    """Some record is still on its way (the API lists one in a state that is not final)."""
    headers = {"authorization": f"Bearer {token}"}
    for state in BUSY_STATES:
        answer = httpx.get(
            f"{web_url}/v1/faxes",
            params={"state": state, "limit": "1"},
            headers=headers,
            timeout=60,
        )
        answer.raise_for_status()
        if answer.json()["items"]:
            return True
    return False


def sandbox_jobs(sandbox_url: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{sandbox_url}/_sandbox/jobs", timeout=120)
    answer.raise_for_status()
    return list(answer.json())


def inbound_objects(s3: S3Client, bucket: str) -> dict[str, str]:
    """Every archived inbound PDF in the bucket and the sha256 of its bytes."""
    pdfs = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="inbound/")
        for item in page.get("Contents", [])
        if item["Key"].endswith(".pdf")
    ]

    def digest(key: str) -> str:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        sha = hashlib.sha256()
        for chunk in iter(lambda: body.read(1 << 20), b""):
            sha.update(chunk)
        return sha.hexdigest()

    with ThreadPoolExecutor(4) as pool:
        return dict(zip(pdfs, pool.map(digest, pdfs), strict=True))


def message_trail(
    redis_url: str, task_ids: list[str], log: Path | None
) -> dict[str, tuple[str, str]]:
    """Where each queue-driven message is (``queued``: on the queue, in an acceptor's processing
    list or waiting for its retry; ``unacked``: kombu hands it back after the visibility timeout;
    or ``gone``) and what the system said about it: the result stored, else the last warning or
    error the acceptor or worker logged under its task id."""
    if not task_ids:
        return {}
    client = redis.Redis.from_url(redis_url)
    try:
        unacked = b"".join(_raw(v) for v in client.hvals("unacked"))
        nodes = cast(list[bytes], client.zrange(keys.ACCEPT_NODES, 0, -1))
        later = cast(list[bytes], client.zrange(keys.ACCEPT_LATER, 0, -1))
        lists = [*queue_lists(), *(keys.accept_taking_key(n.decode()) for n in nodes)]
        queued = b"".join(_raw(v) for name in lists for v in client.lrange(name, 0, -1))
        queued += b"".join(later)
        metas = client.mget([f"celery-task-meta-{t}" for t in task_ids])
    finally:
        client.close()
    said = _logged(log, set(task_ids)) if log is not None else {}
    trail = {}
    for task_id, meta in zip(task_ids, metas, strict=True):
        where = (
            "unacked" if task_id.encode() in unacked
            else "queued" if task_id.encode() in queued
            else "gone"
        )  # fmt: skip
        text = said.get(task_id, "")
        if meta:
            result = json.loads(meta)
            text = f"stored result {result.get('status')}: {str(result.get('result'))[:200]}"
        trail[task_id] = (where, text)
    return trail


def _raw(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _logged(log: Path, task_ids: set[str]) -> dict[str, str]:
    """The last WARNING or ERROR message logged under each of ``task_ids``."""
    said: dict[str, str] = {}
    with open(log, errors="replace") as lines:
        for line in lines:
            if '"task_id"' not in line or ('"ERROR"' not in line and '"WARNING"' not in line):
                continue
            try:
                entry = json.loads(line.partition(" ")[2])
            except ValueError:
                continue
            if entry.get("task_id") in task_ids:
                message = str(entry.get("message"))[:300]
                said[entry["task_id"]] = f"{entry.get('logger')}: {message}"
    return said


def outbox(redis_url: str) -> dict[tuple[str, str], str]:
    """The event deliveries still in faxrelay's outbox (``fr:delivery:*``), read only to say
    whether a missing event is on its way or gone: (fax id, type) -> its attempts so far."""
    client = redis.Redis.from_url(redis_url)
    try:
        found: dict[tuple[str, str], str] = {}
        names = list(client.scan_iter(match=f"{keys.DELIVERY_PREFIX}*", count=1000))
        for raw in client.mget(names) if names else []:
            if raw is None:
                continue
            entry = json.loads(raw)
            error = f", last error {entry['last_error']}" if entry.get("last_error") else ""
            found[(entry["fax_id"], entry["type"])] = f"{entry.get('attempts', 0)} attempts{error}"
        return found
    finally:
        client.close()


def queue_depths(redis_url: str) -> dict[str, int]:
    """Messages waiting in each of faxrelay's queues, and unacked (held by a worker, or by a
    dead one until the visibility timeout)."""
    client = redis.Redis.from_url(redis_url)
    try:
        depths = {queue: int(client.llen(queue)) for queue in QUEUES}
        depths["unacked"] = int(client.hlen("unacked"))
        depths["acceptor retries"] = int(client.zcard(keys.ACCEPT_LATER))
        return depths
    finally:
        client.close()
