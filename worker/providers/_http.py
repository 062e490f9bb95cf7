"""HTTP plumbing shared by the provider clients: turning transport failures and unreadable
answers into ProviderError with the provider's name, the operation and what came back."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import IO, Any

import httpx

from worker import metrics
from worker.providers.base import (
    ErrorKind,
    OutcomeUnknownError,
    ProviderError,
    ProviderPermanentError,
    ProviderTransientError,
    error_for_kind,
    kind_for_http_status,
)

SNIPPET = 200  # characters of an unreadable body quoted in an error


def send(
    provider: str,
    operation: str,
    request: Callable[[], httpx.Response],
    *,
    idempotent: bool,
) -> httpx.Response:
    """Run ``request``; map transport failures to errors.

    A failure before the request left (connect error, connect/pool timeout) is transient. A
    failure after it left (read timeout, dropped connection) is transient only for idempotent
    calls; for a submit it is OutcomeUnknownError: the provider may have taken the job.
    """
    started = time.perf_counter()
    try:
        response = request()
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        metrics.provider_call(provider, operation, "connect_error", time.perf_counter() - started)
        raise ProviderTransientError(provider, operation, f"could not connect: {exc}") from exc
    except httpx.TransportError as exc:
        message = f"no answer: {type(exc).__name__}: {exc}"
        outcome = "transport_error" if idempotent else "outcome_unknown"
        metrics.provider_call(provider, operation, outcome, time.perf_counter() - started)
        if idempotent:
            raise ProviderTransientError(provider, operation, message) from exc
        raise OutcomeUnknownError(provider, operation, message) from exc
    seconds = time.perf_counter() - started
    metrics.provider_call(provider, operation, metrics.http_outcome(response.status_code), seconds)
    return response


def snippet(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    if not text:
        return "(empty body)"
    return text[:SNIPPET] + ("…" if len(text) > SNIPPET else "")


def json_dict(response: httpx.Response) -> dict[str, Any] | None:
    """The answer's JSON object; None when the body is not one (an HTML page, empty, a list)."""
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def json_object(provider: str, operation: str, response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object; an error naming the HTTP status and the body when it is not one.

    Provider modules read their own error members first; this only covers what the docs do not
    promise (HTML error pages, empty bodies, invalid JSON).
    """
    data = json_dict(response)
    if data is not None:
        return data
    kind = (
        kind_for_http_status(response.status_code)
        if response.status_code >= 400
        else ErrorKind.TRANSIENT  # a 2xx we cannot read: most likely a proxy or outage page
    )
    raise error_for_kind(
        kind,
        provider,
        operation,
        f"answer is not a JSON object: {snippet(response)}",
        response.status_code,
    )


def http_error(provider: str, operation: str, response: httpx.Response) -> ProviderError:
    """An error for a non-2xx answer whose body the module did not recognise."""
    return error_for_kind(
        kind_for_http_status(response.status_code),
        provider,
        operation,
        snippet(response),
        response.status_code,
    )


def stream_to(
    provider: str,
    operation: str,
    response: httpx.Response,
    sink: IO[bytes],
    max_bytes: int,
) -> int:
    """Copy a streamed answer's body into ``sink``; refuse bodies over ``max_bytes``.

    The limit applies to the decoded bytes (a gzip bomb stops at it); the truncation check compares
    Content-Length with the bytes on the wire, which for a Content-Encoding'd answer are fewer.
    """
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise ProviderPermanentError(
            provider, operation, f"file is {declared} bytes, over the {max_bytes}-byte limit"
        )
    written = 0
    try:
        for chunk in response.iter_bytes(64 * 1024):
            written += len(chunk)
            if written > max_bytes:
                raise ProviderPermanentError(
                    provider, operation, f"file is over the {max_bytes}-byte limit"
                )
            sink.write(chunk)
    except (httpx.TransportError, httpx.DecodingError) as exc:  # a broken gzip stream too
        raise ProviderTransientError(
            provider, operation, f"download broke off after {written} bytes: {exc}"
        ) from exc
    encoded = response.headers.get("content-encoding", "identity").lower() != "identity"
    received = response.num_bytes_downloaded if encoded else written
    if declared and declared.isdigit() and received != int(declared):
        raise ProviderTransientError(
            provider, operation, f"download truncated: {received} of {declared} bytes"
        )
    return written
