"""The /v1 contract: one model for every form of a send, an OpenAPI 3.1 document generated from
it that a real validator accepts, errors that name the wrong field (Starlette's own 404 and 405
too), and the API fuzzed from that document against the running system (schemathesis): no
answer is a server error and every answer matches the document.

Real processes throughout (uvicorn, a Celery worker and beat, Valkey, SeaweedFS, the sandbox).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route

from faxrelay_client import models
from sandbox.pdf import make_pdf
from tests.conftest import BUCKET
from tests.system import API_TOKEN, ROOT, System, wait_for
from webhooks.apidoc import openapi
from worker.domain import State


@pytest.fixture(scope="module")
def system(
    tmp_path_factory: pytest.TempPathFactory, s3_server: str, sandbox_server: Any
) -> Iterator[System]:
    s = System(
        tmp_path_factory.mktemp("contract"),
        s3_server,
        sandbox_server.url,
        BUCKET,
        env_overrides={"FAXRELAY_DOCUMENT_MAX_BYTES": str(256 * 1024)},
    ).start()
    yield s
    s.stop()


@pytest.fixture
def api(system: System) -> Iterator[httpx.Client]:
    with system.api() as client:
        yield client


def b64pdf() -> str:
    return base64.b64encode(make_pdf(1, label=f"contract {uuid.uuid4().hex}")).decode()


def error_of(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    error: dict[str, Any] = body["error"]
    return error


# --- the document ---------------------------------------------------------------------------------


def test_the_openapi_document_is_valid_3_1_and_covers_every_v1_route(
    system: System, api: httpx.Client
) -> None:
    assert error_of(httpx.get(f"{system.web_url}/v1/openapi.json"), 401)["code"]
    answer = api.get("/v1/openapi.json")
    assert answer.status_code == 200
    doc = answer.json()
    assert doc == openapi()  # what the fuzz test below generates its requests from
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # openapi-spec-validator: raises on any error

    from config.settings import Settings
    from webhooks.app import create_app

    app = create_app(Settings(redis_url=system.redis_url, s3_endpoint_url=system.s3_endpoint))
    served = {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route) and route.path.startswith("/v1/")
        for method in (route.methods or ()) - {"HEAD"}
    }
    described = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert served == described
    # The refusal shape is the one schema every error answer refers to.
    send = doc["paths"]["/v1/faxes"]["post"]
    assert send["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }
    assert set(send["requestBody"]["content"]) == {"application/json", "multipart/form-data"}


def test_the_copy_in_docs_is_current() -> None:
    copy = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert copy == openapi(), "regenerate: python -m webhooks.apidoc > docs/openapi.json"


def test_the_models_states_are_the_records_states() -> None:
    assert set(models.State.__args__) == {str(s) for s in State}  # type: ignore[attr-defined]


# --- one validation, three doors ----------------------------------------------------------------


def test_refusals_name_the_field(api: httpx.Client) -> None:
    def send(**body: Any) -> httpx.Response:
        return api.post("/v1/faxes", json=body)

    missing = error_of(send(account="pv"), 422)
    assert missing["code"] == "missing_field" and missing["message"] == "missing: to, document"
    empty = error_of(send(account="", to="+1 555 234 5678", document={}), 422)
    assert empty["message"] == "missing: account, document"
    wrong = error_of(send(account="pv", to="+15552345678", document={"base64": ["x"]}), 422)
    assert wrong["code"] == "bad_document" and wrong["message"].startswith("document.base64:")
    two = error_of(
        send(account="pv", to="+15552345678", document={"base64": "eA==", "url": "u"}), 422
    )
    assert (
        two["code"] == "bad_document" and "exactly one of base64, s3_key or url" in two["message"]
    )
    meta = error_of(
        send(account="pv", to="+15552345678", document={"base64": b64pdf()}, metadata=[1]), 422
    )
    assert meta["code"] == "bad_metadata" and meta["message"].startswith("metadata:")
    direction = error_of(api.get("/v1/faxes", params={"direction": "sideways"}), 422)
    assert direction["message"].startswith("direction:")
    assert error_of(api.get("/v1/faxes", params={"limit": "many"}), 422)["code"] == "bad_limit"
    # multipart: the same model for the fields next to the file
    upload = api.post(
        "/v1/faxes",
        data={"account": "pv", "metadata": "[1]"},
        files={"document": ("a.pdf", b"%PDF", "application/pdf")},
    )
    assert error_of(upload, 422)["message"] == "missing: to"
    broken = api.post(  # found by the fuzz test below: was Starlette's undocumented 400
        "/v1/faxes",
        content=b"--xx\r\n[garbage]--xx--\r\n",
        headers={"content-type": "multipart/form-data; boundary=xx"},
    )
    assert error_of(broken, 422)["code"] == "bad_multipart"


def test_starlettes_own_refusals_are_json_under_v1(system: System, api: httpx.Client) -> None:
    nowhere = error_of(api.get("/v1/nowhere"), 404)
    assert nowhere["code"] == "not_found" and "/v1/nowhere" in nowhere["message"]
    wrong_method = api.delete("/v1/faxes")
    assert error_of(wrong_method, 405)["code"] == "method_not_allowed"
    assert "GET" in wrong_method.headers["allow"] and "POST" in wrong_method.headers["allow"]
    # Elsewhere (not the API) Starlette's plain answer stays.
    assert httpx.get(f"{system.web_url}/no/such/page").text == "Not Found"


def test_the_api_and_the_celery_task_refuse_and_coerce_alike(
    system: System, api: httpx.Client, sandbox: Any
) -> None:
    from celery import Celery

    bad_document = {
        "account": "ci",
        "to": "+1 469 555 0108",
        "document": {"url": "u", "s3_key": "k"},
    }
    api_refusal = error_of(api.post("/v1/faxes", json=bad_document), 422)
    number = {"account": "ci", "to": 14695550108, "document": {"base64": b64pdf()}}  # a number
    by_api = api.post("/v1/faxes", json=number)
    assert by_api.status_code == 202, by_api.text
    assert by_api.json()["to"] == "4695550108"  # CallerIP's form

    app = Celery("other-service", broker=system.redis_url)
    app.send_task("faxrelay.send_fax", kwargs=bad_document)
    refusal = f"SendRefused: 422 {api_refusal['code']}: {api_refusal['message']}"
    wait_for(lambda: refusal in system.log_tail(400), 30, "the same refusal from the task")
    key = f"coerce-{uuid.uuid4().hex}"
    app.send_task(
        "faxrelay.send_fax",
        kwargs={**number, "document": {"base64": b64pdf()}, "idempotency_key": key,
                "metadata": None, "callback_url": None},
    )  # fmt: skip
    store = system.store()
    record = wait_for(lambda: store.lookup("idem:ci", key), 30, "the queued send's record")
    assert record.to_number == "4695550108" and record.metadata == {}


# --- fuzzed from the document -----------------------------------------------------------------------


# The document as the app serves it (the first test checks the two are the same): schemathesis
# generates each operation's cases from it, sent to the running system.
schema = schemathesis.openapi.from_dict(openapi())
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@schema.parametrize()
@settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_fuzzed_requests_get_no_server_error_and_answers_match_the_schema(
    system: System, case: Any
) -> None:
    """Positive and negative cases for every operation, with and without the token."""
    case.call_and_validate(
        base_url=system.web_url,
        headers={"authorization": f"Bearer {API_TOKEN}"},
        checks=CHECKS,
        timeout=30,
    )
