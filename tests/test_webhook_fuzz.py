"""Each provider's webhook parser fuzzed through the real route (hypothesis): urlencoded, JSON,
multipart and raw bodies built from the field names the parsers look for and from noise, with the
right token, a wrong one or none, to known accounts of all five providers and to unknown ones.
No answer is a server error, and every request, refused or not, is in the raw webhook log with
the status it got.

Download URLs point only at loopback canaries (127.0.0.2), which no account allows: a record
they make fails with ``download_refused`` without a connection.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox.pdf import make_pdf
from tests.conftest import BUCKET
from tests.system import WEBHOOK_TOKEN, System
from worker.providers import primevox, voipms
from worker.store import rawlog

MAX_BYTES = (
    8 * 1024
)  # FAXRELAY_WEBHOOK_MAX_BYTES here, so that some bodies are refused as too large
ACCOUNTS = ["pv", "vm", "ucx", "ci", "vn"]  # primevox, voip.ms, UCX, CallerIP, VoipNow

NAMES = sorted(
    {
        *primevox.DOWNLOAD_URL_NAMES, *primevox.FAX_ID_NAMES, *primevox.JOB_ID_NAMES,
        *primevox.STATUS_NAMES, *primevox.DETAIL_NAMES, *primevox.FROM_NAMES,
        *primevox.TO_NAMES, *primevox.PAGES_NAMES, *primevox.TIME_NAMES,
        *voipms.ID_FIELDS, *voipms.FROM_FIELDS, *voipms.TO_FIELDS, *voipms.PAGES_FIELDS,
        *voipms.DATE_FIELDS, *voipms.PDF_FIELDS,
    }
)  # fmt: skip
PDF = make_pdf(1, label="webhook fuzz")

names = st.one_of(st.sampled_from(NAMES), st.text(min_size=0, max_size=12))
values = st.one_of(
    st.text(max_size=40),
    st.integers(-(2**40), 2**40).map(str),
    st.sampled_from(["delivered", "failed", "sent", "busy", "success", "error", "", "0", "-1"]),
    st.sampled_from(["+1 555 234 5678", "5552345678", "(555) 234-5678", "anonymous"]),
    st.sampled_from(["2025-01-01T10:00:00Z", "1735725600", "2025-13-45", "yesterday"]),
    st.builds(lambda p: f"http://127.0.0.2/{p}.pdf", st.text("abc/%?&=", max_size=12)),
    st.just(PDF.decode("latin-1")),
)
fields = st.lists(st.tuples(names, values), max_size=8)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """One request: account, route, token, headers and body."""
    # Mostly the routes that parse something (PrimeVox inbound and status, voip.ms inbound).
    account, route = draw(
        st.one_of(
            st.sampled_from([("pv", "inbound"), ("pv", "status"), ("vm", "inbound")]),
            st.tuples(
                st.one_of(
                    st.sampled_from(ACCOUNTS), st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
                ),
                st.sampled_from(["inbound", "status"]),
            ),
        )
    )
    token = draw(st.sampled_from([WEBHOOK_TOKEN] * 6 + ["", "wrong-token"]))
    kind = draw(st.sampled_from(["form", "form", "json", "json-any", "multipart", "raw", "big"]))
    headers: dict[str, str] = {}
    if kind == "form":
        body = urlencode(draw(fields)).encode()
        headers["content-type"] = "application/x-www-form-urlencoded"
    elif kind == "json":
        body = json.dumps(dict(draw(fields))).encode()
        headers["content-type"] = "application/json"
    elif kind == "json-any":
        any_json = st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(names, inner, max_size=4),
            max_leaves=12,
        )
        body = json.dumps(draw(any_json)).encode()
        headers["content-type"] = draw(st.sampled_from(["application/json", "text/plain"]))
    elif kind == "multipart":
        parts = draw(fields)
        with_pdf = draw(st.booleans())
        request = httpx.Request(
            "POST", "http://127.0.0.1/",
            data=dict(parts),
            files={"file": ("fax.pdf", PDF, "application/pdf")} if with_pdf else {"x": b""},
        )  # fmt: skip
        body = request.read()
        headers["content-type"] = request.headers["content-type"]
        if draw(st.booleans()):  # a broken boundary, or a body cut short
            body = body[: draw(st.integers(0, len(body)))]
    elif kind == "big":  # around the size limit
        body = urlencode(draw(fields)).encode()
        body += b"&pad=" + b"x" * draw(st.integers(MAX_BYTES - len(body) - 10, MAX_BYTES + 100))
        headers["content-type"] = "application/x-www-form-urlencoded"
    else:
        body = draw(st.binary(max_size=2048))
        headers["content-type"] = draw(
            st.sampled_from(["", "application/octet-stream", "multipart/form-data", "application/json",
                             "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
        )  # fmt: skip
    chunked = draw(st.booleans())  # sent without a length: the cap is checked as it streams
    return {
        "account": account, "route": route, "token": token, "headers": headers, "body": body,
        "chunked": chunked,
    }  # fmt: skip


def shown(req: dict[str, Any]) -> str:
    return repr({**req, "body": req["body"][:200]})


@pytest.fixture(scope="module")
def system(
    tmp_path_factory: pytest.TempPathFactory, s3_server: str, sandbox_server: Any
) -> Iterator[System]:
    s = System(
        tmp_path_factory.mktemp("webhook-fuzz"),
        s3_server,
        sandbox_server.url,
        BUCKET,
        env_overrides={
            "FAXRELAY_WEBHOOK_MAX_BYTES": str(MAX_BYTES),
            # Refusals past this rate are answered but not logged (a stranger's flood): here,
            # every refusal must be logged.
            "FAXRELAY_WEBHOOK_REFUSALS_PER_MINUTE": "100000",
        },
    ).start()
    yield s
    s.stop()


def test_fuzzed_webhooks_get_no_server_error_and_are_all_logged(system: System) -> None:
    client = redis.Redis.from_url(system.redis_url)
    http = httpx.Client(base_url=system.web_url, timeout=30)
    seen: dict[int, int] = {}

    @settings(max_examples=1000, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(requests())
    def one(req: dict[str, Any]) -> None:
        before = {e.id for e in rawlog.list_entries(client, 1)}
        params = {"token": req["token"]} if req["token"] else {}
        answer = http.post(
            f"/webhooks/{req['account']}/{req['route']}",
            params=params,
            content=iter([req["body"]]) if req["chunked"] else req["body"],
            headers=req["headers"],
        )
        assert answer.status_code < 500, (answer.status_code, answer.text, shown(req))
        seen[answer.status_code] = seen.get(answer.status_code, 0) + 1
        # Requests go one at a time: the newest entry is this one (an unknown account's name
        # is kept cut short).
        (entry,) = rawlog.list_entries(client, 1)
        assert entry.id not in before, f"{answer.status_code}, not in the raw log: {shown(req)}"
        assert (entry.status, entry.route) == (answer.status_code, req["route"]), shown(req)
        assert req["account"].startswith(entry.account), shown(req)

    one()
    # The run reached every kind of answer, not only one refusal.
    assert {200, 401, 404, 413, 422} <= set(seen), seen
