"""The archive controls (server-side encryption, Object Lock retention, region, addressing style)
against a real SeaweedFS, as an operator would configure them.

SeaweedFS 4.48 supports what these tests use: SSE-S3 (``AES256``: the bytes on its disk are
encrypted), SSE-KMS once its S3 config names a KMS (here its built-in ``local`` provider, whose
default key is ``alias/seaweedfs-default``), buckets created with Object Lock (versioning on), and
retention on every put, single or multipart, which it enforces. It ignores a bucket's
LocationConstraint, so the region is checked in the request that reaches it.

The server here has S3 identities, like compose's: faxrelay's key pair may act only on its own
bucket (the actions of deploy/s3-identities.example.json), an operator's pair on everything.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from config.embedded import ManagedProcess, SeaweedPorts, find_weed, free_port, wait_until
from config.settings import ConfigError, Settings, load_settings
from tests.system import ROOT, wait_for
from worker.domain import Direction, FaxRecord
from worker.io.archive import PART, Archive, ArchiveError, s3_client

FAXRELAY_KEY = ("faxrelay-test-key", "faxrelay-test-secret-5f1c")
OPS_KEY = ("ops-test-key", "ops-test-secret-9a2e")
KMS_KEY = "alias/seaweedfs-default"  # the default key of SeaweedFS's local KMS provider
# faxrelay's identity may act only on these buckets, as compose's may act only on its own.
BUCKETS = ("fr-locked", "fr-kms", "fr-plain", "fr-web", "fr-eu")


@dataclass
class S3:
    endpoint: str
    data_dir: Path

    def ops(self) -> Any:
        """A client with the operator's key pair (every bucket, every action)."""
        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=OPS_KEY[0],
            aws_secret_access_key=OPS_KEY[1], region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )  # fmt: skip

    def at_rest(self, marker: bytes) -> bool:
        """Whether ``marker`` appears in plain text anywhere in SeaweedFS's files."""
        for path in self.data_dir.rglob("*"):
            if path.is_file() and marker in path.read_bytes():
                return True
        return False


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    tmp = tmp_path_factory.mktemp("archive-controls")
    scoped = [f"{action}:{bucket}" for bucket in BUCKETS for action in
              ("Read", "Write", "List", "Tagging", "Admin")]  # fmt: skip
    config = {
        "identities": [
            {"name": "faxrelay", "actions": scoped,
             "credentials": [{"accessKey": FAXRELAY_KEY[0], "secretKey": FAXRELAY_KEY[1]}]},
            {"name": "ops", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
             "credentials": [{"accessKey": OPS_KEY[0], "secretKey": OPS_KEY[1]}]},
        ],
        "kms": {"default_provider": "local", "providers": {"local": {"type": "local"}}},
    }  # fmt: skip
    (tmp / "s3.json").write_text(json.dumps(config))
    data = tmp / "data"
    data.mkdir()
    ports = SeaweedPorts.pick()
    argv = [
        find_weed(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-s3.port={ports.s3}", f"-master.port={ports.master}", f"-volume.port={ports.volume}",
        f"-filer.port={ports.filer}", "-admin.ui=false", f"-admin.port={ports.admin}",
        "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={tmp / 's3.json'}",
    ]  # fmt: skip
    with open(tmp / "s3.log", "w") as log:
        proc = ManagedProcess("s3", argv, sink=log, stop_timeout=20).start()
        running = S3(f"http://127.0.0.1:{ports.s3}", data)
        try:

            def ready() -> bool:
                try:
                    running.ops().list_buckets()
                except Exception:
                    return False
                return True

            wait_until(ready, 90, "SeaweedFS", proc)
            yield running
        finally:
            proc.stop()


@pytest.fixture
def faxrelay_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAXRELAY_KEY[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAXRELAY_KEY[1])


def archive_for(s3: S3, bucket: str, **controls: Any) -> Archive:
    settings = Settings(s3_endpoint_url=s3.endpoint, s3_bucket=bucket, **controls)
    return Archive.from_settings(settings)


def inbound(marker: bytes) -> tuple[FaxRecord, bytes]:
    record = FaxRecord.new(
        Direction.INBOUND, "main", "primevox", from_number="+15145550100",
        to_number="+15145550199", pages=1, provider_ids={"fax": uuid.uuid4().hex},
    )  # fmt: skip
    pdf = (
        b"%PDF-1.4\n%"
        + marker
        + b"\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
    )
    return record, pdf


def write_every_kind(archive: Archive, marker: bytes) -> list[str]:
    """Every kind of object faxrelay writes: an inbound PDF and its sidecar, a quarantined
    download, an outbound document, one from a stream, and a PDF large enough for a multipart
    upload. Returns their keys."""
    record, pdf = inbound(marker)
    stored = archive.archive_inbound(record, io.BytesIO(pdf))
    keys = [stored.key, archive.key_for("inbound", record, "json")]
    keys.append(archive.quarantine(record, io.BytesIO(b"<html>" + marker), "text/html").key)
    keys.append(archive.put_file(archive.key_for("outbound", record), io.BytesIO(pdf)).key)
    keys.append(archive.put_stream(f"outbound/{uuid.uuid4().hex}.pdf", io.BytesIO(pdf)).key)
    with tempfile.NamedTemporaryFile(suffix=".pdf") as big:
        big.write(pdf + os.urandom(PART + 1024) + marker)
        big.flush()
        big.seek(0)
        keys.append(archive.put_file(f"inbound/{uuid.uuid4().hex}.pdf", big).key)
    return keys


# --- encryption at rest and retention -----------------------------------------------------------


def test_every_object_is_encrypted_and_locked(s3: S3, faxrelay_keys: None) -> None:
    archive = archive_for(
        s3, "fr-locked", s3_sse="AES256", s3_object_lock_mode="COMPLIANCE", s3_object_lock_days=7
    )
    archive.ensure_bucket()  # missing: created with Object Lock by faxrelay's own identity
    ops = s3.ops()
    lock = ops.get_object_lock_configuration(Bucket="fr-locked")["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"

    marker = f"plaintext-{uuid.uuid4().hex}".encode()
    before = datetime.now(UTC)
    keys = write_every_kind(archive, marker)
    after = datetime.now(UTC)

    for key in keys:
        head = ops.head_object(Bucket="fr-locked", Key=key)
        assert head["ServerSideEncryption"] == "AES256", key
        assert head["ObjectLockMode"] == "COMPLIANCE", key
        until = head["ObjectLockRetainUntilDate"]
        # S3 keeps the date to the second.
        assert before + timedelta(days=7, seconds=-1) <= until <= after + timedelta(days=7), key
    # Read back whole through the normal path, and nowhere on SeaweedFS's disk in plain text.
    record_pdf = archive.get_bytes(keys[0])
    assert marker in record_pdf
    assert not s3.at_rest(marker)
    control = f"control-{uuid.uuid4().hex}".encode()  # the same check finds unencrypted bytes
    ops.put_object(Bucket="fr-locked", Key="control.txt", Body=control)
    wait_for(lambda: s3.at_rest(control), 10, "the unencrypted control on disk")

    # No one deletes or replaces a locked fax: a delete only hides it behind a marker, the
    # version itself is refused even to the operator, and it stays readable.
    versions = ops.list_object_versions(Bucket="fr-locked", Prefix=keys[0])["Versions"]
    assert len(versions) == 1
    ops.delete_object(Bucket="fr-locked", Key=keys[0])
    with pytest.raises(ClientError) as refused:
        ops.delete_object(Bucket="fr-locked", Key=keys[0], VersionId=versions[0]["VersionId"])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    kept = ops.get_object(Bucket="fr-locked", Key=keys[0], VersionId=versions[0]["VersionId"])
    assert kept["Body"].read() == record_pdf


def test_kms_encryption_with_a_key_id(s3: S3, faxrelay_keys: None) -> None:
    archive = archive_for(s3, "fr-kms", s3_sse="aws:kms", s3_sse_kms_key_id=KMS_KEY)
    archive.ensure_bucket()
    marker = f"plaintext-{uuid.uuid4().hex}".encode()
    keys = write_every_kind(archive, marker)
    ops = s3.ops()
    for key in keys:
        head = ops.head_object(Bucket="fr-kms", Key=key)
        assert head["ServerSideEncryption"] == "aws:kms", key
        assert head["SSEKMSKeyId"], key  # the key it resolved the alias to
        assert "ObjectLockMode" not in head, key
    assert not s3.at_rest(marker)
    pdf = archive.get_bytes(keys[0])
    assert marker in pdf
    # The dashboard's PDF link (a presigned URL) still hands out the decrypted bytes.
    link = archive.presigned_url(keys[0], 60)
    assert httpx.get(link, timeout=10).content == pdf


def test_without_controls_nothing_is_asked(s3: S3, faxrelay_keys: None) -> None:
    archive = archive_for(s3, "fr-plain")
    archive.ensure_bucket()
    record, pdf = inbound(b"no-controls")
    stored = archive.archive_inbound(record, io.BytesIO(pdf))
    head = s3.ops().head_object(Bucket="fr-plain", Key=stored.key)
    assert "ServerSideEncryption" not in head and "ObjectLockMode" not in head
    assert head["Metadata"]["sha256"] == hashlib.sha256(pdf).hexdigest()


def test_retention_on_a_bucket_without_object_lock_is_a_clear_error(
    s3: S3, faxrelay_keys: None
) -> None:
    plain = archive_for(s3, "fr-plain")
    plain.ensure_bucket()  # exists, without Object Lock
    locked = archive_for(s3, "fr-plain", s3_object_lock_mode="GOVERNANCE", s3_object_lock_days=1)
    for check in (locked.ensure_bucket, locked.ping):  # ping is what /readyz runs
        with pytest.raises(ArchiveError, match="has no Object Lock"):
            check()
    # What the server says to a write that asks for retention there: refused, not stored bare.
    record, pdf = inbound(b"refused")
    with pytest.raises(ClientError):
        locked.archive_inbound(record, io.BytesIO(pdf))
    assert plain.stored_sha256(locked.key_for("inbound", record)) is None


def test_the_web_app_creates_a_missing_bucket_with_object_lock(
    s3: S3, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": FAXRELAY_KEY[0],
        "AWS_SECRET_ACCESS_KEY": FAXRELAY_KEY[1],
        "FAXRELAY_REDIS_URL": redis_url,
        "FAXRELAY_S3_ENDPOINT_URL": s3.endpoint,
        "FAXRELAY_S3_BUCKET": "fr-web",
        "FAXRELAY_S3_OBJECT_LOCK_MODE": "GOVERNANCE",
        "FAXRELAY_S3_OBJECT_LOCK_DAYS": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "PYTHONPATH": str(ROOT),
    }
    with open(tmp_path / "web.log", "w") as log:
        web = ManagedProcess(
            "web",
            [sys.executable, "-m", "uvicorn", "--factory", "webhooks.app:create_app",
             "--host", "127.0.0.1", "--port", str(port), "--no-proxy-headers"],
            sink=log, env=env, cwd=str(ROOT),
        ).start()  # fmt: skip
        try:
            ready = wait_for(
                lambda: _status(f"http://127.0.0.1:{port}/readyz") == 200, 60, "/readyz"
            )
            assert ready
        finally:
            web.stop()
    lock = s3.ops().get_object_lock_configuration(Bucket="fr-web")["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return 0


# --- region and addressing ----------------------------------------------------------------------


def test_a_bucket_is_created_in_the_configured_region(s3: S3, faxrelay_keys: None) -> None:
    archive = Archive.from_settings(
        Settings(s3_endpoint_url=s3.endpoint, s3_bucket="fr-eu", s3_region="eu-central-1")
    )
    sent: list[bytes] = []

    def record(request: Any, **_: Any) -> None:
        if request.method == "PUT" and request.url.rstrip("/").endswith("/fr-eu"):
            sent.append(bytes(request.body or b""))

    archive.client.meta.events.register("before-send.s3.CreateBucket", record)
    archive.ensure_bucket()
    # SeaweedFS keeps no region, so the check is on what reached it.
    assert len(sent) == 1 and b"<LocationConstraint>eu-central-1</LocationConstraint>" in sent[0]
    s3.ops().head_bucket(Bucket="fr-eu")


def test_path_style_only_where_the_endpoint_needs_it() -> None:
    def url(client: Any) -> httpx.URL:
        link = client.generate_presigned_url(
            "get_object", Params={"Bucket": "archive", "Key": "a.pdf"}, ExpiresIn=60
        )
        return httpx.URL(link)

    custom = url(s3_client("http://127.0.0.1:9", "us-east-1"))
    assert (custom.host, custom.path) == ("127.0.0.1", "/archive/a.pdf")
    aws = url(s3_client("", "eu-central-1"))  # no endpoint: AWS, one host name per bucket
    assert aws.host.startswith("archive.s3.") and aws.path == "/a.pdf"
    forced = url(s3_client("", "eu-central-1", addressing_style="path"))
    assert forced.path == "/archive/a.pdf"
    assert Settings(s3_addressing_style="virtual").s3_addressing_style == "virtual"


# --- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FAXRELAY_S3_OBJECT_LOCK_MODE": "COMPLIANCE"}, "s3_object_lock_days: required"),
        ({"FAXRELAY_S3_OBJECT_LOCK_DAYS": "30"}, "s3_object_lock_mode: required"),
        ({"FAXRELAY_S3_SSE_KMS_KEY_ID": "alias/x"}, "needs s3_sse = aws:kms"),
        ({"FAXRELAY_S3_SSE": "aes"}, "s3_sse"),
        (
            {"FAXRELAY_S3_OBJECT_LOCK_MODE": "LEGAL", "FAXRELAY_S3_OBJECT_LOCK_DAYS": "1"},
            "s3_object_lock_mode",
        ),
    ],
)
def test_half_configured_controls_are_refused(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_every_write_goes_through_the_archives_upload_arguments() -> None:
    """Only worker/io/archive.py writes objects (and there, with ``upload_args``): a put made
    anywhere else would skip the encryption and retention above."""
    writes = re.compile(
        r"\.(put_object|upload_file|upload_fileobj|copy_object|create_multipart_upload)\("
    )
    elsewhere = [
        f"{path.relative_to(ROOT)}:{number}"
        for package in ("config", "worker", "webhooks")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != ROOT / "worker" / "io" / "archive.py"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if writes.search(line)
    ]
    assert elsewhere == []
