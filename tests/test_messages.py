"""The hand-built Celery message (worker/messages.py) carries what Celery's own would."""

from __future__ import annotations

import base64
import json

from config.celery_app import app
from config.queues import INTAKE_QUEUE
from worker.fastpath.messages import task_message


def test_message_matches_celerys_own_protocol_2_message() -> None:
    ours = json.loads(task_message("faxrelay.handle_inbound", INTAKE_QUEUE, ["fx_1"], task_id="t1"))
    celery = app.amqp.as_task_v2("t1", "faxrelay.handle_inbound", args=["fx_1"], kwargs={})
    skip = {"origin", "ignore_result"}  # the sender's name; ours ask for no result to be stored
    assert {k: v for k, v in ours["headers"].items() if k not in skip} == {
        k: v for k, v in celery.headers.items() if k not in skip
    }
    assert json.loads(base64.b64decode(ours["body"])) == json.loads(json.dumps(celery.body))
    assert ours["properties"]["delivery_info"] == {"exchange": "", "routing_key": INTAKE_QUEUE}
    assert ours["properties"]["correlation_id"] == "t1"
    assert ours["content-type"] == "application/json"


def test_every_message_has_its_own_task_id_and_delivery_tag() -> None:
    first, second = (json.loads(task_message("t", "q", ["x"])) for _ in range(2))
    assert first["headers"]["id"] != second["headers"]["id"]
    assert first["properties"]["delivery_tag"] != second["properties"]["delivery_tag"]


def test_kwargs_quotes_and_percent_signs_survive() -> None:
    args = ['say "hi"', 3]  # (argsrepr is display only: Celery's saferepr differs on backslashes)
    kwargs = {"reason": "100% done", "n": 1}
    ours = json.loads(task_message("odd%task", "q%s", args, kwargs, task_id='i"d'))
    celery = app.amqp.as_task_v2('i"d', "odd%task", args=args, kwargs=kwargs)
    skip = {"origin", "ignore_result"}
    assert {k: v for k, v in ours["headers"].items() if k not in skip} == {
        k: v for k, v in celery.headers.items() if k not in skip
    }
    assert json.loads(base64.b64decode(ours["body"])) == json.loads(json.dumps(celery.body))
    assert ours["properties"]["delivery_info"]["routing_key"] == "q%s"


def test_extra_headers_join_the_envelope_and_change_nothing_else() -> None:
    """The trace context (config/tracing.py) rides in the headers, as Celery's ``headers=``."""
    plain = json.loads(task_message("t", "q", ['"headers":{'], task_id="i"))
    carrier = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    traced = json.loads(task_message("t", "q", ['"headers":{'], task_id="i", headers=carrier))
    assert traced["headers"].pop("traceparent") == carrier["traceparent"]
    assert traced == plain
