"""A final record's copies in S3: how a fax stays findable by id once it has left Redis.

When a record becomes final, the retention sweep (``worker.pipeline.retention``) files its
public JSON (as the API shows it) twice, before the record may leave Redis:

- beside its archive: an archived inbound fax's ``{id}.json`` sidecar (and a quarantined
  download's) gains a ``record`` field; an outbound fax gets the ``{id}.json`` sidecar beside its
  document (``{prefix}outbound/{account}/{YYYY}/{MM}/{DD}/{id}.json``), with the same fields;
- by id: ``{prefix}records/{YYYY}/{MM}/{DD}/{id}.json``.

The by-id copy is what lookups read. A fax id is ``fx_`` + 11 hex digits of its creation time in
epoch milliseconds + 12 random ones (``worker.domain.new_fax_id``), so the id alone gives the UTC
date of that key; the account and the archive's date (the provider's receipt time) are not in the
id, so the archive's own path cannot be derived from it, and no Redis entry per fax is needed to
find either. Only a well-formed id is looked up: anything else is "no such fax" without a request.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from botocore.exceptions import ClientError

from worker.domain import Direction, FaxRecord, State
from worker.io.archive import Archive, inbound_sidecar

FAX_ID = re.compile(r"fx_([0-9a-f]{11})[0-9a-f]{12}")


def record_key(archive: Archive, fax_id: str) -> str | None:
    """The by-id key of a fax's filed record; None when ``fax_id`` is not a fax id."""
    match = FAX_ID.fullmatch(fax_id)
    if match is None:
        return None
    day = time.strftime("%Y/%m/%d", time.gmtime(int(match[1], 16) / 1000))
    return f"{archive.prefix}records/{day}/{fax_id}.json"


def sidecar_key(archive: Archive, record: FaxRecord) -> str | None:
    """The sidecar beside the fax's archived file (received PDF, quarantined download, or the
    document sent), or None when it has none (an inbound fax that failed before a download)."""
    if record.direction == Direction.OUTBOUND:
        return archive.key_for("outbound", record, "json") if record.document_key else None
    key = record.archive.get("key", "")
    if not key.startswith(archive.prefix) or not key.endswith(".pdf"):
        return None
    return key[: -len(".pdf")] + ".json"


def _archived_at(record: FaxRecord) -> str | None:
    for entry in record.history:
        if entry.get("state") == State.ARCHIVED:
            return str(entry.get("at"))
    return None


def file_record(archive: Archive, record: FaxRecord) -> None:
    """Write the record's final JSON beside its archive and under its by-id key."""
    public = record.public()
    side = sidecar_key(archive, record)
    if side is not None:
        if record.direction == Direction.INBOUND:
            data = inbound_sidecar(record, record.sha256, record.pages, _archived_at(record))
        else:
            data = _outbound_sidecar(record)
        archive.put_json(side, {**data, "record": public})
    key = record_key(archive, record.id)
    if key is not None:
        archive.put_json(key, public)


def _outbound_sidecar(record: FaxRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "account": record.account,
        "provider": record.provider,
        "provider_ids": record.provider_ids,
        "from": record.from_number,
        "to": record.to_number,
        "pages": record.pages,
        "sha256": record.sha256,
        "state": str(record.state),
        "created_at": record.created_at,
        "finished_at": record.updated_at,
    }


def filed_record(archive: Archive, fax_id: str) -> FaxRecord | None:
    """The record filed under its id, or None (not a fax id, or never filed). Blocking."""
    key = record_key(archive, fax_id)
    if key is None:
        return None
    try:
        data = json.loads(archive.get_bytes(key))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return from_public(data)


def from_public(data: dict[str, Any]) -> FaxRecord:
    """A record from its public JSON (``FaxRecord.public``): no internal bookkeeping, final."""
    fields = dict(data)
    fields["from_number"] = fields.pop("from", "")
    fields["to_number"] = fields.pop("to", "")
    return FaxRecord.from_json(fields)
