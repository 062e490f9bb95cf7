"""The webhook intake's request reading: headers from the ASGI scope, the body under its cap."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from webhooks.bodies import BodyTooLarge, ClientLeft, read_capped, read_prefix
from webhooks.intake import decoded_headers


def test_decoded_headers_are_what_decoding_each_pair_gives() -> None:
    rng = random.Random(20261123)
    alphabet = [bytes([b]) for b in range(0x20, 0x100) if b != 0x7F] + [b"\t"]
    names = [b"host", b"content-type", b"content-length", b"authorization", b"x-a", b"x-b"]
    for _ in range(2000):
        raw = [
            (rng.choice(names), b"".join(rng.choices(alphabet, k=rng.randrange(0, 12))))
            for _ in range(rng.randrange(0, 6))
        ]
        expected = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw}
        assert decoded_headers(raw) == expected, raw


def _receiver(messages: list[dict[str, Any]]) -> Callable[[], Awaitable[dict[str, Any]]]:
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        return pending.pop(0)

    return receive


def _read(
    messages: list[dict[str, Any]], limit: int, headers: dict[str, str] | None = None
) -> bytes:
    return asyncio.run(read_capped(headers or {}, _receiver(messages), limit))


def test_body_in_one_message_or_in_chunks() -> None:
    assert _read([{"type": "http.request", "body": b"a=1"}], 10) == b"a=1"
    chunks = [{"type": "http.request", "body": b"ab", "more_body": True}] * 3
    assert _read([*chunks, {"type": "http.request", "body": b"c"}], 10) == b"abababc"
    assert _read([{"type": "http.request"}], 10) == b""


@pytest.mark.parametrize(
    ("messages", "headers"),
    [
        ([{"type": "http.request", "body": b"x" * 11}], {}),
        ([{"type": "http.request", "body": b"x" * 6, "more_body": True}] * 2, {}),
        ([], {"content-length": "11"}),  # refused before reading anything
    ],
)
def test_a_body_over_the_limit_is_refused(
    messages: list[dict[str, Any]], headers: dict[str, str]
) -> None:
    with pytest.raises(BodyTooLarge):
        _read(messages, 10, headers)


def test_a_client_that_leaves_mid_body() -> None:
    messages = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.disconnect"},
    ]
    with pytest.raises(ClientLeft) as left:
        _read(messages, 10)
    assert left.value.partial == b"ab"  # what had arrived, for the raw log


def test_a_body_over_the_limit_keeps_what_was_read() -> None:
    chunks = [{"type": "http.request", "body": b"x" * 6, "more_body": True}] * 3
    with pytest.raises(BodyTooLarge) as refused:
        _read(chunks, 10)
    assert refused.value.partial == b"x" * 12  # for the raw log; the third chunk is never read


def test_a_refused_body_is_read_up_to_the_log_cap_and_no_further() -> None:
    messages = [{"type": "http.request", "body": b"ab", "more_body": True}] * 4
    messages.append({"type": "http.request", "body": b"z"})
    receive = _receiver(messages)
    assert asyncio.run(read_prefix(receive, 3)) == (b"abab", False)
    assert asyncio.run(read_prefix(receive, 10)) == (b"ababz", True)  # the rest was left unread
    gone = _receiver(
        [{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.disconnect"}]
    )
    assert asyncio.run(read_prefix(gone, 10)) == (b"ab", False)
