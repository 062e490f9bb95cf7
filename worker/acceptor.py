"""The acceptor: consumes the public ``celery`` queue, where other services publish
``faxrelay.send_fax`` (DESIGN.md "Queue-driven sends"), and never loses one of its messages.

Why it is not a Celery worker: until faxrelay has made the record, the message is the only copy of
another service's send. kombu's Redis transport takes a message with BRPOP and only afterwards
records it as unacknowledged, so a consumer killed between the two loses the message for good;
and one that did reach kombu's unacked hash waits out the visibility timeout (15 minutes) after a
crash. Here a message is in Redis at every moment, and each move is one command or script (the
Redis "reliable queue" pattern):

1. ``BLMOVE celery fr:accept:{node}:taking RIGHT LEFT``: the message moves into this node's own
   processing list (kombu publishes with LPUSH and consumes from the right). Messages of a
   priority other than 0 are in kombu's other lists of the queue (``queue_lists``); they are
   moved the same way, without blocking, before the node blocks on the main one.
2. The message (Celery's message protocol v2, JSON) is run through ``queued.send_queued``, the
   plain function the Celery task runs too; its idempotency key defaults to the task id, so
   handling a message again after a crash finds the first record and never makes a second fax.
3. Its result goes to Celery's result backend (``app.backend.store_result``: the fax id, or
   FAILURE with the reason; kept ``result_expires``, 24 h), so ``send_task(...).get()`` works.
4. Only then is the message removed from the processing list (LREM).

A crash anywhere leaves the message in the processing list: the node handles it again first thing
when its supervisor restarts it (node names are stable: ``acceptor@{hostname}`` unless
``--node`` says otherwise), and a node whose heartbeat (``fr:accept:{node}:alive``) has lapsed has
its list moved back onto the queue by any live node (``TAKE_OVER``). S3, Redis or a document URL
that is down is not the sender's mistake: the message moves (one script, ``DEFER``) to the zset
``fr:accept:later`` with its attempt count, and back onto the queue when due (``RELEASE``),
following ``retry.QUEUED_SEND``; when its attempts run out the result is a FAILURE naming the
outage. A message that is not ``faxrelay.send_fax`` is not faxrelay's: like a Celery worker
meeting an unregistered task, the acceptor stores a FAILURE (``NotRegistered``) and drops it,
logged; so does a message it cannot read (not JSON, another serializer, compressed).

One message at a time per process: accepting takes tens of milliseconds (the document to S3,
the record to Redis); run more processes, each with its own node name, for more.

    python -m worker.acceptor [--node acceptor@%h]    # %h: this host's name
    python -m worker.acceptor --check [--node …]      # exit 0 if the node's heartbeat is alive
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
import time
import uuid
from types import FrameType
from typing import Any, cast

import redis
from celery import Celery, states
from celery.exceptions import NotRegistered, TaskRevokedError

from config import connect
from config.logging import TASK_ID, configure_logging
from config.queues import DEFAULT_QUEUE, SEND_FAX
from worker import metrics
from worker.pipeline.outbound import queued
from worker.retry import QUEUED_SEND, Backoff
from worker.runtime import Runtime, get_runtime
from worker.store import keys
from worker.taskmessage import BadMessage, Message, parse

log = logging.getLogger("faxrelay.acceptor")

# kombu's Redis transport puts a message of priority p on "{queue}\x06\x16{step}" (the largest of
# its priority steps not above p; the queue's own name for step 0) and consumes them in this order.
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
# How long BLMOVE waits for a message: how often an idle node looks at the other priority lists,
# at the retries that are due and at its stop flag.
TAKE_TIMEOUT = 1
TAKE_OVER_EVERY = 5.0  # seconds between looks for dead nodes' lists
DECLARE_EVERY = 60.0  # seconds between re-declarations of the queue's binding
RELEASE_BATCH = 100  # retries moved back onto the queue per script call
# Redis (or the result backend) unreachable: the node waits this long before trying again.
RECONNECT = Backoff(first=0.5, cap=5.0)
DEFAULT_NODE = "acceptor@%h"

# KEYS: the node's processing list, fr:accept:later. ARGV: the message as taken, as kept, when
# due. Only a message still in the list is deferred: one that another node moved back onto the
# queue (this node's heartbeat had lapsed) is that node's now.
DEFER = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
  return 1
end
return 0
"""
# KEYS: fr:accept:later, the queue. ARGV: now, at most this many. The queue's right end is the
# next message taken.
RELEASE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, message in ipairs(due) do
  redis.call('ZREM', KEYS[1], message)
  redis.call('RPUSH', KEYS[2], message)
end
return #due
"""
# KEYS: a node's processing list, its heartbeat, the queue, fr:accept:nodes. ARGV: the node.
# Nothing happens while the node is alive; else its messages go back onto the queue (oldest taken
# next) and the node leaves the registry. Returns the messages moved, -1 for a live node.
TAKE_OVER = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local moved = 0
while redis.call('LMOVE', KEYS[1], KEYS[3], 'LEFT', 'RIGHT') do moved = moved + 1 end
redis.call('ZREM', KEYS[4], ARGV[1])
return moved
"""


def queue_lists(queue: str = DEFAULT_QUEUE) -> tuple[str, ...]:
    """The Redis lists of ``queue``, highest priority first, as kombu's transport names them."""
    return tuple(queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS)


def node_name(node: str = DEFAULT_NODE) -> str:
    """``node`` with ``%h`` replaced by this host's name (as ``celery worker -n`` does)."""
    return node.replace("%h", socket.gethostname())


def _raw(value: Any) -> bytes | None:
    """A reply of Redis as bytes (the client does not decode)."""
    return value.encode() if isinstance(value, str) else value


# --- the acceptor ------------------------------------------------------------------------------
class Acceptor:
    """One node: takes the queue's messages one at a time into its processing list."""

    def __init__(
        self,
        runtime: Runtime,
        app: Celery,
        node: str,
        client: redis.Redis | None = None,
        queue: str = DEFAULT_QUEUE,
    ) -> None:
        self.runtime = runtime
        self.app = app
        self.node = node
        self.queue = queue
        self.lists = queue_lists(queue)
        # Its own client: BLMOVE holds a connection while it waits.
        self.redis = client or connect.sync_client(runtime.settings)
        self.taking = keys.accept_taking_key(node)
        self.alive = keys.accept_alive_key(node)
        self.host = socket.gethostname()
        self.token = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.stopping = threading.Event()
        self._defer = self.redis.register_script(DEFER)
        self._release = self.redis.register_script(RELEASE)

    # --- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        """Until ``stop()``: claim the node, then take and handle messages; a Redis outage is
        waited out (the message in hand stays in the processing list and is handled again)."""
        self._resilient(self.claim)
        if self.stopping.is_set():
            return
        heartbeat = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
        heartbeat.start()
        log.info("acceptor %s consuming %s", self.node, self.queue)
        next_take_over = next_declare = 0.0
        failures = 0
        while not self.stopping.is_set():
            try:
                now = time.monotonic()
                if now >= next_declare:
                    self.declare()
                    next_declare = now + DECLARE_EVERY
                if now >= next_take_over:
                    self.take_over()
                    next_take_over = now + TAKE_OVER_EVERY
                self.release_due()
                raw = self.take()
                if raw is not None:
                    self.handle(raw)
                failures = 0
            except Exception as exc:  # Redis or the result backend down, or a bug: wait, again
                failures += 1
                delay = RECONNECT.delay(failures)
                if connect_error(exc):
                    log.warning("acceptor %s: %s; trying again in %.1f s", self.node, exc, delay)
                else:
                    log.exception("acceptor %s failed; trying again in %.1f s", self.node, delay)
                self.stopping.wait(delay)
        self._leave()
        heartbeat.join(5)

    def stop(self) -> None:
        """Stop after the message in hand (SIGTERM, SIGINT)."""
        self.stopping.set()

    def _resilient(self, step: Any) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                step()
                return
            except redis.RedisError as exc:
                failures += 1
                delay = RECONNECT.delay(failures)
                log.warning("acceptor %s: %s; trying again in %.1f s", self.node, exc, delay)
                self.stopping.wait(delay)

    # --- the node's liveness -----------------------------------------------------------------
    def claim(self) -> None:
        """Hold the node's heartbeat. One held by a process that is gone (this host, its pid
        dead or this process's own: a restarted container) is taken at once; one held by a live
        process waits until it lapses: two processes must never share a node name."""
        warned = False
        while not self.stopping.is_set():
            if self.redis.set(self.alive, self.token, nx=True, ex=keys.ACCEPT_ALIVE_TTL):
                break
            holder = _raw(self.redis.get(self.alive))
            if holder is not None and self._holder_gone(holder.decode()):
                self.redis.set(self.alive, self.token, ex=keys.ACCEPT_ALIVE_TTL)
                break
            if holder is not None and not warned:
                log.warning(
                    "acceptor node %s is held by %s; waiting for its heartbeat to lapse (give "
                    "each acceptor process its own --node)",
                    self.node,
                    holder.decode(),
                )
                warned = True
            self.stopping.wait(1.0)
        self.redis.zadd(keys.ACCEPT_NODES, {self.node: time.time()})

    def _holder_gone(self, holder: str) -> bool:
        host, _, pid_text = holder.rpartition(":")[0].rpartition(":")  # host:pid:token
        try:
            pid = int(pid_text)
        except ValueError:
            return False
        if host != self.host:
            return False
        if pid == os.getpid():
            return True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def _heartbeat(self) -> None:
        while not self.stopping.wait(keys.ACCEPT_ALIVE_TTL / 4):
            try:
                with self.redis.pipeline(transaction=False) as pipe:
                    pipe.set(self.alive, self.token, ex=keys.ACCEPT_ALIVE_TTL)
                    pipe.zadd(keys.ACCEPT_NODES, {self.node: time.time()})
                    pipe.execute()
            except redis.RedisError as exc:
                log.warning("acceptor %s: heartbeat not written: %s", self.node, exc)

    def _leave(self) -> None:
        """A clean stop: the heartbeat goes, so that the name is free at once; the node leaves
        the registry when its list is empty (it is, unless Redis failed mid-message)."""
        try:
            if self.redis.get(self.alive) == self.token.encode():
                self.redis.delete(self.alive)
            if not self.redis.exists(self.taking):
                self.redis.zrem(keys.ACCEPT_NODES, self.node)
        except redis.RedisError as exc:
            log.warning("acceptor %s: could not leave cleanly: %s", self.node, exc)

    def take_over(self) -> int:
        """Move the messages of nodes whose heartbeat has lapsed back onto the queue."""
        moved = 0
        for raw in self.redis.zrange(keys.ACCEPT_NODES, 0, -1):
            node = raw.decode() if isinstance(raw, bytes) else str(raw)
            if node == self.node:
                continue
            count = take_over_node(self.redis, node, self.queue)
            if count > 0:
                log.warning("acceptor %s: node %s is gone; %d message(s) queued again",
                            self.node, node, count)  # fmt: skip
                moved += count
        return moved

    def declare(self) -> None:
        """Declare the queue and its binding, as a Celery worker consuming it does: kombu's
        Redis transport routes a published message by that binding, and sends it nowhere useful
        without one."""
        with self.app.connection_for_write() as connection:
            self.app.amqp.queues[self.queue].bind(connection.default_channel).declare()

    # --- messages ----------------------------------------------------------------------------
    def take(self) -> bytes | None:
        """The next message, now in the processing list: first one a crash (or an outage) left
        there, then the queue's lists in priority order; None when none came within
        TAKE_TIMEOUT."""
        left = _raw(self.redis.lindex(self.taking, -1))
        if left is not None:
            return left
        for name in self.lists[1:]:
            moved = _raw(self.redis.lmove(name, self.taking, "RIGHT", "LEFT"))
            if moved is not None:
                return moved
        return _raw(self.redis.blmove(self.lists[0], self.taking, TAKE_TIMEOUT, "RIGHT", "LEFT"))

    def release_due(self) -> int:
        """Move the deferred messages that are due back onto the queue."""
        return int(
            self._release(keys=[keys.ACCEPT_LATER, self.queue], args=[time.time(), RELEASE_BATCH])
        )

    def handle(self, raw: bytes) -> None:
        """Handle one message of the processing list, and remove it from there (or defer it)."""
        try:
            message = parse(raw)
        except BadMessage as exc:
            log.error("acceptor %s: dropped a message: %s: %r", self.node, exc, raw[:200])
            if exc.task_id:
                self._store(exc.task_id, queued.SendRefused(f"bad message: {exc}"), states.FAILURE)
            self._done(raw)
            return
        token = TASK_ID.set(message.task_id)
        try:
            self._handle(message)
        finally:
            TASK_ID.reset(token)

    def _handle(self, message: Message) -> None:
        now = time.time()
        if message.task != SEND_FAX.task:
            log.error("acceptor %s: dropped task %s (%s): not faxrelay's",
                      self.node, message.task_id, message.task)  # fmt: skip
            self._store(message.task_id, NotRegistered(message.task), states.FAILURE)
            self._done(message.raw)
            return
        if message.expires is not None and message.expires <= now:
            log.warning("queued send %s expired unaccepted", message.task_id)
            self._store(message.task_id, TaskRevokedError("expired"), states.REVOKED)
            self._done(message.raw)
            return
        if message.eta is not None and message.eta > now:
            self._later(message, message.raw, message.eta)
            return
        try:
            call = queued.arguments(message.args, message.kwargs)
            fax_id = queued.send_queued(self.runtime, message.task_id, **call)
        except queued.SendRefused as exc:
            log.error("queued send %s refused: SendRefused: %s", message.task_id, exc)
            self._store(message.task_id, exc, states.FAILURE)
        except queued.SendDeferred as exc:
            self._retry(message, exc)
            return
        except Exception as exc:  # a bug: as a failed Celery task, never a redelivery loop
            log.exception("queued send %s failed", message.task_id)
            self._store(message.task_id, exc, states.FAILURE)
        else:
            self._store(message.task_id, fax_id, states.SUCCESS)
        self._done(message.raw)

    def _retry(self, message: Message, failure: Exception) -> None:
        attempt = message.retries + 1
        delay = queued.retry_delay(self.runtime, attempt)
        if delay is None:
            log.error("queued send %s given up after %d attempts: %s",
                      message.task_id, attempt, failure)  # fmt: skip
            reason = queued.SendUnavailable(f"503 {QUEUED_SEND.on_exhausted}: {failure}")
            self._store(message.task_id, reason, states.FAILURE)
            self._done(message.raw)
            return
        log.warning("queued send %s: %s; retry %d in %.1f s",
                    message.task_id, failure, attempt, delay)  # fmt: skip
        metrics.retry("queued_send", "transient")
        self._store(message.task_id, failure, states.RETRY)
        self._later(message, message.with_retries(attempt), time.time() + delay)

    def _later(self, message: Message, kept: bytes, due: float) -> None:
        self._defer(keys=[self.taking, keys.ACCEPT_LATER], args=[message.raw, kept, due])

    def _store(self, task_id: str, result: Any, state: str) -> None:
        self.app.backend.store_result(task_id, result, state)

    def _done(self, raw: bytes) -> None:
        self.redis.lrem(self.taking, 1, cast(str, raw))  # redis-py sends bytes as they are


def take_over_node(client: redis.Redis, node: str, queue: str = DEFAULT_QUEUE) -> int:
    """If ``node``'s heartbeat has lapsed, move its processing list back onto ``queue`` and
    forget the node: the messages moved, or -1 while the node is alive."""
    script = client.register_script(TAKE_OVER)
    keys_ = [keys.accept_taking_key(node), keys.accept_alive_key(node), queue, keys.ACCEPT_NODES]
    return int(script(keys=keys_, args=[node]))


def connect_error(exc: BaseException) -> bool:
    """Whether ``exc`` says Redis (the broker, the store or the result backend) is unreachable."""
    return isinstance(
        exc, redis.ConnectionError | redis.TimeoutError | redis.ReadOnlyError | OSError
    )


def alive(client: redis.Redis, node: str) -> bool:
    """Whether ``node`` holds its heartbeat (the container health check)."""
    return bool(client.exists(keys.accept_alive_key(node)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.acceptor",
        description="faxrelay's acceptor of queue-driven sends: consumes the celery queue, "
        "keeping each message in Redis until its send is recorded (worker/acceptor.py says how).",
    )
    parser.add_argument(
        "--node",
        default=DEFAULT_NODE,
        help="the node's name, stable across restarts (%%h: the host name; default %(default)s)",
    )
    parser.add_argument("--check", action="store_true", help="exit 0 if the node is alive")
    options = parser.parse_args(argv)
    node = node_name(options.node)
    configure_logging("acceptor")
    from config.celery_app import app  # the app's broker, result backend and result expiry

    runtime = get_runtime()
    if options.check:
        try:
            return 0 if alive(connect.sync_client(runtime.settings), node) else 1
        except redis.RedisError as exc:
            log.error("acceptor %s: cannot check its heartbeat: %s", node, exc)
            return 1
    acceptor = Acceptor(runtime, app, node)

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("acceptor %s stopping (signal %d) after the message in hand", node, signum)
        acceptor.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    acceptor.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
