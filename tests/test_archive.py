"""The S3 archive against a real S3-compatible server (SeaweedFS)."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import BUCKET
from worker.domain import Direction, FaxRecord, parse_iso, utcnow
from worker.io.archive import Archive, s3_client

ROOT = Path(__file__).resolve().parents[1]
PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
OTHER_PDF = PDF.replace(b"Catalog", b"Catalog/Version/1.7")


def inbound(created_at: str = "2024-02-29T23:59:59.900000Z", **fields: Any) -> FaxRecord:
    record = FaxRecord.new(
        Direction.INBOUND,
        "main",
        "primevox",
        from_number="+15145550100",
        to_number="+15145550199",
        pages=2,
        provider_ids={"fax": "pv-123", "box": "2002"},
        **fields,
    )
    record.created_at = created_at
    return record


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def calls(archive: Archive) -> Iterator[list[tuple[str, str]]]:
    """The S3 operations the archive's client makes, as (operation, key)."""
    seen: list[tuple[str, str]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        seen.append((model.name, params.get("Key", "")))

    archive.client.meta.events.register("before-parameter-build.s3", record)
    yield seen
    archive.client.meta.events.unregister("before-parameter-build.s3", record)


def test_inbound_round_trip_key_and_sha256(archive: Archive) -> None:
    record = inbound()
    stored = archive.archive_inbound(record, io.BytesIO(PDF))
    key = f"{archive.prefix}inbound/main/2024/02/29/{record.id}.pdf"
    assert stored.key == key
    assert stored.bucket == archive.bucket
    assert stored.sha256 == sha(PDF)
    assert stored.size == len(PDF)
    assert stored.uploaded is True
    assert archive.get_bytes(key) == PDF
    head = archive.client.head_object(Bucket=archive.bucket, Key=key)
    assert head["Metadata"]["sha256"] == sha(PDF)
    assert head["ContentType"] == "application/pdf"
    assert head["ContentLength"] == len(PDF)
    assert archive.stored_sha256(key) == sha(PDF)


@pytest.mark.parametrize(
    ("created_at", "date_path"),
    [
        ("2024-01-01T00:00:00.000000Z", "2024/01/01"),
        ("2023-12-31T23:59:59.999999Z", "2023/12/31"),
        ("2025-07-04T12:00:00.000000Z", "2025/07/04"),
    ],
)
def test_key_uses_the_utc_date_of_receipt(
    archive: Archive, created_at: str, date_path: str
) -> None:
    record = inbound(created_at)
    assert archive.key_for("inbound", record) == (
        f"{archive.prefix}inbound/main/{date_path}/{record.id}.pdf"
    )
    assert archive.key_for("inbound", record, "json") == (
        f"{archive.prefix}inbound/main/{date_path}/{record.id}.json"
    )
    assert archive.key_for("outbound", record) == (
        f"{archive.prefix}outbound/main/{date_path}/{record.id}.pdf"
    )


def test_key_date_is_utc_when_created_at_has_an_offset(archive: Archive) -> None:
    record = inbound("2024-03-01T00:30:00+02:00")  # 2024-02-29 22:30 UTC
    assert archive.key_for("inbound", record) == (
        f"{archive.prefix}inbound/main/2024/02/29/{record.id}.pdf"
    )


def test_prefix_is_used_verbatim(archive: Archive) -> None:
    record = inbound()
    bare = Archive(archive.client, archive.bucket, prefix="")
    odd = Archive(archive.client, archive.bucket, prefix="faxes-")
    assert bare.key_for("inbound", record) == f"inbound/main/2024/02/29/{record.id}.pdf"
    assert odd.key_for("inbound", record) == f"faxes-inbound/main/2024/02/29/{record.id}.pdf"


def test_sidecar_fields(archive: Archive) -> None:
    record = inbound()
    before = utcnow()
    archive.archive_inbound(record, io.BytesIO(PDF))
    key = f"{archive.prefix}inbound/main/2024/02/29/{record.id}.json"
    head = archive.client.head_object(Bucket=archive.bucket, Key=key)
    assert head["ContentType"] == "application/json"
    sidecar = json.loads(archive.get_bytes(key))
    archived_at = sidecar.pop("archived_at")
    assert sidecar == {
        "id": record.id,
        "account": "main",
        "provider": "primevox",
        "provider_ids": {"fax": "pv-123", "box": "2002"},
        "from": "+15145550100",
        "to": "+15145550199",
        "pages": 2,
        "sha256": sha(PDF),
        "received_at": "2024-02-29T23:59:59.900000Z",
    }
    assert archived_at.endswith("Z")
    assert before <= parse_iso(archived_at) <= utcnow()


def test_rearchiving_the_same_bytes_uploads_nothing(
    archive: Archive, calls: list[tuple[str, str]]
) -> None:
    record = inbound()
    key = archive.key_for("inbound", record)
    first = archive.archive_inbound(record, io.BytesIO(PDF))
    head_before = archive.client.head_object(Bucket=archive.bucket, Key=key)
    calls.clear()

    again = archive.archive_inbound(record, io.BytesIO(PDF))

    assert again.uploaded is False
    assert (again.key, again.sha256, again.size) == (first.key, first.sha256, first.size)
    writes = [c for c in calls if c[0] in ("PutObject", "CreateMultipartUpload", "UploadPart")]
    assert writes == [("PutObject", archive.key_for("inbound", record, "json"))]  # sidecar only
    head_after = archive.client.head_object(Bucket=archive.bucket, Key=key)
    assert head_after["ETag"] == head_before["ETag"]
    assert head_after["LastModified"] == head_before["LastModified"]


def test_different_bytes_are_uploaded(archive: Archive, calls: list[tuple[str, str]]) -> None:
    record = inbound()
    key = archive.key_for("inbound", record)
    archive.archive_inbound(record, io.BytesIO(PDF))
    calls.clear()

    changed = archive.archive_inbound(record, io.BytesIO(OTHER_PDF))

    assert changed.uploaded is True
    assert ("PutObject", key) in calls
    assert archive.get_bytes(key) == OTHER_PDF
    assert archive.stored_sha256(key) == sha(OTHER_PDF)
    sidecar = json.loads(archive.get_bytes(archive.key_for("inbound", record, "json")))
    assert sidecar["sha256"] == sha(OTHER_PDF)


def test_a_fresh_key_is_put_without_looking_for_a_copy_first(
    archive: Archive, calls: list[tuple[str, str]]
) -> None:
    """A send's document (its key named after the new record): one PUT, no HEAD."""
    key = archive.key_for("outbound", inbound())
    stored = archive.put_file(key, io.BytesIO(PDF), fresh=True)
    assert stored.uploaded is True
    assert calls == [("PutObject", key)]
    assert archive.get_bytes(key) == PDF


def test_download_is_one_get_of_the_whole_object(
    archive: Archive, calls: list[tuple[str, str]]
) -> None:
    """Several chunks' worth, streamed into the sink by one GET (no HEAD for the size first)."""
    data = PDF + bytes(range(256)) * 12_000  # about 3 MB: three 1 MiB chunks and a bit
    stored = archive.put_file(f"{archive.prefix}doc.pdf", io.BytesIO(data))
    calls.clear()
    sink = io.BytesIO()
    archive.download_to(stored.key, sink)
    assert sink.getvalue() == data
    assert calls == [("GetObject", stored.key)]


def test_stored_sha256_of_a_missing_object(archive: Archive) -> None:
    assert archive.stored_sha256(f"{archive.prefix}inbound/none.pdf") is None


def test_put_stream_from_an_unseekable_source(archive: Archive) -> None:
    class Pipe(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            return self.data.read(size)

    data = PDF * 1000
    stored = archive.put_stream(f"{archive.prefix}outbound/x.pdf", Pipe(data))
    assert stored.uploaded and stored.size == len(data) and stored.sha256 == sha(data)
    assert archive.get_bytes(stored.key) == data


def test_quarantine_key_layout(archive: Archive) -> None:
    record = inbound("2024-05-06T07:08:09.000000Z")
    html = b"<html>session expired</html>"
    stored = archive.quarantine(record, io.BytesIO(html), "text/html")
    assert stored.key == f"{archive.prefix}quarantine/main/2024/05/06/{record.id}.pdf"
    assert archive.get_bytes(stored.key) == html
    head = archive.client.head_object(Bucket=archive.bucket, Key=stored.key)
    assert head["ContentType"] == "text/html"
    assert head["Metadata"]["sha256"] == sha(html)
    # Nothing went to the inbound area.
    assert archive.stored_sha256(archive.key_for("inbound", record)) is None


def test_ensure_bucket_creates_a_missing_bucket(s3_server: str) -> None:
    client = s3_client(s3_server)
    name = f"fr-new-{uuid.uuid4().hex[:12]}"
    with pytest.raises(ClientError):
        client.head_bucket(Bucket=name)
    archive = Archive(client, name)
    archive.ensure_bucket()
    try:
        client.head_bucket(Bucket=name)  # raises if missing
        archive.ensure_bucket()  # already there: fine
        archive.ping()
        stored = archive.put_file("a.pdf", io.BytesIO(PDF))
        assert archive.get_bytes(stored.key) == PDF
    finally:
        for obj in client.list_objects_v2(Bucket=name).get("Contents", []):
            client.delete_object(Bucket=name, Key=obj["Key"])
        client.delete_bucket(Bucket=name)


# --- a large upload in bounded memory -------------------------------------------------------

SIZE = 200 * 1024 * 1024
CHILD = textwrap.dedent(
    """
    import hashlib, os, resource, sys
    from worker.io.archive import Archive, s3_client

    endpoint, bucket, key, path, size = sys.argv[1:6]
    size = int(size)
    block = hashlib.sha256(b"seed").digest() * (1024 * 1024 // 32)  # 1 MiB
    with open(path, "wb") as out:
        for i in range(size // len(block)):
            out.write(i.to_bytes(8, "big") + block[8:])
    archive = Archive(s3_client(endpoint), bucket)
    archive.stored_sha256(key)  # boto3's clients and connections loaded: the baseline
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open(path, "rb") as stream:
        stored = archive.put_file(key, stream)
    print(stored.uploaded, stored.size, stored.sha256)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, baseline)
    """
)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class BigUpload:
    archive: Archive
    key: str
    path: Path
    uploaded: str
    size: int
    sha256: str
    peak_mb: float


@pytest.fixture(scope="module")
def big_upload(s3_server: str, tmp_path_factory: pytest.TempPathFactory) -> BigUpload:
    """A 200 MB file written and uploaded with Archive.put_file by a child process."""
    archive = Archive(s3_client(s3_server), BUCKET, prefix=f"t-{uuid.uuid4().hex[:8]}/")
    archive.ensure_bucket()
    path = tmp_path_factory.mktemp("big") / "big.pdf"
    key = f"{archive.prefix}inbound/main/2024/01/01/big.pdf"
    result = subprocess.run(
        [sys.executable, "-c", CHILD, s3_server, archive.bucket, key, str(path), str(SIZE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    summary, rss = result.stdout.split("\n")[:2]
    uploaded, size, digest = summary.split()
    maxrss, baseline = rss.split()
    # ru_maxrss is in KiB on Linux; what the upload itself added counts.
    added = (int(maxrss) - int(baseline)) / 1024
    return BigUpload(archive, key, path, uploaded, int(size), digest, added)


def test_large_upload_is_stored_whole(big_upload: BigUpload) -> None:
    archive, key = big_upload.archive, big_upload.key
    assert big_upload.path.stat().st_size == SIZE
    expected = file_sha256(big_upload.path)
    assert (big_upload.uploaded, big_upload.size, big_upload.sha256) == ("True", SIZE, expected)
    head = archive.client.head_object(Bucket=archive.bucket, Key=key)
    assert head["ContentLength"] == SIZE
    assert head["Metadata"]["sha256"] == expected
    body = archive.client.get_object(Bucket=archive.bucket, Key=key)["Body"]
    stored = hashlib.sha256()
    for chunk in body.iter_chunks(1024 * 1024):
        stored.update(chunk)
    assert stored.hexdigest() == expected


def test_large_upload_peak_memory_stays_far_below_the_file_size(big_upload: BigUpload) -> None:
    assert big_upload.peak_mb < 40, (
        f"the upload added {big_upload.peak_mb:.0f} MB of RSS for a {SIZE // 2**20} MB file"
    )


def test_the_providers_receipt_time_dates_the_archive_and_the_sidecar(archive: Archive) -> None:
    record = inbound("2024-03-01T00:00:05.000000Z")  # recorded just after midnight …
    record.work["received_at"] = "2024-02-29T23:58:00.000000Z"  # … received just before it
    stored = archive.archive_inbound(record, io.BytesIO(PDF), pages=1)
    assert stored.key == f"{archive.prefix}inbound/main/2024/02/29/{record.id}.pdf"
    sidecar = json.loads(archive.get_bytes(archive.key_for("inbound", record, "json")))
    assert sidecar["received_at"] == "2024-02-29T23:58:00.000000Z"
    assert sidecar["pages"] == 1  # counted from the PDF; the provider said 2


# --- a large upload from memory: no part copies on top ----------------------------------------

IN_MEMORY = 64 * 1024 * 1024
CHILD_IN_MEMORY = textwrap.dedent(
    """
    import hashlib, io, sys
    from worker.io.archive import Archive, s3_client

    endpoint, bucket, key, size = sys.argv[1:5]
    block = hashlib.sha256(b"seed").digest() * (1024 * 1024 // 32)  # 1 MiB
    data = io.BytesIO(b"".join(i.to_bytes(8, "big") + block[8:] for i in range(int(size) >> 20)))
    archive = Archive(s3_client(endpoint), bucket)
    archive.stored_sha256(key)  # boto3's clients and connections loaded: the baseline

    def kib(field):
        with open("/proc/self/status") as status:
            return next(int(x.split()[1]) for x in status if x.startswith(field + ":"))

    # The peak so far (building the data) is not the upload's: start the high-water mark anew.
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    baseline = kib("VmRSS")
    stored = archive.put_file(key, data)
    print(stored.uploaded, stored.size, stored.sha256)
    print(kib("VmHWM"), baseline)
    """
)


def test_a_large_in_memory_upload_adds_no_part_copies(s3_server: str) -> None:
    """boto3 would copy up to 10 parts of 8 MiB out of a stream (s3transfer's default, which
    boto3 does not let us lower): ``put_file`` sends such a stream from a file instead."""
    archive = Archive(s3_client(s3_server), BUCKET, prefix=f"t-{uuid.uuid4().hex[:8]}/")
    archive.ensure_bucket()
    key = f"{archive.prefix}outbound/main/2024/01/01/in-memory.pdf"
    result = subprocess.run(
        [sys.executable, "-c", CHILD_IN_MEMORY, s3_server, archive.bucket, key, str(IN_MEMORY)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    summary, rss = result.stdout.split("\n")[:2]
    uploaded, size, digest = summary.split()
    maxrss, baseline = rss.split()
    added_mb = (int(maxrss) - int(baseline)) / 1024
    assert (uploaded, int(size)) == ("True", IN_MEMORY)
    head = archive.client.head_object(Bucket=archive.bucket, Key=key)
    assert head["ContentLength"] == IN_MEMORY and head["Metadata"]["sha256"] == digest
    stored = hashlib.sha256()
    for chunk in archive.client.get_object(Bucket=archive.bucket, Key=key)["Body"].iter_chunks():
        stored.update(chunk)
    assert stored.hexdigest() == digest
    assert added_mb < 40, (
        f"the upload added {added_mb:.0f} MB of RSS to a {IN_MEMORY >> 20} MB stream"
    )
