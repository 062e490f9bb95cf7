"""The S3 archive: received faxes with their ``.json`` sidecar, quarantined non-PDFs, outbound documents.

Key layout (DESIGN.md "Archive"), ``{prefix}`` used verbatim, date = UTC date of receipt::

    {prefix}inbound/{account}/{YYYY}/{MM}/{DD}/{id}.pdf    object metadata sha256 = hex digest
    {prefix}inbound/{account}/{YYYY}/{MM}/{DD}/{id}.json   sidecar
    {prefix}quarantine/{account}/{YYYY}/{MM}/{DD}/{id}.pdf what came instead of a PDF
    {prefix}outbound/{account}/{YYYY}/{MM}/{DD}/{id}.pdf   documents to send

Uploads stream from a file: the digest is computed in one pass of 1 MiB reads, then boto3's managed
transfer sends the file in 8 MiB parts, one at a time, each read from the file as it is sent, so
memory stays flat whatever the file's size. An object that is already there with the same sha256 is
not uploaded again.

Every write takes its arguments from ``Archive.upload_args``: the content type and metadata plus the
archive controls (``Controls``: server-side encryption, Object Lock retention), so no object is
written without them. ``ensure_bucket`` creates a missing bucket with Object Lock when retention is
configured (it cannot be turned on for an existing bucket's objects otherwise).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, TYPE_CHECKING, Any, Literal

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from config.settings import Settings
from worker import metrics
from worker.domain import FaxRecord, iso, parse_iso, utcnow

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
PART = 8 * CHUNK
# One part in flight per upload (a stream each: see _LARGE_UPLOADS). Public TransferConfig
# arguments only: s3transfer's own cap on the parts it holds in memory
# (``max_in_memory_upload_chunks``, 10 by default) is not a boto3 argument, so ``put_file`` never
# gives boto3 a large stream it would cut into in-memory parts (see there).
TRANSFER = TransferConfig(
    multipart_threshold=PART,
    multipart_chunksize=PART,
    max_concurrency=1,
)
# Large uploads at once per process (the archiver runs 64 transfers, config/workers.py). An S3
# server takes in a few large streams as fast as many, while every other request (a send's
# document, a sidecar) queues behind the many: against SeaweedFS here, 64 concurrent 8 MB uploads
# moved 27 MB/s and held a small PUT + GET up to 17.6 s. With 20 MB uploads, 4 at once of 2 parts
# each (8 streams) moved 43-51 MB/s with a small PUT + GET at a median of 350-450 ms; 2 of one
# part each moved 48-50 MB/s at 76-79 ms (p90 about 210 ms).
LARGE_UPLOAD = CHUNK  # bytes; smaller uploads are not held back
_LARGE_UPLOADS = threading.BoundedSemaphore(2)


def s3_client(
    endpoint_url: str = "",
    region: str = "us-east-1",
    *,
    timeout: float = 60.0,
    addressing_style: Literal["auto", "path", "virtual"] = "auto",
) -> S3Client:
    """A boto3 S3 client; credentials come from the standard AWS_* settings.

    Without credentials in the environment (the embedded SeaweedFS accepts any pair), a fixed
    placeholder pair is used so boto3 does not go looking for instance metadata.
    ``addressing_style`` "auto": path-style URLs for a custom endpoint (S3-compatible servers
    seldom have a DNS name per bucket), virtual-hosted ones for AWS.
    """
    if addressing_style == "auto":
        addressing_style = "path" if endpoint_url else "virtual"
    kwargs: dict[str, Any] = {}
    if endpoint_url and not (os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE")):
        kwargs = {"aws_access_key_id": "faxrelay", "aws_secret_access_key": "faxrelay"}
    client: S3Client = boto3.client(
        "s3",
        endpoint_url=endpoint_url or None,
        region_name=region,
        config=Config(
            connect_timeout=10,
            read_timeout=timeout,
            retries={"max_attempts": 5, "mode": "standard"},
            # One client serves every thread of a worker (config/pool.py): room for each of
            # the archiver's 64 threads with its two parts in flight (boto3's default is 10).
            max_pool_connections=128,
            s3={"addressing_style": addressing_style},
            signature_version="s3v4",
        ),
        **kwargs,
    )
    return client


class ArchiveError(Exception):
    """S3 refused or failed an operation."""


@dataclass(frozen=True)
class Controls:
    """What every object faxrelay writes carries besides its bytes: server-side encryption and
    Object Lock retention (``FAXRELAY_S3_SSE*``, ``FAXRELAY_S3_OBJECT_LOCK_*``)."""

    sse: str = ""  # "" | "AES256" | "aws:kms"
    kms_key_id: str = ""  # with aws:kms; empty: the server's default key
    lock_mode: str = ""  # "" | "GOVERNANCE" | "COMPLIANCE"
    lock_days: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Controls:
        return cls(
            sse=settings.s3_sse,
            kms_key_id=settings.s3_sse_kms_key_id,
            lock_mode=settings.s3_object_lock_mode,
            lock_days=settings.s3_object_lock_days,
        )

    def args(self, now: datetime | None = None) -> dict[str, Any]:
        """PutObject / CreateMultipartUpload arguments (the names boto3's ExtraArgs take too)."""
        out: dict[str, Any] = {}
        if self.sse:
            out["ServerSideEncryption"] = self.sse
        if self.kms_key_id:
            out["SSEKMSKeyId"] = self.kms_key_id
        if self.lock_mode:
            # Retention counts from the write: each version of a sidecar is kept its own days.
            until = (now or datetime.now(UTC)) + timedelta(days=self.lock_days)
            out["ObjectLockMode"] = self.lock_mode
            out["ObjectLockRetainUntilDate"] = until
        return out


@dataclass(frozen=True)
class Stored:
    bucket: str
    key: str
    sha256: str
    size: int
    uploaded: bool  # False: the same bytes were already there


def sha256_of(stream: IO[bytes]) -> tuple[str, int]:
    """Digest and size of a seekable stream, read from its start; leaves it at the start."""
    stream.seek(0)
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    stream.seek(0)
    return digest.hexdigest(), size


def _date_path(moment: datetime) -> str:
    return moment.strftime("%Y/%m/%d")


class Archive:
    def __init__(
        self,
        client: S3Client,
        bucket: str,
        prefix: str = "",
        *,
        controls: Controls | None = None,
        region: str = "us-east-1",
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.controls = controls or Controls()
        self.region = region
        self._lock_checked = threading.Event()

    @classmethod
    def from_settings(cls, settings: Settings) -> Archive:
        client = s3_client(
            settings.s3_endpoint_url,
            settings.s3_region,
            addressing_style=settings.s3_addressing_style,
        )
        return cls(
            client,
            settings.s3_bucket,
            settings.s3_prefix,
            controls=Controls.from_settings(settings),
            region=settings.s3_region,
        )

    def upload_args(
        self, content_type: str, metadata: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """The arguments of every write: every put in this module (and any new one) goes through
        here, so encryption and retention cannot be forgotten on one kind of object."""
        args: dict[str, Any] = {"ContentType": content_type}
        if metadata:
            args["Metadata"] = metadata
        args.update(self.controls.args())
        return args

    # --- keys ---------------------------------------------------------------------
    def key_for(self, area: str, record: FaxRecord, ext: str = "pdf") -> str:
        received = (parse_iso(received_at(record)) or utcnow()).astimezone(UTC)
        return f"{self.prefix}{area}/{record.account}/{_date_path(received)}/{record.id}.{ext}"

    # --- bucket -------------------------------------------------------------------
    def ensure_bucket(self) -> None:
        """Create the bucket when it is missing (with Object Lock when retention is configured, in
        the configured region); raise ArchiveError when it cannot be used with the controls."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise ArchiveError(f"cannot reach bucket {self.bucket}: {exc}") from exc
            self._create_bucket()
        self.check_lock()

    def _create_bucket(self) -> None:
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.region != "us-east-1":  # AWS refuses a LocationConstraint of us-east-1
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        if self.controls.lock_mode:
            kwargs["ObjectLockEnabledForBucket"] = True  # also turns versioning on
        try:
            self.client.create_bucket(**kwargs)
        except ClientError as exc:
            if _code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise ArchiveError(f"cannot create bucket {self.bucket}: {exc}") from exc

    def check_lock(self) -> None:
        """With retention configured, the bucket must have Object Lock: without it S3 refuses
        every write that asks for retention. Checked once per process, when first asked."""
        if not self.controls.lock_mode or self._lock_checked.is_set():
            return
        try:
            found = self.client.get_object_lock_configuration(Bucket=self.bucket)
            enabled = found.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
        except ClientError as exc:
            if _code(exc) == "AccessDenied":  # a policy without GetBucketObjectLockConfiguration
                log.warning("cannot check bucket %s for Object Lock: %s", self.bucket, exc)
                self._lock_checked.set()  # the writes will say it, if it is missing
                return
            if _code(exc) != "ObjectLockConfigurationNotFoundError":
                raise
            enabled = None
        if enabled != "Enabled":
            raise ArchiveError(
                f"bucket {self.bucket} has no Object Lock, which FAXRELAY_S3_OBJECT_LOCK_MODE "
                "needs: Object Lock is set when a bucket is created (faxrelay creates a missing "
                "bucket with it); use a new bucket, or turn it on with your S3 provider's tools"
            )
        self._lock_checked.set()

    def ping(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)
        self.check_lock()

    # --- objects ------------------------------------------------------------------
    def stored_sha256(self, key: str) -> str | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return head.get("Metadata", {}).get("sha256")

    def put_file(
        self,
        key: str,
        stream: IO[bytes],
        *,
        content_type: str = "application/pdf",
        sha256: str | None = None,
        size: int | None = None,
        fresh: bool = False,
    ) -> Stored:
        """Upload a seekable stream to ``key`` unless the same bytes are already there.

        ``fresh``: the key is named after a record made just now, so nothing can be there yet:
        no HEAD first (one S3 round trip less on a send's way in, behind a busy S3's queue)."""
        if sha256 is None or size is None:
            sha256, size = sha256_of(stream)
        if not fresh and self.stored_sha256(key) == sha256:
            return Stored(self.bucket, key, sha256, size, uploaded=False)
        stream.seek(0)
        extra = self.upload_args(content_type, {"sha256": sha256})
        path = getattr(stream, "name", None)
        with _LARGE_UPLOADS if size >= LARGE_UPLOAD else contextlib.nullcontext():
            if isinstance(path, str) and os.path.isfile(path):
                stream.flush()
                # From a file on disk boto3 reads each part itself: no part buffers in memory.
                self.client.upload_file(path, self.bucket, key, ExtraArgs=extra, Config=TRANSFER)
            elif size < PART:
                # One PutObject that reads the stream itself.
                self.client.upload_fileobj(
                    stream, self.bucket, key, ExtraArgs=extra, Config=TRANSFER
                )
            else:
                # A multipart upload from a stream copies each part into memory, up to 10 at
                # once (a limit boto3 does not expose); from a file, boto3 reads each part as it
                # sends it.
                with tempfile.NamedTemporaryFile() as spool:
                    shutil.copyfileobj(stream, spool, CHUNK)
                    spool.flush()
                    self.client.upload_file(
                        spool.name, self.bucket, key, ExtraArgs=extra, Config=TRANSFER
                    )
        return Stored(self.bucket, key, sha256, size, uploaded=True)

    def put_stream(self, key: str, source: IO[bytes], **kwargs: Any) -> Stored:
        """Upload from a stream that may not seek: spooled to a temporary file first."""
        with tempfile.NamedTemporaryFile() as spool:
            while chunk := source.read(CHUNK):
                spool.write(chunk)
            return self.put_file(key, spool, **kwargs)

    def put_json(self, key: str, data: dict[str, Any]) -> None:
        body = json.dumps(data, indent=2, sort_keys=True).encode()
        self.client.put_object(
            Bucket=self.bucket, Key=key, Body=body, **self.upload_args("application/json")
        )

    def get_bytes(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def download_to(self, key: str, sink: IO[bytes]) -> None:
        """The object's bytes into ``sink``, a chunk at a time. One GET: boto3's managed download
        sends a HEAD first to learn the size, a second round trip each submit and staged fax
        would wait for behind a busy S3's queue."""
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        with contextlib.closing(body):
            for chunk in body.iter_chunks(CHUNK):
                sink.write(chunk)

    def presigned_url(self, key: str, expires: int) -> str:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires
        )

    # --- faxes ----------------------------------------------------------------------
    def archive_inbound(
        self,
        record: FaxRecord,
        stream: IO[bytes],
        sha256: str | None = None,
        *,
        size: int | None = None,
        pages: int | None = None,
    ) -> Stored:
        """The received PDF and its sidecar; skips the PDF upload when already archived.

        ``pages``: as counted from the PDF (default: the provider's count on the record)."""
        stored = self.put_file(self.key_for("inbound", record), stream, sha256=sha256, size=size)
        sidecar = inbound_sidecar(
            record, stored.sha256, pages if pages is not None else record.pages, iso(utcnow())
        )
        self.put_json(self.key_for("inbound", record, "json"), sidecar)
        metrics.archived("inbound", stored.uploaded, _since(record.created_at))
        return stored

    def quarantine(self, record: FaxRecord, stream: IO[bytes], content_type: str) -> Stored:
        stored = self.put_file(
            self.key_for("quarantine", record),
            stream,
            content_type=content_type or "application/octet-stream",
        )
        metrics.archived("quarantine", stored.uploaded, None)
        return stored


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def inbound_sidecar(
    record: FaxRecord, sha256: str, pages: int | None, archived_at: str | None
) -> dict[str, Any]:
    """The ``{id}.json`` beside a received PDF (DESIGN.md "Archive"); once the fax is final, the
    retention sweep writes it again with the final record in it (``worker.io.filing``)."""
    return {
        "id": record.id,
        "account": record.account,
        "provider": record.provider,
        "provider_ids": record.provider_ids,
        "from": record.from_number,
        "to": record.to_number,
        "pages": pages,
        "sha256": sha256,
        "received_at": received_at(record),
        "archived_at": archived_at,
    }


def received_at(record: FaxRecord) -> str:
    """When the provider received the fax (kept by ``inbound.new_inbound``), else when
    faxrelay created the record: the archive's date and the sidecar's ``received_at``."""
    return str(record.work.get("received_at") or record.created_at)


def _since(moment: str | None) -> float | None:
    at = parse_iso(moment)
    return (utcnow() - at).total_seconds() if at is not None else None
