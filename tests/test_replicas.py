"""FAXRELAY_REDIS_MIN_REPLICAS and Sentinel connections, against a real primary and replica.

An acknowledgement waits until the replica has the write (``WAIT``): with the replica stopped
(SIGSTOP: connected, but it reads nothing) the group commit and ``replicas.confirm`` refuse in
time, while the primary has the write. A group commit connected to a node that a failover made a
replica sends its calls again to the primary the sentinels name now. The settings are checked.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
import uvloop
from pydantic import ValidationError

from config import connect
from config.settings import Settings
from tests.sentinel import PASSWORD, Node, SentinelCluster
from worker.store import replicas
from worker.store.groupcommit import GroupCommit, Target

SCRIPT = "return redis.call('INCR', 'runs:' .. ARGV[1])"
WAIT = 0.3  # seconds a WAIT may take here


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelCluster]:
    tmp = tmp_path_factory.mktemp("pair")
    with open(tmp / "nodes.log", "a") as log:
        running = SentinelCluster(tmp, log, sentinel_count=0, appendfsync="everysec").start()
        try:
            yield running
        finally:
            running.stop()


@pytest.fixture
def nodes(pair: SentinelCluster) -> Iterator[tuple[Node, Node]]:
    primary, replica = pair.nodes
    primary.client().flushall()
    pair.wait_replicas(primary, 1, 10)
    yield primary, replica
    pair.signal(replica, signal.SIGCONT)  # a failed test must not leave it stopped


def url(node: Node) -> str:
    return f"redis://:{PASSWORD}@127.0.0.1:{node.port}/0"


def settings(min_replicas: int = 1) -> Settings:
    return Settings(redis_min_replicas=min_replicas, redis_wait_timeout=WAIT)


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_the_group_commit_answers_once_the_replica_has_the_write_and_refuses_in_time_without(
    pair: SentinelCluster, nodes: tuple[Node, Node], run: Callable[[Awaitable[Any]], Any]
) -> None:
    primary, replica = nodes

    async def calls(prefix: str) -> list[Any]:
        client = aioredis.Redis.from_url(url(primary))
        commit = GroupCommit(client, SCRIPT, min_replicas=1, wait_timeout=WAIT)
        try:
            return await asyncio.gather(
                *(commit.call([f"{prefix}{n}"]) for n in range(20)), return_exceptions=True
            )
        finally:
            commit.close()
            await client.aclose()

    assert run(calls("a")) == [1] * 20
    pair.signal(replica, signal.SIGSTOP)
    refused = run(calls("b"))
    assert all(isinstance(answer, replicas.NotReplicated) for answer in refused), refused
    # Refused, but written on the primary: the provider's retry finds it through its dedup key.
    assert primary.client().get("runs:b0") == b"1"
    pair.signal(replica, signal.SIGCONT)
    assert run(calls("c")) == [1] * 20
    assert replica.client().get("runs:c19") == b"1"  # answered: the replica has it


def test_confirm_covers_writes_made_on_other_connections(
    pair: SentinelCluster, nodes: tuple[Node, Node]
) -> None:
    primary, replica = nodes

    async def write_then_confirm(key: str) -> None:
        writer = aioredis.Redis.from_url(url(primary))
        other = aioredis.Redis.from_url(url(primary))  # another connection confirms
        try:
            epoch = await replicas.epoch(other, settings())
            await writer.set(key, "1")
            await replicas.confirm(other, settings(), epoch)
        finally:
            await writer.aclose()
            await other.aclose()

    sync = connect.sync_client_from_url(url(primary))
    asyncio.run(write_then_confirm("before"))
    pair.signal(replica, signal.SIGSTOP)
    with pytest.raises(replicas.NotReplicated):
        asyncio.run(write_then_confirm("while-stopped"))
    with pytest.raises(replicas.NotReplicated):
        replicas.confirm_sync(sync, settings(), replicas.epoch_sync(sync, settings()))
    pair.signal(replica, signal.SIGCONT)
    replicas.confirm_sync(sync, settings(), replicas.epoch_sync(sync, settings()))
    asyncio.run(replicas.confirm(aioredis.Redis.from_url(url(replica)), settings(0), ""))  # none


def test_writes_made_on_another_primary_are_never_confirmed(
    nodes: tuple[Node, Node], redis_server: str
) -> None:
    """After a failover a confirmation would run on the new primary, whose replicas never had
    what the old one took: the primary's replication id tells them apart."""
    primary, _ = nodes
    old_primary = connect.sync_client_from_url(redis_server)  # another server than the pair's
    epoch = replicas.epoch_sync(old_primary, settings())
    old_primary.set("taken-by-the-old-primary", "1")
    with pytest.raises(replicas.NotReplicated, match="the primary changed"):
        # The pair's primary has its replica online: WAIT alone would count it.
        replicas.confirm_sync(connect.sync_client_from_url(url(primary)), settings(), epoch)


def test_a_group_commit_on_a_demoted_node_sends_again_to_the_primary_named_now(
    nodes: tuple[Node, Node],
) -> None:
    primary, replica = nodes
    named = [replica.port, primary.port]  # the sentinels named the old primary, then the new

    async def locate() -> tuple[str, int]:
        return "127.0.0.1", named.pop(0) if len(named) > 1 else named[0]

    async def call() -> object:
        client = aioredis.Redis.from_url(url(primary))
        commit = GroupCommit(client, SCRIPT)
        assert commit.target is not None
        commit.target = Target(password=PASSWORD, locate=locate)
        try:
            return await commit.call(["moved"])
        finally:
            commit.close()
            await client.aclose()

    assert asyncio.run(call()) == 1  # READONLY from the replica, then run once on the primary
    assert primary.client().get("runs:moved") == b"1"


def test_the_group_commit_batches_over_sentinel_on_its_own_connection() -> None:
    configured = Settings(redis_sentinels="127.0.0.1:26379", redis_sentinel_master="faxrelay")
    target = Target.of(connect.async_client(configured))
    assert target is not None and target.locate is not None  # not redis-py's one-by-one path


def test_sentinel_settings_are_checked() -> None:
    ok = Settings(
        redis_sentinels="sentinel-1:26379, [::1]:26380",
        redis_sentinel_master="faxrelay",
        redis_password="hunter2-b7",
    )
    assert ok.sentinel_addresses == (("sentinel-1", 26379), ("::1", 26380))
    assert "hunter2-b7" not in repr(ok)
    bad = {
        "not host:port": {"redis_sentinels": "sentinel-1", "redis_sentinel_master": "m"},
        "required with redis_sentinels": {"redis_sentinels": "s:26379"},
        "required with redis_sentinel_master": {"redis_sentinel_master": "m"},
        "not both": {
            "redis_url": "redis://r:6379/0",
            "redis_sentinels": "s:26379",
            "redis_sentinel_master": "m",
        },
        "greater than or equal to 0": {"redis_min_replicas": -1},
    }
    for expected, values in bad.items():
        with pytest.raises(ValidationError, match=expected):
            Settings(**values)  # type: ignore[arg-type]


def test_celery_uses_the_sentinel_transport_with_the_password_kept_out_of_logs() -> None:
    configured = Settings(
        redis_sentinels="s1:26379,s2:26379",
        redis_sentinel_master="faxrelay",
        redis_password="p@ss/word",
    )
    urls = connect.celery_urls(configured)
    assert (
        urls["broker_url"]
        == urls["result_backend"]
        == ("sentinel://:p%40ss%2Fword@s1:26379/0;sentinel://:p%40ss%2Fword@s2:26379/0")
    )
    options = connect.broker_transport_options(configured)
    assert options["master_name"] == "faxrelay"
    assert options["sentinel_kwargs"]["password"] == "p@ss/word"  # the sentinels' own AUTH
    assert urls["result_backend_transport_options"] == options
    assert "p@ss" not in connect.describe(configured)
