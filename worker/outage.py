"""Telling an outage of faxrelay's own stores (Redis, S3) from every other error.

An outage is nobody's mistake and ends by itself: ``POST /v1/faxes`` answers it with 503, a
queue-driven send and an inbound download retry it on their own short schedule
(``retry.QUEUED_SEND``, ``retry.ARCHIVE_STORAGE``) instead of failing or backing off as from a
provider.
"""

from __future__ import annotations

import redis
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError

# S3 answers that mean "not now" rather than "no": its own outages and throttling.
_S3_TRANSIENT_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "503", "500"}
)


def storage_down(exc: BaseException) -> str:
    """Which of faxrelay's own stores ``exc`` says is unreachable ("S3", "Redis"), or ""."""
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return "Redis"  # BusyLoadingError (a restart replaying its AOF) is a ConnectionError
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return "Redis"  # a replica during a failover
    if isinstance(exc, BotoCoreError):
        return "S3"  # EndpointConnectionError, timeouts, a connection closed mid-answer
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if status >= 500 or str(error.get("Code", "")) in _S3_TRANSIENT_CODES:
            return "S3"
    if isinstance(exc, S3UploadFailedError) and exc.__context__ is not None:
        return storage_down(exc.__context__)  # boto3's multipart upload wraps the S3 error
    return ""
