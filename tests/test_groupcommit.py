"""The pipelined group commit against a real Redis: every caller gets its own answer, once.

Every test runs on asyncio's own event loop and on uvloop's (which the web app runs on): the
group commit's connection is an asyncio protocol, and the two loops drive protocols differently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
import uvloop
from redis.credentials import UsernamePasswordCredentialProvider
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from config.embedded import free_port, start_redis
from worker.store.groupcommit import MAX_BATCH, GroupCommit, Target

# Counts its runs per key, so a call that ran twice shows; refuses the argument "bad".
SCRIPT = """
if ARGV[1] == 'bad' then return redis.error_reply('ERR refused: bad') end
local runs = redis.call('INCR', 'runs:' .. ARGV[1])
return {ARGV[1], runs}
"""


RUNNERS: dict[str, Callable[[Coroutine[Any, Any, Any]], Any]] = {
    "asyncio": asyncio.run,
    "uvloop": uvloop.run,
}
_runner = RUNNERS["asyncio"]


@pytest.fixture(autouse=True, params=sorted(RUNNERS))
def event_loop_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(f"{__name__}._runner", RUNNERS[request.param])
    return str(request.param)


def run(redis_url: str, body: Callable[[GroupCommit], Awaitable[Any]], **options: Any) -> Any:
    async def main() -> Any:
        client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=1, **options)
        commit = GroupCommit(client, SCRIPT, timeout=2)
        try:
            return await body(commit)
        finally:
            commit.close()
            await client.aclose()

    return _runner(main())


def test_concurrent_callers_each_get_their_own_answer(redis_url: str) -> None:
    count = 40 * MAX_BATCH + 3  # bursts cut into several writes, and a remainder

    async def body(commit: GroupCommit) -> list[Any]:
        return await asyncio.gather(*(commit.call([f"k{i}"]) for i in range(count)))

    answers = run(redis_url, body)
    assert answers == [[f"k{i}".encode(), 1] for i in range(count)]


def test_one_callers_error_is_its_own(redis_url: str) -> None:
    async def body(commit: GroupCommit) -> list[Any]:
        calls = [commit.call(["a"]), commit.call(["bad"]), commit.call(["b"])]
        return await asyncio.gather(*calls, return_exceptions=True)

    first, refused, last = run(redis_url, body)
    assert first == [b"a", 1] and last == [b"b", 1]
    assert isinstance(refused, ResponseError) and "refused: bad" in str(refused)


def test_an_argument_redis_cannot_take_fails_that_call_alone(redis_url: str) -> None:
    async def body(commit: GroupCommit) -> list[Any]:
        calls = [commit.call(["a"]), commit.call([None]), commit.call(["b"])]  # type: ignore[list-item]
        return await asyncio.gather(*calls, return_exceptions=True)

    first, refused, last = run(redis_url, body)
    assert first == [b"a", 1] and last == [b"b", 1]
    assert isinstance(refused, TypeError)


def test_a_flushed_script_is_loaded_again(redis_url: str) -> None:
    async def body(commit: GroupCommit) -> list[Any]:
        before = await commit.call(["x"])
        redis.Redis.from_url(redis_url).script_flush()
        after = await asyncio.gather(*(commit.call([f"y{i}"]) for i in range(20)))
        return [before, *after]

    answers = run(redis_url, body)
    assert answers == [[b"x", 1]] + [[f"y{i}".encode(), 1] for i in range(20)]


def test_a_killed_connection_is_replaced_and_nothing_runs_twice(redis_url: str) -> None:
    admin = redis.Redis.from_url(redis_url)

    async def body(commit: GroupCommit) -> list[Any]:
        await commit.call(["warm"])
        # Kill every connection but the admin's: the commit's own dies under it.
        admin.client_kill_filter(_type="normal", skipme=True)
        return await asyncio.gather(*(commit.call([f"k{i}"]) for i in range(30)))

    answers = run(redis_url, body)
    assert answers == [[f"k{i}".encode(), 1] for i in range(30)]
    assert all(admin.get(f"runs:k{i}") == b"1" for i in range(30))


def test_redis_down_fails_the_calls_and_recovery_needs_no_restart(tmp_path: Path) -> None:
    port = free_port()
    with open(tmp_path / "redis.log", "a") as log:
        server = start_redis(tmp_path / "redis", port, sink=log)
        url = f"redis://127.0.0.1:{port}/0"

        async def body(commit: GroupCommit) -> tuple[Any, list[Any], Any]:
            nonlocal server
            first = await commit.call(["a"])
            server.stop()
            down = await asyncio.gather(
                *(commit.call(["b"]) for _ in range(3)), return_exceptions=True
            )
            server = start_redis(tmp_path / "redis", port, sink=log)
            return first, down, await commit.call(["c"])

        try:
            first, down, after = run(url, body)
        finally:
            server.stop()
    assert first == [b"a", 1]
    assert all(isinstance(d, RedisConnectionError | OSError) for d in down), down
    assert after == [b"c", 1]


@pytest.mark.parametrize("count", [1, MAX_BATCH, MAX_BATCH + 1])
def test_lone_and_boundary_batches(redis_url: str, count: int) -> None:
    async def body(commit: GroupCommit) -> list[Any]:
        return await asyncio.gather(*(commit.call([f"n{i}"]) for i in range(count)))

    assert run(redis_url, body) == [[f"n{i}".encode(), 1] for i in range(count)]


# --- where the connection goes: the client's settings, read through redis-py's public API -------


def test_the_connection_settings_come_from_the_client() -> None:
    """The contract with redis-py: if a version stops exposing these, this fails loudly."""
    tcp = aioredis.Redis.from_url(
        "redis://user:pw@db.example:6390/3?client_name=web", socket_connect_timeout=2
    )
    assert Target.of(tcp) == Target(
        host="db.example",
        port=6390,
        username="user",
        password="pw",
        db=3,
        client_name="web",
        connect_timeout=2.0,
    )
    assert Target.of(aioredis.Redis.from_url("unix:///run/valkey.sock?db=2")) == Target(
        path="/run/valkey.sock", db=2
    )
    # Connections the own connection cannot stand in for: redis-py runs the script.
    assert Target.of(aioredis.Redis.from_url("rediss://db.example:6390/0")) is None
    provider = aioredis.Redis(credential_provider=UsernamePasswordCredentialProvider("u", "p"))
    assert Target.of(provider) is None


def test_auth_with_a_username_and_a_database_from_the_url(redis_url: str) -> None:
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser(
        "gc-user", enabled=True, passwords=["+gc-secret"], keys="*", commands=["+@all"]
    )
    host_port = redis_url.removeprefix("redis://").split("/", 1)[0]
    try:

        async def body(commit: GroupCommit) -> list[Any]:
            return await asyncio.gather(*(commit.call([f"d{i}"]) for i in range(3)))

        answers = run(f"redis://gc-user:gc-secret@{host_port}/5", body)
        assert answers == [[f"d{i}".encode(), 1] for i in range(3)]
        in_db5 = redis.Redis.from_url(f"redis://{host_port}/5")
        assert in_db5.get("runs:d0") == b"1" and admin.get("runs:d0") is None
        in_db5.flushdb()

        async def refused(commit: GroupCommit) -> list[Any]:
            return await asyncio.gather(commit.call(["x"]), return_exceptions=True)

        (wrong,) = run(f"redis://gc-user:not-it@{host_port}/5", refused)
        assert isinstance(wrong, AuthenticationError), wrong
    finally:
        admin.acl_deluser("gc-user")


class _OwnConnection(aioredis.Connection):
    """A connection class of the application's: the group commit leaves it to redis-py."""


def test_other_connections_run_the_script_through_redis_py(redis_url: str) -> None:
    async def body(commit: GroupCommit) -> list[Any]:
        assert commit.fallback is not None and commit.target is None
        before = await asyncio.gather(
            commit.call(["a"]), commit.call(["bad"]), commit.call(["b"]), return_exceptions=True
        )
        redis.Redis.from_url(redis_url).script_flush()
        return [*before, await commit.call(["c"])]

    first, refused, last, after_flush = run(redis_url, body, connection_class=_OwnConnection)
    assert first == [b"a", 1] and last == [b"b", 1] and after_flush == [b"c", 1]
    assert isinstance(refused, ResponseError) and "refused: bad" in str(refused)
