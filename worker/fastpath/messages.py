"""Celery protocol-2 messages built by hand, for the web app to LPUSH inside its own Redis script.

Celery's publisher is synchronous (about 1 ms a message, most of it a Redis round trip) and would
block the event loop; ``app.amqp.as_task_v2`` alone costs ~170 µs. This fills the same envelope the
Redis transport writes (headers, base64 JSON body, properties) directly, so the webhook's record and
its wake-up are written in one atomic script call. A worker consumes these like any other message.
"""

from __future__ import annotations

import binascii
import functools
import operator
import os
import re
import socket
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import orjson

from worker.fastpath import ids

_ORIGIN = f"{os.getpid()}@{socket.gethostname()}"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
# Where a message's own values go in its skeleton (NUL never occurs in a task name or queue).
_ID, _BODY, _ARGSREPR, _KWARGSREPR = (
    f"\x00{name}\x00" for name in ("id", "body", "args", "kwargs")
)


@functools.lru_cache(maxsize=64)
def _skeleton(task: str, queue: str) -> str:
    """The message for ``task`` on ``queue`` as JSON text, with placeholders for its own values."""
    envelope = {
        "body": _BODY,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": task,
            "id": _ID,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": _ID,
            "parent_id": None,
            "argsrepr": _ARGSREPR,
            "kwargsrepr": _KWARGSREPR,
            "origin": _ORIGIN,
            "ignore_result": True,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": _ID,
            "reply_to": "",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": _ID,  # unique per message, as kombu's own tags are
        },
    }
    return orjson.dumps(envelope).decode()


def _quoted(value: str) -> str:
    return orjson.dumps(value).decode()


class _Template(NamedTuple):
    """The skeleton cut at its placeholders: ``head``, then each placeholder's value followed by
    the text after it (``tails``); ``pick`` takes the values in placeholder order."""

    head: str
    tails: tuple[str, ...]
    pick: Callable[[tuple[str, str, str, str]], tuple[str, ...]]


_PLACES = (_ID, _BODY, _ARGSREPR, _KWARGSREPR)  # the values' order in task_message


@functools.lru_cache(maxsize=64)
def _template(task: str, queue: str) -> _Template:
    quoted = {_quoted(place): n for n, place in enumerate(_PLACES)}
    pattern = re.compile("|".join(re.escape(q) for q in quoted))
    skeleton = _skeleton(task, queue)
    texts = pattern.split(skeleton)
    order = [quoted[m] for m in pattern.findall(skeleton)]
    return _Template(texts[0], tuple(texts[1:]), operator.itemgetter(*order))


def task_message(
    task: str,
    queue: str,
    args: list[Any] | tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    task_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> str:
    """The JSON text the kombu Redis transport stores on a queue's list for one task.

    Joined from a skeleton cut once per task and queue, in C-level calls: a fraction of the cost of
    building and serialising the whole envelope on every webhook. ``headers``: more message
    headers (the trace context, ``config.tracing``), which the task finds on ``task.request``.
    """
    kwargs = kwargs or {}
    body = orjson.dumps([list(args), kwargs, _EMBED])
    values = (
        _quoted(task_id) if task_id else f'"{ids.uuid4()}"',  # hex and dashes: no escaping
        f'"{binascii.b2a_base64(body, newline=False).decode()}"',  # base64: no escaping
        _quoted(repr(list(args))),
        _quoted(repr(kwargs)) if kwargs else '"{}"',
    )
    head, tails, pick = _template(task, queue)
    message = head + "".join(map(operator.add, pick(values), tails))
    if headers:
        # The headers object opens the skeleton's only '"headers":{' (the body before it is
        # base64, and inside a JSON string a quote would be escaped).
        extra = orjson.dumps(dict(headers)).decode()[1:-1]
        message = message.replace('"headers":{', '"headers":{' + extra + ",", 1)
    return message
