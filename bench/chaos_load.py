"""The chaos soak's outside world: the providers announcing faxes and the services sending them,
writing what faxrelay acknowledged into the ledger (``bench.chaos_ledger``).

A steady mix, each kind of action at its own average rate (exponential gaps, seeded):

- PrimeVox inbound webhooks (a few of them 5 MB+ PDFs), posted by the sandbox (``/_sandbox/fire``);
- voip.ms callbacks: with the id and the PDF part, with the id only, with the PDF part only, bare;
- faxes held at UCX and voip.ms that no webhook announces (reconcile must find them);
- repeats of acknowledged webhooks (they must map to the same record);
- ``POST /v1/faxes`` to all five providers, with and without ``Idempotency-Key`` (some repeated with
  their key), the document as base64 or as an S3 key;
- queue-driven sends: ``send_task("faxrelay.send_fax")`` from a Celery app of another service;
- cancels of sends just accepted.

Every PDF is distinct (its label says which action made it), so its sha256 names it: in the
sandbox's jobs, in faxrelay's records and in S3. A webhook that is not answered 200 is retried the
way a provider would (a few seconds later, until acknowledged); a keyed send that fails is retried
with its key; a send without a key is not (its caller cannot know whether it was taken).
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import itertools
import math
import random
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from celery import Celery

from bench.chaos_ledger import InboundFax, Ledger, Send
from sandbox.pdf import make_pdf

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

NUMBERS = ("5552010100", "+1 555-201-0101", "(555) 201-0102")  # few: attribution is tested
SEND_ACCOUNTS = {"pv": "primevox", "ucx": "ucx", "vn": "voipnow", "vm": "voipms", "ci": "callerip"}
# Average actions a second at ``rate`` 1.
RATES = {
    "primevox webhook": 2.4,
    "voip.ms callback": 0.8,
    "held, no webhook": 0.3,
    "repeated webhook": 0.4,
    "http send": 1.6,
    "repeated http send": 0.25,
    "queue send": 0.8,
    "cancel": 0.25,
}
BIG_SHARE = 0.03  # PrimeVox faxes of 5-6 MB
WEBHOOK_RETRY = (2.0, 5.0)  # seconds a provider waits before retrying an unanswered webhook
MAX_ATTEMPTS = 60


@dataclass
class Endpoints:
    web_url: str
    sandbox_url: str
    api_token: str
    webhook_url: Callable[[str], str]  # account -> its inbound webhook URL with the token
    bucket: str


class Load:
    """Runs the mix against ``endpoints`` and writes what was acknowledged into ``ledger``."""

    def __init__(
        self,
        endpoints: Endpoints,
        ledger: Ledger,
        celery_client: Celery,
        s3: S3Client,
        *,
        rate: float = 1.0,
        seed: int = 7,
        threads: int = 12,
        held: tuple[str, ...] = ("ucx", "voipms"),
    ) -> None:
        self.ep, self.ledger, self.celery, self.s3 = endpoints, ledger, celery_client, s3
        self.rate = rate
        self.held = held  # the providers whose faxes are held without any webhook
        self.rng = random.Random(seed)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="chaos-load")
        self.local = threading.local()
        self.retries: list[tuple[float, int, Callable[[], None]]] = []  # a heap by due time
        self.seq = itertools.count()
        self.lock = threading.Lock()
        self.publish_lock = threading.Lock()
        self.pending = 0  # actions submitted and not finished

    # --- the schedule ----------------------------------------------------------------------
    def run(self, seconds: float, stop: threading.Event) -> None:
        """The mix for ``seconds`` (or until ``stop``); then only retries (see ``drain``)."""
        actions: dict[str, Callable[[], None]] = {
            "primevox webhook": self.primevox_webhook,
            "voip.ms callback": self.voipms_callback,
            "held, no webhook": self.held_fax,
            "repeated webhook": self.repeat_webhook,
            "http send": self.http_send,
            "repeated http send": self.repeat_http_send,
            "queue send": self.queue_send,
            "cancel": self.cancel,
        }
        now = time.monotonic()
        due = {name: now + self._gap(name) for name in actions}
        end = now + seconds
        while not stop.is_set() and time.monotonic() < end:
            now = time.monotonic()
            for name, at in due.items():
                if at <= now:
                    self._submit(actions[name])
                    due[name] = at + self._gap(name)
            self._run_due_retries()
            stop.wait(0.02)

    def drain(self, seconds: float) -> None:
        """Go on retrying what is not acknowledged yet, for at most ``seconds``."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._run_due_retries()
            with self.lock:
                if not self.retries and self.pending == 0:
                    return
            time.sleep(0.1)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _gap(self, name: str) -> float:
        return self.rng.expovariate(RATES[name] * self.rate)

    def _submit(self, action: Callable[[], None]) -> None:
        with self.lock:
            self.pending += 1

        def run() -> None:
            try:
                action()
            except Exception as exc:  # the load must go on; the count says what broke
                self.ledger.count(f"load error: {type(exc).__name__}")
            finally:
                with self.lock:
                    self.pending -= 1

        self.pool.submit(run)

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        with self.lock:
            heapq.heappush(self.retries, (time.monotonic() + delay, next(self.seq), action))

    def _run_due_retries(self) -> None:
        now = time.monotonic()
        while True:
            with self.lock:
                if not self.retries or self.retries[0][0] > now:
                    return
                _, _, action = heapq.heappop(self.retries)
            self._submit(action)

    def _http(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self.local, "http", None)
        if client is None:
            client = self.local.http = httpx.Client(timeout=30)
        return client

    def _label(self, what: str) -> str:
        return f"chaos {what} {secrets.token_hex(6)}"

    # --- inbound -----------------------------------------------------------------------------
    def _hold(self, provider: str, account: str, how: str, big: bool = False) -> InboundFax:
        with self.lock:
            size = (
                self.rng.randint(5_000_000, 6_000_000)
                if big
                else int(math.exp(self.rng.uniform(math.log(15_000), math.log(250_000))))
            )
            pages = self.rng.randint(1, 3)
        answer = self._http().post(
            f"{self.ep.sandbox_url}/_sandbox/inbound",
            json={"provider": provider, "pages": pages, "size": size, "label": self._label(how)},
            timeout=120,
        )
        answer.raise_for_status()
        data = answer.json()
        fax = InboundFax(
            provider, account, str(data["id"]), data["sha256"], data["size"], how, time.time()
        )
        with self.ledger.lock:
            self.ledger.inbound[f"{provider}:{fax.sandbox_id}"] = fax
        return fax

    def primevox_webhook(self) -> None:
        with self.lock:
            big = self.rng.random() < BIG_SHARE
            multipart = self.rng.random() < 0.3
        fax = self._hold("primevox", "pv", "primevox webhook" + (" (5 MB+)" if big else ""), big)
        fax.options = {"multipart": multipart}
        self._fire(fax, 1)

    def voipms_callback(self) -> None:
        with self.lock:
            with_id, with_pdf = self.rng.choice(
                [(True, True), (True, True), (True, False), (False, True), (False, False)]
            )
            multipart = self.rng.random() < 0.8
        how = {
            (True, True): "voip.ms callback with id and PDF",
            (True, False): "voip.ms callback with id",
            (False, True): "voip.ms callback with PDF, no id",
            (False, False): "voip.ms bare callback",
        }[(with_id, with_pdf)]
        fax = self._hold("voipms", "vm", how)
        fax.options = {"with_id": with_id, "with_pdf": with_pdf, "multipart": multipart}
        self._fire(fax, 1)

    def held_fax(self) -> None:
        with self.lock:
            provider = self.rng.choice(self.held)
        self._hold(
            provider, {"ucx": "ucx", "voipms": "vm"}[provider], f"{provider} fax, no webhook"
        )

    def nudge_reconcile(self) -> None:
        """A bare voip.ms callback (no id, no PDF) for a new fax: faxrelay lists the account at
        once, so faxes held at voip.ms until now need not wait for the periodic reconcile."""
        fax = self._hold("voipms", "vm", "voip.ms bare callback")
        fax.options = {"with_id": False, "with_pdf": False}
        self._fire(fax, 1)

    def repeat_webhook(self) -> None:
        with self.ledger.lock:
            acked = [f for f in self.ledger.inbound.values() if f.acks]
        if acked:
            with self.lock:
                fax = self.rng.choice(acked)
            self._fire(fax, 1, repeat=True)

    def _fire(self, fax: InboundFax, attempt: int, repeat: bool = False) -> None:
        try:
            answer = self._http().post(
                f"{self.ep.sandbox_url}/_sandbox/fire",
                json={
                    "provider": fax.provider,
                    "kind": "inbound",
                    "id": fax.sandbox_id,
                    "url": self.ep.webhook_url(fax.account),
                    **fax.options,
                },
            )
            answer.raise_for_status()
            result = answer.json()
            status = int(result["status"])
        except httpx.HTTPError:
            status = -1  # the sandbox itself did not answer: try again
            result = {}
        self.ledger.count(f"webhook {status if status > 0 else 'no answer'}")
        if status == 200:
            headers = {k.lower(): v for k, v in result.get("headers", {}).items()}
            with self.ledger.lock:
                fax.acks.append((time.time(), headers.get("faxrelay-fax-id", "")))
            return
        with self.ledger.lock:
            fax.refusals += 1
        if attempt < MAX_ATTEMPTS and not repeat:
            with self.lock:
                delay = self.rng.uniform(*WEBHOOK_RETRY)
            self._later(delay, lambda: self._fire(fax, attempt + 1))

    # --- outbound ----------------------------------------------------------------------------
    def _document(self, what: str, s3_share: float) -> tuple[dict[str, str], str]:
        """A new, distinct PDF as the API takes it; and its sha256."""
        with self.lock:
            pdf = make_pdf(self.rng.randint(1, 2), label=self._label(what))
            by_key = self.rng.random() < s3_share
        sha = hashlib.sha256(pdf).hexdigest()
        if by_key:
            key = f"chaos-documents/{sha}.pdf"
            try:
                self.s3.put_object(Bucket=self.ep.bucket, Key=key, Body=pdf)
                return {"s3_key": key}, sha
            except Exception:  # S3 is down: the caller sends the bytes instead
                self.ledger.count("document by s3_key not stored (S3 down)")
        return {"base64": base64.b64encode(pdf).decode()}, sha

    def http_send(self) -> None:
        with self.lock:
            account = self.rng.choice(list(SEND_ACCOUNTS))
            keyed = self.rng.random() < 0.6
            to = self.rng.choice(NUMBERS)
        document, sha = self._document("http send", 0.15)
        send = Send(
            "http",
            account,
            sha,
            f"chaos-{secrets.token_hex(8)}" if keyed else "",
            {"account": account, "to": to, "document": document, "metadata": {"chaos": sha[:12]}},
        )
        with self.ledger.lock:
            self.ledger.sends[sha] = send
        self._post_send(send, 1)

    def _post_send(self, send: Send, attempt: int) -> None:
        headers = {"authorization": f"Bearer {self.ep.api_token}"}
        if send.key:
            headers["idempotency-key"] = send.key
        try:
            answer = self._http().post(
                f"{self.ep.web_url}/v1/faxes", json=send.body, headers=headers
            )
            status = answer.status_code
        except httpx.HTTPError:
            status = -1
        self.ledger.count(f"http send {status if status > 0 else 'no answer'}")
        with self.ledger.lock:
            send.statuses.append(status)
            if status in (200, 202):
                send.record_ids.append(str(answer.json()["id"]))
                if send.accepted_at is None:
                    send.accepted_at = time.time()
        retry = status not in (200, 202, 400, 401, 403, 409, 413, 422)
        if retry and send.key and send.accepted_at is None and attempt < MAX_ATTEMPTS:
            with self.lock:
                delay = self.rng.uniform(*WEBHOOK_RETRY)
            self._later(delay, lambda: self._post_send(send, attempt + 1))

    def repeat_http_send(self) -> None:
        with self.ledger.lock:
            keyed = [
                s
                for s in self.ledger.sends.values()
                if s.key and s.accepted_at and s.kind == "http"
            ]
        if keyed:
            with self.lock:
                send = self.rng.choice(keyed)
            self._post_send(send, MAX_ATTEMPTS)  # one repeat, not retried

    def queue_send(self) -> None:
        with self.lock:
            account = self.rng.choice(list(SEND_ACCOUNTS))
            keyed = self.rng.random() < 0.5
            to = self.rng.choice(NUMBERS)
        document, sha = self._document("queue send", 0.3)
        kwargs: dict[str, Any] = {
            "account": account,
            "to": to,
            "document": document,
            "metadata": {"chaos": sha[:12]},
        }
        key = f"chaos-q-{secrets.token_hex(8)}" if keyed else ""
        if key:
            kwargs["idempotency_key"] = key
        send = Send("queue", account, sha, key, kwargs, task_id=str(uuid.uuid4()))
        with self.ledger.lock:
            self.ledger.sends[sha] = send
        self._publish(send, 1)

    def _publish(self, send: Send, attempt: int) -> None:
        try:
            with self.publish_lock:
                self.celery.send_task(
                    "faxrelay.send_fax",
                    kwargs=send.body,
                    task_id=send.task_id,  # a republished message is the same message
                    retry=True,
                    retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
                )
        except Exception:  # the broker is down: the calling service tries again later
            self.ledger.count("queue send not published (Redis down)")
            if attempt < MAX_ATTEMPTS:
                with self.lock:
                    delay = self.rng.uniform(*WEBHOOK_RETRY)
                self._later(delay, lambda: self._publish(send, attempt + 1))
            return
        self.ledger.count("queue send published")
        with self.ledger.lock:
            send.accepted_at = time.time()

    def cancel(self) -> None:
        recent = time.time() - 8
        with self.ledger.lock:
            candidates = [
                s
                for s in self.ledger.sends.values()
                if s.kind == "http"
                and s.record_ids
                and not s.cancel
                and (s.accepted_at or 0) > recent
            ]
        if not candidates:
            return
        with self.lock:
            send = self.rng.choice(candidates)
        with self.ledger.lock:
            send.cancel = "error"
        try:
            answer = self._http().post(
                f"{self.ep.web_url}/v1/faxes/{send.record_ids[0]}/cancel",
                headers={"authorization": f"Bearer {self.ep.api_token}"},
            )
            status = answer.status_code
        except httpx.HTTPError:
            status = -1
        self.ledger.count(f"cancel {status if status > 0 else 'no answer'}")
        with self.ledger.lock:
            send.cancel = {202: "cancelled", 409: "refused"}.get(status, "error")
