"""Group commit: one Lua script called by many concurrent callers over one pipelined connection.

The calls made while the event loop runs one batch of ready tasks go out together as one write of
packed ``EVALSHA`` commands, at once: a batch does not wait for the answers of batches already in
flight, and a long batch is cut every ``MAX_BATCH`` calls. So Redis executes the first webhooks of
a burst while the web process is still parsing the last ones, instead of both taking turns. The
connection's protocol hands each answer to its caller, in order, as the bytes arrive. Nobody waits
for a batch to fill: a lone call costs one round trip.

Each caller gets its own script's answer, or error, only after Redis has run it::

    Exception
     ├── redis ConnectionError, TimeoutError, OSError   the connection failed: every call not yet
     │                                                   answered is sent once more on a fresh
     │                                                   connection (the script must be
     │                                                   idempotent), and fails if that fails too
     └── redis ResponseError                            that call's own error answer
          └── NoScriptError                              never seen by callers: Redis restarted or
                                                         was flushed, so the script is loaded again
                                                         and the call sent again

The connection is our own, built with public APIs only: an asyncio ``Protocol`` on a socket opened
by the event loop, commands packed by hiredis' ``pack_command`` and answers parsed by its
``Reader``. From the redis-py client it takes only what its public API says: where to connect
(its pool's ``connection_kwargs``: host and port or Unix socket path, username, password, db, client
name, connect timeout; for a Sentinel client, the primary's address as its pool's
``get_master_address()`` asks the sentinels for it, at every new connection) and how to retry a
failed connect (``get_retry()``). A client whose connections are anything else (TLS, a credential
provider, a custom connection class) runs the script through redis-py's own ``register_script``
instead: correct, one round trip per call, no batching.

After a failover (Sentinel) the connection to the old primary fails, or that node answers
``READONLY`` once it is back as a replica: either way the connection is dropped and its unanswered
calls are sent once more on a new one, to the primary the sentinels name now.

With ``min_replicas`` (``FAXRELAY_REDIS_MIN_REPLICAS``, ``worker.store.replicas``) callers get their
answers only once a ``WAIT`` sent after their scripts counts enough replicas (``NotReplicated`` if
not in time). One ``WAIT`` at a time covers every call written before it: a replica round trip per
round of batches, not per call or per batch.

Cost, measured against the version this replaced (which wrote to the private stream reader and
writer of a connection taken from redis-py's pool, and broke with redis-py 5.0's asyncio pool):
``python -m bench.ingest --rounds 2 --seconds 8``, five runs of each version, alternating, in one
session on a shared 2-core machine. Ratio ours/bare, median: 0.273 before, 0.293 after (ours:
4,504 and 5,164 requests/s); no loss. In process, 32 callers in a loop on uvloop spent about
1.5 µs less CPU per call: the protocol settles answers in its data callback, where the stream
version woke a reader task.

Size: one concept, the batching connection with its reader, resend and reconnect rules, which
only make sense together.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedConnection
from redis.exceptions import AuthenticationError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker.store import replicas

Args = Sequence[str | int | bytes]
# Asks the sentinels for the primary's (host, port).
Locator = Callable[[], Awaitable[tuple[str, int]]]

# Calls per write: small enough that Redis starts on a burst early, large enough that the
# per-write costs (a system call each side) stay shared.
MAX_BATCH = 8
# The failures after which a call is worth sending again on a fresh connection.
RETRYABLE = (RedisConnectionError, RedisTimeoutError, OSError)
# The connection kinds the own connection can stand in for: plain TCP and Unix sockets.
OWN_CONNECTION_CLASSES = (aioredis.Connection, aioredis.UnixDomainSocketConnection)
# The error a replica answers a write with (a failover demoted the node we are connected to).
NOT_PRIMARY = "READONLY"


def pack(*parts: str | int | bytes) -> bytes:
    """One command in the Redis protocol."""
    # hiredis' stub types the argument as a 1-tuple; any tuple of these is accepted.
    packed: bytes = hiredis.pack_command(parts)  # type: ignore[arg-type]
    return packed


@dataclass(frozen=True)
class Target:
    """Where and how to open a connection, as the redis-py client was configured."""

    host: str = "localhost"
    port: int = 6379
    path: str = ""  # a Unix socket instead of host and port
    username: str = ""
    password: str = field(default="", repr=False)  # kept out of logs and test reports
    db: int = 0
    client_name: str = ""
    connect_timeout: float | None = None
    keepalive: bool = False
    # Sentinel: where the primary is now, asked at each connect (host and port are unused then).
    locate: Locator | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, client: aioredis.Redis) -> Target | None:
        """The client's connection settings; None when its connections are not plain ones."""
        pool = client.connection_pool
        locate: Locator | None = None
        if isinstance(pool, SentinelConnectionPool) and pool.is_master:
            if pool.connection_class is not SentinelManagedConnection:
                return None  # Sentinel with TLS: left to redis-py
            locate = pool.get_master_address
        elif pool.connection_class not in OWN_CONNECTION_CLASSES:
            return None  # TLS, custom: left to redis-py
        # What the client's get_connection_kwargs() returns, read where it is typed.
        kwargs: dict[str, Any] = client.connection_pool.connection_kwargs
        if kwargs.get("credential_provider") is not None:
            return None  # credentials that may change: redis-py asks for them at each connect
        options = kwargs.get("socket_keepalive_options")
        if isinstance(options, dict) and options:
            return None  # TCP keepalive tuning: left to redis-py
        timeout = kwargs.get("socket_connect_timeout") or kwargs.get("socket_timeout")
        return cls(
            host=str(kwargs.get("host") or "localhost"),
            port=int(kwargs.get("port") or 6379),
            path=str(kwargs.get("path") or "")
            if client.connection_pool.connection_class is aioredis.UnixDomainSocketConnection
            else "",
            username=str(kwargs.get("username") or ""),
            password=str(kwargs.get("password") or ""),
            db=int(kwargs.get("db") or 0),
            client_name=str(kwargs.get("client_name") or ""),
            connect_timeout=float(timeout) if timeout else None,
            keepalive=bool(kwargs.get("socket_keepalive")),
            locate=locate,
        )

    def handshake(self) -> list[tuple[str, bytes]]:
        """The commands a new connection sends before any call: (name, packed command)."""
        commands = []
        if self.password:
            auth = (self.username, self.password) if self.username else (self.password,)
            commands.append(("AUTH", pack("AUTH", *auth)))
        if self.db:
            commands.append(("SELECT", pack("SELECT", self.db)))
        if self.client_name:
            commands.append(("CLIENT SETNAME", pack("CLIENT", "SETNAME", self.client_name)))
        return commands

    def where(self) -> str:
        if self.locate is not None:
            return "the primary the sentinels name"
        return self.path or f"{self.host}:{self.port}"

    async def address(self) -> tuple[str, int]:
        """(host, port) to connect to now."""
        if self.locate is not None:
            host, port = await self.locate()
            return str(host), int(port)
        return self.host, self.port


@dataclass(slots=True)
class _Call:
    command: bytes  # the packed EVALSHA
    future: asyncio.Future[Any]
    attempts: int = 0  # sends after a failed connection
    reloads: int = 0  # sends after NOSCRIPT
    replicated: bool = False  # its answer waits for a WAIT (min_replicas; not the handshake's)
    wait: _Wait | None = None  # the WAIT that covers it, once one was sent after it
    held: bool = False  # answered, the answer held until ``wait`` answers
    answer: Any = None


@dataclass(slots=True)
class _Wait:
    """The ``WAIT`` that ends a batch: its calls' answers are held until it answers."""

    calls: list[_Call]


class _Link(asyncio.Protocol):
    """One connection and the calls sent on it whose answers have not come yet.

    ``None`` in ``in_flight`` stands for the answer to a ``SCRIPT LOAD``, which nobody waits for;
    a ``_Wait`` for the answer to a ``WAIT`` (min_replicas). At most one ``WAIT`` is in flight
    (``waiting``); the calls written meanwhile (``unwaited``) wait for the next one.
    """

    def __init__(self, commit: GroupCommit, loop: asyncio.AbstractEventLoop) -> None:
        self.commit = commit
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = hiredis.Reader()
        self.in_flight: deque[_Call | _Wait | None] = deque()
        self.waiting: _Wait | None = None
        self.unwaited: list[_Call] = []
        self.closed = False
        self.drained: asyncio.Future[None] | None = None  # set while writing is paused
        # Timeouts: answers owed and none came for ``commit.timeout`` seconds. One timer at a
        # time, checking the time of the last progress, instead of a timer per read.
        self.progress = 0.0
        self.timer: asyncio.TimerHandle | None = None

    # --- asyncio's side ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's do not subclass asyncio.Transport, but are one).
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.commit.target is not None and self.commit.target.keepalive:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def data_received(self, data: bytes) -> None:
        self.progress = self.loop.time()
        try:
            self.parser.feed(data)
            while self.in_flight and (answer := self.parser.gets()) is not False:
                entry = self.in_flight.popleft()
                if entry is None:
                    continue
                if type(answer) is hiredis.ReplyError and str(answer).startswith(NOT_PRIMARY):
                    # A failover made this node a replica: every call goes again, to the primary
                    # the sentinels name now. (A WAIT refused on a replica starts with ERR.)
                    self.in_flight.appendleft(entry)
                    self.commit._drop(self, RedisConnectionError(f"not the primary: {answer}"))
                    return
                if isinstance(entry, _Wait):
                    self.commit._replicated(self, entry, answer)
                else:
                    self.commit._settle(entry, answer)
        except Exception as exc:  # a protocol error: nothing more on this link can be trusted
            self.commit._drop(self, RedisConnectionError(f"Redis protocol error: {exc}"))

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.commit._drop(self, exc or RedisConnectionError("Connection closed by server."))

    def pause_writing(self) -> None:
        if self.drained is None:
            self.drained = self.loop.create_future()

    def resume_writing(self) -> None:
        self._release_writer()

    # --- ours -------------------------------------------------------------------------------------
    def send(self, data: bytes, calls: list[_Call | _Wait | None]) -> None:
        if not self.in_flight:
            self.progress = self.loop.time()
            if self.timer is None:
                self.timer = self.loop.call_later(self.commit.read_timeout, self._check)
        self.in_flight.extend(calls)
        if self.transport is None or self.closed:
            raise RedisConnectionError("Connection closed.")
        self.transport.write(data)

    def _check(self) -> None:
        self.timer = None
        if self.closed or not self.in_flight:
            return
        left = self.progress + self.commit.read_timeout - self.loop.time()
        if left > 0:
            self.timer = self.loop.call_later(left, self._check)
        else:
            self.commit._drop(self, RedisTimeoutError("Timeout reading from Redis"))

    def close(self) -> None:
        """Abort the connection (its unanswered calls are the caller's to settle)."""
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._release_writer()
        if self.transport is not None:
            self.transport.abort()

    def _release_writer(self) -> None:
        drained, self.drained = self.drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)


class GroupCommit:
    """Runs ``script`` for concurrent callers: ``await commit.call(args)`` is its answer.

    ``min_replicas``: answers only once that many replicas have the write (``WAIT``, at most
    ``wait_timeout`` seconds; ``replicas.NotReplicated`` otherwise).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        script: str,
        *,
        timeout: float = 5.0,
        min_replicas: int = 0,
        wait_timeout: float = 1.0,
    ) -> None:
        self.client = client
        self.script = script
        self.sha = hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 - Redis names scripts so
        self.timeout = timeout
        self.min_replicas = min_replicas
        self.wait_timeout = wait_timeout
        self.wait_command = pack("WAIT", *replicas.wait_args(min_replicas, wait_timeout))
        # How long answers may be owed with none coming: a WAIT may hold them for its timeout.
        self.read_timeout = timeout + (wait_timeout if min_replicas else 0.0)
        self.target = Target.of(client)
        retry = client.get_retry()
        self.retry = retry if isinstance(retry, Retry) else None  # None: connect once
        # Clients the own connection cannot stand in for run the script through redis-py.
        self.fallback = client.register_script(script) if self.target is None else None
        self.pending: list[_Call] = []
        self.link: _Link | None = None
        self.reload = True  # the next write starts with SCRIPT LOAD (so the first one does)
        self.sending = False
        # Referenced here: the loop keeps only weak references to tasks (ruff RUF006).
        self.sender: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def call(self, args: Args) -> Any:
        if self.fallback is not None:
            return await self._call_through_redis_py(args)
        # Packed now, so that arguments Redis cannot take fail this call alone.
        command = pack("EVALSHA", self.sha, 0, *args)
        loop = self.loop
        if loop is None:
            # Bound to the loop of its first call, as its connection is. Asking asyncio for the
            # running loop on every call costs a system call (getpid) each time.
            loop = self.loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue(_Call(command, future))
        return await future

    async def _call_through_redis_py(self, args: Args) -> Any:
        assert self.fallback is not None
        if not self.min_replicas:
            return await self.fallback(args=list(args))
        pipe = self.client.pipeline(transaction=False)  # one connection: WAIT counts its writes
        await self.fallback(args=list(args), client=pipe)
        pipe.wait(*replicas.wait_args(self.min_replicas, self.wait_timeout))
        answer, confirmed = await pipe.execute()
        replicas.check(confirmed, self.min_replicas, self.wait_timeout)
        return answer

    def close(self) -> None:
        """Close the connection; calls not answered yet fail."""
        link = self.link
        if link is not None:
            self._drop(link, RedisConnectionError("group commit closed"), resend=False)

    def _queue(self, call: _Call) -> None:
        self.pending.append(call)
        if len(self.pending) >= MAX_BATCH and self.link is not None:
            self._write(self.link)  # a burst: let Redis start on it now
        elif not self.sending:
            # After the tasks already made ready: they join this batch.
            self.sending = True
            self.sender = (self.loop or asyncio.get_running_loop()).create_task(self._send())

    async def _send(self) -> None:
        try:
            while self.pending:
                link = self.link
                if link is None:
                    try:
                        link = await self._connect()
                    except Exception as exc:  # Redis down: the waiting calls hear of it
                        calls, self.pending = self.pending, []
                        for call in calls:
                            _fail(call, exc)
                        return
                self._write(link)
                if link.drained is not None:
                    await link.drained  # back-pressure only; rarely waits
        finally:
            self.sending = False

    async def _connect(self) -> _Link:
        if self.retry is None:
            link = await self._open()
        else:
            link = await self.retry.call_with_retry(self._open, _ignore)
        self.link = link
        self.reload = True
        return link

    async def _open(self) -> _Link:
        """A new connection, its handshake (AUTH, SELECT, CLIENT SETNAME) answered."""
        target = self.target
        assert target is not None
        loop = self.loop or asyncio.get_running_loop()
        link = _Link(self, loop)
        where = target.where()
        try:
            async with asyncio.timeout(target.connect_timeout):
                if target.path:
                    await loop.create_unix_connection(lambda: link, target.path)
                else:
                    host, port = await target.address()  # Sentinel: asks the sentinels
                    where = f"{host}:{port}"
                    await loop.create_connection(lambda: link, host, port)
                await self._handshake(link, target)
        except BaseException as exc:
            link.closed = True  # its connection_lost must not touch the calls waiting for it
            link.close()
            if isinstance(exc, TimeoutError):
                raise RedisTimeoutError(f"Timeout connecting to {where}") from exc
            if isinstance(exc, OSError):
                raise RedisConnectionError(f"Error connecting to {where}: {exc}") from exc
            raise
        return link

    async def _handshake(self, link: _Link, target: Target) -> None:
        commands = target.handshake()
        if not commands:
            return
        loop = link.loop
        # attempts=1: a handshake command is never sent again on another connection.
        calls = [_Call(packed, loop.create_future(), attempts=1) for _, packed in commands]
        link.send(b"".join(call.command for call in calls), list(calls))
        for (name, _), call in zip(commands, calls, strict=True):
            try:
                await call.future
            except ResponseError as exc:
                if name == "AUTH":
                    raise AuthenticationError(str(exc)) from exc
                raise RedisConnectionError(f"Redis refused {name}: {exc}") from exc

    def _write(self, link: _Link) -> None:
        calls, self.pending = self.pending, []
        parts = []
        sent: list[_Call | _Wait | None] = []
        if self.reload:
            self.reload = False
            parts.append(pack("SCRIPT", "LOAD", self.script))
            sent.append(None)
        parts.extend(call.command for call in calls)
        sent.extend(calls)
        if self.min_replicas:
            for call in calls:
                call.replicated = True
            link.unwaited.extend(calls)
            if link.waiting is None:
                self._add_wait(link, parts, sent)
        try:
            link.send(b"".join(parts), sent)
        except Exception as exc:  # the calls are in flight on the link: sent again, or failed
            self._drop(link, exc)

    def _add_wait(self, link: _Link, parts: list[bytes], sent: list[_Call | _Wait | None]) -> None:
        """A WAIT after the calls written since the last one, for all of them at once.

        One WAIT at a time: Redis runs nothing else of this connection's while one blocks, so a
        WAIT per batch would hold each batch behind the previous one's replica round trip. One
        per round lets a round's WAIT cover however many calls came while the last one waited."""
        wait = _Wait(link.unwaited)
        link.unwaited = []
        for call in wait.calls:
            call.wait = wait
        link.waiting = wait
        parts.append(self.wait_command)
        sent.append(wait)

    def _settle(self, call: _Call, answer: Any) -> None:
        if not isinstance(answer, hiredis.ReplyError):
            if call.replicated:
                call.held, call.answer = True, answer  # until a WAIT after it answers
            elif not call.future.done():
                call.future.set_result(answer)
            return
        message = str(answer)
        if message.startswith("NOSCRIPT") and call.reloads == 0:
            call.reloads += 1
            self.reload = True
            self._queue(call)
        else:
            error = (
                NoScriptError(message) if message.startswith("NOSCRIPT") else ResponseError(message)
            )
            _fail(call, error)

    def _replicated(self, link: _Link, wait: _Wait, answer: Any) -> None:
        """A WAIT answered: the held answers of the calls before it go to their callers, or
        NotReplicated; the calls written since get the next WAIT."""
        if isinstance(answer, hiredis.ReplyError):
            link.in_flight.appendleft(wait)  # its held calls go again on a new connection
            self._drop(link, RedisConnectionError(f"WAIT refused: {answer}"))
            return
        if link.waiting is wait:
            link.waiting = None
        confirmed = answer if isinstance(answer, int) else 0
        short = (
            replicas.NotReplicated(self.min_replicas, confirmed, self.wait_timeout)
            if confirmed < self.min_replicas
            else None
        )
        for call in wait.calls:
            if call.wait is not wait or not call.held:
                continue  # failed, or sent again (NOSCRIPT) in a later batch
            call.wait, call.held = None, False
            if short is not None:
                _fail(call, short)
            elif not call.future.done():
                call.future.set_result(call.answer)
        if link.unwaited and not link.closed:
            parts: list[bytes] = []
            sent: list[_Call | _Wait | None] = []
            self._add_wait(link, parts, sent)
            try:
                link.send(b"".join(parts), sent)
            except Exception as exc:
                self._drop(link, exc)

    def _drop(self, link: _Link, exc: BaseException, *, resend: bool = True) -> None:
        """The connection failed: unanswered calls go again once on a new one, or fail.

        Calls whose answers were held for a WAIT that did not answer count as unanswered."""
        if self.link is link:
            self.link = None
            self.reload = True  # a new connection may well be to a restarted Redis
        # Unanswered, or answered and held for a WAIT that has not answered (or not been sent).
        calls: list[_Call] = [c for c in link.unwaited if c.held]
        for entry in link.in_flight:
            if isinstance(entry, _Wait):
                calls.extend(c for c in entry.calls if c.wait is entry and c.held)
            elif entry is not None:
                calls.append(entry)
        for call in calls:
            call.wait, call.held, call.answer = None, False, None
        link.in_flight.clear()
        link.unwaited, link.waiting = [], None
        if not link.closed:
            link.close()
        for call in calls:
            if resend and isinstance(exc, RETRYABLE) and call.attempts == 0:
                call.attempts += 1
                self._queue(call)
            else:
                _fail(call, exc)


async def _ignore(error: Exception) -> None:
    """A failed connect leaves nothing to clean up: its link is closed already."""


def _fail(call: _Call, exc: BaseException) -> None:
    if not call.future.done():
        call.future.set_exception(exc)
