"""The raw webhook log's caps and the refusal limits, against a real Valkey: a bucket over its
count or bytes loses its oldest entries at once, so does the whole log over its own caps, old
entries leave with their bytes, and refused requests beyond the per-minute limits are not logged.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from config.settings import ConfigError, Settings, load_settings
from tests.conftest import BUCKET
from tests.system import API_TOKEN, System
from worker.store import keys, rawlog

ACCOUNT = {
    "provider": "primevox",
    "base_url": "https://pbx.example.com",
    "webhook_token": "a-webhook-token-of-enough-length",
    "auth": "x",
    "container_id": "1",
    "box_id": "2",
}


def settings(**caps: Any) -> Settings:
    return Settings(accounts={"pv": ACCOUNT, "other": ACCOUNT}, **caps)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def entry(
    account: str = "pv", status: int = 200, body: bytes = b"a=1", at: float | None = None
) -> rawlog.LogEntry:
    e = rawlog.LogEntry.capture(
        account=account,
        route="inbound",
        method="POST",
        path=f"/webhooks/{account}/inbound",
        query="token=secret",
        headers={"content-type": "application/x-www-form-urlencoded"},
        now=at,
    )
    e.keep_body(body, 64 * 1024)
    e.status = status
    return e


def write_all(redis_url: str, entries: list[rawlog.LogEntry], s: Settings) -> None:
    async def run() -> None:
        c = aioredis.Redis.from_url(redis_url)
        for e in entries:
            await rawlog.write(c, e, s)
        await c.aclose()

    asyncio.run(run())


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def members(client: redis.Redis, index: str) -> list[str]:
    return [text(m) for m in cast(list[bytes], client.zrange(index, 0, -1))]


def assert_consistent(client: redis.Redis) -> None:
    """Every index member has its entry; the byte counts are the sums of the members' sizes."""
    total = 0
    for member in members(client, keys.WEBHOOK_LOG_INDEX):
        log_id, bucket, size = member.split("|")
        assert client.exists(keys.webhook_log_key(log_id))
        assert client.zscore(keys.webhook_log_bucket(bucket), member) is not None
        total += int(size)
    counted = client.hgetall(keys.WEBHOOK_LOG_BYTES)
    assert int(counted.get(b"*", 0)) == total


def test_an_account_over_its_count_cap_loses_its_oldest_entries(
    redis_url: str, client: redis.Redis
) -> None:
    s = settings(webhook_log_account_entries=5)
    written = [entry("pv", at=1000.0 + i) for i in range(8)] + [entry("other", at=2000.0)]
    write_all(redis_url, written, s)
    kept = [m.split("|")[0] for m in members(client, keys.webhook_log_bucket("pv"))]
    assert kept == [e.id for e in written[3:8]]
    assert all(not client.exists(keys.webhook_log_key(e.id)) for e in written[:3])
    assert client.zcard(keys.webhook_log_bucket("other")) == 1  # another account keeps its own
    assert_consistent(client)


def test_bytes_caps_per_refused_bucket_and_overall(redis_url: str, client: redis.Redis) -> None:
    s = settings(webhook_log_refused_bytes=20_000, webhook_log_max_bytes=60_000)
    body = b"x" * 6000  # about 8 KB of JSON each (base64)
    refused = [entry("pv", status=401, body=body, at=1000.0 + i) for i in range(10)]
    accepted = [entry("other", body=body, at=2000.0 + i) for i in range(10)]
    write_all(redis_url, refused, s)
    assert 0 < bytes_of(client, "!pv") <= 20_000
    newest = members(client, keys.webhook_log_bucket("!pv"))[-1].split("|")[0]
    assert newest == refused[-1].id  # the newest refusal is kept: it is the one to replay
    write_all(redis_url, accepted, s)
    assert 0 < bytes_of(client, "*") <= 60_000
    assert_consistent(client)


def bytes_of(client: redis.Redis, field: str) -> int:
    return int(client.hget(keys.WEBHOOK_LOG_BYTES, field) or 0)


def test_an_account_over_its_bytes_cap_loses_its_oldest_entries(
    redis_url: str, client: redis.Redis
) -> None:
    s = settings(webhook_log_account_bytes=30_000)
    written = [entry("pv", body=b"x" * 6000, at=1000.0 + i) for i in range(10)]  # ~8 KB each
    write_all(redis_url, written, s)
    assert 0 < bytes_of(client, "pv") <= 30_000
    kept = [m.split("|")[0] for m in members(client, keys.webhook_log_bucket("pv"))]
    assert len(kept) >= 3 and kept == [e.id for e in written[-len(kept) :]]  # the newest
    assert_consistent(client)


def test_the_whole_log_is_capped_by_count(redis_url: str, client: redis.Redis) -> None:
    s = settings(webhook_log_max_entries=6)
    write_all(redis_url, [entry(("pv", "other")[i % 2], at=1000.0 + i) for i in range(10)], s)
    assert client.zcard(keys.WEBHOOK_LOG_INDEX) == 6
    assert_consistent(client)


def test_entries_past_their_days_leave_with_their_bytes(
    redis_url: str, client: redis.Redis
) -> None:
    s = settings()
    now = time.time()
    old = [entry("pv", at=now - 20 * 86400 + i) for i in range(3)]
    fresh = [entry("pv", at=now)]
    write_all(redis_url, old + fresh, s)
    assert rawlog.trim(client, s.webhook_log_days) == 3
    assert [m.split("|")[0] for m in members(client, keys.WEBHOOK_LOG_INDEX)] == [fresh[0].id]
    assert_consistent(client)


def test_refusals_are_limited_per_bucket_and_per_address(redis_url: str) -> None:
    async def run() -> list[bool]:
        c = aioredis.Redis.from_url(redis_url)
        now = 1_000_000.0
        results = [await rawlog.refusal_allowed(c, "!pv", "127.0.0.9", 3, now) for _ in range(4)]
        # the account's budget is spent, whoever asks
        results.append(await rawlog.refusal_allowed(c, "!pv", "127.0.0.10", 3, now))
        # that address's too, for any account
        results.append(await rawlog.refusal_allowed(c, "!?", "127.0.0.9", 3, now))
        # a fresh account from a fresh address
        results.append(await rawlog.refusal_allowed(c, "!?", "127.0.0.11", 3, now))
        # the next minute starts afresh
        results.append(await rawlog.refusal_allowed(c, "!pv", "127.0.0.9", 3, now + 60))
        await c.aclose()
        return results

    assert asyncio.run(run()) == [True, True, True, False, False, False, True, True]


def test_an_unknown_accounts_entry_keeps_no_body_and_little_of_its_headers() -> None:
    e = entry("x" * 500, status=404, body=b"secret stuff" * 1000)
    e.headers = {f"x-h{i}": "v" * 900 for i in range(40)}
    e.keep_little()
    assert (e.body, e.truncated, len(e.account)) == (b"", True, rawlog.REFUSED_NAME_CHARS)
    assert sum(len(k) + len(v) for k, v in e.headers.items()) <= rawlog.REFUSED_HEADER_BYTES + 40
    assert rawlog.bucket_of(e, settings()) == keys.UNKNOWN_BUCKET


# --- the whole system: a flood of refused webhooks ----------------------------------------------

REFUSALS_PER_MINUTE = 20
DOCUMENT_MAX_BYTES = 200_000


@pytest.fixture(scope="module")
def system(
    tmp_path_factory: pytest.TempPathFactory, s3_server: str, sandbox_server: Any
) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("caps")
    s = System(
        tmp,
        s3_server,
        sandbox_server.url,
        BUCKET,
        env_overrides={
            "FAXRELAY_WEBHOOK_REFUSALS_PER_MINUTE": str(REFUSALS_PER_MINUTE),
            "FAXRELAY_DOCUMENT_MAX_BYTES": str(DOCUMENT_MAX_BYTES),
            "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),
        },
    ).start()
    yield s
    s.stop()


def flood(urls: list[str], body: bytes, source: str) -> list[int]:
    """POST ``body`` to each URL, 16 at a time, from the loopback address ``source``."""

    async def run() -> list[int]:
        limit = asyncio.Semaphore(16)
        transport = httpx.AsyncHTTPTransport(local_address=source)
        async with httpx.AsyncClient(timeout=60, transport=transport) as http:

            async def one(url: str) -> int:
                async with limit:
                    return (await http.post(url, content=body)).status_code

            return list(await asyncio.gather(*(one(u) for u in urls)))

    return asyncio.run(run())


def unlogged(system: System, refusal: str) -> float:
    text = httpx.get(f"{system.web_url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "faxrelay_webhook_refusals_unlogged_total"
                and sample.labels.get("refusal") == refusal
            ):
                return float(sample.value)
    return 0.0


def test_a_flood_of_refused_webhooks_leaves_redis_memory_bounded(system: System) -> None:
    client = system.store().redis
    body = os.urandom(64 * 1024)
    before = int(client.info("memory")["used_memory"])
    strangers = [f"{system.web_url}/webhooks/nobody-{i}/inbound" for i in range(600)]
    wrong_token = [system.webhook_url("pv", token=f"guess-{i}") for i in range(300)]
    assert flood(strangers, body, "127.0.0.2") == [404] * 600
    assert flood(wrong_token, body, "127.0.0.3") == [401] * 300
    grown = int(client.info("memory")["used_memory"]) - before
    assert grown < 2 * 1024 * 1024, f"{grown} bytes"  # keeping every body: 77 MB
    # Logged up to the limit (a minute may turn during the flood: two windows' worth at most).
    assert 0 < client.zcard(keys.webhook_log_bucket(keys.UNKNOWN_BUCKET)) <= 2 * REFUSALS_PER_MINUTE
    assert (
        client.zcard(keys.webhook_log_bucket(keys.refused_bucket("pv"))) <= 2 * REFUSALS_PER_MINUTE
    )
    # The rest counted, not logged: each flood logged one or two minutes' worth.
    assert 600 - 2 * REFUSALS_PER_MINUTE <= unlogged(system, "unknown_account") < 600
    assert 300 - 2 * REFUSALS_PER_MINUTE <= unlogged(system, "bad_token") < 300
    # An unknown account's entry keeps no body; a wrong token's keeps it, to replay once fixed.
    stranger = [e for e in rawlog.list_entries(client, 200) if e.status == 404]
    assert stranger and all(e.body == b"" and e.truncated for e in stranger)
    refused = rawlog.list_entries(client, 5, account="pv")
    assert refused and refused[0].body == body and not refused[0].truncated


# --- early refusals ------------------------------------------------------------------------------


def chunks(total: int, piece: int = 64 * 1024) -> Iterator[bytes]:
    """A body of ``total`` bytes sent chunked (it declares no length)."""
    for start in range(0, total, piece):
        yield b"a" * min(piece, total - start)


def answer_before_the_end(
    system: System, path: str, headers: dict[str, str], sent: int, head: bytes = b""
) -> str:
    """The status line of the answer to a chunked POST of which only ``sent`` bytes are sent,
    the body never finished: a server that reads a body whole before refusing never answers."""
    port = int(system.web_url.rsplit(":", 1)[1])
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Transfer-Encoding: chunked"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        if head:
            conn.sendall(f"{len(head):x}\r\n".encode() + head + b"\r\n")
        for piece in chunks(sent):
            conn.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        return conn.recv(4096).split(b"\r\n", 1)[0].decode()


def test_login_reads_a_capped_body(system: System) -> None:
    form = {"content-type": "application/x-www-form-urlencoded"}
    with httpx.Client(base_url=system.web_url, timeout=30) as web:
        declared = web.post("/login", content=b"token=" + b"a" * 100_000, headers=form)
        assert declared.status_code == 413
        assert web.post("/login", data={"token": "wrong-token-of-some-length"}).status_code == 403
    assert answer_before_the_end(system, "/login", form, 64 * 1024).startswith("HTTP/1.1 413 ")


def test_a_multipart_send_is_refused_once_over_its_cap_chunked_too(system: System) -> None:
    boundary = "faxrelaycapsboundary"
    multipart = {
        "content-type": f"multipart/form-data; boundary={boundary}",
        "authorization": f"Bearer {API_TOKEN}",
    }
    limit = DOCUMENT_MAX_BYTES * 4 // 3 + 64 * 1024
    head = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=account\r\n\r\nci\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=document; filename=a.pdf\r\n"
        "Content-Type: application/pdf\r\n\r\n"
    ).encode()
    status = answer_before_the_end(system, "/v1/faxes", multipart, limit + 128 * 1024, head)
    assert status.startswith("HTTP/1.1 413 "), status


def test_short_or_empty_tokens_are_refused_at_load(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "faxrelay.toml"
    monkeypatch.setenv("FAXRELAY_CONFIG", str(config))
    for token in ("short", ""):
        account = {**ACCOUNT, "webhook_token": token}
        lines = [f'{k} = "{v}"' for k, v in account.items()]
        config.write_text("[accounts.pv]\n" + "\n".join(lines) + "\n")
        with pytest.raises(ConfigError, match="webhook_token must be at least 16 characters"):
            load_settings()
    config.write_text("")
    monkeypatch.setenv("FAXRELAY_API_TOKENS", "ops:tiny")
    with pytest.raises(ConfigError, match="api_tokens: ops must be at least 16 characters"):
        load_settings()
    monkeypatch.setenv("FAXRELAY_API_TOKENS", "ops:")  # a name and an empty token
    with pytest.raises(ConfigError, match="api_tokens: token-1 must be at least 16 characters"):
        load_settings()
    monkeypatch.setenv("FAXRELAY_API_TOKENS", "a-token-of-enough-length")
    assert load_settings().api_token_values == ("a-token-of-enough-length",)
