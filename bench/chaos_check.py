"""The chaos soak's verdict, from outside: faxrelay's API, the sandbox's own books, the bucket,
and what the subscriber received; never faxrelay's internals.

- every fax acknowledged (or held where reconcile finds it) → exactly one ``archived`` record
  with the provider's sha256, and exactly one ``inbound/…pdf`` object with those bytes;
- every accepted send (a 2xx from ``POST /v1/faxes``, a published ``send_fax`` message) →
  exactly one record, in a final state (``unknown`` counted apart: it waits for an operator);
  at most one job at the sandbox carries its document; the job the record names carries it,
  and a record that says it went out has a job; a fax whose cancel was acknowledged is not sent;
- every event a record owes (``fax.received`` and ``fax.archived`` for an archived fax, …) reached
  the subscriber at least once.

``plant_loss`` deletes an acknowledged record and another fax's archived object, so that a run
shows the checks report a loss.
"""

from __future__ import annotations

import ast
import contextlib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import redis

from bench.chaos_ledger import InboundFax, Ledger, Send
from bench.chaos_observe import Snapshot
from worker.store import keys

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

FINAL = {"archived", "delivered", "failed", "cancelled", "accepted"}
# The categories a finding falls in; all of them but NOT SETTLED break the promise.
CATEGORIES = (
    "LOST",
    "DUPLICATED",
    "DOUBLE-SENT",
    "WRONG ATTRIBUTION",
    "SENT AFTER CANCEL",
    "EVENTS MISSING",
    "NOT SETTLED",
)


@dataclass(frozen=True)
class Finding:
    category: str
    kind: str  # e.g. "inbound", "queue send"
    what: str
    # A message parked in the broker's unacked set: kombu hands it back only after the
    # visibility timeout, so waiting any longer within the soak changes nothing.
    parked: bool = False
    # An event faxrelay still holds in its outbox: late, not (yet) lost.
    pending: bool = False


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    outbound_states: Counter[str] = field(default_factory=Counter)
    unknown_sent_once: int = 0
    events_owed: int = 0
    events_pending: int = 0  # of the missing, those faxrelay still holds in its outbox
    archive_times: list[tuple[float, bool]] = field(default_factory=list)  # (s, during S3 outage)
    slow_outside: list[tuple[float, str]] = field(default_factory=list)  # (s, record) outside it
    owed_faxes: int = 0
    accepted_sends: Counter[str] = field(default_factory=Counter)
    stray_jobs: int = 0

    def add(
        self, category: str, kind: str, what: str, parked: bool = False, pending: bool = False
    ) -> None:
        self.findings.append(Finding(category, kind, what, parked, pending))

    def count(self, category: str, kind: str | None = None) -> int:
        return sum(1 for f in self.findings if f.category == category and kind in (None, f.kind))

    @property
    def failures(self) -> list[Finding]:
        """What fails the soak: every finding but a message parked in the broker (kombu hands
        it back within the visibility timeout; the table lists it)."""
        return [f for f in self.findings if not f.parked]

    @property
    def complete(self) -> bool:
        """Nothing that can still come within the soak is on its way: no record missing,
        unsettled or owing an event, but for messages parked until the visibility timeout."""
        return not any(
            f.category in ("LOST", "NOT SETTLED", "EVENTS MISSING") and not f.parked
            for f in self.findings
        )


# --- the verdict -------------------------------------------------------------------------------
def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _archived_at(record: dict[str, Any]) -> float | None:
    for entry in reversed(record.get("history", [])):
        if entry.get("state") == "archived":
            return _epoch(entry["at"])
    return None


def _owed_events(record: dict[str, Any]) -> set[str]:
    state, job = record["state"], (record.get("provider_ids") or {}).get("job_id")
    if record["direction"] == "inbound":
        if state == "archived":
            return {"fax.received", "fax.archived"}
        if state == "failed" and record.get("reason") != "duplicate":
            return {"fax.received", "fax.failed"}
        return set()
    owed = {
        "delivered": {"fax.submitted", "fax.delivered"},
        "accepted": {"fax.submitted"},
        "failed": {"fax.failed"},
        "cancelled": {"fax.cancelled"},
    }.get(state, set())
    if job and state in ("failed", "cancelled"):
        owed = owed | {"fax.submitted"}
    return owed


def evaluate(
    ledger: Ledger, snap: Snapshot, s3_window: tuple[float, float] | None = None
) -> Report:
    report = Report()
    by_id = {r["id"]: r for r in snap.records}
    inbound_by_sha: dict[str, list[dict[str, Any]]] = defaultdict(list)
    inbound_by_pid: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    outbound_by_sha: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in snap.records:
        if r["direction"] == "inbound":
            if r.get("sha256"):
                inbound_by_sha[r["sha256"]].append(r)
            pid = (r.get("provider_ids") or {}).get("fax_id", "")
            inbound_by_pid[(r["account"], pid)].append(r)
        elif r.get("sha256"):
            outbound_by_sha[r["sha256"]].append(r)
    objects_by_sha: dict[str, list[str]] = defaultdict(list)
    for key, sha in (snap.objects or {}).items():
        objects_by_sha[sha].append(key)
    with ledger.lock:
        faxes = list(ledger.inbound.values())
        sends = list(ledger.sends.values())
    for fax in faxes:
        if fax.owed:
            report.owed_faxes += 1
            _check_inbound(
                report, fax, inbound_by_sha, inbound_by_pid, by_id, snap, objects_by_sha, s3_window
            )
    jobs_by_sha: dict[str, list[dict[str, Any]]] = defaultdict(list)
    jobs_by_id: dict[tuple[str, str], dict[str, Any]] = {}
    for job in snap.jobs:
        jobs_by_sha[job["document_sha256"]].append(job)
        for name in _job_names(job):
            jobs_by_id[(job["provider"], name)] = job
    known = {s.sha256 for s in sends}
    report.stray_jobs = sum(len(j) for sha, j in jobs_by_sha.items() if sha not in known)
    for sha, jobs in jobs_by_sha.items():
        if len(jobs) > 1:
            send = next((s for s in sends if s.sha256 == sha), None)
            report.add(
                "DOUBLE-SENT",
                f"{send.kind} send" if send else "send",
                f"one document went out {len(jobs)} times: jobs "
                + ", ".join(f"{j['provider']} {j['id']}" for j in jobs)
                + (
                    f" (account {send.account}, records {_ids(outbound_by_sha[sha])})"
                    if send
                    else ""
                ),
            )

    def owners(sha: str) -> str:
        """Whose document ``sha`` is: the send and its records, for a finding's words."""
        owner = next((s for s in sends if s.sha256 == sha), None)
        if owner is None:
            return f"a document no send of the soak made ({sha[:12]})"
        accepted = "accepted" if owner.accepted_at is not None else "never acknowledged"
        return (
            f"the document of {owner.kind} send to {owner.account} ({accepted}"
            + (f", key {owner.key}" if owner.key else "")
            + f"; records {_ids(outbound_by_sha.get(sha, []))})"
        )

    for send in sends:
        if send.accepted_at is not None:
            report.accepted_sends[send.kind] += 1
            _check_send(
                report,
                send,
                outbound_by_sha[send.sha256],
                by_id,
                jobs_by_sha[send.sha256],
                jobs_by_id,
                snap.messages,
                owners,
            )
    seen = snap.events
    for record in snap.records:
        for event in sorted(_owed_events(record)):
            report.events_owed += 1
            if (record["id"], event) not in seen:
                pending = snap.outbox.get((record["id"], event))
                if pending:
                    report.events_pending += 1
                report.add(
                    "EVENTS MISSING",
                    record["direction"],
                    f"{event} of {record['id']} ({record['account']}, {record['state']}) never "
                    "reached the subscriber; "
                    + (f"still in the outbox ({pending})" if pending else "not in the outbox"),
                    pending=bool(pending),
                )
    return report


def _job_names(job: dict[str, Any]) -> list[str]:
    """What a record may name a job by: the provider's job id and, at voip.ms (which answers
    no id), the station id the sender chose (faxrelay puts its own reference there)."""
    names = [str(job["id"])]
    station = (job.get("extra") or {}).get("station_id")
    if job["provider"] == "voipms" and station:
        with contextlib.suppress(ValueError, SyntaxError):  # the sandbox lists repr()s
            value = ast.literal_eval(station)
            if isinstance(value, str) and value:
                names.append(value)
    return names


def _ids(records: list[dict[str, Any]]) -> str:
    return ", ".join(f"{r['id']} {r['state']}" for r in records) or "none"


def _check_inbound(
    report: Report,
    fax: InboundFax,
    by_sha: dict[str, list[dict[str, Any]]],
    by_pid: dict[tuple[str, str], list[dict[str, Any]]],
    by_id: dict[str, dict[str, Any]],
    snap: Snapshot,
    objects_by_sha: dict[str, list[str]],
    s3_window: tuple[float, float] | None,
) -> None:
    pids = (fax.sandbox_id, f"RX{fax.sandbox_id}", f"sha256-{fax.sha256}")
    mine = {r["id"]: r for r in by_sha.get(fax.sha256, []) if r["account"] == fax.account}
    for pid in pids:
        mine.update({r["id"]: r for r in by_pid.get((fax.account, pid), [])})
    for _, fax_id in fax.acks:
        if fax_id and fax_id in by_id:
            mine[fax_id] = by_id[fax_id]
    name = f"{fax.provider} fax {fax.sandbox_id} ({fax.how}, {fax.size} bytes)"
    acked = sorted({i for _, i in fax.acks if i})
    # One finding per fax and category, whatever the number of ways it went wrong.
    lost = [f"acknowledged as {i}, and no such record exists" for i in acked if i not in by_id]
    good = [r for r in mine.values() if r["state"] == "archived" and r.get("sha256") == fax.sha256]
    record = good[0] if good else None
    if record is None:
        how = f"acknowledged {len(fax.acks)}x" if fax.acks else "held for reconcile"
        lost.append(
            f"not archived with its sha256 {fax.sha256[:12]} ({how}); "
            f"records: {_ids(list(mine.values()))}"
        )
    elif snap.objects is not None:
        key = (record.get("archive") or {}).get("key", "")
        if snap.objects.get(key) != fax.sha256:
            lost.append(
                f"record {record['id']} says archived at {key}, but that object "
                + ("is missing" if key not in snap.objects else "holds other bytes")
            )
    if lost:
        unsettled = record is None and any(r["state"] not in FINAL for r in mine.values())
        report.add("NOT SETTLED" if unsettled else "LOST", "inbound", f"{name}: {'; '.join(lost)}")
    if len(good) > 1:
        report.add(
            "DUPLICATED", "inbound", f"{name}: archived by {len(good)} records: {_ids(good)}"
        )
    copies = objects_by_sha.get(fax.sha256, [])
    if len(copies) > 1:
        report.add(
            "DUPLICATED", "inbound object", f"{name}: {len(copies)} objects: {', '.join(copies)}"
        )
    archived_at = _archived_at(record) if record is not None else None
    if fax.acks and archived_at is not None:
        acked_at = fax.acks[0][0]
        during = s3_window is not None and acked_at <= s3_window[1] and archived_at >= s3_window[0]
        report.archive_times.append((archived_at - acked_at, during))
        if not during:
            report.slow_outside.append((archived_at - acked_at, f"{record['id']} ({name})"))


def _check_send(
    report: Report,
    send: Send,
    records: list[dict[str, Any]],
    by_id: dict[str, dict[str, Any]],
    jobs: list[dict[str, Any]],
    jobs_by_id: dict[tuple[str, str], dict[str, Any]],
    messages: dict[str, tuple[str, str]],
    owners: Callable[[str], str],
) -> None:
    kind = f"{send.kind} send"
    name = f"{kind} to {send.account}" + (f" (key {send.key})" if send.key else "")
    answered = sorted(set(send.record_ids))
    if len(answered) > 1 or len(records) > 1:  # one finding per send
        report.add(
            "DUPLICATED",
            kind,
            f"{name}: the API answered {', '.join(answered) or 'nothing'}; records carrying "
            f"its document: {_ids(records)}",
        )
    for fax_id in answered:
        if fax_id not in by_id:
            report.add("LOST", kind, f"{name}: accepted as {fax_id}, and no such record exists")
    if not records:
        if answered:
            return
        where, said = messages.get(send.task_id, ("", ""))
        if where in ("unacked", "queued"):
            report.add(
                "NOT SETTLED",
                kind,
                f"{name}: no record yet; its message {send.task_id} is {where} in the broker"
                + (
                    " (kombu hands it back after the visibility timeout)"
                    if where == "unacked"
                    else ""
                ),
                parked=where == "unacked",
            )
            return
        report.add(
            "LOST",
            kind,
            f"{name}: accepted, and no record carries its document {send.sha256[:12]}"
            + (f"; message {send.task_id} {where}" if send.task_id else "")
            + (f"; {said}" if said else ""),
        )
        return
    for record in records:
        state = record["state"]
        report.outbound_states[state] += 1
        if state == "unknown" and jobs:
            report.unknown_sent_once += 1
        if state not in FINAL and state != "unknown":
            report.add("NOT SETTLED", kind, f"{name}: {record['id']} still {state}")
        job_id = (record.get("provider_ids") or {}).get("job_id", "")
        if job_id:
            job = jobs_by_id.get((record["provider"], job_id))
            if job is None or job["document_sha256"] != send.sha256:
                report.add(
                    "WRONG ATTRIBUTION",
                    kind,
                    f"{name}: {record['id']} ({state}) names {record['provider']} job {job_id}, "
                    + (
                        "which does not exist"
                        if job is None
                        else f"which carries {owners(job['document_sha256'])} (to {job['to']}, "
                        f"submitted at {job['submitted_at']:.0f})"
                    )
                    + f"; its own document went out as {[j['id'] for j in jobs] or 'nothing'}",
                )
        elif state in ("delivered", "accepted") and not jobs:
            report.add(
                "WRONG ATTRIBUTION",
                kind,
                f"{name}: {record['id']} says {state}, but its document never reached {record['provider']}",
            )
    cancelled = send.cancel == "cancelled" or any(r["state"] == "cancelled" for r in records)
    sent = [j for j in jobs if j.get("cancelled_at") is None]
    if cancelled and sent:
        report.add(
            "SENT AFTER CANCEL",
            kind,
            f"{name}: {_ids(records)}; its cancel was acknowledged, and job {sent[0]['id']} went out",
        )


# --- proving the checks can fail ----------------------------------------------------------------
def plant_loss(
    ledger: Ledger, snap: Snapshot, redis_url: str, s3: S3Client, bucket: str
) -> list[str]:
    """Delete one acknowledged fax's record and another's archived object; returns the record
    id and the object key (the soak must report both faxes LOST)."""
    by_id = {r["id"]: r for r in snap.records}
    with ledger.lock:
        acked = [
            by_id[i]
            for f in ledger.inbound.values()
            if f.provider == "primevox"
            for i in sorted({i for _, i in f.acks if i})[:1]
            if i in by_id and by_id[i]["state"] == "archived"
        ]
    if len(acked) < 2:
        raise RuntimeError("nothing to plant a loss in: fewer than two archived PrimeVox faxes")
    record, other = acked[0], acked[-1]
    client = redis.Redis.from_url(redis_url)
    try:
        client.delete(keys.fax_key(record["id"]))
    finally:
        client.close()
    key = other["archive"]["key"]
    s3.delete_object(Bucket=bucket, Key=key)
    return [record["id"], key]
