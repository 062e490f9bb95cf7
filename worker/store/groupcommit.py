"""Group commit: one Lua script called by many concurrent callers over one pipelined connection.

The calls made while the event loop runs one batch of ready tasks go out together as one write of
packed ``EVALSHA`` commands, at once: a batch does not wait for the answers of batches already in
flight, and a long batch is cut every ``MAX_BATCH`` calls. So Redis executes the first webhooks of
a burst while the web process is still parsing the last ones, instead of both taking turns. One
reader task hands each answer to its caller, in order. Nobody waits for a batch to fill: a lone
call costs one round trip.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import hiredis
import redis.asyncio as aioredis
from hiredis import pack_command
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Args = Sequence[str | int | bytes]

# Calls per write: small enough that Redis starts on a burst early, large enough that the
# per-write costs (a system call each side) stay shared.
MAX_BATCH = 8
# The failures after which a call is worth sending again on a fresh connection.
RETRYABLE = (RedisConnectionError, RedisTimeoutError, OSError)


@dataclass(slots=True)
class _Call:
    command: bytes  # the packed EVALSHA
    future: asyncio.Future[Any]
    attempts: int = 0  # sends after a failed connection
    reloads: int = 0  # sends after NOSCRIPT


@dataclass(eq=False)
class _Link:
    """One connection and the calls sent on it whose answers have not been read yet.

    ``None`` in ``in_flight`` stands for the answer to a ``SCRIPT LOAD``, which nobody waits for.
    """

    connection: Any
    in_flight: deque[_Call | None] = field(default_factory=deque)
    reader: asyncio.Task[None] | None = None


class GroupCommit:
    """Runs ``script`` for concurrent callers: ``await commit.call(args)`` is its answer."""

    def __init__(self, client: aioredis.Redis, script: str, *, timeout: float = 5.0) -> None:
        self.client = client
        self.script = script
        self.sha = hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 - Redis names scripts so
        self.timeout = timeout
        self.pending: list[_Call] = []
        self.link: _Link | None = None
        self.reload = True  # the next write starts with SCRIPT LOAD (so the first one does)
        self.sending = False
        # Referenced here: the loop keeps only weak references to tasks (ruff RUF006).
        self.sender: asyncio.Task[None] | None = None
        self.closing: set[asyncio.Task[None]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None

    async def call(self, args: Args) -> Any:
        # Packed now, so that arguments Redis cannot take fail this call alone.
        command = pack_command(("EVALSHA", self.sha, 0, *args))  # type: ignore[arg-type]
        loop = self.loop
        if loop is None:
            # Bound to the loop of its first call, as the client's connections are. Asking
            # asyncio for the running loop on every call costs a system call (getpid) each time.
            loop = self.loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue(_Call(command, future))
        return await future

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
                try:
                    await link.connection._writer.drain()  # back-pressure only; rarely waits
                except Exception as exc:
                    self._drop(link, exc)
        finally:
            self.sending = False

    async def _connect(self) -> _Link:
        connection = await self.client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        if getattr(connection, "_reader", None) is None or connection._writer is None:
            await self.client.connection_pool.release(connection)
            raise RedisConnectionError("redis-py connection without its stream reader and writer")
        self.link = _Link(connection)
        return self.link

    def _write(self, link: _Link) -> None:
        calls, self.pending = self.pending, []
        parts = []
        if self.reload:
            self.reload = False
            parts.append(pack_command(("SCRIPT", "LOAD", self.script)))  # type: ignore[arg-type]
            link.in_flight.append(None)
        parts.extend(call.command for call in calls)
        link.in_flight.extend(calls)
        link.connection._writer.write(b"".join(parts))
        if link.reader is None:
            link.reader = (self.loop or asyncio.get_running_loop()).create_task(self._read(link))

    async def _read(self, link: _Link) -> None:
        """Hands out the answers on ``link`` until none is awaited; drops the link on failure."""
        stream: asyncio.StreamReader = link.connection._reader
        parser = hiredis.Reader()
        try:
            while link.in_flight:
                async with asyncio.timeout(self.timeout):
                    data = await stream.read(65536)
                if not data:
                    raise RedisConnectionError("Connection closed by server.")
                parser.feed(data)
                while link.in_flight and (answer := parser.gets()) is not False:
                    call = link.in_flight.popleft()
                    if call is not None:
                        self._settle(call, answer)
        except Exception as exc:
            self._drop(link, exc)
        finally:
            link.reader = None

    def _settle(self, call: _Call, answer: Any) -> None:
        if not isinstance(answer, hiredis.ReplyError):
            if not call.future.done():
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

    def _drop(self, link: _Link, exc: Exception) -> None:
        """The connection failed: unanswered calls go again once on a new one, or fail."""
        if self.link is link:
            self.link = None
        calls = [call for call in link.in_flight if call is not None]
        link.in_flight.clear()
        if link.reader is not None and link.reader is not asyncio.current_task():
            link.reader.cancel()
        for call in calls:
            if isinstance(exc, RETRYABLE) and call.attempts == 0:
                call.attempts += 1
                self._queue(call)
            else:
                _fail(call, exc)
        self.reload = True  # a new connection may well be to a restarted Redis
        task = asyncio.get_running_loop().create_task(self._discard(link.connection))
        self.closing.add(task)
        task.add_done_callback(self.closing.discard)

    async def _discard(self, connection: Any) -> None:
        with contextlib.suppress(Exception):
            await connection.disconnect()
        with contextlib.suppress(Exception):
            await self.client.connection_pool.release(connection)


def _fail(call: _Call, exc: BaseException) -> None:
    if not call.future.done():
        call.future.set_exception(exc)
