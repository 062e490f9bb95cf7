"""A small client of faxrelay's ``/v1`` API, on httpx, typed with the models of the contract.

```python
from faxrelay_client import Client

with Client("https://faxrelay.example.org", token) as faxrelay:
    fax = faxrelay.send("main", "+1 555 234 5678", Path("letter.pdf").read_bytes())
    fax = faxrelay.wait(fax.id, timeout=600)          # until final (or unknown)
    print(fax.state, fax.reason)
```

A refusal raises ``FaxrelayError`` with the API's ``status``, ``code`` and ``message``; a 503
(Redis or S3 down for a moment) is retried a few times first, as its ``Retry-After`` asks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from faxrelay_client import models as m

M = TypeVar("M", bound=BaseModel)
RETRIES_ON_503 = 3


class FaxrelayError(Exception):
    """The API refused the request (``status``, ``code``, ``message`` as it answered), or could
    not be reached (``status`` 0, ``code`` ``unreachable``)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}" if status else f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


class Sent(NamedTuple):
    fax: m.Fax
    created: bool  # False: an earlier send with the same Idempotency-Key (the same fax)


class Client:
    """One faxrelay deployment: its base URL and an API token (FAXRELAY_API_TOKENS)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"authorization": f"Bearer {token}", "user-agent": "faxrelay-client"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- faxes -----------------------------------------------------------------------------------
    def send(
        self,
        account: str,
        to: str,
        document: bytes | Path | m.Document,
        *,
        callback_url: str = "",
        metadata: dict[str, Any] | None = None,
        idempotency_key: str = "",
    ) -> m.Fax:
        """Send a PDF (its bytes, a file, or a ``Document``: base64, s3_key or url); the queued
        record. With ``idempotency_key``, a repeat returns the same fax (never a second one)."""
        return self.send_detailed(
            account, to, document, callback_url=callback_url, metadata=metadata,
            idempotency_key=idempotency_key,
        ).fax  # fmt: skip

    def send_detailed(
        self,
        account: str,
        to: str,
        document: bytes | Path | m.Document,
        *,
        callback_url: str = "",
        metadata: dict[str, Any] | None = None,
        idempotency_key: str = "",
    ) -> Sent:
        """As ``send``, saying whether this request made the fax or an earlier one had."""
        headers = {"idempotency-key": idempotency_key} if idempotency_key else {}
        if isinstance(document, m.Document):
            body = _build(
                m.SendFax, account=account, to=to, document=document, callback_url=callback_url,
                metadata=metadata or {},
            )  # fmt: skip
            answer = self._call(
                "POST", "/v1/faxes", json=body.model_dump(mode="json", exclude_none=True),
                headers=headers,
            )  # fmt: skip
        else:
            data = document.read_bytes() if isinstance(document, Path) else document
            fields = {"account": account, "to": to, "callback_url": callback_url,
                      "metadata": json.dumps(metadata or {})}  # fmt: skip
            answer = self._call(
                "POST", "/v1/faxes", data=fields, headers=headers,
                files={"document": ("document.pdf", data, "application/pdf")},
            )  # fmt: skip
        return Sent(_parse(m.Fax, answer), answer.status_code == 202)

    def get(self, fax_id: str) -> m.Fax:
        return _parse(m.Fax, self._call("GET", f"/v1/faxes/{fax_id}"))

    def list(
        self,
        *,
        direction: m.Direction | None = None,
        account: str | None = None,
        state: m.State | None = None,
        idempotency_key: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> m.FaxPage:
        """One page, newest first; pass its ``next_cursor`` as ``cursor`` for the next."""
        query = _build(
            m.ListFaxes,
            direction=direction, account=account, state=state, limit=limit, cursor=cursor,
            idempotency_key=idempotency_key,
        )  # fmt: skip
        params = query.model_dump(exclude_none=True)
        return _parse(m.FaxPage, self._call("GET", "/v1/faxes", params=params))

    def iterate(self, **filters: Any) -> Iterator[m.Fax]:
        """Every record matching the filters of ``list``, page after page."""
        cursor = None
        while True:
            page = self.list(**filters, cursor=cursor)
            yield from page.items
            if not page.next_cursor or not page.items:
                return
            cursor = page.next_cursor

    def cancel(self, fax_id: str) -> m.Fax:
        """Cancel an outbound fax; FaxrelayError 409 (with why) when it no longer can be."""
        return _parse(m.Fax, self._call("POST", f"/v1/faxes/{fax_id}/cancel"))

    def wait(
        self,
        fax_id: str,
        *,
        timeout: float | None = None,
        interval: float = 1.0,
        on_change: Callable[[m.Fax], None] | None = None,
    ) -> m.Fax:
        """Poll until the fax is final, or ``unknown`` (its submit's outcome cannot be known: an
        operator decides); ``on_change`` sees each new version. TimeoutError after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay, last = min(0.2, interval), ""
        while True:
            fax = self.get(fax_id)
            if fax.updated_at != last:
                last = fax.updated_at
                if on_change is not None:
                    on_change(fax)
            if fax.final or fax.state == "unknown":
                return fax
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{fax_id} is still {fax.state} after {timeout:.0f} s")
            time.sleep(delay)
            delay = min(delay * 1.5, interval)

    # --- operator --------------------------------------------------------------------------------
    def retry(self, fax_id: str) -> m.Fax:
        """Wake a record that is not final now (an ``unknown`` send is submitted again)."""
        return _parse(m.Fax, self._call("POST", f"/v1/faxes/{fax_id}/retry"))

    def webhooks(self, *, limit: int = 20, account: str | None = None) -> m.WebhookLogPage:
        params: dict[str, Any] = {"limit": limit}
        if account is not None:
            params["account"] = account
        return _parse(m.WebhookLogPage, self._call("GET", "/v1/webhooks", params=params))

    def webhook(self, log_id: str) -> m.WebhookLogEntry:
        return _parse(m.WebhookLogEntry, self._call("GET", f"/v1/webhooks/{log_id}"))

    def replay(self, log_id: str) -> m.Replay:
        return _parse(m.Replay, self._call("POST", f"/v1/webhooks/{log_id}/replay"))

    def start_backfill(
        self, account: str, since: datetime, until: datetime | None = None, *, wake: bool = False
    ) -> m.Backfill:
        body = _build(m.StartBackfill, account=account, since=since, until=until, wake=wake)
        answer = self._call("POST", "/v1/backfills", json=body.model_dump(mode="json"))
        return _parse(m.Backfill, answer)

    def backfill(self, backfill_id: str) -> m.Backfill:
        return _parse(m.Backfill, self._call("GET", f"/v1/backfills/{backfill_id}"))

    def check_accounts(self, account: str | None = None) -> m.AccountChecks:
        body = {"account": account} if account is not None else {}
        return _parse(m.AccountChecks, self._call("POST", "/v1/accounts/check", json=body))

    def openapi(self) -> dict[str, Any]:
        document: dict[str, Any] = self._call("GET", "/v1/openapi.json").json()
        return document

    # --- transport -------------------------------------------------------------------------------
    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(RETRIES_ON_503 + 1):
            try:
                answer = self._http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                raise FaxrelayError(0, "unreachable", f"{self._http.base_url}: {exc}") from exc
            if answer.status_code == 503 and attempt < RETRIES_ON_503:
                time.sleep(_retry_after(answer))
                continue
            if answer.status_code >= 400:
                raise _error(answer)
            return answer
        raise AssertionError("unreachable")  # the loop returns or raises


def _retry_after(answer: httpx.Response) -> float:
    value = answer.headers.get("retry-after", "")
    return min(float(value), 30.0) if value.isdigit() else 1.0


def _error(answer: httpx.Response) -> FaxrelayError:
    try:
        body = m.Error.model_validate(answer.json()).error
    except (ValueError, ValidationError):
        return FaxrelayError(answer.status_code, "http_error", answer.text[:300])
    return FaxrelayError(answer.status_code, body.code, body.message)


def _build(model: type[M], **fields: Any) -> M:
    """A request the server would refuse is refused here, as it would be (422, same code)."""
    try:
        return model(**fields)
    except ValidationError as exc:
        problem = m.describe(exc)
        raise FaxrelayError(422, problem.code, problem.message) from None


def _parse(model: type[M], answer: httpx.Response) -> M:
    return model.model_validate(answer.json())
