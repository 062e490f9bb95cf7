"""The raw webhook log's redaction: secrets never reach a stored entry, everything else does."""

from __future__ import annotations

import random

from worker.fastpath.forms import unquoted
from worker.store import rawlog


def _redacted_piece_by_piece(query: str) -> str:
    parts = []
    for part in query.split("&"):
        key, sep, _ = part.partition("=")
        secret = sep and unquoted(key).lower() in rawlog.SECRET_PARAMS
        parts.append(f"{key}={rawlog.REDACTED}" if secret else part)
    return "&".join(parts)


def test_query_redaction_matches_reading_every_parameter() -> None:
    rng = random.Random(20261123)
    pieces = [
        "token", "TOKEN", "Token", "auth", "password", "api_password", "secret", "tokens",
        "xtoken", "a", "=", "&", "x", "", "t%6Fken", "+", "%", "b=c", "token=abc",
    ]  # fmt: skip
    for _ in range(50_000):
        query = "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 8)))
        assert rawlog.redact_query(query) == _redacted_piece_by_piece(query), query
    assert rawlog.redact_query("token=s3cret&efaxID=1") == "token=[redacted]&efaxID=1"
    assert rawlog.redact_query("T%6Fken=s3cret") == "T%6Fken=[redacted]"


def test_secret_headers_are_redacted_in_any_case() -> None:
    plain = {"host": "h", "content-type": "text/plain"}
    assert rawlog.redact_headers(plain) == plain
    assert rawlog.redact_headers({**plain, "Authorization": "Basic eDp5"}) == {
        **plain,
        "Authorization": "[redacted]",
    }
    assert rawlog.redact_headers({"x-api-key": "k", "cookie": "c"}) == {
        "x-api-key": "[redacted]",
        "cookie": "[redacted]",
    }
